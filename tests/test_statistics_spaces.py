"""EZNAS statistics on every search space: the collector compiles once per space, and every live block it
returns is one real conv-BN of the architecture's own network -- its ``wt`` is exactly one conv kernel parameter
the architecture uses and ``wtgrad_D`` is the gradient of ``sum(logits)`` w.r.t. that parameter -- and every such
parameter (stem, SE and BN-free convs excepted) has its block. Small configs keep the compilations short."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import proxies as P
from jzcp import statistics as st
from jzcp.proxies.net import Net

from test_space_proxies import SMALL

# batch 4: MobileNetV3's last stage is 1x1 at resolution 32, and a BN over 2 values has only rounding-noise gradients
CFG = P.ProxyConfig(batch_size=4, seed=1, init="kaiming_fan_out")
# MobileNetV3's collector compiles for minutes on a 2-core CPU (20 elastic layers x 3 kernel sizes, each candidate
# with its conv VJP): its cases run in the slow job (python -m pytest -m slow), the other spaces in the default run.
SPACES = ["nb101", "macro", pytest.param("mobilenetv3", marks=pytest.mark.slow)]
# EZNAS-A through the proxy suite: NAS-Bench-Macro stands for the conv-BN spaces in the default run (NB101's statistics
# are checked above; its suite compilation is the slow job's)
EZNAS_SPACES = [pytest.param("nb101", marks=pytest.mark.slow), "macro",
                pytest.param("mobilenetv3", marks=pytest.mark.slow)]
# conv kernels that are not followed by a BatchNorm (or read the image): not EZNAS blocks
NOT_BLOCKS = ("stem", "first_conv", "se_reduce", "se_expand", "feature_mix", "head']['kernel", "classifier")


def _kernel_leaves(tree):
    """{path: array} of the weight leaves (names ending in ``kernel``: ``kernel``, MobileNetV3's ``expand_kernel``)."""
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
            if str(getattr(p[-1], "key", "")).endswith("kernel")}


@pytest.mark.parametrize("space", SPACES)
def test_blocks_are_the_architectures_own_conv_bn_layers(space):
    spec, archs, _ = SMALL[space]()
    fn = jax.jit(chex.assert_max_traces(st.statistics_fn(spec, CFG), n=1))
    x = jax.random.normal(jax.random.key(0), (4, *spec.image_shape))
    try:
        for arch in archs[:2]:
            params = P.fresh_params(spec, CFG, arch)
            groups = st.live_groups(fn(params, x, jnp.asarray(arch), st.noise_key(CFG.seed)))
            net = Net(jnp.asarray(arch), spec, CFG)
            grads = jax.grad(lambda p: jnp.sum(net.apply(p, x)[0]))(params)
            mask = {jax.tree_util.keystr(p): bool(m) for p, m in
                    jax.tree_util.tree_flatten_with_path(spec.param_mask(params, jnp.asarray(arch)))[0]}
            weights, wgrads = _kernel_leaves(params), _kernel_leaves(grads)
            owners = []
            for g in groups:
                for t, v in g.items():
                    assert np.all(np.isfinite(v)), (space, t)
                for i in range(g["wt"].shape[0]):
                    w = np.transpose(g["wt"][i], (2, 3, 1, 0))  # OIHW -> HWIO
                    hit = [k for k, v in weights.items() if v.shape == w.shape and np.array_equal(v, w)]
                    assert len(hit) == 1, (space, w.shape)
                    assert mask[hit[0]], f"{space}: block of an unused parameter {hit[0]}"
                    kg, wg = wgrads[hit[0]], np.transpose(g["wtgrad_D"][i], (2, 3, 1, 0))
                    np.testing.assert_allclose(wg, kg, atol=1e-3 * max(np.abs(kg).max(), 1e-6))
                    owners.append(hit[0])
            assert len(owners) == len(set(owners))
            expected = {k for k, v in weights.items() if mask[k] and v.ndim == 4
                        and not any(n in k for n in NOT_BLOCKS)}
            assert set(owners) == expected, (space, sorted(expected ^ set(owners))[:4])
    finally:
        chex.clear_trace_counter()


@pytest.mark.parametrize("space", EZNAS_SPACES)
def test_eznas_a_is_finite_on_every_space(space):
    spec, archs, _ = SMALL[space]()
    suite = jax.jit(P.suite_fn(spec, ("eznas_a", "eznas_a_t3gn"), CFG))
    x = jax.random.normal(jax.random.key(0), (4, *spec.image_shape))
    y = jnp.arange(4) % spec.num_classes
    values = [suite(P.fresh_params(spec, CFG, a), x, y, jnp.asarray(a), jax.random.key(0)) for a in archs[:2]]
    for v in values:
        assert all(np.isfinite(float(s)) for s in v.values()), (space, v)
