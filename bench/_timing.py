"""What every benchmark here shares: the in-process matmul reference that makes timings comparable across noisy
machines (report a rate as a ratio to it), wall-clock timing of a call, and writing the JSON result."""
from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp


def matmul_flops_per_s(n: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of an ``n x n`` float32 matmul on the default backend (after one warm-up)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    return 2 * n**3 / min(timed(lambda: f(a).block_until_ready()) for _ in range(repeats))


def timed(fn) -> float:
    """Seconds one call of ``fn()`` takes (wall clock)."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def first_and_steady(fn, items) -> tuple[float, list[float]]:
    """Seconds of ``fn(items[0])`` (compilation + first run) and of ``fn`` on each later item."""
    return timed(lambda: fn(items[0])), [timed(lambda: fn(it)) for it in items[1:]]


def write_json(path, result) -> Path:
    """Write ``result`` as indented JSON to ``path`` (parent folders created) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return path
