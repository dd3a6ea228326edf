"""All requested proxies of one architecture in one jitted call, sharing passes, compiled once per family and
batch shape."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jzcp.proxies.config import ProxyConfig
from jzcp.proxies.context import Context, nan_if_not_finite
from jzcp.proxies.measures import PROXIES, proxy_info
from jzcp.proxies.net import Net, ProxyNet

# Order in which a suite computes its proxies: the CE pass first so flops reuses its records.
_ORDER = tuple(PROXIES)


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ValueError("proxy names must be a sequence of names, not one string")
    names = tuple(names)
    if not names:
        raise ValueError("no proxies requested")
    for n in names:
        proxy_info(n)  # ValueError naming the unknown proxy
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate proxy names in {names}")
    return names


def suite_fn(spec: ProxyNet, names: Sequence[str], config: ProxyConfig = ProxyConfig()) -> Callable:
    """The un-jitted suite ``(params, x, y, arch, key) -> {name: float32 scalar}`` (NaN where a proxy's value is
    NaN / Inf). Use :func:`make_suite` unless you wrap it yourself (e.g. ``chex.assert_max_traces``)."""
    names = _check_names(names)
    ordered = sorted(names, key=lambda n: (n == "flops", _ORDER.index(n)))

    def run(params, x, y, arch, key):
        ctx = Context(Net(jnp.asarray(arch, spec.arch_dtype), spec, config), params, x, y, key,
                      hvp="grasp" in names)
        out = {n: nan_if_not_finite(PROXIES[n].impl(ctx)) for n in ordered}
        return {n: out[n] for n in names}

    return run


def make_suite(spec: ProxyNet, names: Sequence[str], config: ProxyConfig = ProxyConfig(), *,
               compiler_options: dict | None = None) -> Callable:
    """One jitted function ``suite(params, x, y, arch, key) -> {name: float32 scalar}`` computing every proxy
    in ``names`` for one architecture.

    Args of the returned function: ``params`` (the family's parameter tree, e.g. :func:`fresh_params`),
    ``x`` (B, H, W, C) float32 images, ``y`` (B,) int labels, ``arch`` the architecture array
    (``spec.arch_shape``), ``key`` a PRNG key (zen / meco / noise input draws). One XLA compilation serves
    every architecture of the family at a given batch shape. It never raises for a bad architecture: a
    non-finite value is returned as NaN. Shapes are checked (``ValueError``) before the call.

    ``compiler_options`` go to XLA (e.g. ``{"xla_backend_optimization_level": 0}`` compiles ~3x faster on CPU
    for slower elementwise code; convolutions, the bulk of the work, are library calls either way).
    """
    names = _check_names(names)
    jitted = jax.jit(suite_fn(spec, names, config), compiler_options=compiler_options)
    x64 = bool(config.synflow_float64 and "synflow" in names)

    def suite(params, x, y, arch, key):
        _check_inputs(spec, names, config, x, y, arch)
        with jax.enable_x64(x64):
            return jitted(params, x, y, arch, key)

    suite.names = names
    suite.config = config
    suite.jitted = jitted
    return suite


def _check_inputs(spec: ProxyNet, names, config: ProxyConfig, x, y, arch) -> None:
    xs, ys, arch_shape = np.shape(x), np.shape(y), np.shape(arch)
    if len(xs) != 4 or tuple(xs[1:]) != tuple(spec.image_shape):
        raise ValueError(f"images must have shape (B, {', '.join(map(str, spec.image_shape))}), got {xs}")
    if ys != xs[:1]:
        raise ValueError(f"labels must have shape ({xs[0]},) to match the images, got {ys}")
    if tuple(arch_shape) != tuple(spec.arch_shape):
        raise ValueError(f"{spec.name}: architecture must have shape {spec.arch_shape}, got {arch_shape}")
    if spec.check_arch is not None and not isinstance(arch, jax.core.Tracer):
        spec.check_arch(np.asarray(arch))
    if "zico" in names and xs[0] % config.zico_splits:
        raise ValueError(f"zico: batch size {xs[0]} is not divisible by zico_splits={config.zico_splits}")
    if xs[0] < 2 and any(n in names for n in ("jacov", "epe_nas", "nwot")):
        raise ValueError("jacov / epe_nas / nwot need a batch of at least 2 images")
