"""NB201 compiled once: compile time, steady forward+backward time per cell, achieved FLOP/s.

    python bench/nb201_compile.py [--cells 100] [--batch-size 64] [--out bench/out/nb201_compile.json]

One jitted ``value_and_grad`` of the cross-entropy loss (the work of a gradient-based proxy) is compiled once with
the cell as a traced argument, then run on ``--cells`` random cells. FLOPs come from XLA's cost analysis of the
compiled function (what the machine executes: with the cell as data every edge runs its conv, so a cell costs the
same whatever its ops). The matmul reference (a 2048x2048 float32 product, the best FLOP/s this backend reaches) is
timed in the same process, so the ratio is comparable across noisy machines.
"""
from __future__ import annotations

import argparse
import platform
import time

import jax
import numpy as np
import optax

from _timing import matmul_flops_per_s, timed, write_json

from jzcp.networks import nb201 as net
from jzcp.spaces import nb201 as space


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/out/nb201_compile.json")
    args = ap.parse_args()

    config = net.NB201Config()
    apply = net.apply_fn(config)
    x = jax.random.normal(jax.random.key(1), (args.batch_size, 32, 32, 3))
    y = jax.random.randint(jax.random.key(2), (args.batch_size,), 0, 10)
    traces = []

    def loss(params, x, y, ops):
        traces.append(1)
        return optax.softmax_cross_entropy_with_integer_labels(apply(params, x, ops), y).mean()

    grad_fn = jax.jit(jax.value_and_grad(loss))
    t = time.perf_counter()
    params = net.init(jax.random.key(0), config)
    jax.block_until_ready(params)
    init_s = time.perf_counter() - t
    cells = np.asarray(space.sample(jax.random.key(args.seed), args.cells))

    t = time.perf_counter()
    compiled = grad_fn.lower(params, x, y, cells[0]).compile()
    compile_s = time.perf_counter() - t
    flops = flops_of(compiled)
    jax.block_until_ready(grad_fn(params, x, y, cells[0]))  # warm the jit cache (same executable)

    times = []
    for ops in cells:
        times.append(timed(lambda: jax.block_until_ready(grad_fn(params, x, y, ops))))
    times = np.asarray(times)
    ref = matmul_flops_per_s()
    per_cell = float(np.median(times))
    achieved = flops / per_cell
    result = {
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "cpu_count": jax.local_device_count(),
        "batch_size": args.batch_size,
        "cells": args.cells,
        "traces": len(traces),
        "init_compile_and_run_s": init_s,
        "compile_s": compile_s,
        "fwd_bwd_s_median": per_cell,
        "fwd_bwd_s_mean": float(times.mean()),
        "fwd_bwd_s_p90": float(np.percentile(times, 90)),
        "total_s": float(times.sum()),
        "flops_per_fwd_bwd": flops,
        "achieved_flops_per_s": achieved,
        "matmul_flops_per_s": ref,
        "ratio_to_matmul": achieved / ref,
    }
    rows = [
        ("compilations (traces) for all cells", f"{len(traces)}"),
        ("init (compile + run)", f"{init_s:.1f} s"),
        ("fwd+bwd compile", f"{compile_s:.1f} s"),
        (f"fwd+bwd per cell (median of {args.cells})", f"{per_cell * 1e3:.0f} ms"),
        ("fwd+bwd per cell (p90)", f"{result['fwd_bwd_s_p90'] * 1e3:.0f} ms"),
        ("GFLOP per fwd+bwd (XLA cost analysis)", f"{flops / 1e9:.2f}"),
        ("achieved GFLOP/s", f"{achieved / 1e9:.1f}"),
        ("2048^2 f32 matmul GFLOP/s (same process)", f"{ref / 1e9:.1f}"),
        ("ratio achieved / matmul", f"{achieved / ref:.3f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"NB201 (C=16, N=5) batch {args.batch_size}, {result['device']}")
    for k, v in rows:
        print(f"  {k:<{width}}  {v:>10}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
