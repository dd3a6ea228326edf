"""Every search space compiled once: compile time, shape classes, steady per-architecture proxy-suite time.

    python bench/spaces.py [--spaces nb201,nb101,nb301,macro,mobilenetv3] [--archs 3] [--batch-size 64]
                           [--proxies jacov,nwot,snip,grad_norm,params,flops] [--mbv3-resolution 224]
                           [--out bench/out/spaces.json]
    python bench/spaces.py --statistics --batch-size 1 [--spaces ...]   # the EZNAS statistics collector instead

Per space, one jitted proxy suite (:func:`jzcp.proxies.make_suite`) is built with the architecture as a traced
argument; the first call's time is the compilation (plus one run), the next ``--archs`` random architectures give
the steady time per architecture (median, fresh per-architecture init included: that is what ``jzcp score``
pays). The number of traces is counted: it must be 1 for every space. A 2048x2048 float32 matmul is timed in the
same process so that times can be compared across (noisy) machines as a ratio.

``--statistics`` times the EZNAS statistics collector (:func:`jzcp.statistics.make_collector`, D / N / P passes)
instead, and reports the memory of one network's statistics: all candidate blocks (what the jitted call returns)
and the live blocks only (what the interpreter and the cache hold), mean over the timed architectures.

Shape classes -- how many compilations a space needs at one input shape -- follow from how its architectures vary:
NB201, NB101, NB301 (one (C, N)), NAS-Bench-Macro and OFA MobileNetV3 (one width / resolution) each compile once,
because every choice (op, edge input, channel count, kernel size, expansion, depth) is data selecting among
precomputed candidates. NDS DARTS has one class per distinct (width, depth) of its records.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from _timing import first_and_steady, matmul_flops_per_s

from jzcp import proxies
from jzcp.spaces import darts as darts_space
from jzcp.spaces import macro as macro_space
from jzcp.spaces import mobilenetv3 as mbv3_space
from jzcp.spaces import nb101 as nb101_space
from jzcp.spaces import nb201 as nb201_space

SHAPE_CLASSES = {
    "nb201": "1 (C=16, N=5): ops are selected per edge",
    "nb101": "1: ops, edges and per-vertex channel counts are selected",
    "nb301": "1 (C=32, 8 cells): op and input of every edge are selected",
    "macro": "1: the op of every layer is selected",
    "mobilenetv3": "1 per (width, resolution): kernel, expansion, depth are selected",
}


def sample_archs(space: str, n: int, seed: int) -> list[np.ndarray]:
    key = jax.random.key(seed)
    if space == "nb201":
        return list(np.asarray(nb201_space.sample(key, n)))
    if space == "nb101":
        from jzcp.networks import nb101

        cells = nb101_space.sample(key, n)
        return [nb101.encode(nb101_space.Cell(*(np.asarray(a)[i] for a in cells))) for i in range(n)]
    if space == "nb301":
        return list(np.asarray(darts_space.sample(key, n)))
    if space == "macro":
        return list(np.asarray(macro_space.sample(key, n)))
    return list(np.asarray(mbv3_space.flatten(mbv3_space.sample(key, n))))


def space_spec(space: str, config, args):
    """The space's network at its published size (MobileNetV3: ImageNet, ``--mbv3-resolution``)."""
    if space == "mobilenetv3":
        return proxies.mobilenetv3_net(1000, config, resolution=args.mbv3_resolution)
    return proxies.space_net(space, 10, config)


def jit_counting_traces(fn):
    """``(jax.jit(fn), traces)``: ``traces[0]`` counts the traces (compilations), never the calls."""
    traces = [0]

    def counted(*a):
        traces[0] += 1
        return fn(*a)

    return jax.jit(counted), traces


def bench_space(space: str, names: tuple[str, ...], args) -> dict:
    config = proxies.ProxyConfig(batch_size=args.batch_size, seed=42)
    spec = space_spec(space, config, args)
    suite, traces = jit_counting_traces(proxies.suite_fn(spec, names, config))
    x = jax.random.normal(jax.random.key(1), (args.batch_size, *spec.image_shape))
    y = jax.random.randint(jax.random.key(2), (args.batch_size,), 0, spec.num_classes)
    key = jax.random.key(3)
    archs = sample_archs(space, args.archs + 1, args.seed)

    def one(arch):
        params = proxies.fresh_params(spec, config, arch)
        with jax.enable_x64(config.synflow_float64 and "synflow" in names):
            out = suite(params, x, y, jnp.asarray(arch), key)
        return {k: float(v) for k, v in jax.block_until_ready(out).items()}

    first, steady = first_and_steady(one, archs)
    med = float(np.median(steady))
    return {"space": space, "image_shape": list(spec.image_shape), "shape_classes": SHAPE_CLASSES[space],
            "traces": traces[0], "compile_plus_first_s": first, "steady_s_per_arch": med,
            "steady_all_s": steady, "archs_per_hour": 3600.0 / med}


def bench_statistics(space: str, args) -> dict:
    from jzcp import statistics as st

    config = proxies.ProxyConfig(batch_size=args.batch_size, seed=1, init="kaiming_fan_out")
    spec = space_spec(space, config, args)
    collect, traces = jit_counting_traces(st.statistics_fn(spec, config))
    memory = []
    x = jax.random.normal(jax.random.key(1), (args.batch_size, *spec.image_shape))

    def one(arch):
        records = jax.block_until_ready(collect(proxies.fresh_params(spec, config, arch), x, jnp.asarray(arch),
                                                st.noise_key(config.seed)))
        memory.append((st.memory_bytes(records), st.memory_bytes(records, live_only=True),
                       sum(bool(r["live"]) for r in records), len(records)))

    first, steady = first_and_steady(one, sample_archs(space, args.archs + 1, args.seed))
    med = float(np.median(steady))
    mem = np.mean(np.asarray(memory, np.float64), axis=0)
    return {"space": space, "image_shape": list(spec.image_shape), "shape_classes": SHAPE_CLASSES[space],
            "traces": traces[0], "compile_plus_first_s": first, "steady_s_per_arch": med, "steady_all_s": steady,
            "archs_per_hour": 3600.0 / med, "stats_mib_all_candidates": mem[0] / 2**20,
            "stats_mib_live": mem[1] / 2**20, "live_blocks": mem[2], "candidate_blocks": mem[3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", default="nb201,nb101,nb301,macro,mobilenetv3")
    ap.add_argument("--proxies", default="jacov,nwot,snip,grad_norm,params,flops",
                    help="the proxy suite timed (default: the README main job's six)")
    ap.add_argument("--archs", type=int, default=3, help="architectures timed after the first (default 3)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mbv3-resolution", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--statistics", action="store_true", help="time the EZNAS statistics collector instead")
    ap.add_argument("--out", default=None, help="default bench/out/spaces.json (spaces_statistics.json)")
    args = ap.parse_args()
    args.out = args.out or ("bench/out/spaces_statistics.json" if args.statistics else "bench/out/spaces.json")
    names = tuple(n.strip() for n in args.proxies.split(",") if n.strip())

    rows = []
    for space in args.spaces.split(","):
        print(f"{space}: compiling and timing ...", flush=True)
        row = bench_statistics(space.strip(), args) if args.statistics else bench_space(space.strip(), names, args)
        rows.append(row)
        print(f"  compile+first {row['compile_plus_first_s']:.1f} s, steady {row['steady_s_per_arch']:.2f} s/arch",
              flush=True)
    matmul = matmul_flops_per_s()

    what = "EZNAS statistics (D, N, P)" if args.statistics else f"proxy suite ({', '.join(names)})"
    print(f"\n{what}, batch {args.batch_size}, {platform.processor() or platform.machine()}, "
          f"{jax.device_count()} {jax.default_backend()} device(s); matmul {matmul / 1e9:.1f} GFLOP/s")
    head = f"{'space':<12}{'input':>14}{'traces':>8}{'compile+1st s':>15}{'steady s/arch':>15}{'archs/h':>9}  shape classes"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        shape = "x".join(map(str, r["image_shape"]))
        print(f"{r['space']:<12}{shape:>14}{r['traces']:>8}{r['compile_plus_first_s']:>15.1f}"
              f"{r['steady_s_per_arch']:>15.2f}{r['archs_per_hour']:>9.0f}  {r['shape_classes']}")
        if args.statistics:
            print(f"{'':<12}statistics per network: {r['stats_mib_all_candidates']:.1f} MiB all candidate blocks "
                  f"({r['candidate_blocks']:.0f}), {r['stats_mib_live']:.1f} MiB live ({r['live_blocks']:.1f} blocks)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"proxies": [] if args.statistics else list(names), "statistics": args.statistics,
                               "batch_size": args.batch_size,
                               "matmul_gflops": matmul / 1e9, "machine": platform.machine(),
                               "backend": jax.default_backend(), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
