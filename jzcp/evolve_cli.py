"""``jzcp evolve``: EZNAS genetic programming over proxy programs, on statistics of real networks.

Pipeline (every step reusable from Python):

1. **Tasks** (:func:`make_tasks`): each task is a random subset of ``nets_per_task`` architectures of one search
   space with its accuracy target (NB201 CIFAR-10: ``c10valid_val``, the 200-epoch validation accuracy the EZNAS
   protocol correlates against). The architectures of a space are split once, by a fixed permutation
   (:data:`SPLIT_SEED`), into a *fitness pool* (the first :data:`FITNESS_FRACTION`; 5,625 of NB201's 15,625 cells)
   and a *held-out pool* (the rest; 10,000 NB201 cells): tasks are drawn from the fitness pool only, held-out
   evaluation (:func:`holdout_tasks`) from the held-out pool only, so held-out architectures never enter a fitness.
   Tasks of one run are disjoint.
2. **Statistics** (:func:`task_statistics`): the 22 EZNAS tensors of every RCB block of every task network
   (:mod:`jzcp.statistics`) under the EZNAS protocol -- kaiming fan-out init keyed by (seed, architecture), BN in
   train mode, a CIFAR-10 minibatch with random crop + flip and EZNAS normalisation (``--batch-size``, 1 by
   default as the EZNAS evolution statistics), noise passes keyed by the seed -- cached on disk per
   (protocol, architecture) in ``--cache-dir``, so repeated runs do not recompute them.
3. **Search** (:func:`jzcp.evolution.run`): fitness = minimum over tasks of |Kendall tau| (``--metric spearman``,
   ``--reduce mean`` as options) of the programs' scores on the task networks; candidates are screened first on 2
   networks (shape validity, finite and non-constant scores; the original's ``evaluate_mini``).
4. **Outputs** in ``--out DIR``: ``run.json`` (the arguments that define the run), ``tasks.json`` (the task
   architectures and targets), ``state.npz`` (checkpoint, written atomically after every generation),
   ``history.json`` (one record per generation: best / median fitness, hall-of-fame best and its formula, seconds),
   ``hall_of_fame.json`` (formulas + fitness, the final picks of the original: fittest final parent + two fittest
   ever, each with its *direction* -- the fitness is sign-free, so -1 says the proxy is the negated score, decided
   on the fitness tasks -- and with ``--holdout N`` their Spearman / Kendall on N held-out architectures next to
   EZNAS-A's, raw and oriented by the direction) and
   ``fitness.png`` (fitness by generation).

Resume: ``--resume`` continues from ``DIR/state.npz`` (``kill -9`` at any moment loses at most the generation in
flight); generation g always uses the key ``fold_in(key(seed), g + 1)``, so a resumed run ends with the same
population bit for bit as an uninterrupted one. ``--generations`` may be raised on resume; every other search
setting must match ``run.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SPLIT_SEED = 2022  # permutation that splits every space into fitness pool / held-out pool (never change)
FITNESS_FRACTION = 0.36  # NB201: 5,625 fitness-pool cells, 10,000 held-out cells
EVOLVE_SPACES = ("nb201", "nb101", "nb301")
DEFAULT_TARGET = {"nb201": {"cifar10": "c10valid_val", "cifar100": "c100_val_naslib1seed",
                            "imagenet16-120": "in16_val_naslib1seed"},
                  "nb101": {"cifar10": "val_accuracy"}, "nb301": {"cifar10": "val_accuracy"}}


# ----------------------------------------------------------------------------------------------------------------
# tasks
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tasks:
    """Networks of one or more tasks: ``space[i]``, ``keys[i]`` (architecture string), ``archs[i]`` (array),
    ``index[i]`` (position in the space's benchmark), ``task[i]`` (0..T-1), ``target[i]`` (accuracy, %)."""

    space: tuple
    keys: tuple
    archs: tuple
    index: np.ndarray
    task: np.ndarray
    target: np.ndarray
    target_name: tuple

    def __len__(self) -> int:
        return len(self.keys)

    def to_json(self) -> list[dict]:
        return [{"space": s, "arch": k, "index": int(i), "task": int(t), "target": tn, "accuracy": float(a)}
                for s, k, i, t, a, tn in zip(self.space, self.keys, self.index, self.task, self.target,
                                             self.target_name)]


def split_pool(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fitness pool, held-out pool)`` indices of a space with ``n`` architectures (fixed by :data:`SPLIT_SEED`)."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    k = int(round(FITNESS_FRACTION * n))
    return np.sort(perm[:k]), np.sort(perm[k:])


def _benchmark(space: str, dataset: str, data_dir=None):
    from jzcp.scoring import load_benchmark

    if space not in EVOLVE_SPACES:
        raise ValueError(f"--spaces: {space!r} is not supported by jzcp evolve yet; supported: "
                         f"{', '.join(EVOLVE_SPACES)}")
    return load_benchmark(space, dataset, data_dir)


def _target(space: str, dataset: str, target: str | None, data_dir=None) -> tuple[Any, np.ndarray, str]:
    from jzcp import data

    dataset = data.canonical_dataset(dataset)
    bench = _benchmark(space, dataset, data_dir)
    name = target or DEFAULT_TARGET[space][dataset]
    if space == "nb201":
        gt = data.load_nb201(data_dir)
        try:
            acc = np.asarray(gt.target(name), np.float64)
        except KeyError as e:
            raise ValueError(str(e.args[0])) from None
        return bench, acc, name
    if name not in bench.targets:
        raise ValueError(f"{space} has no target {name!r}; it has {', '.join(bench.targets)}")
    return bench, np.asarray(bench.targets[name], np.float64), name


def make_tasks(spaces: Sequence[str], num_tasks: int, nets_per_task: int, seed: int, *, dataset: str = "cifar10",
               target: str | None = None, data_dir=None) -> Tasks:
    """``num_tasks`` disjoint random subsets of ``nets_per_task`` architectures, drawn (seed ``seed``) from the
    fitness pools of ``spaces`` (task t uses space ``spaces[t % len(spaces)]``)."""
    if num_tasks < 1 or nets_per_task < 2:
        raise ValueError(f"need --tasks >= 1 and --nets-per-task >= 2, got {num_tasks}, {nets_per_task}")
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("space", "keys", "archs", "index", "task", "target", "target_name")}
    taken: dict[str, set] = {}
    for t in range(num_tasks):
        space = spaces[t % len(spaces)]
        bench, acc, name = _target(space, dataset, target, data_dir)
        pool, _ = split_pool(len(bench))
        free = np.asarray([i for i in pool if i not in taken.setdefault(space, set())])
        if len(free) < nets_per_task:
            raise ValueError(f"{space}: only {len(free)} fitness-pool architectures left for task {t}")
        pick = np.sort(rng.choice(free, nets_per_task, replace=False))
        taken[space].update(pick.tolist())
        for i in pick:
            out["space"].append(space)
            out["keys"].append(str(bench.keys[i]))
            out["archs"].append(np.asarray(bench.archs[i]))
            out["index"].append(int(i))
            out["task"].append(t)
            out["target"].append(float(acc[i]))
            out["target_name"].append(name)
    return Tasks(tuple(out["space"]), tuple(out["keys"]), tuple(out["archs"]), np.asarray(out["index"]),
                 np.asarray(out["task"]), np.asarray(out["target"]), tuple(out["target_name"]))


def holdout_tasks(space: str, num: int, seed: int = 0, *, dataset: str = "cifar10", target: str | None = None,
                  data_dir=None, whole_space: bool = False) -> Tasks:
    """``num`` architectures of the held-out pool of ``space`` (all of it if ``num`` is 0 or larger), one task.

    ``whole_space``: draw from every architecture of the space instead (a space the programs were never evolved
    on, e.g. NB101 / NB301 for a program evolved on NB201)."""
    bench, acc, name = _target(space, dataset, target, data_dir)
    pool = np.arange(len(bench)) if whole_space else split_pool(len(bench))[1]
    if 0 < num < len(pool):
        pool = np.sort(np.random.default_rng(seed).choice(pool, num, replace=False))
    return Tasks(tuple([space] * len(pool)), tuple(str(bench.keys[i]) for i in pool),
                 tuple(np.asarray(bench.archs[i]) for i in pool), np.asarray(pool), np.zeros(len(pool), int),
                 np.asarray(acc[pool], np.float64), tuple([name] * len(pool)))


# ----------------------------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatsProtocol:
    """What fixes the statistics of an architecture (the cache key, with the network config)."""

    dataset: str = "cifar10"
    batch_size: int = 1
    seed: int = 1
    init: str = "kaiming_fan_out"
    bn_mode: str = "train"
    augment: bool = True
    normalisation: str = "eznas"
    channels: int = 16
    cells_per_stage: int = 5


def _family(space: str, proto: StatsProtocol, data_dir=None):
    from jzcp import proxies
    from jzcp.data import image_batch

    config = proxies.ProxyConfig(batch_size=proto.batch_size, seed=proto.seed, init=proto.init,
                                 bn_mode=proto.bn_mode)
    batch = image_batch(proto.dataset, proto.batch_size, seed=proto.seed, augment=proto.augment,
                        normalisation=proto.normalisation, data_dir=data_dir)
    if space == "nb201":
        spec = proxies.nb201_net(batch.num_classes, config, channels=proto.channels,
                                 cells_per_stage=proto.cells_per_stage, image_shape=batch.images.shape[1:])
    else:  # NB101 / NB301 at their published sizes
        spec = proxies.space_net(space, batch.num_classes, config, image_shape=batch.images.shape[1:])
    return spec, config, batch


def task_statistics(tasks: Tasks, proto: StatsProtocol, cache_dir: str | os.PathLike | None, *,
                    progress: bool = False, on_network=None, data_dir=None) -> tuple[list, dict]:
    """Live-block statistics of every network of ``tasks`` (see :func:`jzcp.statistics.collect`), per space."""
    from jzcp import statistics as st

    out: list = [None] * len(tasks)
    timing: dict[str, float] = {}
    for space in dict.fromkeys(tasks.space):
        idx = [i for i, s in enumerate(tasks.space) if s == space]
        spec, config, batch = _family(space, proto, data_dir)
        cache = None
        if cache_dir is not None:
            cache = st.StatisticsCache(cache_dir, {"space": space, "network": spec.name,
                                                   "image_shape": list(spec.image_shape),
                                                   "images": batch.preprocessing, **dataclasses.asdict(proto)})
        cb = None if on_network is None else (lambda j, g, idx=idx: on_network(idx[j], g))
        res, t = st.collect(spec, config, [tasks.archs[i] for i in idx], batch.images,
                            keys=[tasks.keys[i] for i in idx], cache=cache, progress=progress,
                            desc=f"statistics {space}", on_network=cb)
        for j, g in zip(idx, res):
            out[j] = g
        for k, v in t.items():
            timing[k] = timing.get(k, 0) + v
    return out, timing


def _signatures(groups) -> set:
    return {tuple(g[t].shape[1:] for t in ("inpact_D", "wt", "act_D")) for g in groups}


def screen_networks(stats_list: Sequence, k: int = 2) -> list[int]:
    """Indices of ``k`` networks covering the most block shapes (greedy), for the cheap validity screen."""
    sigs = [_signatures(g) for g in stats_list]
    chosen: list[int] = []
    covered: set = set()
    for _ in range(min(k, len(sigs))):
        best = max((i for i in range(len(sigs)) if i not in chosen), key=lambda i: (len(sigs[i] - covered), -i))
        chosen.append(best)
        covered |= sigs[best]
    return chosen


# ----------------------------------------------------------------------------------------------------------------
# held-out evaluation: programs applied network by network, nothing kept
# ----------------------------------------------------------------------------------------------------------------


def evaluate_holdout(formulas: Sequence[str], tasks: Tasks, proto: StatsProtocol, *, progress: bool = False,
                     data_dir=None, checkpoint: str | os.PathLike | None = None,
                     checkpoint_seconds: float = 60.0) -> dict[str, dict]:
    """Spearman / Kendall of each formula's scores against the targets of ``tasks`` (e.g. :func:`holdout_tasks`).

    Each network's statistics are computed and scored by the programs in one jitted call
    (:func:`jzcp.statistics.make_program_scorer`: every candidate block, dead ones masked, so one compilation
    serves every architecture); statistics are not cached. A program invalid on a network gets NaN there (omitted
    by the correlations; ``invalid`` counts them).

    ``checkpoint``: a JSON file of the per-network scores so far, written atomically at most every
    ``checkpoint_seconds`` and at the end; a rerun with the same file skips the networks it holds (hours-long
    NB301 runs survive a kill, losing at most ``checkpoint_seconds`` of work). The file records the formulas and
    the protocol; a file written for others is refused, not mixed in.
    """
    import jax.numpy as jnp

    from jzcp import metrics
    from jzcp import programs as pg
    from jzcp import statistics as st
    from jzcp.proxies.net import fresh_params

    if not formulas:
        return {}
    progs = pg.parse_many(list(formulas))
    scores = np.full((len(formulas), len(tasks)), np.nan)
    names = [f"{s}:{int(i)}" for s, i in zip(tasks.space, tasks.index)]
    done = _load_scores(checkpoint, formulas, proto) if checkpoint else {}
    scored = {j for j, name in enumerate(names) if name in done}  # positions whose scores are known
    for j in scored:
        scores[:, j] = done[names[j]]
    saved = time.monotonic()

    def save(force: bool = False) -> None:
        nonlocal saved
        if checkpoint and (force or time.monotonic() - saved >= checkpoint_seconds):
            path = Path(checkpoint)
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = {**done, **{names[j]: scores[:, j] for j in scored}}  # keeps rows of networks not asked now
            _write_json(path, {"formulas": list(formulas), "protocol": dataclasses.asdict(proto),
                               "scores": {n: [None if np.isnan(v) else float(v) for v in row]
                                          for n, row in rows.items()}})
            saved = time.monotonic()

    for space in dict.fromkeys(tasks.space):
        idx = [i for i, s in enumerate(tasks.space) if s == space and i not in scored]
        if not idx:
            continue
        spec, config, batch = _family(space, proto, data_dir)
        scorer = st.make_program_scorer(spec, config)
        key = st.noise_key(config.seed)
        x = jnp.asarray(batch.images)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(idx), desc=f"held-out {space}", unit="net", dynamic_ncols=True)
        for i in idx:
            arch = np.asarray(tasks.archs[i])
            r = scorer(fresh_params(spec, config, arch), x, jnp.asarray(arch, spec.arch_dtype), key, progs)
            scores[:, i] = np.where(np.asarray(r.valid)[:, 0], np.asarray(r.scores)[:, 0], np.nan)
            scored.add(i)
            save()
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    save(force=True)
    out = {}
    for f, row in zip(formulas, scores):
        ok = np.isfinite(row)
        out[f] = {"spearman": float(metrics.spearman(jnp.asarray(row), jnp.asarray(tasks.target))),
                  "kendall": float(metrics.kendall_tau(jnp.asarray(row), jnp.asarray(tasks.target))),
                  "n": int(ok.sum()), "invalid": int((~ok).sum())}
    return out


# ----------------------------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------------------------


def add_evolve_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``jzcp evolve``."""
    p.add_argument("--spaces", default="nb201", help=f"comma-separated search spaces the tasks cycle through "
                                                     f"(supported: {', '.join(EVOLVE_SPACES)}; default nb201)")
    p.add_argument("--dataset", default="cifar10", help="dataset of the minibatch and the targets (default cifar10)")
    p.add_argument("--target", default=None, help="accuracy target (default: the EZNAS one, NB201 c10valid_val)")
    p.add_argument("--pop", type=int, default=50, help="population size (default 50, EZNAS)")
    p.add_argument("--generations", type=int, default=15, help="generations (default 15, the EZNAS paper)")
    p.add_argument("--tasks", type=int, default=4, help="fitness tasks (default 4)")
    p.add_argument("--nets-per-task", type=int, default=20, help="networks per task (default 20)")
    p.add_argument("--metric", default="kendall", choices=["kendall", "spearman"],
                   help="per-task correlation (default kendall, as EZNAS)")
    p.add_argument("--reduce", default="min", choices=["min", "mean"], help="combine tasks by min (EZNAS) or mean")
    p.add_argument("--candidates", type=int, default=None,
                   help="candidates proposed per generation before screening (default 4 x pop)")
    p.add_argument("--elitism", type=int, default=0, help="hall-of-fame programs added to the parents (default 0)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="minibatch size of the statistics (default 1, as the EZNAS evolution statistics)")
    p.add_argument("--data-seed", type=int, default=1,
                   help="seed of the minibatch, the weight init and the noise passes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the task draw and of the search (default 0)")
    p.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="after the search, score the final picks and EZNAS-A on N held-out architectures (default 0)")
    p.add_argument("--channels", type=int, default=16, help="NB201 network width (default 16; smaller for tests)")
    p.add_argument("--cells-per-stage", type=int, default=5, help="NB201 cells per stage (default 5)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--cache-dir", default=None,
                   help="statistics cache (default $JZCP_CACHE or ~/.cache/jzcp; <dir>/eznas-stats)")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache (<cache-dir>/xla)")
    p.add_argument("--no-plot", action="store_true", help="skip fitness.png")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cache_root(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    base = os.environ.get("JZCP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jzcp")
    return Path(base)


def _load_scores(path, formulas: Sequence[str], proto: StatsProtocol) -> dict[str, list]:
    """The per-network scores of an :func:`evaluate_holdout` checkpoint (``{}`` if there is none yet)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
        formulas_ok = saved["formulas"] == list(formulas)
        proto_ok = saved["protocol"] == dataclasses.asdict(proto)
        scores = {str(k): [np.nan if v is None else float(v) for v in row] for k, row in saved["scores"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"held-out score checkpoint {path} is unreadable ({e}); remove it to start over") from e
    if not (formulas_ok and proto_ok):
        raise ValueError(f"held-out score checkpoint {path} was written for other "
                         f"{'formulas' if not formulas_ok else 'statistics protocol'}; "
                         f"remove it or choose another file")
    if any(len(row) != len(formulas) for row in scores.values()):
        raise ValueError(f"held-out score checkpoint {path} is corrupt: rows do not match its formulas")
    return scores


def _reversed_note(direction: int) -> str:
    """What the printed lines add for a program whose proxy is its negated score (direction -1)."""
    return " (direction -1: the proxy is -score)" if direction < 0 else ""


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def _run_identity(args, config) -> dict:
    """The settings a resumed run must share with the original (``generations`` excepted)."""
    cfg = dataclasses.asdict(config)
    cfg.pop("generations")
    return {"spaces": args.spaces, "dataset": args.dataset, "target": args.target, "tasks": args.tasks,
            "nets_per_task": args.nets_per_task, "metric": args.metric, "reduce": args.reduce,
            "batch_size": args.batch_size, "data_seed": args.data_seed, "seed": args.seed,
            "channels": args.channels, "cells_per_stage": args.cells_per_stage, "config": cfg}


def _plot(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = [h["generation"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    ax.plot(g, [h["best"] for h in history], "o-", label="best offspring")
    ax.plot(g, [h["median_valid"] for h in history], "s--", label="median valid offspring")
    ax.plot(g, [h["hof_best"] for h in history], "k:", label="hall-of-fame best")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_evolve_command(args) -> int:
    """Run ``jzcp evolve`` (see the module docstring); returns the exit status."""
    import jax

    from jzcp import evolution as ev
    from jzcp import programs as pg

    spaces = tuple(s.strip() for s in args.spaces.split(",") if s.strip())
    if not spaces:
        raise ValueError("--spaces: no space named")
    for s in spaces:
        if s not in EVOLVE_SPACES:
            raise ValueError(f"--spaces: {s!r} is not supported by jzcp evolve yet; supported: "
                             f"{', '.join(EVOLVE_SPACES)}")
    if args.generations < 1:
        raise ValueError(f"--generations must be >= 1, got {args.generations}")
    cands = args.candidates or 4 * args.pop
    config = ev.Config(population_size=args.pop, num_offspring=args.pop, num_candidates=cands,
                       num_parents=max(1, args.pop // 2), elitism=args.elitism, generations=args.generations)
    out = Path(args.out)
    ckpt, run_json = out / "state.npz", out / "run.json"
    identity = _run_identity(args, config)
    state = None
    history: list[dict] = []
    if args.resume:
        if not ckpt.is_file() or not run_json.is_file():
            raise ValueError(f"--resume: {out} has no checkpoint (state.npz + run.json); start without --resume")
        theirs = json.loads(run_json.read_text())
        if theirs != json.loads(json.dumps(identity)):
            diff = sorted(k for k in identity if theirs.get(k) != json.loads(json.dumps(identity)).get(k))
            raise ValueError(f"--resume: {out} was started with other settings (differ: {', '.join(diff)})")
        state = ev.load_state(str(ckpt))
        state = state.replace(config=config)  # only `generations` may differ (checked above)
        hist_path = out / "history.json"
        if hist_path.is_file():
            history = [h for h in json.loads(hist_path.read_text()) if h["generation"] < int(state.generation)]
    else:
        if ckpt.exists():
            raise ValueError(f"{out} already holds a run (state.npz); use --resume or another --out")
        out.mkdir(parents=True, exist_ok=True)
        _write_json(run_json, identity)

    cache_root = _cache_root(args.cache_dir)
    if not args.no_compile_cache:
        jax.config.update("jax_compilation_cache_dir", str(cache_root / "xla"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    progress = not args.quiet
    data_dir = getattr(args, "data_dir", None)
    tasks = make_tasks(spaces, args.tasks, args.nets_per_task, args.seed, dataset=args.dataset,
                       target=args.target, data_dir=data_dir)
    _write_json(out / "tasks.json", tasks.to_json())
    proto = StatsProtocol(dataset=args.dataset, batch_size=args.batch_size, seed=args.data_seed,
                          channels=args.channels, cells_per_stage=args.cells_per_stage)
    t0 = time.time()
    stats_list, timing = task_statistics(tasks, proto, cache_root / "eznas-stats", progress=progress,
                                         data_dir=data_dir)
    t_stats = time.time() - t0
    stats = pg.batch_networks(stats_list)
    mini = pg.batch_networks([stats_list[i] for i in screen_networks(stats_list)])
    del stats_list  # the batched copies are what the search reads (the host lists would double the memory)
    fitness = ev.make_fitness_fn(stats, tasks.task, tasks.target, metric=args.metric, reduce=args.reduce)
    screen = ev.make_screen_fn(mini)

    total = args.generations
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=0 if state is None else int(state.generation), desc="evolve",
                   unit="gen", dynamic_ncols=True)

    def callback(st, rec):
        hof_formula = pg.to_formula(st.hof[0]) if np.isfinite(float(st.hof_fitness[0])) else None
        rec = {**rec, "hof_formula": hof_formula}
        history.append(rec)
        _write_json(out / "history.json", history)  # history first, then the state: see the resume rule
        ev.save_state(str(ckpt), st)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"gen {rec['generation']} best {rec['hof_best']:.4f} {(hof_formula or '')[:60]}")

    t1 = time.time()
    state, _ = ev.run(jax.random.key(args.seed), config, fitness, screen_fn=screen, state=state,
                      num_generations=total, callback=callback)
    t_search = time.time() - t1
    if bar is not None:
        bar.close()

    picks, pick_fit = ev.select_final(state)
    pick_formulas = pg.to_formulas(picks)
    hof = [{"formula": pg.to_formula(state.hof[i]), "fitness": float(state.hof_fitness[i]),
            "nodes": int(state.hof.length[i])} for i in range(len(state.hof_fitness))
           if np.isfinite(float(state.hof_fitness[i]))]
    # The fitness is sign-free: each pick's direction (sign of its fitness-task correlations, never the held-out
    # ones) says whether its proxy is the score or its negation. One call at the population's compiled size.
    probe = pick_formulas + [pg.EZNAS_A] * max(1, config.num_offspring - len(pick_formulas))
    probe_fit, probe_dir = (np.asarray(a) for a in fitness.with_direction(pg.parse_many(probe, config.capacity)))
    direction = dict(zip(probe, probe_dir.tolist()))
    report: dict[str, Any] = {
        "hall_of_fame": hof,
        "final_picks": [{"formula": f, "fitness": float(v), "direction": direction[f]}
                        for f, v in zip(pick_formulas, pick_fit)],
        "eznas_a_fitness": float(probe_fit[-1]),
        "eznas_a_direction": direction[pg.EZNAS_A],
        "generations": int(state.generation),
        "programs_evaluated": int(state.num_evaluated),
        "seconds": {"statistics": t_stats, "search_this_session": t_search, **timing},
        "statistics_protocol": dataclasses.asdict(proto),
        "fitness": {"metric": args.metric, "reduce": args.reduce, "tasks": args.tasks,
                    "nets_per_task": args.nets_per_task, "target": sorted(set(tasks.target_name))},
    }
    if args.holdout:
        ho = holdout_tasks(spaces[0], args.holdout, seed=args.seed, dataset=args.dataset, target=args.target,
                           data_dir=data_dir)
        forms = list(dict.fromkeys(pick_formulas + [pg.EZNAS_A]))
        t2 = time.time()
        results = evaluate_holdout(forms, ho, proto, progress=progress, data_dir=data_dir)
        for f, r in results.items():  # the correlations of the proxy each pick stands for (score x direction)
            r["direction"] = direction[f]
            r["oriented_spearman"], r["oriented_kendall"] = r["spearman"] * direction[f], r["kendall"] * direction[f]
        report["holdout"] = {"space": spaces[0], "n": len(ho), "target": ho.target_name[0], "results": results,
                             "seconds": time.time() - t2}
    _write_json(out / "hall_of_fame.json", report)
    if not args.no_plot and history:
        _plot(history, out / "fitness.png",
              f"{args.spaces}: pop {args.pop}, {args.tasks} tasks x {args.nets_per_task}, {args.metric}/{args.reduce}")
    best = report["final_picks"][int(np.argmax(pick_fit))]
    print(f"best fitness {best['fitness']:.4f}{_reversed_note(best['direction'])}: {best['formula']}")
    print(f"EZNAS-A fitness on the same tasks: {report['eznas_a_fitness']:.4f}")
    if "holdout" in report:
        for f, r in report["holdout"]["results"].items():
            print(f"held-out ({r['n']} {report['holdout']['space']}): rho {r['oriented_spearman']:.4f} "
                  f"tau {r['oriented_kendall']:.4f}{_reversed_note(r['direction'])}  {f}")
    print(f"wrote {out / 'hall_of_fame.json'}")
    return 0
