"""Random proxy programs on real NB201 statistics: no crash, and how many are invalid and why.

    python bench/program_validity.py [--programs 100000] [--networks 4] [--pop 500] [--seed 0]
                                     [--out bench/out/program_validity.json]

Collects the EZNAS statistics (batch 1, the evolution protocol) of ``--networks`` NB201 cells of the fitness pool,
then evaluates ``--programs`` random programs (EZNAS's initial half-and-half trees, depth 2-6) on them in
populations of ``--pop`` -- one jitted interpreter call per population, one compilation for all of them. Checks
on every population: valid scores are finite, invalid ones NaN, and the call never raises. Invalid programs are
split into shape-invalid (a primitive gets operands of shapes it does not accept, e.g. ``matmul`` of a 4-D
tensor: decided before any tensor is touched) and numerically invalid (a NaN / Inf block score on at least one
network). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from tqdm import tqdm

from _timing import write_json

from jzcp import evolve_cli as E
from jzcp import programs as pg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=100_000)
    ap.add_argument("--networks", type=int, default=4)
    ap.add_argument("--pop", type=int, default=500, help="programs per interpreter call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default="results/eznas-stats", help="statistics cache (shared with jzcp evolve)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="bench/out/program_validity.json")
    args = ap.parse_args()
    if args.programs % args.pop:
        ap.error("--programs must be a multiple of --pop")

    tasks = E.make_tasks(["nb201"], 1, args.networks, args.seed, data_dir=args.data_dir)
    t0 = time.time()
    stats_list, _ = E.task_statistics(tasks, E.StatsProtocol(), args.cache_dir, data_dir=args.data_dir)
    stats = pg.batch_networks(stats_list)
    t_stats = time.time() - t0

    check = jax.jit(pg.shape_check)
    counts = {"programs": 0, "valid": 0, "shape_invalid": 0, "numerically_invalid": 0, "crashes": 0,
              "inconsistent": 0}
    first_call = None
    t1 = time.time()
    for k in tqdm(range(args.programs // args.pop), desc="populations", unit="pop"):
        progs = pg.generate(jax.random.key(args.seed * 1_000_003 + k), args.pop, 2, 6)
        t = time.time()
        try:
            ev = pg.evaluate(progs, stats)
            valid, scores = np.asarray(ev.valid), np.asarray(ev.scores)
        except Exception as e:  # a crash is what this benchmark hunts: count it, report it, go on
            counts["crashes"] += 1
            print(f"population {k}: {type(e).__name__}: {e}")
            continue
        first_call = first_call if first_call is not None else time.time() - t
        shape_ok = np.asarray(check(progs, stats)).all(axis=-1)  # (P,) valid on every statistics group
        ok = valid.all(axis=1)
        # valid scores finite, invalid ones NaN; a shape-invalid program is never valid on every network
        counts["inconsistent"] += int(np.sum(~np.isfinite(scores[valid])) + np.sum(~np.isnan(scores[~valid]))
                                      + np.sum(ok & ~shape_ok))
        counts["programs"] += args.pop
        counts["valid"] += int(ok.sum())
        counts["shape_invalid"] += int((~shape_ok).sum())
        counts["numerically_invalid"] += int((shape_ok & ~ok).sum())
    seconds = time.time() - t1
    evals = counts["programs"] * stats.num_networks
    later = evals - args.pop * stats.num_networks  # evaluations after the compiling first call
    steady = later / (seconds - first_call) if later and first_call is not None else float("nan")
    result = {"networks": stats.num_networks, "blocks": stats.num_blocks, "population": args.pop, "seed": args.seed,
              "counts": counts, "statistics_seconds": t_stats, "first_call_seconds": first_call,
              "seconds": seconds, "program_network_evaluations_per_s_after_compile": steady}
    n = max(counts["programs"], 1)
    print(f"\n{counts['programs']:,} random programs (half-and-half, depth 2-6) on {stats.num_networks} NB201 "
          f"networks ({stats.num_blocks} blocks), populations of {args.pop}")
    for key in ("valid", "shape_invalid", "numerically_invalid", "crashes", "inconsistent"):
        print(f"  {key:<22}{counts[key]:>9,}  {100 * counts[key] / n:6.2f}%")
    print(f"  {steady:,.0f} program x network evaluations/s after compilation ({seconds:.0f} s in all, first call "
          f"{first_call or float('nan'):.1f} s incl. compilation; statistics {t_stats:.0f} s)")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
