"""Transfer of the contrastive CG predictor (jzcp.predictor) across NB101 / NB201 / NB301.

Protocol (Han et al., SDM 2023; GENNAPE's zero-shot + 50-sample fine-tune protocol):

1. Computation graphs of every family are traced (``jzcp.predictor.families``) and cached under
   ``results/graphs/`` (gitignored; tracing is resumable). A family that fails to load is skipped, with the reason.
2. The encoder is pre-trained contrastively on the unlabeled distinct graphs of *all* families (the labelled
   ones and ``--unlabeled``: NAS-Bench-Macro / MobileNetV3 samples). The target's graphs are included:
   unlabeled graphs are free, the transductive setting of the paper.
3. For every transfer pair (``--pairs nb101>nb201,...``; default leave-one-family-out over ``--families``): a
   regression head is fitted on the labelled source families (targets z-scored per family; frozen encoder),
   once per seed, and evaluated on all of the target zero-shot; then fine-tuned on K labelled target samples
   (per seed a different draw) and evaluated on the rest. Ablation: the same without pre-training (random
   encoder trained end to end on the sources). Baselines on the same target cells: parameter count of the
   traced graphs (all cells), and synflow / jacov twice -- NAS-Bench-Suite-Zero's reference values and jzcp's
   own (``--baselines``: ``jzcp score`` output folders) -- each on the cells that have them, the predictor
   re-scored on exactly those cells (K-shot: on each seed's test cells among them).
4. ``--within``: K labelled samples of one family, the rest evaluated (frozen pre-trained encoder vs. none).

Ground truth: NB101 500 cells (NAS-Bench-Suite-Zero, 108-epoch val accuracy), NB201 CIFAR-10 ``c10valid_val`` on a
seeded random subset (``nb201:N``), NB301 1,218 DARTS cells (surrogate accuracy). Metrics: Spearman, Kendall tau,
NDCG@10, mean ± std over seeds. Output: a JSON report and a Markdown table (printed, and next to the JSON).

    python bench/predictor_transfer.py --pairs nb101>nb201 --seeds 3            # the reduced setting (~10 min)
    python bench/predictor_transfer.py --families nb101,nb201:2000,nb301 --unlabeled macro:500,mbv3:300
"""
from __future__ import annotations

import argparse
import dataclasses
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


def _mean_std(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k != "n"]
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
            for k in keys} | {"n": rows[0]["n"], "seeds": len(rows)}


def _z(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return (a - a.mean()) / (a.std() or 1.0)


def parse_pairs(spec: str | None, labelled: list[str]) -> list[tuple[list[str], str]]:
    """``"nb101>nb201,nb101+nb301>nb201"`` -> ``[(["nb101"], "nb201"), (["nb101", "nb301"], "nb201")]``;
    ``None``: leave one family out over ``labelled``."""
    if not spec:
        return [([f for f in labelled if f != t], t) for t in labelled] if len(labelled) >= 2 else []
    out = []
    for part in spec.split(","):
        src, sep, tgt = part.partition(">")
        if not sep:
            raise ValueError(f"pair {part!r}: expected SOURCES>TARGET, e.g. nb101+nb301>nb201")
        sources = [s.strip() for s in src.split("+") if s.strip()]
        for f in sources + [tgt.strip()]:
            if f not in labelled:
                raise ValueError(f"pair {part!r}: {f} is not among the loaded labelled families {labelled}")
        out.append((sources, tgt.strip()))
    return out


def benchmark_index(fam) -> np.ndarray:
    """The benchmark index of each item of a labelled family (``Family.meta["items"]``, "all" = every item in
    order): NB201's official cell index, NB101 / NB301's position in NAS-Bench-Suite-Zero's list."""
    items = fam.meta.get("items")
    return np.arange(len(fam)) if items in (None, "all") else np.asarray(items)


def reference_baselines(name: str, index: np.ndarray, data_dir=None) -> dict[str, np.ndarray]:
    """NAS-Bench-Suite-Zero synflow / jacov values of the items ``index`` (benchmark indices) of family ``name``
    (NaN where missing; nwot is left out: NASLib's NB101 file has none, and the comparison uses the cells where
    every baseline exists)."""
    from jzcp import data

    out = {}
    if name in ("nb101", "nb301"):
        zc = data.load_naslib_zc(name, "cifar10", data_dir=data_dir)
        for p in ("synflow", "jacov"):
            out[p] = np.asarray(zc.proxy(p), np.float64)[index]  # a copy: the loaded arrays are read-only
    elif name == "nb201":
        ref = data.load_nb201_proxies("c10", "nbsz", data_dir=data_dir)
        gt = data.load_nb201(data_dir)
        if np.array_equal(np.asarray(ref.op_idx)[index], np.asarray(gt.op_idx)[index]):
            for p in ("synflow", "jacov"):
                v = np.asarray(ref.proxy(p), np.float64)[index]
                v[~np.asarray(ref.mask)[index]] = np.nan
                out[p] = v
    for p, v in out.items():
        v[~np.isfinite(v) | (v <= -1e7)] = np.nan  # NASLib failure sentinels
    return out


def jzcp_baselines(name: str, index: np.ndarray, root: Path, proxies=("synflow", "jacov")) -> dict[str, np.ndarray]:
    """synflow / jacov computed by jzcp itself (``jzcp score --space NAME --proxies synflow,jacov --out
    ROOT/NAME``) for the items ``index`` (benchmark indices) of family ``name``, NaN where not scored: a run may
    cover a subset, scoring a network with every candidate op costs 2.7 s (NB201) to 30 s (NB301) per
    architecture on the 2-core CPU."""
    from jzcp.scoring import read_scores

    where = {int(b): i for i, b in enumerate(index)}
    out = {p: np.full(len(index), np.nan) for p in proxies}
    for r in read_scores(Path(root) / name / "scores.csv").values():
        i = where.get(int(r["index"]))
        if i is None:
            continue
        for p in proxies:
            v = float(r.get(p) or "nan")
            out[p][i] = v if np.isfinite(v) else np.nan
    return out if any(np.isfinite(v).any() for v in out.values()) else {}


def compare_on_cells(values: dict[str, np.ndarray], y: np.ndarray, preds: list[np.ndarray], tests=None) -> dict | None:
    """The predictor and the baseline proxies on the same cells: those where every baseline has a value (and,
    for K-shot, that seed's test cells ``tests[seed]``). ``preds[seed]`` covers those test cells in order (or
    all cells when ``tests`` is None). Spearman / Kendall / NDCG@10, mean ± std over seeds."""
    from jzcp.predictor import rank_metrics

    ok = np.all([np.isfinite(v) for v in values.values()], axis=0)
    rows, base = [], {p: [] for p in values}
    for s, pred in enumerate(preds):
        te = np.arange(len(y)) if tests is None else np.asarray(tests[s])
        keep = ok[te]
        if keep.sum() < 10:
            return None
        rows.append(rank_metrics(np.asarray(pred)[keep], y[te][keep]))
        for p, v in values.items():
            base[p].append(rank_metrics(v[te][keep], y[te][keep]))
    return {"n": int(rows[0]["n"]), "predictor": _mean_std(rows), **{p: _mean_std(r) for p, r in base.items()}}


def run(args) -> tuple[dict, dict[str, dict]]:
    """The report and, per transfer pair, the saved predictions (for :func:`baseline_cells`)."""

    import jax

    import jzcp.graph as G
    from jzcp import predictor as P
    from jzcp.predictor import families as F

    t_all = time.perf_counter()
    out: dict = {"device": str(jax.devices()[0]), "args": vars(args), "families": {}, "skipped": {}}
    fams: dict = {}
    for spec in [s for s in (args.families, args.unlabeled) if s]:
        for name, limit in F.parse_spec(spec):
            t = time.perf_counter()
            try:
                fams[name] = F.load_family(name, limit, cache_dir=GRAPH_DIR, workers=args.workers, progress=True)
            except Exception as e:  # missing / broken network: skip the family, say why
                out["skipped"][name] = f"{type(e).__name__}: {e}"
                print(f"[skip] {name}: {type(e).__name__}: {e}", flush=True)
                if args.verbose:
                    traceback.print_exc()
                continue
            out["families"][name] = fams[name].summary() | {"load_s": round(time.perf_counter() - t, 1)}
            print(f"[data] {name}: {out['families'][name]}", flush=True)
    labelled = [n for n, f in fams.items() if f.labelled]
    pairs = parse_pairs(args.pairs, labelled)

    enc = P.EncoderConfig(hidden=args.hidden, num_layers=args.layers, layer=args.layer, readout=args.readout,
                          features=args.features, graph_features=args.graph_features)
    pcfg = P.PretrainConfig(encoder=enc, epochs=args.pretrain_epochs, batch_size=args.batch_size,
                            temperature=args.temperature, patience=max(3, args.pretrain_epochs // 3))
    fit_src = P.FitConfig(mode="frozen", loss=args.loss, epochs=args.fit_epochs, patience=30, adapt=args.adapt,
                          targets=args.targets)
    fit_k = P.FitConfig(mode=args.k_mode, loss=args.loss, epochs=args.finetune_epochs, batch_size=16,
                        dev_fraction=0.2, patience=15, lr=1e-3, encoder_lr_scale=0.1, adapt=args.adapt,
                        targets=args.targets)
    fit_scratch = P.FitConfig(mode="finetune", loss=args.loss, epochs=args.scratch_epochs, batch_size=64,
                              dev_fraction=0.2, patience=5, lr=1e-3, adapt=args.adapt, targets=args.targets)
    # K-shot probes: linear (LOO-chosen penalty) and Gaussian-kernel (LOO-chosen width and penalty)
    fit_ridge = P.FitConfig(mode="frozen", head="ridge", adapt=True, targets=args.targets)
    fit_kernel = P.FitConfig(mode="frozen", head="kernel", adapt=True, targets=args.targets)

    # 1. contrastive pre-training on the unlabeled distinct graphs of every family
    unlabeled = [g for f in fams.values() for g in f.graphs(distinct=True)]
    t = time.perf_counter()
    pres = []
    for i in range(args.encoders):  # --encoders > 1: one pre-training per seed, for the K-shot ridge ensembles
        cfg_i = dataclasses.replace(pcfg, seed=i)
        tag = hashlib.sha1(json.dumps(dataclasses.asdict(cfg_i), sort_keys=True).encode()).hexdigest()[:8]
        # the graph count is in the name: nb201:2000 and nb201:all pre-train on different sets of the same families
        ckpt = ROOT / "results" / "predictor" / f"pretrain_{'_'.join(sorted(fams))}_{len(unlabeled)}g_{tag}.ckpt"
        pres.append(P.pretrain(unlabeled, cfg_i, log=lambda s: print("[pretrain]", s, flush=True), checkpoint=ckpt))
    pre = pres[0]
    out["pretrain"] = {"graphs": len(unlabeled), "families": sorted(fams), "wall_s": round(time.perf_counter() - t, 1),
                       "encoders": len(pres), "epochs_run": [len(r.history) for r in pres],
                       "history": pre.history.tolist(), "config": dataclasses.asdict(pcfg)}
    out["fit_configs"] = {"source": dataclasses.asdict(fit_src), "k_shot": dataclasses.asdict(fit_k),
                          "scratch": dataclasses.asdict(fit_scratch), "k_shot_ridge": dataclasses.asdict(fit_ridge),
                          "k_shot_kernel": dataclasses.asdict(fit_kernel)}
    # the no-pre-training ablation of the frozen / ridge heads: random encoders with the pre-training seeds' inits
    rnds = [P.random_encoder(enc, i) for i in range(args.encoders)]

    def k_shot(name, bases, cfg, k):
        """Per seed: fine-tune ``bases[seed]`` (or a fresh predictor if None) on K random items, evaluate the
        rest. A tuple of bases is an ensemble: one fit per base, their z-scored predictions averaged."""
        f = fams[name]
        graphs, y = f.graphs(), f.targets
        rows, preds, tests = [], [], []
        for s, base in enumerate(bases):
            perm = np.random.default_rng([s, 99]).permutation(len(y))
            tr, te = perm[:k], perm[k:]
            members = []
            for b in (base if isinstance(base, tuple) else (base,)):
                m = P.fit([graphs[i] for i in tr], y[tr], dataclasses.replace(cfg, seed=s), pretrained=b,
                          encoder=None if b is not None else enc)
                members.append(P.predict(m, [graphs[i] for i in te]))
            preds.append(members[0] if len(members) == 1 else np.mean([_z(p) for p in members], axis=0))
            tests.append(te)
            rows.append(P.rank_metrics(preds[-1], y[te]))
        return _mean_std(rows), preds, tests

    def probe_rows(row, prefix, encoders, name, saved=None):
        """K-shot ridge and kernel probes on the first encoder and, with several, on all of them as an ensemble:
        rows ``{prefix}k{K}_{probe}[_ensemble]``; their predictions and test cells go to ``saved`` if given."""
        bases = [("", encoders[0])] + [("_ensemble", tuple(encoders))] * (len(encoders) > 1)
        for probe, cfg in (("ridge", fit_ridge), ("kernel", fit_kernel)):
            for suffix, base in bases:
                row[f"{prefix}k{args.k}_{probe}{suffix}"], kp, kt = k_shot(name, [base] * args.seeds, cfg, args.k)
                if saved is not None:
                    saved |= {f"k_{probe}{suffix}": np.stack(kp), "k_test": np.stack(kt)}

    def zero_shot(models, name):
        f = fams[name]
        graphs, y = f.graphs(), f.targets
        preds = [P.predict(m, graphs) for m in models]
        ens = np.mean([_z(p) for p in preds], axis=0)
        return _mean_std([P.rank_metrics(p, y) for p in preds]), P.rank_metrics(ens, y), preds

    # 2. transfer pairs
    out["transfer"] = {}
    predictions: dict[str, dict] = {}
    for sources, target in pairs:
        key = f"{'+'.join(sources)}>{target}"
        t = time.perf_counter()
        g_src, y_src, grp = F.standardise_per_family([fams[s] for s in sources])
        models = [P.fit(g_src, y_src, dataclasses.replace(fit_src, seed=s), pretrained=pre, groups=grp)
                  for s in range(args.seeds)]
        row = {"sources": sources, "target": target, "fit_wall_s": round(time.perf_counter() - t, 1)}
        row["zero_shot"], row["zero_shot_ensemble"], preds = zero_shot(models, target)
        f_t = fams[target]
        cost = np.stack([G.node_costs(g.nodes).sum(0) for g in f_t.graphs()])
        row["baselines"] = {"params (graph)": P.rank_metrics(cost[:, 1], f_t.targets)}
        # the predictions, for the synflow / jacov comparison (redone by --compare-only when baselines change)
        saved = {"targets": f_t.targets, "index": benchmark_index(f_t), "zero_shot": np.stack(preds)}
        if args.k:
            t = time.perf_counter()
            probe_rows(row, "", pres, target, saved)
            row[f"k{args.k}_finetune"] = k_shot(target, models, fit_k, args.k)[0]
            row["k_shot_wall_s"] = round(time.perf_counter() - t, 1)
        row["baseline_cells"] = baseline_cells(target, saved, args)
        predictions[key] = saved
        if not args.no_ablation:
            t = time.perf_counter()
            scratch = [P.fit(g_src, y_src, dataclasses.replace(fit_scratch, seed=s), encoder=enc, groups=grp)
                       for s in range(args.seeds)]
            row["no_pretrain_zero_shot"], row["no_pretrain_zero_shot_ensemble"], _ = zero_shot(scratch, target)
            if args.k:
                probe_rows(row, "no_pretrain_", rnds, target)
                row[f"no_pretrain_k{args.k}_finetune"] = k_shot(target, scratch, fit_k, args.k)[0]
            row["no_pretrain_wall_s"] = round(time.perf_counter() - t, 1)
        out["transfer"][key] = row
        print(f"[transfer] {key}: {json.dumps(row)}", flush=True)

    # 3. within-family: K labelled samples of one family, the rest evaluated
    out["within"] = {}
    if args.within and args.k:
        for name in labelled:
            row = {f"k{args.k}_pretrained_frozen": k_shot(
                       name, [pre] * args.seeds, dataclasses.replace(fit_src, batch_size=16, dev_fraction=0.2), args.k)[0],
                   f"k{args.k}_no_pretrain": k_shot(name, [None] * args.seeds, fit_k, args.k)[0]}
            out["within"][name] = row
            print(f"[within] {name}: {json.dumps(row)}", flush=True)
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    return out, predictions


def baseline_cells(target: str, saved: dict, args) -> dict:
    """synflow / jacov against the predictor on the same target cells, once with NAS-Bench-Suite-Zero's values
    and once with jzcp's own (``--baselines``): zero-shot (every seed's predictions of all cells) and the K-shot
    probes (each seed's test cells), restricted to the cells where both proxies have a value."""
    sources = {"nbsz": reference_baselines(target, saved["index"]),
               "jzcp": jzcp_baselines(target, saved["index"], Path(args.baselines))}
    out = {}
    for src, vals in sources.items():
        if not vals:
            continue
        out[src] = {"zero_shot": compare_on_cells(vals, saved["targets"], list(saved["zero_shot"]))}
        for name in ("k_ridge", "k_ridge_ensemble", "k_kernel", "k_kernel_ensemble"):
            if name in saved:
                out[src][name.replace("k_", f"k{args.k}_", 1)] = compare_on_cells(
                    vals, saved["targets"], list(saved[name]), list(saved["k_test"]))
    return out


def save_predictions(path: Path, predictions: dict[str, dict]) -> None:
    """``{pair: {name: array}}`` as one npz (keys ``pair/name``), written atomically."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **{f"{k}/{n}": np.asarray(v) for k, d in predictions.items() for n, v in d.items()})
    os.replace(tmp, path)


def load_predictions(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    with np.load(path) as z:
        for name in z.files:
            k, _, n = name.rpartition("/")
            out.setdefault(k, {})[n] = z[name]
    return out


def _ms(d) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}" if isinstance(d, dict) and "mean" in d else f"{d:.3f}"


def markdown(out: dict) -> str:
    """The transfer rows as a Markdown table (Spearman; Kendall / NDCG@10 in the JSON)."""
    k = out["args"]["k"]
    cols = [("zero-shot", "zero_shot"), ("zero-shot ens.", "zero_shot_ensemble")]
    ens = out["args"].get("encoders", 1) > 1
    if k:
        for probe in ("ridge", "kernel"):
            cols += [(f"K={k} {probe}", f"k{k}_{probe}")] + [(f"K={k} {probe} ens.", f"k{k}_{probe}_ensemble")] * ens
        cols += [(f"K={k} fine-tune", f"k{k}_finetune")]
    cols += [("no-pretrain zero-shot", "no_pretrain_zero_shot")]
    if k:
        for probe in ("ridge", "kernel"):
            cols += [(f"no-pretrain K={k} {probe}", f"no_pretrain_k{k}_{probe}")]
            cols += [(f"no-pretrain K={k} {probe} ens.", f"no_pretrain_k{k}_{probe}_ensemble")] * ens
        cols += [(f"no-pretrain K={k} fine-tune", f"no_pretrain_k{k}_finetune")]
    head = ["sources → target"] + [c for c, _ in cols] + ["params (graph)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, r in out["transfer"].items():
        cells = [key.replace(">", " → ")]
        cells += [_ms(r[f]["spearman"]) if f in r else "–" for _, f in cols]
        cells.append(_ms(r["baselines"]["params (graph)"]["spearman"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Spearman on the target, mean ± std over seeds (zero-shot: head seeds, 'ens.' = their averaged z-scored "
                 "predictions; K-shot: the K draw and head seed; evaluated on the other cells; 'ridge' / 'kernel': "
                 "the linear / Gaussian-kernel probe; 'ens.': the probes of every encoder (pre-training seed / random "
                 "init), z-scored predictions averaged).")
    probes = [f"k{k}_ridge"] + [f"k{k}_ridge_ensemble"] * ens + [f"k{k}_kernel"] + [f"k{k}_kernel_ensemble"] * ens
    lines += ["", "| sources → target | synflow / jacov by | cells | predictor zero-shot | "
              + "".join(f"predictor {p.replace(f'k{k}_', f'K={k} ').replace('_ensemble', ' ens.')} | " for p in probes)
              + "synflow | jacov |", "|" + "---|" * (6 + len(probes))]
    for key, r in out["transfer"].items():
        for src, name in (("nbsz", "NAS-Bench-Suite-Zero"), ("jzcp", "jzcp")):
            c = r.get("baseline_cells", {}).get(src, {})
            z = c.get("zero_shot")
            if not z:
                continue
            cells = [key.replace(">", " → "), name, str(z["n"]), _ms(z["predictor"]["spearman"])]
            cells += [_ms(c[p]["predictor"]["spearman"]) if c.get(p) else "–" for p in probes]
            cells += [_ms(z["synflow"]["spearman"]), _ms(z["jacov"]["spearman"])]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Baselines on the target cells that have both values; the predictor re-scored on exactly those cells "
                 f"(K={k}: on those of each seed's test cells; the proxies on the same test cells are in the JSON).")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="nb101,nb201:2000,nb301", help="labelled families (graphs + targets)")
    ap.add_argument("--unlabeled", default="", help="extra unlabeled families for pre-training, e.g. macro:500,mbv3:300")
    ap.add_argument("--pairs", default=None, help="SOURCES>TARGET list, e.g. nb101>nb201,nb101+nb301>nb201 "
                                                  "(default: leave one family out)")
    ap.add_argument("--k", type=int, default=50, help="fine-tuning samples of the target (0: none)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--layer", default="graphconv")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--readout", default="mean+sum")
    ap.add_argument("--features", default="cost")
    ap.add_argument("--graph-features", action="store_true", help="head also reads log total MACs / params / nodes")
    ap.add_argument("--encoders", type=int, default=1,
                    help="pre-trained (and random) encoders, seeds 0..N-1: N > 1 adds K-shot ridge ensemble rows")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    ap.add_argument("--fit-epochs", type=int, default=200)
    ap.add_argument("--finetune-epochs", type=int, default=40)
    ap.add_argument("--scratch-epochs", type=int, default=15)
    ap.add_argument("--loss", default="mse")
    ap.add_argument("--targets", default="zscore", choices=["zscore", "rank"],
                    help="regression targets of every head: z-scored labels or their per-family normal scores")
    ap.add_argument("--adapt", action="store_true", help="per-family standardisation of the head inputs (transductive)")
    ap.add_argument("--k-mode", default="finetune", choices=["finetune", "frozen"],
                    help="K-shot: fine-tune everything or only the head")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--within", action="store_true", help="also K-shot within each family")
    ap.add_argument("--no-ablation", action="store_true", help="skip the no-pre-training rows")
    ap.add_argument("--build-only", action="store_true", help="only trace and cache the graphs")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--baselines", default=str(ROOT / "results" / "jzcp_baselines"),
                    help="folder of jzcp's own synflow / jacov scores, one 'jzcp score --out' folder per family "
                         "(FOLDER/nb201/scores.csv, ...); the cells they cover are compared (default %(default)s)")
    ap.add_argument("--compare-only", action="store_true",
                    help="recompute only the synflow / jacov comparison of the run in --out (its .preds.npz) "
                         "with the baselines now in --baselines")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "predictor_transfer.json"))
    args = ap.parse_args(argv)
    if args.build_only:
        from jzcp.predictor import families as F

        for spec in [s for s in (args.families, args.unlabeled) if s]:
            for name, limit in F.parse_spec(spec):
                try:
                    f = F.load_family(name, limit, cache_dir=GRAPH_DIR, workers=args.workers, progress=True)
                    print(json.dumps(f.summary()), flush=True)
                except Exception as e:
                    print(f"[skip] {name}: {type(e).__name__}: {e}", flush=True)
        return
    path = Path(args.out)
    preds_path = path.with_suffix(".preds.npz")
    if args.compare_only:  # redo the synflow / jacov comparison of a finished run with the current baselines
        out = json.loads(path.read_text())
        args.k = out["args"]["k"]
        for key, saved in load_predictions(preds_path).items():
            out["transfer"][key]["baseline_cells"] = baseline_cells(out["transfer"][key]["target"], saved, args)
    else:
        out, predictions = run(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_predictions(preds_path, predictions)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)
    table = markdown(out)
    path.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"wrote {path} ({out['wall_s']} s)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
