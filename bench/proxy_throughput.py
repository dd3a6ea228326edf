"""Proxy throughput on NB201: architectures per second for the whole suite and for each proxy alone.

    python bench/proxy_throughput.py [--proxies nbsz|all|NAMES] [--cells 3] [--batch-size 64] [--no-alone]
                                     [--select-reference] [--out bench/out/proxy_throughput.json]

For the full suite (every proxy of ``--proxies`` in one jitted call, sharing passes) and then for each proxy alone,
one suite is compiled with the cell as a traced argument and run on ``--cells`` random NB201 cells after a warm-up
cell: the table gives the compile (+ first run) time, the steady seconds per cell (median; fresh per-cell init
included, as ``jzcp score`` pays it), cells per second, the XLA FLOPs of one call (cost analysis of the lowered
suite; synflow's float64 work counts like float32 there) and the achieved FLOP/s as a ratio to a 2048x2048
float32 matmul timed in the same process. ``hours_per_1000`` is what 1,000 cells cost at that rate.
``--select-reference`` also times the full suite on the network whose edges compute every candidate op and
select one (``edge_dispatch="select"``, the network before edges ran only their own op) on the same cells, and
reports the speed-up of the default ``"cond"`` network as a ratio measured in the same process.
"""
from __future__ import annotations

import argparse
import platform

import jax
import numpy as np

from _timing import first_and_steady, matmul_flops_per_s, write_json

from jzcp import data, proxies
from jzcp.scoring import resolve_proxy_names
from jzcp.spaces import nb201 as space


def time_suite(names, config, cells, images, labels, dispatch: str = "cond") -> dict:
    spec = proxies.nb201_net(10, config, edge_dispatch=dispatch)
    suite = proxies.make_suite(spec, names, config)
    key = jax.random.key(config.seed)
    x64 = bool(config.synflow_float64 and "synflow" in names)

    def one(ops):
        params = proxies.fresh_params(spec, config, ops)
        return jax.block_until_ready(suite(params, images, labels, ops, key))

    first, steady = first_and_steady(one, cells)
    params = proxies.fresh_params(spec, config, cells[0])
    with jax.enable_x64(x64):
        # Cost analysis of the lowered HLO: no second compilation.
        cost = suite.jitted.lower(params, images, labels, cells[0], key).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    med = float(np.median(steady))
    return {"proxies": list(names), "compile_plus_first_s": first, "steady_s_per_cell": med, "steady_all_s": steady,
            "cells_per_s": 1.0 / med, "hours_per_1000": 1000 * med / 3600, "xla_flops_per_call": flops,
            "achieved_flops_per_s": flops / med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxies", default="nbsz",
                    help="the suite: 'nbsz' (the 13 of NAS-Bench-Suite-Zero, default), 'all' or names")
    ap.add_argument("--cells", type=int, default=3, help="timed cells after one warm-up cell (default 3)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-alone", action="store_true", help="time only the full suite")
    ap.add_argument("--select-reference", action="store_true",
                    help="also time the full suite with edge_dispatch='select' (every candidate op runs)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="bench/out/proxy_throughput.json")
    args = ap.parse_args()

    names = resolve_proxy_names(args.proxies)
    config = proxies.ProxyConfig(batch_size=args.batch_size, seed=args.seed)
    batch = data.image_batch("cifar10", args.batch_size, seed=args.seed, data_dir=args.data_dir)
    cells = list(np.asarray(space.sample(jax.random.key(0), args.cells + 1)))
    suite = f"suite ({len(names)})"
    runs = [(suite, names, "cond")] + ([(f"{suite}, select", names, "select")] if args.select_reference else [])
    runs += [] if args.no_alone else [(n, (n,), "cond") for n in names]
    rows = []
    for label, ns, dispatch in runs:
        print(f"{label}: compiling and timing ...", flush=True)
        r = time_suite(ns, config, cells, batch.images, batch.labels, dispatch)
        r["label"], r["edge_dispatch"] = label, dispatch
        rows.append(r)
        print(f"  compile+first {r['compile_plus_first_s']:.1f} s, steady {r['steady_s_per_cell']:.2f} s/cell",
              flush=True)
    matmul = matmul_flops_per_s()
    print(f"\nNB201, batch {args.batch_size}, {jax.device_count()} {jax.default_backend()} device(s), "
          f"{platform.machine()}; matmul {matmul / 1e9:.1f} GFLOP/s")
    head = (f"{'proxies':<20}{'compile+1st s':>14}{'s/cell':>9}{'cells/s':>9}{'h/1000':>8}{'GFLOP/call':>12}"
            f"{'GFLOP/s':>9}{'vs matmul':>10}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        r["ratio_to_matmul"] = r["achieved_flops_per_s"] / matmul
        print(f"{r['label']:<20}{r['compile_plus_first_s']:>14.1f}{r['steady_s_per_cell']:>9.2f}"
              f"{r['cells_per_s']:>9.3f}{r['hours_per_1000']:>8.2f}{r['xla_flops_per_call'] / 1e9:>12.1f}"
              f"{r['achieved_flops_per_s'] / 1e9:>9.1f}{r['ratio_to_matmul']:>10.3f}")
    result = {"batch_size": args.batch_size, "matmul_gflops": matmul / 1e9, "backend": jax.default_backend(),
              "rows": rows}
    if args.select_reference:
        result["cond_speedup_vs_select"] = rows[1]["steady_s_per_cell"] / rows[0]["steady_s_per_cell"]
        print(f"\nfull suite, edges running only their own op vs every candidate op: "
              f"{result['cond_speedup_vs_select']:.2f}x faster on the same cells")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
