"""Transfer of EZNAS programs without re-evolving: each formula's Spearman / Kendall on held-out NB201 cells of
CIFAR-10, CIFAR-100 and ImageNet16-120 (and on NB101 / NB301), next to the best NAS-Bench-Suite-Zero proxy on the
same architectures.

    python bench/eznas_transfer.py [--formulas "F1;F2"] [--datasets cifar10,cifar100,imagenet16-120] [--cells 1000]
                                   [--spaces nb101,nb301] [--batch-size 1] [--out bench/out/eznas_transfer.json]

Formulas default to EZNAS-A and the best programs of the README's evolution runs. Cells come from the held-out pool
of :mod:`jzcp.evolve_cli` (never in any fitness), the same cells for every dataset; statistics follow the EZNAS
evolution protocol (:class:`jzcp.evolve_cli.StatsProtocol`, batch ``--batch-size``) and are scored by the programs
in one jitted call per network (:func:`jzcp.evolve_cli.evaluate_holdout`). Targets are
:data:`jzcp.evolve_cli.DEFAULT_TARGET`. CIFAR-100 uses its 20 real images (batch <= 20); ImageNet16-120 uses the
**stand-in** (CIFAR-10 at 16x16: no ImageNet16 images are available), so its row says how a program ranks networks
built for 120 classes at 16 px, not its score on real ImageNet16 images.

``--spaces nb101,nb301`` adds those spaces on CIFAR-10 (``val_accuracy``; every architecture of NAS-Bench-Suite-
Zero's 500 / 1,218: the programs never saw these spaces).

Resumable: per-network scores go to ``<out>.scores/<space>-<dataset>.json`` (written atomically every minute);
rerunning the same command skips the networks scored there (``seconds`` then counts only the rerun).

Baseline: the NAS-Bench-Suite-Zero proxy with the highest Spearman on the architectures it covers (NB201: the final
NBSZ values for CIFAR-10 and ImageNet16-120, the preliminary 725-cell run for CIFAR-100; NB101 / NB301: the values
of the NASLib files), with the number of architectures.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _timing import write_json

from jzcp import data, metrics
from jzcp import programs as pg
from jzcp.evolve_cli import StatsProtocol, evaluate_holdout, holdout_tasks
from jzcp.scoring import load_benchmark

EVOLVED = (
    "exp(softmax(sign(det(softmax(preact_D)))))",  # README's 40-generation search (fitness 0.867, held-out rho 0.870)
    "mean_abs(det(act_D))",  # README's 20-generation search (fitness 0.810, held-out rho 0.777 on 300 cells)
)
REFERENCE = {"cifar10": ("c10", "nbsz"), "cifar100": ("c100", "nbszpre"), "imagenet16-120": ("in16", "nbsz")}


def best_reference_proxy(space: str, dataset: str, index: np.ndarray, target: np.ndarray, data_dir=None) -> dict:
    """The NBSZ proxy with the highest Spearman against ``target`` on the architectures ``index`` it covers."""
    if space == "nb201":
        short, source = REFERENCE[dataset]
        ref = data.load_nb201_proxies(short, source, data_dir)
        covered, values, name = ref.mask[index], ref.values, ref.name
    else:
        values, name = load_benchmark(space, dataset, data_dir).reference, f"naslib_zc_{space}"
        covered = np.ones(len(index), bool)
    rows = {}
    for proxy, v in values.items():
        rows[proxy] = float(metrics.spearman(data.without_failures(v)[index][covered], target[covered]))
    best = max(rows, key=lambda k: -np.inf if np.isnan(rows[k]) else rows[k])
    return {"source": name, "n": int(covered.sum()), "best": best, "spearman": rows[best], "all": rows}


def run(args) -> dict:
    formulas = [f.strip() for f in args.formulas.split(";") if f.strip()]
    pg.parse_many(formulas)  # a malformed formula fails here, before any statistics
    out = {"formulas": formulas, "cells": args.cells, "batch_size": args.batch_size, "datasets": {}}
    runs = [("nb201", d.strip()) for d in args.datasets.split(",") if d.strip()]
    runs += [(s.strip(), "cifar10") for s in args.spaces.split(",") if s.strip()]
    for space, dataset in runs:
        other = space != "nb201"
        tasks = holdout_tasks(space, 0 if other else args.cells, args.seed, dataset=dataset,
                              data_dir=args.data_dir, whole_space=other)
        proto = StatsProtocol(dataset=dataset, batch_size=args.batch_size)
        t = time.time()
        checkpoint = Path(args.out).with_suffix(".scores") / f"{space}-{dataset}.json"
        res = evaluate_holdout(formulas, tasks, proto, progress=True, data_dir=args.data_dir, checkpoint=checkpoint)
        out["datasets"][f"{space}/{dataset}" if other else dataset] = {
            "space": space, "target": tasks.target_name[0], "seconds": time.time() - t, "programs": res,
            "stand_in": dataset == "imagenet16-120",
            "reference": best_reference_proxy(space, dataset, np.asarray(tasks.index), np.asarray(tasks.target),
                                              args.data_dir)}
    return out


def format_table(result: dict) -> str:
    lines = [f"{'dataset (target)':<44}{'formula / proxy':<56}{'rho':>7}{'tau':>7}{'n':>6}"]
    for ds, r in result["datasets"].items():
        label = f"{ds}{' STAND-IN' if r['stand_in'] else ''} ({r['target']})"
        for f, v in r["programs"].items():
            lines.append(f"{label:<44}{f:<56}{v['spearman']:>7.3f}{v['kendall']:>7.3f}{v['n']:>6}")
            label = ""
        ref = r["reference"]
        lines.append(f"{'':<44}{'best NBSZ: ' + ref['best'] + ' (' + ref['source'] + ')':<56}"
                     f"{ref['spearman']:>7.3f}{'':>7}{ref['n']:>6}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formulas", default=";".join((pg.EZNAS_A, *EVOLVED)), help="';'-separated program formulas")
    ap.add_argument("--datasets", default="cifar10,cifar100,imagenet16-120")
    ap.add_argument("--spaces", default="", help="also these spaces on CIFAR-10: nb101, nb301")
    ap.add_argument("--cells", type=int, default=1000, help="held-out NB201 cells; 0 = all (default 1000)")
    ap.add_argument("--batch-size", type=int, default=1, help="statistics minibatch (default 1, EZNAS evolution)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out draw")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="bench/out/eznas_transfer.json")
    args = ap.parse_args()
    result = run(args)
    print(format_table(result))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
