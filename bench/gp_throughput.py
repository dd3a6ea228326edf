"""EZNAS search throughput on this machine: the EZNAS setting end to end, and program x network evaluations/s.

    python bench/gp_throughput.py [--pop 50 --generations 15 --tasks 4 --nets-per-task 20] [--warm]

1. Runs ``jzcp evolve`` in the EZNAS setting (population 50, 15 generations, 4 tasks x 20 NB201 networks, statistics
   at batch 1) from a **cold start** by default: a fresh statistics cache and a fresh XLA compilation cache in a
   temporary directory, so the wall time includes collecting the statistics of the 80 networks and every
   compilation (``--warm`` reuses ``--work-dir`` instead). Phases are read from the run's ``hall_of_fame.json``.
2. Throughput of the jitted population interpreter on those real statistics: P random programs (EZNAS's initial
   half-and-half trees, depth 2-6) x the 80 networks, timed after compilation, and the same for the final parents
   of the search (evolved programs are larger).

Prints a table and writes JSON (``--out``, default ``bench/results/gp_throughput.json``). The machine may be shared:
the load average before and after is recorded next to the timings.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pop", type=int, default=50)
    ap.add_argument("--generations", type=int, default=15)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--nets-per-task", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed interpreter calls per population kind")
    ap.add_argument("--work-dir", default=None, help="where the run and its caches go (default: a fresh temp dir)")
    ap.add_argument("--warm", action="store_true", help="reuse --work-dir's caches (not a cold start)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="bench/results/gp_throughput.json")
    args = ap.parse_args(argv)
    if args.warm and not args.work_dir:
        ap.error("--warm needs --work-dir")

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="jzcp-gp-bench-"))
    run_dir = work / f"run-{int(time.time())}"
    cache = work / "cache"
    load_before = _load()

    from jzcp import cli

    argv_evolve = ["evolve", "--pop", str(args.pop), "--generations", str(args.generations), "--tasks",
                   str(args.tasks), "--nets-per-task", str(args.nets_per_task), "--batch-size", str(args.batch_size),
                   "--seed", str(args.seed), "--out", str(run_dir), "--cache-dir", str(cache), "--no-plot"]
    if args.data_dir:
        argv_evolve += ["--data-dir", args.data_dir]
    t0 = time.time()
    rc = cli.main(argv_evolve)
    wall = time.time() - t0
    if rc != 0:
        print(f"jzcp evolve failed with status {rc}", file=sys.stderr)
        return rc
    report = json.loads((run_dir / "hall_of_fame.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    secs = report["seconds"]
    gen_secs = [h["seconds"] for h in history]

    # --- interpreter throughput on the same (now cached) statistics ---------------------------------------------
    import jax
    import numpy as np

    from jzcp import evolution as ev
    from jzcp import evolve_cli as E
    from jzcp import programs as pg

    tasks = E.make_tasks(["nb201"], args.tasks, args.nets_per_task, args.seed, data_dir=args.data_dir)
    proto = E.StatsProtocol(batch_size=args.batch_size)
    stats_list, _ = E.task_statistics(tasks, proto, cache / "eznas-stats", data_dir=args.data_dir)
    stats = pg.batch_networks(stats_list)
    n_nets = stats.num_networks
    state = ev.load_state(str(run_dir / "state.npz"))
    npar = int(state.num_parents)
    evolved = pg.Programs(np.asarray(state.parents.nodes)[np.arange(args.pop) % npar],
                          np.asarray(state.parents.length)[np.arange(args.pop) % npar])
    rows = {}
    for kind, make in (("random initial programs", lambda k: pg.generate(jax.random.key(100 + k), args.pop, 2, 6)),
                       ("final parents of the search", lambda k: evolved)):
        jax.block_until_ready(pg.evaluate(make(0), stats))  # compiled by the search already (same shapes)
        times = []
        for k in range(args.repeats):
            progs = make(k + 1)
            t = time.time()
            jax.block_until_ready(pg.evaluate(progs, stats))
            times.append(time.time() - t)
        med = float(np.median(times))
        rows[kind] = {"programs": args.pop, "networks": n_nets, "blocks": stats.num_blocks,
                      "mean_nodes": float(np.mean(np.asarray(make(1).length))), "seconds_median": med,
                      "evaluations_per_s": args.pop * n_nets / med,
                      "program_block_evaluations_per_s": args.pop * stats.num_blocks / med}
    load_after = _load()

    result = {
        "setting": {"pop": args.pop, "generations": args.generations, "tasks": args.tasks,
                    "nets_per_task": args.nets_per_task, "batch_size": args.batch_size, "seed": args.seed,
                    "cold_start": not args.warm},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "jax": jax.__version__, "load_average_before": load_before, "load_average_after": load_after},
        "search_wall_seconds": wall,
        "phases": {
            "statistics_seconds": secs["statistics"],
            "statistics_networks_computed": secs.get("computed", 0),
            "statistics_first_call_seconds (compile + 1 network)": secs.get("first_call_seconds", 0.0),
            "statistics_seconds_per_network_after_compile": (secs.get("seconds_compute", 0.0)
                                                            / max(secs.get("computed", 1) - 1, 1)),
            "search_seconds": secs["search_this_session"],
            "first_generation_seconds (includes interpreter compiles)": gen_secs[0] if gen_secs else None,
            "later_generations_median_seconds": float(np.median(gen_secs[1:])) if len(gen_secs) > 1 else None,
        },
        "interpreter": rows,
        "result": {"best_fitness": max(p["fitness"] for p in report["final_picks"]),
                   "best_formula": max(report["final_picks"], key=lambda p: p["fitness"])["formula"],
                   "eznas_a_fitness": report["eznas_a_fitness"]},
        "run_dir": str(run_dir),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))

    ph = result["phases"]
    lines = [
        f"EZNAS setting: pop {args.pop}, {args.generations} generations, {args.tasks} tasks x {args.nets_per_task} "
        f"NB201 networks, statistics at batch {args.batch_size} ({'cold' if not args.warm else 'warm'} start; "
        f"{os.cpu_count()} CPUs, load {load_before} -> {load_after})",
        f"{'phase':<58}{'seconds':>10}",
        "-" * 68,
        f"{'statistics of ' + str(n_nets) + ' networks (compile included)':<58}{ph['statistics_seconds']:>10.1f}",
        f"{'  per network after compile':<58}{ph['statistics_seconds_per_network_after_compile']:>10.2f}",
        f"{'search (' + str(args.generations) + ' generations)':<58}{ph['search_seconds']:>10.1f}",
        f"{'  first generation (interpreter compiles)':<58}"
        f"{(ph['first_generation_seconds (includes interpreter compiles)'] or 0):>10.1f}",
        f"{'  later generations, median':<58}{(ph['later_generations_median_seconds'] or 0):>10.1f}",
        f"{'end to end (jzcp evolve wall time)':<58}{wall:>10.1f}",
        "",
        f"{'interpreter, ' + str(args.pop) + ' programs x ' + str(n_nets) + ' networks':<42}{'s/call':>8}"
        f"{'nodes':>7}{'prog x net/s':>14}{'prog x block/s':>16}",
    ]
    for kind, r in rows.items():
        lines.append(f"{kind:<42}{r['seconds_median']:>8.2f}{r['mean_nodes']:>7.1f}{r['evaluations_per_s']:>14.0f}"
                     f"{r['program_block_evaluations_per_s']:>16.0f}")
    lines += ["", f"best fitness {result['result']['best_fitness']:.4f} (EZNAS-A on the same tasks: "
                  f"{result['result']['eznas_a_fitness']:.4f}): {result['result']['best_formula']}",
              f"wrote {out}"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
