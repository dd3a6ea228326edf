"""``jzcp score``: score architectures with zero-cost proxies, resumably, and correlate with ground truth.

Output directory layout (``--out DIR``):

* ``protocol.json`` -- every knob that changes a score (space, dataset, proxies, batch size, seed, init, input, ...).
  A rerun with the same ``--out`` must use the same protocol; it then skips architectures already in the CSV.
* ``scores.csv`` -- one row per architecture: ``arch`` (the space's string form), the ground-truth targets, and one
  column per proxy (NaN where a proxy produced NaN/Inf). Rows are appended and flushed as they are computed, so an
  interrupted run loses at most the architecture in flight.
* ``correlations.json`` -- Spearman rho / Kendall tau-b (NaNs omitted) of each proxy against each target, with ``n``.
* ``plots/<proxy>.png`` -- score rank vs accuracy, one per proxy.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# NB201 targets reported for each dataset (first = headline target), see ../shared/data/README.md.
NB201_TARGETS = {
    "cifar10": ("c10valid_test", "c10valid_val", "c10_test"),
    "cifar100": ("c100_test", "c100_val_naslib1seed"),
    "imagenet16-120": ("in16_test", "in16_val_naslib1seed"),
}


def add_score_arguments(p) -> None:
    p.add_argument("--space", default="nb201", choices=list(BENCHMARK_SPACES),
                   help="search space with ground truth: nb201 (15,625 cells), nb101 (500 NAS-Bench-Suite-Zero "
                        "cells), nb301 (1,218 NAS-Bench-Suite-Zero cells); default nb201")
    p.add_argument("--dataset", default="cifar10", help="cifar10 | cifar100 | ImageNet16-120 (16x16 CIFAR-10 stand-in)")
    p.add_argument("--proxies", default="all",
                   help="'all', 'nbsz' (the 13 of NAS-Bench-Suite-Zero) or comma-separated names (see --list-proxies)")
    p.add_argument("--archs", default="sample:100",
                   help="'all', 'sample:N' (seeded by --arch-seed) or a file of architectures, one per line "
                        "(nb201 arch strings; nb101 NASLib tuples; nb301 NASLib compact tuples)")
    p.add_argument("--arch-seed", type=int, default=0, help="seed of the sample:N draw (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size (default 64, the ICLR'21 protocol)")
    p.add_argument("--seed", type=int, default=42, help="seed of the minibatch and the weight init (default 42)")
    p.add_argument("--init", default="pytorch", choices=["pytorch", "kaiming_fan_out"], help="weight init scheme")
    p.add_argument("--input", default="data", choices=["data", "noise"], help="real images or Gaussian noise")
    p.add_argument("--synflow-float32", dest="synflow_float64", action="store_false",
                   help="compute synflow in float32 (default float64, as the references; float32 overflows on deep cells)")
    p.add_argument("--augment", action="store_true", help="random crop + flip the minibatch (EZNAS protocol)")
    p.add_argument("--normalisation", default="iclr21", choices=["iclr21", "eznas", "none"],
                   help="per-protocol image normalisation (default iclr21)")
    p.add_argument("--out", default="results/score", help="output directory (rerun with the same one to resume)")
    p.add_argument("--list-proxies", action="store_true", help="list the available proxies and exit")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG scatter plots")


BENCHMARK_SPACES = ("nb201", "nb101", "nb301")


@dataclass(frozen=True, eq=False)
class Benchmark:
    """The architectures of a search space that have ground truth, as ``jzcp score`` sees them.

    Attributes:
        space: ``nb201`` | ``nb101`` | ``nb301``.
        dataset: canonical dataset name (:func:`jzcp.data.canonical_dataset`).
        keys: ``(N,)`` str, each architecture's usual string form (the CSV key): NB201 arch string, NB101
            NASLib tuple (raw adjacency + op ids, as NAS-Bench-Suite-Zero lists them), NB301 NASLib compact tuple.
        archs: ``(N, *arch_shape)`` int32, the arrays the space's network takes.
        targets: name -> ``(N,)`` accuracy in percent; the first of ``default_targets`` is the headline.
        reference: NAS-Bench-Suite-Zero's own value of each proxy on these architectures (NB101 / NB301),
            to report the agreement of jzcp's values with it; empty for NB201 (see ``bench/fidelity_nb201.py``).
    """

    space: str
    dataset: str
    keys: np.ndarray
    archs: np.ndarray
    targets: dict
    default_targets: tuple[str, ...]
    reference: dict

    def __len__(self) -> int:
        return len(self.keys)

    def key_of(self, text: str) -> str:
        """The CSV key of an architecture written by a user (``ValueError`` if malformed)."""
        if self.space == "nb201":
            from jzcp.spaces import nb201

            return nb201.format(nb201.parse(text))
        if self.space == "nb101":
            from jzcp.spaces import nb101

            return str(nb101.format_naslib(nb101.parse_naslib(text)))
        from jzcp.spaces import darts

        return str(darts.format_compact(darts.parse_text(text)))


def load_benchmark(space: str, dataset: str = "cifar10", data_dir=None) -> Benchmark:
    """The ground truth :class:`Benchmark` of ``space`` on ``dataset`` from the data directory.

    NB201: all 15,625 cells, targets of :data:`NB201_TARGETS`. NB101 / NB301: the architectures of
    NAS-Bench-Suite-Zero's NASLib files (CIFAR-10 only), target ``val_accuracy`` (NB101: 108-epoch validation
    accuracy of one seed; NB301: the NB301 v1.0 surrogate's prediction, not a trained network).
    """
    from jzcp import data

    dataset = data.canonical_dataset(dataset)
    if space == "nb201":
        gt = data.load_nb201(data_dir)
        names = NB201_TARGETS[dataset]
        return Benchmark("nb201", dataset, np.asarray(gt.arch_str), np.asarray(gt.op_idx, np.int32),
                         {t: np.asarray(gt.target(t)) for t in names}, names, {})
    if space not in ("nb101", "nb301"):
        raise ValueError(f"--space {space!r}: no ground truth; choose one of {', '.join(BENCHMARK_SPACES)}")
    if dataset != "cifar10":
        raise ValueError(f"{space} has ground truth for cifar10 only, not {dataset}")
    sub = data.load_naslib_zc(space, dataset, data_dir=data_dir)
    if space == "nb101":
        from jzcp.networks import nb101 as net
        from jzcp.spaces import nb101

        cells = [nb101.parse_naslib(a) for a in sub.archs]
        # Not the spec hash: NAS-Bench-Suite-Zero's 500 NB101 rows are raw encodings, only 292 distinct
        # networks after pruning (isomorphic rows carry the accuracy of different training seeds).
        keys = np.asarray([str(nb101.format_naslib(c)) for c in cells])
        archs = np.stack([net.encode(c) for c in cells]).astype(np.int32)
    else:
        from jzcp.spaces import darts

        archs = np.asarray(sub.arch_array(), np.int32)
        keys = np.asarray([str(darts.format_compact(a)) for a in archs])
    reference = {k: np.asarray(v) for k, v in sub.proxies.items()}
    return Benchmark(space, dataset, keys, archs, {"val_accuracy": np.asarray(sub.val_accuracy)},
                     ("val_accuracy",), reference)


def select_archs(spec: str, arch_seed: int, bench: Benchmark) -> np.ndarray:
    """Indices into ``bench`` chosen by ``all`` / ``sample:N`` / a file of architectures (one per line, first CSV
    column for NB201; ``#`` comments)."""
    keys = bench.keys
    n = len(keys)
    if spec == "all":
        return np.arange(n)
    if spec.startswith("sample:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--archs {spec!r}: expected sample:N with an integer N") from None
        if not 0 < k <= n:
            raise ValueError(f"--archs {spec!r}: N must be in 1..{n}")
        return np.sort(np.random.default_rng(arch_seed).choice(n, k, replace=False))
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--archs {spec!r}: not 'all', not 'sample:N', and no such file")
    lookup = {str(a): i for i, a in enumerate(keys)}
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if bench.space == "nb201":
            line = line.split(",")[0]
        if not line or line.startswith("#") or line == "arch":
            continue
        try:
            key = bench.key_of(line)
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        if key not in lookup:
            raise ValueError(f"{path}:{lineno}: {line[:60]!r} is not among the {n} {bench.space} architectures "
                             "with ground truth")
        out.append(lookup[key])
    if not out:
        raise ValueError(f"--archs file {path} lists no architectures")
    return np.asarray(out)


@dataclass(frozen=True)
class Protocol:
    """Everything that changes a score; stored as ``protocol.json`` next to the results."""

    space: str
    dataset: str
    proxies: tuple[str, ...]
    batch_size: int
    seed: int
    init: str
    input: str
    synflow_float64: bool
    images: str  # which images were used (real / stand-in), from the data layer


def resolve_proxy_names(spec: str) -> tuple[str, ...]:
    """``'all'``, ``'nbsz'`` (the 13 proxies of NAS-Bench-Suite-Zero) or comma-separated proxy names -> validated
    tuple (``ValueError`` naming an unknown one)."""
    from jzcp import proxies

    if spec.strip() == "all":
        return tuple(proxies.PROXIES)
    if spec.strip() == "nbsz":
        return tuple(proxies.NBSZ_PROXIES)
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    for n in names:
        proxies.proxy_info(n)
    if not names:
        raise ValueError("--proxies: no proxy named")
    return names


def make_scorer(space: str, names, config, num_classes: int = 10, image_shape=(32, 32, 3)):
    """``score(arch, images (B,H,W,3), labels (B,)) -> {name: float}`` for architectures of ``space``: fresh
    init keyed by (seed, arch), one jitted suite call (one compilation for all architectures of the space)."""
    import jax

    from jzcp import proxies

    spec = proxies.space_net(space, num_classes, config, image_shape=tuple(image_shape))
    suite = proxies.make_suite(spec, names, config)
    key = jax.random.key(config.seed)

    def score(arch, images, labels):
        params = proxies.fresh_params(spec, config, arch)
        return {k: float(v) for k, v in suite(params, images, labels, arch, key).items()}

    return score


def read_scores(csv_path: Path) -> dict[str, dict[str, str]]:
    """The rows of a ``scores.csv`` written by :func:`score`, keyed by ``arch`` (values as written; ``{}`` when
    the file is absent or empty -- a run killed before its first row)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        return {}
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:  # an empty file: a run killed before its first row
            return {}
        if "arch" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: not a jzcp scores CSV (its header {reader.fieldnames[:4]} has no 'arch' "
                             "column); move it away or use another --out")
        return {row["arch"]: row for row in reader}


def _check_protocol(out: Path, protocol: Protocol) -> None:
    path = out / "protocol.json"
    mine = json.loads(json.dumps(asdict(protocol)))
    if path.is_file():
        theirs = json.loads(path.read_text())
        if theirs != mine:
            diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
            raise ValueError(f"{out} holds results of another protocol (differs in {diff}); use another --out")
    else:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(mine, indent=1))
        os.replace(tmp, path)


def correlations(table: dict[str, np.ndarray], proxies, targets) -> dict:
    """Spearman / Kendall (NaN omitted) of each proxy column against each target column."""
    from jzcp import metrics

    out = {}
    for p in proxies:
        out[p] = {}
        for t in targets:
            x, y = table[p], table[t]
            ok = np.isfinite(x) & np.isfinite(y)
            rho = float(metrics.spearman(x, y))
            tau = float(metrics.kendall_tau(x, y))
            out[p][t] = {"spearman": rho, "kendall": tau, "n": int(ok.sum()), "nan": int((~np.isfinite(x)).sum())}
    return out


def plot_scores(table: dict[str, np.ndarray], proxies, target: str, out_dir: Path, corr: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import rankdata

    out_dir.mkdir(parents=True, exist_ok=True)
    for p in proxies:
        x, y = table[p], table[target]
        ok = np.isfinite(x) & np.isfinite(y)
        fig, ax = plt.subplots(figsize=(4.5, 3.6), dpi=120)
        ax.scatter(rankdata(x[ok]), y[ok], s=4, alpha=0.5)
        c = corr[p][target]
        ax.set_title(f"{p} ({title})\nSpearman {c['spearman']:.3f}, Kendall {c['kendall']:.3f}, n={c['n']}", fontsize=8)
        ax.set_xlabel(f"{p} score rank")
        ax.set_ylabel(f"{target} accuracy (%)")
        fig.tight_layout()
        fig.savefig(out_dir / f"{p}.png")
        plt.close(fig)


def format_correlations(corr: dict, targets) -> str:
    head = f"{'proxy':<12}" + "".join(f"{t + ' rho':>22}{'tau':>8}" for t in targets)
    lines = [head, "-" * len(head)]
    for p, row in corr.items():
        lines.append(f"{p:<12}" + "".join(f"{row[t]['spearman']:>22.3f}{row[t]['kendall']:>8.3f}" for t in targets))
    return "\n".join(lines)


def score(
    bench: Benchmark,
    chosen: np.ndarray,
    names: tuple[str, ...],
    config,
    out: Path,
    *,
    augment: bool = False,
    normalisation: str = "iclr21",
    data_dir=None,
    plots: bool = True,
    targets: tuple[str, ...] | None = None,
    scored_only: bool = False,
) -> tuple[dict[str, np.ndarray], dict]:
    """Score the architectures ``chosen`` (indices into ``bench``) into ``out`` (resumable), then correlate.

    ``scored_only``: score nothing; correlate the architectures of ``chosen`` already in ``out/scores.csv`` (an
    interim report of a run still in progress; ``num_archs`` says how many).

    Returns ``(table, report)``: ``table`` maps each target and proxy name to a ``(len(chosen),)`` array in the
    order of ``chosen``, and ``"index"`` to the indices themselves; ``report`` is what ``correlations.json`` holds (for NB101 / NB301 also the Spearman of
    jzcp's values against NAS-Bench-Suite-Zero's own values of the same proxy, under ``"reference"``).
    """
    from tqdm import tqdm

    from jzcp import data

    dataset = bench.dataset
    targets = tuple(targets or bench.default_targets)
    batch = data.image_batch(dataset, config.batch_size, seed=config.seed, augment=augment,
                             normalisation=normalisation, data_dir=data_dir)
    images = ("stand-in: " if batch.stand_in else "") + batch.preprocessing
    protocol = Protocol(bench.space, dataset, tuple(names), config.batch_size, config.seed, config.init,
                        config.input, config.synflow_float64, images)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_protocol(out, protocol)
    csv_path = out / "scores.csv"
    done = read_scores(csv_path)
    if scored_only:
        chosen = np.asarray([i for i in chosen if str(bench.keys[i]) in done], np.int64)
        if len(chosen) < 3:
            raise ValueError(f"{csv_path}: {len(chosen)} of the chosen architectures scored so far; need 3")
    todo = [i for i in chosen if str(bench.keys[i]) not in done]
    columns = ["arch", "index", *targets, *names]
    print(f"jzcp score: {bench.space}, {len(chosen)} archs ({len(chosen) - len(todo)} already in {csv_path}), "
          f"proxies {', '.join(names)}, {dataset} batch {config.batch_size}"
          + (f" [STAND-IN: {batch.stand_in}]" if batch.stand_in else ""), file=sys.stderr)

    nan_counts = {n: 0 for n in names}
    if todo:
        scorer = make_scorer(bench.space, names, config, num_classes=batch.num_classes,
                             image_shape=batch.images.shape[1:])
        new_file = not csv_path.is_file() or csv_path.stat().st_size == 0
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, columns)
            if new_file:
                writer.writeheader()
                f.flush()  # on disk before the first (possibly long) architecture
            t0 = time.time()
            for i in tqdm(todo, desc="scoring", unit="arch", dynamic_ncols=True):
                scores = scorer(bench.archs[i], batch.images, batch.labels)
                row = {"arch": str(bench.keys[i]), "index": int(i)}
                row.update({t: float(bench.targets[t][i]) for t in targets})
                for n in names:
                    v = float(scores[n])
                    if not math.isfinite(v):
                        nan_counts[n] += 1
                        v = float("nan")
                    row[n] = repr(v)
                writer.writerow(row)
                f.flush()  # a kill loses at most the architecture in flight
            print(f"scored {len(todo)} archs in {time.time() - t0:.1f} s", file=sys.stderr)
    for n, c in nan_counts.items():
        if c:
            print(f"warning: {n} gave NaN/Inf for {c} architecture(s); recorded as NaN", file=sys.stderr)

    rows = read_scores(csv_path)
    keep = [str(bench.keys[i]) for i in chosen]
    table = {c: np.array([float(rows[a][c]) for a in keep]) for c in [*targets, *names]}
    table["index"] = np.asarray(chosen, np.int64)
    corr = correlations(table, names, targets)
    report = {"protocol": asdict(protocol), "proxy_config": config.to_dict(), "num_archs": len(keep),
              "correlations": corr}
    agreement = reference_agreement(bench, chosen, table, names)
    if agreement:
        report["reference"] = agreement
    tmp = out / "correlations.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out / "correlations.json")
    if plots:
        plot_scores(table, names, targets[0], out / "plots", corr, f"{bench.space} {dataset}")
    return table, report


def reference_agreement(bench: Benchmark, chosen, table, names) -> dict:
    """Spearman of jzcp's value of each proxy against the benchmark's reference (NAS-Bench-Suite-Zero) value
    on the same architectures, for the proxies the reference has: ``{name: {"spearman", "n"}}``."""
    from jzcp import data, metrics

    out = {}
    for n in names:
        if n not in bench.reference:
            continue
        ref = data.without_failures(bench.reference[n])[chosen]
        ok = np.isfinite(ref) & np.isfinite(table[n])
        out[n] = {"spearman": float(metrics.spearman(table[n], ref)) if ok.sum() > 2 else float("nan"),
                  "n": int(ok.sum())}
    return out


def run_score_command(args) -> int:
    from jzcp import proxies as proxy_lib

    if args.list_proxies:
        for name, info in proxy_lib.PROXIES.items():
            print(f"{name:<12} {info.description.splitlines()[0] if info.description else ''}  [{info.reference}]")
        return 0
    names = resolve_proxy_names(args.proxies)
    bench = load_benchmark(args.space, args.dataset, args.data_dir)
    chosen = select_archs(args.archs, args.arch_seed, bench)
    config = proxy_lib.ProxyConfig(batch_size=args.batch_size, seed=args.seed, init=args.init, input=args.input,
                                   synflow_float64=args.synflow_float64)
    out = Path(args.out)
    _, report = score(bench, chosen, names, config, out, augment=args.augment, normalisation=args.normalisation,
                      data_dir=args.data_dir, plots=not args.no_plots)
    print(format_correlations(report["correlations"], bench.default_targets))
    if "reference" in report:
        print("agreement with NAS-Bench-Suite-Zero's values (Spearman): "
              + ", ".join(f"{n} {v['spearman']:.3f}" for n, v in report["reference"].items()))
    print(f"results in {out}/ (scores.csv, correlations.json{', plots/' if not args.no_plots else ''})")
    return 0
