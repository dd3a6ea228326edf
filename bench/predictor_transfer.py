"""Leave-one-family-out transfer of the contrastive CG predictor (jzcp.predictor) on NB101 / NB201 / NB301.

Protocol (Han et al., SDM 2023; GENNAPE's zero-shot + 50-sample fine-tune protocol):

1. Computation graphs of every family whose network exists in ``jzcp.networks`` are traced
   (``jzcp.graph.graph_of_module``) and cached under ``results/graphs/`` (gitignored). A family whose network
   is missing or fails to trace is reported as skipped, with the reason.
2. For each held-out target family T among those with ground truth: the encoder is pre-trained
   contrastively on the unlabeled graphs of *all* families (T's included: unlabeled graphs are free -- the
   transductive setting of the paper), a regression head is fitted on the labelled *other* families (frozen
   encoder), then evaluated on T zero-shot and after fine-tuning on K labelled T samples (5 seeds).
   Ablation: the same fitting without pre-training (random encoder, trained end to end).
3. Within-NB201 (always possible): fit on a small labelled NB201 subset, evaluate on the rest.

Ground truth: NB101 500 cells (NAS-Bench-Suite-Zero, 108-epoch val accuracy), NB201 CIFAR-10 ``c10valid_val``
(for a random subset of cells, ``--nb201-cells``; tracing all 15,625 cells takes ~40 min on 2 cores), NB301
1,218 DARTS cells (surrogate accuracy). Metrics: Spearman, Kendall tau, NDCG@10 on the evaluated cells
(zero-shot: all cells of T; fine-tuned: all cells but the K used).

    python bench/predictor_transfer.py [--quick] [--families nb101,nb201,nb301] [--out bench/out/predictor_transfer.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRAPH_DIR = ROOT / "results" / "graphs"


# --- graph functions per family (module level: picklable for worker processes) ------------------------------------


@functools.lru_cache(maxsize=1)
def _nb101_setup():
    import jax
    import jax.numpy as jnp

    from jzcp.networks import nb101

    cfg = nb101.NB101Config()
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), nb101._param_shapes(cfg, (32, 32, 3)))
    return nb101.NB101Network(cfg), params, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)


def nb101_graph(naslib_tuple):
    """Graph of an NB101 cell given as a NASLib flat tuple."""
    import jzcp.graph as G
    from jzcp.networks import nb101
    from jzcp.spaces import nb101 as space

    module, params, x = _nb101_setup()
    arch = nb101.encode(space.parse_naslib(tuple(int(v) for v in naslib_tuple)))
    return G.graph_of_module(module, params, x, np.asarray(arch, np.int32))


@functools.lru_cache(maxsize=1)
def _nb301_setup():
    import jax
    import jax.numpy as jnp

    from jzcp.networks import darts

    cfg = darts.DartsConfig.nb301()
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), darts._param_shapes(cfg, (32, 32, 3)))
    return darts.DartsNetwork(cfg), params, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)


def nb301_graph(arch):
    """Graph of an NB301 (DARTS) genotype ``(2, 8, 2)`` (NASLib compact)."""
    import jzcp.graph as G

    module, params, x = _nb301_setup()
    return G.graph_of_module(module, params, x, np.asarray(arch, np.int32).reshape(2, 8, 2))


def _pad_nb101(archs) -> np.ndarray:
    """NASLib tuples of varying cell size -> a fixed-width int array (for the cache fingerprint); -1 pads."""
    w = max(len(a) for a in archs)
    out = np.full((len(archs), w + 1), -1, np.int32)
    for i, a in enumerate(archs):
        out[i, 0] = len(a)
        out[i, 1:len(a) + 1] = a
    return out


def _nb101_from_padded(row):
    return nb101_graph(row[1:row[0] + 1])


def load_family(name: str, *, nb201_cells: int, seed: int, workers: int):
    """``(GraphDataset, targets (I,) percent, description)`` of a family; raises on a missing network."""
    import jzcp.graph as G
    from jzcp.data import load_naslib_zc, load_nb201

    if name == "nb201":
        gt = load_nb201()
        items = np.arange(len(gt)) if nb201_cells >= len(gt) else np.sort(
            np.random.default_rng(seed).choice(len(gt), nb201_cells, replace=False))
        suffix = "" if nb201_cells >= len(gt) else f"_sub{nb201_cells}_seed{seed}"
        ds = G.nb201_dataset(gt.op_idx[items], GRAPH_DIR / f"nb201_c10{suffix}.npz", workers=workers, progress=True)
        return ds, gt.target("c10valid_val")[items], f"NB201 CIFAR-10 c10valid_val, {len(items)} random cells (seed {seed})"
    if name == "nb101":
        zc = load_naslib_zc("nb101", "cifar10")
        archs = _pad_nb101([tuple(a) for a in zc.archs])
        ds = G.GraphDataset.cached(GRAPH_DIR / "nb101_naslib500.npz", archs, _nb101_from_padded,
                                   key="nb101|naslib500|NB101Config()", workers=workers, progress=True)
        return ds, np.asarray(zc.val_accuracy), "NB101 500 NAS-Bench-Suite-Zero cells, 108-epoch val accuracy"
    if name == "nb301":
        zc = load_naslib_zc("nb301", "cifar10")
        archs = np.stack([np.asarray(a, np.int32) for a in zc.archs])
        ds = G.GraphDataset.cached(GRAPH_DIR / "nb301_naslib1218.npz", archs, nb301_graph,
                                   key="nb301|naslib1218|DartsConfig.nb301()", workers=workers, progress=True)
        return ds, np.asarray(zc.val_accuracy), "NB301 1,218 NAS-Bench-Suite-Zero DARTS cells, surrogate accuracy"
    raise ValueError(f"unknown family {name!r}")


# --- experiments -------------------------------------------------------------------------------------------------


def _mean_std(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k != "n"]
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
            for k in keys} | {"n": rows[0]["n"], "seeds": len(rows)}


def run(args) -> dict:
    import jax

    from jzcp import predictor as P

    t_all = time.perf_counter()
    out: dict = {"device": str(jax.devices()[0]), "args": vars(args), "families": {}, "skipped": {}}
    fams = {}
    for name in args.families.split(","):
        t = time.perf_counter()
        try:
            ds, y, desc = load_family(name, nb201_cells=args.nb201_cells, seed=0, workers=args.workers)
        except Exception as e:  # missing / broken network: skip the family, say why
            out["skipped"][name] = f"{type(e).__name__}: {e}"
            print(f"[skip] {name}: {type(e).__name__}: {e}", flush=True)
            if args.verbose:
                traceback.print_exc()
            continue
        graphs = P.graphs_of(ds)
        fams[name] = (ds, graphs, np.asarray(y, np.float64))
        out["families"][name] = {"description": desc, "items": len(ds), "distinct_graphs": ds.num_graphs,
                                 "mean_nodes": float(ds.num_nodes.mean()), "max_nodes": int(ds.num_nodes.max()),
                                 "graph_seconds": round(time.perf_counter() - t, 1)}
        print(f"[data] {name}: {out['families'][name]}", flush=True)

    enc = P.EncoderConfig(hidden=args.hidden, num_layers=args.layers, layer=args.layer)
    pcfg = P.PretrainConfig(encoder=enc, epochs=args.pretrain_epochs, batch_size=args.batch_size,
                            patience=max(3, args.pretrain_epochs // 3))
    fit_src = P.FitConfig(mode="frozen", loss=args.loss, epochs=args.fit_epochs, patience=30)
    fit_k = P.FitConfig(mode="finetune", loss=args.loss, epochs=args.finetune_epochs, batch_size=16,
                        dev_fraction=0.2, patience=15, lr=1e-3, encoder_lr_scale=0.1)
    fit_scratch = dataclasses.replace(fit_k, encoder_lr_scale=1.0)

    # 1. contrastive pre-training on the unlabeled distinct graphs of every available family
    unlabeled = [g for ds, _, _ in fams.values() for g in P.graphs_of(ds, distinct=True)]
    t = time.perf_counter()
    # one checkpoint per (families, config): a rerun resumes / reuses it, another config gets its own file
    tag = hashlib.sha1(json.dumps(dataclasses.asdict(pcfg), sort_keys=True).encode()).hexdigest()[:8]
    pre = P.pretrain(unlabeled, pcfg, log=lambda s: print("[pretrain]", s, flush=True),
                     checkpoint=ROOT / "results" / "predictor" / f"pretrain_{'_'.join(sorted(fams))}_{tag}.ckpt")
    out["pretrain"] = {"graphs": len(unlabeled), "families": sorted(fams), "wall_s": round(time.perf_counter() - t, 1),
                       "epochs_run": len(pre.history), "history": pre.history.tolist(),
                       "config": dataclasses.asdict(pcfg)}
    out["fit_configs"] = {"source": dataclasses.asdict(fit_src), "k_shot": dataclasses.asdict(fit_k)}
    rng_eval = np.random.default_rng(123)

    def k_shot(name, base, cfg, seeds, k):
        _, graphs, y = fams[name]
        rows = []
        for s in range(seeds):
            perm = np.random.default_rng([s, 99]).permutation(len(y))
            tr, te = perm[:k], perm[k:]
            m = P.fit([graphs[i] for i in tr], y[tr], dataclasses.replace(cfg, seed=s), pretrained=base,
                      encoder=enc)
            rows.append(P.evaluate(m, [graphs[i] for i in te], y[te]))
        return _mean_std(rows)

    # 2. leave one family out
    out["transfer"] = {}
    if len(fams) >= 2:
        for target in fams:
            src = [f for f in fams if f != target]
            t = time.perf_counter()
            g_src = [g for f in src for g in fams[f][1]]
            # standardise each source family's accuracies separately: families differ in scale
            y_src = np.concatenate([(fams[f][2] - fams[f][2].mean()) / fams[f][2].std() for f in src])
            model = P.fit(g_src, y_src, fit_src, pretrained=pre)
            fit_s = time.perf_counter() - t
            _, g_t, y_t = fams[target]
            row = {"sources": src, "fit_wall_s": round(fit_s, 1),
                   "zero_shot": P.evaluate(model, g_t, y_t)}
            row[f"k{args.k}_finetune"] = k_shot(target, model, fit_k, args.seeds, args.k)
            # ablation: no contrastive pre-training (random encoder trained end to end on the sources)
            t = time.perf_counter()
            scratch = P.fit(g_src, y_src, dataclasses.replace(fit_scratch, epochs=args.scratch_epochs,
                                                               batch_size=64), encoder=enc)
            row["no_pretrain_zero_shot"] = P.evaluate(scratch, g_t, y_t)
            row[f"no_pretrain_k{args.k}_finetune"] = k_shot(target, scratch, fit_k, args.seeds, args.k)
            row["no_pretrain_fit_wall_s"] = round(time.perf_counter() - t, 1)
            out["transfer"][target] = row
            print(f"[transfer] -> {target}: {json.dumps(row)}", flush=True)
    else:
        out["transfer_note"] = "fewer than two families available: no leave-one-family-out transfer"

    # 3. within-family: K labelled samples of one family, the rest evaluated
    out["within"] = {}
    for name in fams:
        row = {f"k{args.k}_pretrained_frozen": k_shot(name, pre, dataclasses.replace(fit_src, batch_size=16,
                                                                                     dev_fraction=0.2), args.seeds, args.k),
               f"k{args.k}_no_pretrain": k_shot(name, None, fit_scratch, args.seeds, args.k)}
        if args.within_finetune:
            row[f"k{args.k}_pretrained_finetune"] = k_shot(name, pre, fit_k, args.seeds, args.k)
        out["within"][name] = row
        print(f"[within] {name}: {json.dumps(row)}", flush=True)
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="nb101,nb201,nb301")
    ap.add_argument("--nb201-cells", type=int, default=2000)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--layer", default="graphconv")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--pretrain-epochs", type=int, default=15)
    ap.add_argument("--fit-epochs", type=int, default=200)
    ap.add_argument("--finetune-epochs", type=int, default=40)
    ap.add_argument("--scratch-epochs", type=int, default=15)
    ap.add_argument("--loss", default="mse+rank")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--within-finetune", action="store_true", help="also fine-tune the encoder within a family")
    ap.add_argument("--build-only", action="store_true", help="only trace and cache the graphs")
    ap.add_argument("--quick", action="store_true", help="small settings for a smoke run")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "predictor_transfer.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.nb201_cells, args.seeds = min(args.nb201_cells, 2000), min(args.seeds, 2)
        args.hidden, args.layers = 32, 4
        args.pretrain_epochs, args.fit_epochs, args.finetune_epochs, args.scratch_epochs = 3, 60, 15, 4
    if args.build_only:
        for name in args.families.split(","):
            try:
                ds, _, desc = load_family(name, nb201_cells=args.nb201_cells, seed=0, workers=args.workers)
                print(f"{name}: {len(ds)} items, {ds.num_graphs} graphs ({desc})", flush=True)
            except Exception as e:
                print(f"[skip] {name}: {type(e).__name__}: {e}", flush=True)
        return
    out = run(args)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)
    print(f"wrote {path} ({out['wall_s']} s)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
