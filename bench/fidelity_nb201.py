"""Fidelity of jzcp's proxies on NAS-Bench-201 against the published numbers and the reference values.

    python bench/fidelity_nb201.py [--cells 1000] [--sections iclr21,nbsz,eznas,other] [--other-cells N]
                                   [--out bench/out/fidelity]
    python bench/fidelity_nb201.py --report-only   # interim table of a run still in progress

A fixed seeded sample of ``--cells`` NB201 cells (all 15,625 with ``--cells 15625``) is scored with ``jzcp score``'s
pipeline into ``OUT/<run>/scores.csv`` (resumable: rerun the same command to continue an interrupted run), then:

1. ``iclr21`` -- ICLR'21 protocol (CIFAR-10, batch 64, seed 42, PyTorch-default init) against ``c10valid_test``:
   Spearman of synflow, jacov, snip, grad_norm, grasp, fisher vs the published 0.737/0.731/0.596/0.594/0.514/0.36
   (pass: within +-0.03).
2. ``nbsz`` -- the same run, on the sampled cells among the 9,445 of NAS-Bench-Suite-Zero: Spearman between jzcp's
   values and the reference values for all 13 proxies (pass: >= 0.95), and params / flops equality; next to it the
   reference's own run-to-run agreement (its final vs its preliminary run, 447 cells), the floor for seed-bound proxies.
3. ``eznas`` -- EZNAS-A (code-faithful; batch 16, seed 1, kaiming fan_out init, crop+flip, BN train mode) against
   ``c10valid_val``: Kendall tau vs 0.6195 and Spearman vs 0.8085 (pass: within +-0.03).
4. ``other`` -- CIFAR-100 with its 20 real images (batch 16) against ``c100_test`` and ``c100_val_naslib1seed``, and
   ImageNet16-120 with the 16x16 CIFAR-10 STAND-IN (batch 64) against ``in16_test`` (reported, no pass/fail).

Correlations against accuracy carry a bootstrap standard error over the cells (1,000 resamples,
:func:`jzcp.metrics.bootstrap_se`). Prints a table (ours | SE | published | delta | pass) and writes ``OUT/fidelity_nb201.json`` (sections run separately on the
same cells are merged into it).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from _timing import write_json

from jzcp import data, metrics
from jzcp.proxies import NBSZ_PROXIES, PROXIES, ProxyConfig
from jzcp.scoring import load_benchmark, score, select_archs

ICLR21 = {"synflow": 0.737, "jacov": 0.731, "snip": 0.596, "grad_norm": 0.594, "grasp": 0.514, "fisher": 0.36}
EZNAS_A = {"kendall": 0.6195, "spearman": 0.8085}
TOL = 0.03
AGREEMENT = 0.95


def _row(rows, section, name, ours, published, tol=TOL, n=None, kind="abs", se=None):
    if published is None:
        ok, delta = None, None
    elif kind == "min":
        ok, delta = bool(ours >= published), ours - published
    else:
        ok, delta = bool(abs(ours - published) <= tol), ours - published
    rows.append({"section": section, "name": name, "ours": float(ours), "published": published, "delta": delta,
                 "pass": ok, "n": n, "se": se})


def _se(statistic, x, y) -> float:
    """Bootstrap SE over the cells: how far the same statistic would move on another sample of as many cells."""
    return float(metrics.bootstrap_se(statistic, np.asarray(x, np.float64), np.asarray(y, np.float64),
                                      jax.random.key(0), num_resamples=1000))


def run(args) -> dict:
    c10 = load_benchmark("nb201", "cifar10", args.data_dir)
    chosen = select_archs("all" if args.cells >= len(c10) else f"sample:{args.cells}", args.arch_seed, c10)
    # Scored in a seeded random order, so the cells of an interrupted run are a uniform subsample (--report-only).
    chosen = np.random.default_rng(args.arch_seed).permutation(chosen)
    partial = {"scored_only": args.report_only}
    out = Path(args.out)
    sections = set(args.sections.split(","))
    rows: list[dict] = []
    timings = {}

    if sections & {"iclr21", "nbsz"}:
        names = tuple(sorted(set(ICLR21) | (set(NBSZ_PROXIES) if "nbsz" in sections else set())))
        cfg = ProxyConfig(batch_size=64, seed=42, init="pytorch")
        t = time.time()
        table, _ = score(c10, chosen, names, cfg, out / "c10_b64_s42_pytorch", data_dir=args.data_dir,
                         targets=("c10valid_test", "c10valid_val", "c10_test"), **partial)
        timings["c10_b64_s42_pytorch"] = time.time() - t
        if "iclr21" in sections:
            for p, pub in ICLR21.items():
                rho = float(metrics.spearman(table[p], table["c10valid_test"]))
                _row(rows, "ICLR'21 C10 Spearman vs c10valid_test", p, rho, pub, n=int(np.isfinite(table[p]).sum()),
                     se=_se(metrics.spearman, table[p], table["c10valid_test"]))
        if "nbsz" in sections:
            ref = data.load_nb201_proxies("c10", "nbsz", args.data_dir)
            idx = table["index"]
            in_ref = ref.mask[idx]
            for p in NBSZ_PROXIES:
                ours, theirs = table[p][in_ref], data.without_failures(ref.proxy(p))[idx][in_ref]
                rho = float(metrics.spearman(ours, theirs))
                _row(rows, "NBSZ agreement: Spearman(jzcp, reference)", p, rho, AGREEMENT, n=int(in_ref.sum()),
                     kind="min")
            for p, scale in (("params", 1.0), ("flops", 1.0)):
                ours, theirs = table[p][in_ref] * scale, ref.proxy(p)[idx][in_ref]
                _row(rows, "NBSZ equality: max |jzcp - reference|", p, float(np.max(np.abs(ours - theirs))), 0.0,
                     tol=5e-6 if p == "params" else 5e-3, n=int(in_ref.sum()))
            # The reference's own run-to-run agreement (its final run vs its preliminary run: other minibatch and
            # init, same code) is the floor below which per-cell agreement cannot be expected of seed-bound proxies.
            pre = data.load_nb201_proxies("c10", "nbszpre", args.data_dir)
            both = ref.mask & pre.mask
            for p in pre.proxy_names:
                _row(rows, "NBSZ run-to-run: Spearman(final run, preliminary run), all shared cells", p,
                     float(metrics.spearman(data.without_failures(ref.proxy(p))[both],
                                            data.without_failures(pre.proxy(p))[both])), None, n=int(both.sum()))
            for p in NBSZ_PROXIES:  # what the proxies reach on their own (context for the agreement rows)
                _row(rows, "jzcp Spearman vs c10valid_val (9,445 subset)", p,
                     float(metrics.spearman(table[p][in_ref], table["c10valid_val"][in_ref])), None,
                     n=int(in_ref.sum()))

    if "eznas" in sections and "eznas_a" in PROXIES:
        cfg = ProxyConfig(batch_size=16, seed=1, init="kaiming_fan_out")
        t = time.time()
        table, _ = score(c10, chosen, ("eznas_a",), cfg, out / "c10_b16_s1_eznas", augment=True,
                         normalisation="eznas", data_dir=args.data_dir, **partial)
        timings["c10_b16_s1_eznas"] = time.time() - t
        tau = float(metrics.kendall_tau(table["eznas_a"], table["c10valid_val"]))
        rho = float(metrics.spearman(table["eznas_a"], table["c10valid_val"]))
        _row(rows, "EZNAS-A C10 vs c10valid_val", "kendall", tau, EZNAS_A["kendall"], n=len(table["index"]),
             se=_se(metrics.kendall_tau, table["eznas_a"], table["c10valid_val"]))
        _row(rows, "EZNAS-A C10 vs c10valid_val", "spearman", rho, EZNAS_A["spearman"], n=len(table["index"]),
             se=_se(metrics.spearman, table["eznas_a"], table["c10valid_val"]))

    if "other" in sections:
        names = tuple(ICLR21) + (("eznas_a",) if "eznas_a" in PROXIES else ())
        other = chosen[: args.other_cells] if args.other_cells else chosen  # a prefix of the seeded random order
        for dataset, bs, run_name, tgts in (
            ("cifar100", 16, "c100_b16_s42_real20", ("c100_test", "c100_val_naslib1seed")),
            ("imagenet16-120", 64, "in16_b64_s42_STANDIN", ("in16_test", "in16_val_naslib1seed")),
        ):
            cfg = ProxyConfig(batch_size=bs, seed=42, init="pytorch")
            t = time.time()
            table, _ = score(load_benchmark("nb201", dataset, args.data_dir), other, names, cfg, out / run_name,
                             data_dir=args.data_dir, targets=tgts, **partial)
            timings[run_name] = time.time() - t
            label = "CIFAR-100 (20 real images, batch 16)" if dataset == "cifar100" else \
                "ImageNet16-120 STAND-IN (CIFAR-10 at 16x16)"
            for tg in tgts:
                for p in names:
                    _row(rows, f"{label} Spearman vs {tg}", p, float(metrics.spearman(table[p], table[tg])), None,
                         n=int(np.isfinite(table[p]).sum()), se=_se(metrics.spearman, table[p], table[tg]))

    return {"cells": len(chosen), "arch_seed": args.arch_seed, "report_only": args.report_only, "rows": rows,
            "timings_s": timings}


def merge_previous(path: Path, result: dict) -> dict:
    """``result`` plus the rows of sections an earlier run at the same cells wrote to ``path`` and this run did not
    compute, so sections run one at a time end up in one JSON."""
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError):
        return result
    if (prev.get("cells"), prev.get("arch_seed")) != (result["cells"], result["arch_seed"]):
        return result
    done = {r["section"] for r in result["rows"]}
    kept = [r for r in prev.get("rows", []) if r["section"] not in done]
    timings = {**prev.get("timings_s", {}), **result["timings_s"]}
    return {**result, "rows": kept + result["rows"], "timings_s": timings}


def format_table(result: dict) -> str:
    lines, section = [], None
    for r in result["rows"]:
        if r["section"] != section:
            section = r["section"]
            lines += ["", f"{section}  (n={r['n']})",
                      f"  {'proxy':<12}{'ours':>9}{'boot. SE':>10}{'published':>11}{'delta':>9}  pass"]
        se = "" if r.get("se") is None else f"{r['se']:.3f}"
        pub = "" if r["published"] is None else f"{r['published']:.4g}"
        delta = "" if r["delta"] is None else f"{r['delta']:+.3f}"
        ok = {True: "yes", False: "NO", None: ""}[r["pass"]]
        lines.append(f"  {r['name']:<12}{r['ours']:>9.3f}{se:>10}{pub:>11}{delta:>9}  {ok}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--arch-seed", type=int, default=0)
    ap.add_argument("--sections", default="iclr21,nbsz,eznas,other")
    ap.add_argument("--other-cells", type=int, default=None,
                    help="score the 'other' section on the first N cells of the sample only (default: all)")
    ap.add_argument("--out", default="bench/out/fidelity")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--report-only", action="store_true",
                    help="score nothing: the table over the cells each run has scored so far (n per section)")
    args = ap.parse_args()
    result = run(args)
    scope = "the cells scored so far of " if result["report_only"] else ""
    print(f"NB201 fidelity on {scope}{result['cells']} cells (sample seed {result['arch_seed']})")
    print(format_table(result))
    print()
    path = Path(args.out) / "fidelity_nb201.json"
    write_json(path, merge_previous(path, result))


if __name__ == "__main__":
    main()
