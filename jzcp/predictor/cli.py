"""``jzcp predictor pretrain | fit | eval | predict``: the transferable CG predictor from the command line.

Every subcommand builds (or loads from ``--graph-cache``) the computation graphs of the families it is given
(:mod:`jzcp.predictor.families`: ``nb101``, ``nb201[:N]``, ``nb301``, ``macro:N``, ``mbv3:N``), shows tqdm progress
bars (graph tracing, epochs; ``--no-progress`` turns them off) and writes a JSON report, which it also prints.

* ``pretrain`` -- contrastive pre-training on the *unlabeled* graphs of all given families. Writes
  ``OUT/encoder.msgpack`` and ``OUT/pretrain.json``; ``OUT/pretrain.ckpt`` is written after every epoch and an
  interrupted run resumes from it (``--restart`` discards it).
* ``fit`` -- regression head (``--mode frozen``) or whole predictor (``--mode finetune``) on the labelled
  families, starting from ``--pretrained`` (an encoder, or a fitted model to fine-tune, e.g. on ``--k 50``
  samples of a new family) or from a random encoder (no ``--pretrained``: the ablation). Several families are
  standardised separately. Writes ``OUT/model.msgpack``, ``OUT/fit.json`` and ``OUT/train_archs.txt``.
* ``eval`` -- Spearman, Kendall tau and NDCG@10 of a model on each labelled family, next to the params / MACs
  of the same graphs as baselines; ``--exclude OUT/train_archs.txt`` leaves out what the model was fitted on.
  Writes ``OUT/eval.json``.
* ``predict`` -- predictions for every architecture of the families to ``OUT/predictions.csv`` (family,
  arch string, prediction, target if known). Predictions are in the units of the training targets (percent
  for one source family; z-scores when the model was fitted on several).

Heavy imports (JAX, Flax) happen inside the runners, so ``jzcp --help`` stays instant.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _common(p: argparse.ArgumentParser, families_default: str, families_help: str) -> None:
    p.add_argument("--families", default=families_default, help=families_help + f" (default {families_default!r})")
    p.add_argument("--out", default="runs/predictor", help="output directory (default runs/predictor)")
    p.add_argument("--graph-cache", default="results/graphs",
                   help="directory of the cached graph datasets (.npz; default results/graphs; 'none' disables)")
    p.add_argument("--family-seed", type=int, default=0, help="seed of the family subsets / samples (default 0)")
    p.add_argument("--workers", type=int, default=1, help="processes tracing graphs (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--data-dir", default=argparse.SUPPRESS,
                   help="benchmark data directory (default: $JZCP_DATA, else ../shared/data next to the repository)")


def _encoder_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoder (ignored when starting from a saved encoder / model)")
    g.add_argument("--layer", default="graphconv", choices=["graphconv", "gin", "gat"], help="GNN layer")
    g.add_argument("--hidden", type=int, default=64, help="hidden width (default 64)")
    g.add_argument("--layers", type=int, default=6, help="message-passing layers (default 6)")
    g.add_argument("--readout", default="mean+sum", choices=["mean", "sum", "mean+sum"], help="graph readout")
    g.add_argument("--features", default="cost", choices=["base", "cost"],
                   help="node features: GENNAPE's ('base') or plus per-node log MACs / params / size ('cost')")


def add_predictor_arguments(target) -> argparse.ArgumentParser:
    """Add the ``predictor`` command: ``target`` is the top-level subparsers action (a ``predictor``
    subcommand is added to it) or an ``ArgumentParser`` (its actions are added to it directly). Returns the
    ``predictor`` parser."""
    if isinstance(target, argparse.ArgumentParser):
        p = target
    else:
        p = target.add_parser("predictor", help="transferable computation-graph predictor: pretrain | fit | eval | predict",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="predictor_command", required=True, metavar="ACTION")

    pp = sub.add_parser("pretrain", help="contrastive pre-training of the encoder on unlabeled graphs",
                        description="Contrastive (NT-Xent) pre-training on the unlabeled graphs of all families.")
    _common(pp, "nb101,nb201,nb301,macro,mbv3", "families whose graphs are used, unlabeled")
    _encoder_args(pp)
    pp.add_argument("--epochs", type=int, default=15, help="epochs (default 15)")
    pp.add_argument("--batch-size", type=int, default=64, help="graphs per contrastive batch (default 64)")
    pp.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    pp.add_argument("--temperature", type=float, default=0.1, help="NT-Xent temperature (default 0.1)")
    pp.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (default 5)")
    pp.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    pp.add_argument("--restart", action="store_true", help="discard OUT/pretrain.ckpt instead of resuming")
    pp.set_defaults(func=run_pretrain)

    pf = sub.add_parser("fit", help="fit the regression head / fine-tune on labelled families",
                        description="Fit a predictor on labelled families (per-family standardised targets).")
    _common(pf, "nb101", "labelled families to fit on (nb101, nb201[:N], nb301)")
    _encoder_args(pf)
    pf.add_argument("--pretrained", default=None,
                    help="encoder.msgpack (from pretrain) or model.msgpack (a fitted model to fine-tune); "
                         "none: random encoder, trained end to end")
    pf.add_argument("--mode", default=None, choices=["frozen", "finetune"],
                    help="frozen encoder (head only) or fine-tune everything (default: frozen with an encoder, "
                         "finetune otherwise)")
    pf.add_argument("--head", default="mlp", choices=["mlp", "ridge", "kernel"],
                    help="mlp: trained head; ridge: closed-form linear probe on the frozen, per-family standardised "
                         "embeddings, penalty by leave-one-out Spearman; kernel: Gaussian-kernel ridge probe, width "
                         "and penalty by leave-one-out Spearman (the K-shot choice, <= 4096 items). ridge and "
                         "kernel imply --mode frozen --adapt")
    pf.add_argument("--loss", default="mse+rank", choices=["mse", "rank", "mse+rank"], help="regression loss")
    pf.add_argument("--targets", default="zscore", choices=["zscore", "rank"],
                    help="regression targets: standardised labels, or their normal scores per family (rank: "
                         "robust to the low-accuracy tail; default zscore)")
    pf.add_argument("--epochs", type=int, default=200, help="max epochs (default 200)")
    pf.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    pf.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    pf.add_argument("--patience", type=int, default=30, help="early-stopping patience (default 30)")
    pf.add_argument("--k", type=int, default=None, help="fit on K random labelled items only (K-shot)")
    pf.add_argument("--adapt", action="store_true",
                    help="standardise the head inputs per family (fit: each source family; predict/eval: each "
                         "evaluated family as a whole) -- transductive domain adaptation, no target labels")
    pf.add_argument("--seed", type=int, default=0, help="seed of the K draw, the dev split and the head (default 0)")
    pf.set_defaults(func=run_fit)

    pe = sub.add_parser("eval", help="rank correlations of a model on labelled families (JSON report)",
                        description="Spearman / Kendall / NDCG@10 of a fitted model, with params / MACs baselines.")
    _common(pe, "nb201", "labelled families to evaluate on")
    pe.add_argument("--model", required=True, help="model.msgpack written by 'fit'")
    pe.add_argument("--exclude", default=None, help="file of 'family<TAB>arch' lines to leave out (fit's train_archs.txt)")
    pe.set_defaults(func=run_eval)

    pr = sub.add_parser("predict", help="predict every architecture of the families (CSV)",
                        description="Predictions of a fitted model for every architecture of the families.")
    _common(pr, "nb201:100", "families to predict")
    pr.add_argument("--model", required=True, help="model.msgpack written by 'fit'")
    pr.set_defaults(func=run_predict)
    return p


# --- helpers --------------------------------------------------------------------------------------------------


def _bar(args, total: int, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=args.no_progress, file=sys.stderr)


def _load(args, spec: str) -> dict:
    """Families of ``spec`` with a tqdm bar while tracing."""
    from jzcp.predictor import families as F

    cache = None if str(args.graph_cache).lower() == "none" else args.graph_cache
    out = {}
    for name, limit in F.parse_spec(spec):
        bar = None

        def progress(done, total, name=name):
            nonlocal bar
            if bar is None:
                bar = _bar(args, total, f"graphs {name}", "graph")
            bar.update(done - bar.n)

        out[name] = F.load_family(name, limit, seed=args.family_seed, cache_dir=cache,
                                  data_dir=getattr(args, "data_dir", None), workers=args.workers, progress=progress)
        if bar is not None:
            bar.close()
    return out


def _epoch_log(args, total: int, desc: str):
    bar = _bar(args, total, desc, "epoch")

    def log(msg: str) -> None:
        bar.update(1)
        bar.set_postfix_str(msg.split(": ", 1)[-1])

    return bar, log


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def _encoder_config(args):
    from jzcp.predictor import EncoderConfig

    return EncoderConfig(layer=args.layer, hidden=args.hidden, num_layers=args.layers, readout=args.readout,
                         features=args.features)


def _report(path: Path, report: dict) -> int:
    _write_json(path, report)
    print(json.dumps(report, indent=1, default=float))
    print(f"wrote {path}", file=sys.stderr)
    return 0


# --- runners ------------------------------------------------------------------------------------------------------


def run_pretrain(args) -> int:
    import dataclasses

    from jzcp import predictor as P

    out = Path(args.out)
    fams = _load(args, args.families)
    graphs = [g for f in fams.values() for g in f.graphs(distinct=True)]
    cfg = P.PretrainConfig(encoder=_encoder_config(args), epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, temperature=args.temperature, patience=args.patience, seed=args.seed)
    ckpt = out / "pretrain.ckpt"
    if args.restart and ckpt.exists():
        ckpt.unlink()
    bar, log = _epoch_log(args, cfg.epochs, "pretrain")
    t0 = time.perf_counter()
    res = P.pretrain(graphs, cfg, checkpoint=ckpt, log=log)
    bar.close()
    P.save_model(out / "encoder.msgpack", res)
    return _report(out / "pretrain.json", {
        "command": "pretrain", "encoder_file": str(out / "encoder.msgpack"),
        "families": [f.summary() for f in fams.values()], "graphs": len(graphs),
        "epochs_run": int(len(res.history)), "wall_s": round(time.perf_counter() - t0, 2),
        "history": {"train_ntxent": res.history[:, 0].tolist(), "dev": res.history[:, 1].tolist()},
        "config": dataclasses.asdict(cfg)})


def run_fit(args) -> int:
    import dataclasses

    import numpy as np

    from jzcp import predictor as P

    out = Path(args.out)
    fams = _load(args, args.families)
    unlabeled = [n for n, f in fams.items() if not f.labelled]
    if unlabeled:
        raise ValueError(f"fit needs labelled families; {', '.join(unlabeled)} have no targets")
    base = P.load_model(args.pretrained) if args.pretrained else None
    probe = args.head in ("ridge", "kernel")  # closed-form heads on the frozen, standardised embeddings
    mode = args.mode or ("frozen" if isinstance(base, P.PretrainResult) or probe else "finetune")
    adapt = args.adapt or probe or (isinstance(base, P.FitResult) and base.config.adapt)
    if probe and (base is None or mode != "frozen"):
        raise ValueError(f"--head {args.head} needs --pretrained and the frozen mode")
    if mode == "frozen" and base is None:
        raise ValueError("--mode frozen needs --pretrained (an encoder to freeze)")
    # items: (family, index) of every labelled item, optionally K random ones
    items = [(n, i) for n, f in fams.items() for i in range(len(f))]
    if args.k is not None:
        if not 2 <= args.k <= len(items):
            raise ValueError(f"--k must be in 2..{len(items)}")
        pick = np.sort(np.random.default_rng([args.seed, 99]).choice(len(items), args.k, replace=False))
        items = [items[i] for i in pick]
    if len(fams) == 1:  # one family: targets in its own units (percent)
        f = next(iter(fams.values()))
        graphs = [f.dataset[i] for _, i in items]
        y = np.asarray([f.targets[i] for _, i in items])
        groups = None
        units = "percent"
    else:  # several: each family z-scored on its own (accuracy scales differ)
        stats = {}
        for n in fams:
            yn = np.asarray([fams[n].targets[i] for m, i in items if m == n])
            stats[n] = (float(yn.mean()), float(yn.std() or 1.0)) if len(yn) else (0.0, 1.0)
        graphs = [fams[n].dataset[i] for n, i in items]
        y = np.asarray([(fams[n].targets[i] - stats[n][0]) / stats[n][1] for n, i in items])
        groups = np.asarray([list(fams).index(n) for n, _ in items])
        units = "z-score per family"
    small = len(items) < 200
    cfg = P.FitConfig(mode=mode, loss=args.loss, epochs=args.epochs, batch_size=min(args.batch_size, 16 if small else args.batch_size),
                      lr=args.lr, patience=args.patience, seed=args.seed, adapt=adapt, head=args.head,
                      targets=args.targets, dev_fraction=0.2 if len(items) >= 10 else 0.0)
    bar, log = _epoch_log(args, 1 if probe else cfg.epochs, f"fit ({mode}, {args.head} head)")
    t0 = time.perf_counter()
    model = P.fit(graphs, y, cfg, pretrained=base, encoder=None if base is not None else _encoder_config(args),
                  log=log, groups=groups)
    bar.close()
    P.save_model(out / "model.msgpack", model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_archs.txt").write_text("".join(f"{n}\t{fams[n].archs[i]}\n" for n, i in items))
    in_sample = P.rank_metrics(P.predict(model, graphs), y)
    return _report(out / "fit.json", {
        "command": "fit", "model_file": str(out / "model.msgpack"), "pretrained": args.pretrained, "mode": mode,
        "families": [f.summary() for f in fams.values()], "items": len(items), "target_units": units,
        **_head_summary(model),
        "in_sample": in_sample, "wall_s": round(time.perf_counter() - t0, 2),
        "config": dataclasses.asdict(cfg), "encoder": dataclasses.asdict(model.encoder)})


def _head_summary(model) -> dict:
    """What the fit chose (closed-form probes) or how training went (MLP head / fine-tuning), for fit.json."""
    import numpy as np

    h = model.history
    if model.config.head in ("ridge", "kernel"):
        # history rows: (grid values..., leave-one-out Spearman); on ties the fit took the later grid entry
        best = h[len(h) - 1 - int(np.argmax(h[::-1, -1]))]
        if model.config.head == "ridge":
            return {"ridge_lambda": float(best[0]), "ridge_loo_spearman": float(best[1])}
        return {"kernel_bandwidth": float(best[0]), "kernel_lambda": float(best[1]),
                "kernel_loo_spearman": float(best[2])}
    return {"epochs_run": int(len(h)), "best_dev_neg_spearman": float(np.min(h[:, 1]))}


def _excluded(path) -> set[tuple[str, str]]:
    if path is None:
        return set()
    rows = set()
    for line in Path(path).read_text().splitlines():
        if line.strip():
            fam, _, arch = line.partition("\t")
            rows.add((fam, arch))
    return rows


def _model(path):
    from jzcp import predictor as P

    m = P.load_model(path)
    if not isinstance(m, P.FitResult):
        raise ValueError(f"{path} is a pre-trained encoder, not a fitted model; run 'jzcp predictor fit' first")
    return m


def run_eval(args) -> int:
    import numpy as np

    import jzcp.graph as G
    from jzcp import predictor as P

    model = _model(args.model)
    fams = _load(args, args.families)
    skip = _excluded(args.exclude)
    rows = {}
    for name, f in fams.items():
        if not f.labelled:
            raise ValueError(f"eval needs labelled families; {name} has no targets")
        keep = [i for i in range(len(f)) if (name, f.archs[i]) not in skip]
        if len(keep) < 3:
            raise ValueError(f"{name}: fewer than 3 architectures left to evaluate")
        graphs = [f.dataset[i] for i in keep]
        y = np.asarray(f.targets)[keep]
        cost = np.stack([G.node_costs(g.nodes).sum(0) for g in graphs])
        rows[name] = {"predictor": P.evaluate(model, graphs, y),
                      "baselines": {"params": P.rank_metrics(cost[:, 1], y), "macs": P.rank_metrics(cost[:, 0], y)},
                      "excluded": len(f) - len(keep), "description": f.description}
        print(f"{name}: spearman {rows[name]['predictor']['spearman']:.3f}  (params {rows[name]['baselines']['params']['spearman']:.3f})",
              file=sys.stderr)
    return _report(Path(args.out) / "eval.json", {"command": "eval", "model_file": args.model, "families": rows})


def run_predict(args) -> int:
    import csv

    import numpy as np

    from jzcp import predictor as P

    model = _model(args.model)
    fams = _load(args, args.families)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "predictions.csv"
    tmp = path.with_name(path.name + ".tmp")
    summary = {}
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["family", "arch", "prediction", "target"])
        for name, f in fams.items():
            pred = P.predict(model, f.graphs())
            for i, a in enumerate(f.archs):
                w.writerow([name, a, f"{pred[i]:.6g}", "" if f.targets is None else f"{f.targets[i]:.6g}"])
            summary[name] = {"n": len(f), "prediction_mean": float(np.mean(pred)), "prediction_std": float(np.std(pred)),
                             "best_arch": f.archs[int(np.argmax(pred))]}
            if f.labelled:
                summary[name]["spearman"] = P.rank_metrics(pred, f.targets)["spearman"]
    os.replace(tmp, path)
    return _report(out / "predict.json", {"command": "predict", "model_file": args.model, "csv": str(path),
                                          "families": summary})
