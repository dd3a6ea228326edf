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
   traced graphs (all cells) and NAS-Bench-Suite-Zero's synflow / jacov reference values (the cells that have
   them; the predictor is re-scored on exactly those cells for that comparison).
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


def reference_baselines(fam, data_dir=None) -> dict[str, np.ndarray]:
    """NAS-Bench-Suite-Zero synflow / jacov values of the family's items (NaN where missing; nwot is left out:
    NASLib's NB101 file has none, and the comparison uses the cells where every baseline exists)."""
    from jzcp import data

    n = len(fam)
    out = {}
    if fam.name in ("nb101", "nb301"):
        zc = data.load_naslib_zc(fam.name, "cifar10", data_dir=data_dir)
        if len(zc) == n:  # the family is the whole subset, in order
            for p in ("synflow", "jacov"):
                out[p] = np.array(zc.proxy(p), np.float64)  # a copy: the loaded arrays are read-only
    elif fam.name == "nb201":
        ref = data.load_nb201_proxies("c10", "nbsz", data_dir=data_dir)
        items = fam.meta.get("items")
        idx = np.arange(len(ref)) if items in (None, "all") else np.asarray(items)
        gt = data.load_nb201(data_dir)
        if np.array_equal(np.asarray(ref.op_idx)[idx], np.asarray(gt.op_idx)[idx]):
            for p in ("synflow", "jacov"):
                v = np.asarray(ref.proxy(p), np.float64)[idx].copy()
                v[~np.asarray(ref.mask)[idx]] = np.nan
                out[p] = v
    for p, v in out.items():
        v[~np.isfinite(v) | (v <= -1e7)] = np.nan  # NASLib failure sentinels
    return out


def run(args) -> dict:
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
    fit_src = P.FitConfig(mode="frozen", loss=args.loss, epochs=args.fit_epochs, patience=30, adapt=args.adapt)
    fit_k = P.FitConfig(mode=args.k_mode, loss=args.loss, epochs=args.finetune_epochs, batch_size=16,
                        dev_fraction=0.2, patience=15, lr=1e-3, encoder_lr_scale=0.1, adapt=args.adapt)
    fit_scratch = P.FitConfig(mode="finetune", loss=args.loss, epochs=args.scratch_epochs, batch_size=64,
                              dev_fraction=0.2, patience=5, lr=1e-3, adapt=args.adapt)
    fit_ridge = P.FitConfig(mode="frozen", head="ridge", adapt=True)  # K-shot linear probe, LOO-chosen penalty

    # 1. contrastive pre-training on the unlabeled distinct graphs of every family
    unlabeled = [g for f in fams.values() for g in f.graphs(distinct=True)]
    t = time.perf_counter()
    tag = hashlib.sha1(json.dumps(dataclasses.asdict(pcfg), sort_keys=True).encode()).hexdigest()[:8]
    ckpt = ROOT / "results" / "predictor" / f"pretrain_{'_'.join(sorted(fams))}_{tag}.ckpt"
    pre = P.pretrain(unlabeled, pcfg, log=lambda s: print("[pretrain]", s, flush=True), checkpoint=ckpt)
    out["pretrain"] = {"graphs": len(unlabeled), "families": sorted(fams), "wall_s": round(time.perf_counter() - t, 1),
                       "epochs_run": len(pre.history), "history": pre.history.tolist(),
                       "config": dataclasses.asdict(pcfg)}
    out["fit_configs"] = {"source": dataclasses.asdict(fit_src), "k_shot": dataclasses.asdict(fit_k),
                          "scratch": dataclasses.asdict(fit_scratch), "k_shot_ridge": dataclasses.asdict(fit_ridge)}
    rnd = P.random_encoder(enc, 0)  # the no-pre-training ablation of the frozen / ridge heads

    def k_shot(name, bases, cfg, k):
        """Per seed: fine-tune ``bases[seed]`` (or a fresh predictor if None) on K random items, evaluate the rest."""
        f = fams[name]
        graphs, y = f.graphs(), f.targets
        rows = []
        for s, base in enumerate(bases):
            perm = np.random.default_rng([s, 99]).permutation(len(y))
            tr, te = perm[:k], perm[k:]
            m = P.fit([graphs[i] for i in tr], y[tr], dataclasses.replace(cfg, seed=s), pretrained=base,
                      encoder=None if base is not None else enc)
            rows.append(P.evaluate(m, [graphs[i] for i in te], y[te]))
        return _mean_std(rows)

    def zero_shot(models, name):
        f = fams[name]
        graphs, y = f.graphs(), f.targets
        preds = [P.predict(m, graphs) for m in models]
        ens = np.mean([_z(p) for p in preds], axis=0)
        return _mean_std([P.rank_metrics(p, y) for p in preds]), P.rank_metrics(ens, y), preds

    # 2. transfer pairs
    out["transfer"] = {}
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
        ref = reference_baselines(f_t)
        if ref:
            ok = np.all([np.isfinite(v) for v in ref.values()], axis=0)
            if ok.sum() >= 10:
                row["on_reference_cells"] = {"n": int(ok.sum()),
                                             "predictor": _mean_std([P.rank_metrics(p[ok], f_t.targets[ok]) for p in preds]),
                                             **{p: P.rank_metrics(v[ok], f_t.targets[ok]) for p, v in ref.items()}}
        if args.k:
            t = time.perf_counter()
            row[f"k{args.k}_ridge"] = k_shot(target, [pre] * args.seeds, fit_ridge, args.k)
            row[f"k{args.k}_finetune"] = k_shot(target, models, fit_k, args.k)
            row["k_shot_wall_s"] = round(time.perf_counter() - t, 1)
        if not args.no_ablation:
            t = time.perf_counter()
            scratch = [P.fit(g_src, y_src, dataclasses.replace(fit_scratch, seed=s), encoder=enc, groups=grp)
                       for s in range(args.seeds)]
            row["no_pretrain_zero_shot"], row["no_pretrain_zero_shot_ensemble"], _ = zero_shot(scratch, target)
            if args.k:
                row[f"no_pretrain_k{args.k}_ridge"] = k_shot(target, [rnd] * args.seeds, fit_ridge, args.k)
                row[f"no_pretrain_k{args.k}_finetune"] = k_shot(target, scratch, fit_k, args.k)
            row["no_pretrain_wall_s"] = round(time.perf_counter() - t, 1)
        out["transfer"][key] = row
        print(f"[transfer] {key}: {json.dumps(row)}", flush=True)

    # 3. within-family: K labelled samples of one family, the rest evaluated
    out["within"] = {}
    if args.within and args.k:
        for name in labelled:
            row = {f"k{args.k}_pretrained_frozen": k_shot(
                       name, [pre] * args.seeds, dataclasses.replace(fit_src, batch_size=16, dev_fraction=0.2), args.k),
                   f"k{args.k}_no_pretrain": k_shot(name, [None] * args.seeds, fit_k, args.k)}
            out["within"][name] = row
            print(f"[within] {name}: {json.dumps(row)}", flush=True)
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    return out


def _ms(d) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}" if isinstance(d, dict) and "mean" in d else f"{d:.3f}"


def markdown(out: dict) -> str:
    """The transfer rows as a Markdown table (Spearman; Kendall / NDCG@10 in the JSON)."""
    k = out["args"]["k"]
    cols = [("zero-shot", "zero_shot"), ("zero-shot ens.", "zero_shot_ensemble")]
    if k:
        cols += [(f"K={k} ridge", f"k{k}_ridge"), (f"K={k} fine-tune", f"k{k}_finetune")]
    cols += [("no-pretrain zero-shot", "no_pretrain_zero_shot")]
    if k:
        cols += [(f"no-pretrain K={k} ridge", f"no_pretrain_k{k}_ridge"),
                 (f"no-pretrain K={k} fine-tune", f"no_pretrain_k{k}_finetune")]
    head = ["sources → target"] + [c for c, _ in cols] + ["params", "synflow*", "jacov*"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, r in out["transfer"].items():
        ref = r.get("on_reference_cells", {})
        cells = [key.replace(">", " → ")]
        cells += [_ms(r[f]["spearman"]) if f in r else "–" for _, f in cols]
        cells.append(_ms(r["baselines"]["params (graph)"]["spearman"]))
        for p in ("synflow", "jacov"):
            cells.append(f"{ref[p]['spearman']:.3f} (pred. {ref['predictor']['spearman']['mean']:.3f}, n={ref['n']})"
                         if p in ref else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Spearman on the target, mean ± std over seeds (zero-shot: head seeds, 'ens.' = their averaged z-scored "
                 "predictions; K-shot: the K draw and head seed; evaluated on the other cells). *NAS-Bench-Suite-Zero "
                 "reference values on the target cells that have them, the predictor re-scored on the same cells.")
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
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    ap.add_argument("--fit-epochs", type=int, default=200)
    ap.add_argument("--finetune-epochs", type=int, default=40)
    ap.add_argument("--scratch-epochs", type=int, default=15)
    ap.add_argument("--loss", default="mse")
    ap.add_argument("--adapt", action="store_true", help="per-family standardisation of the head inputs (transductive)")
    ap.add_argument("--k-mode", default="finetune", choices=["finetune", "frozen"],
                    help="K-shot: fine-tune everything or only the head")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--within", action="store_true", help="also K-shot within each family")
    ap.add_argument("--no-ablation", action="store_true", help="skip the no-pre-training rows")
    ap.add_argument("--build-only", action="store_true", help="only trace and cache the graphs")
    ap.add_argument("--verbose", action="store_true")
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
    out = run(args)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
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
