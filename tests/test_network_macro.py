"""The NAS-Bench-Macro network: one compilation for all 6,561 archs, traced == plain, exact params / FLOPs."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import data
from jzcp.networks import layers
from jzcp.networks import macro as net
from jzcp.spaces import macro as space

SMALL = net.MacroConfig(stem_channels=4, head_channels=16)
IMG = (8, 8, 3)


@pytest.fixture(scope="module")
def small_params():
    return net.init(jax.random.key(0), SMALL, IMG)


def test_one_compilation_traced_equals_plain(small_params):
    x = jax.random.normal(jax.random.key(1), (3, *IMG))
    run = jax.jit(chex.assert_max_traces(net.apply_fn(SMALL), n=1))
    archs = np.concatenate([np.asarray(space.sample(jax.random.key(2), 22)),
                            np.zeros((1, 8), np.int32), np.full((1, 8), 2, np.int32)])
    module = net.MacroNetwork(SMALL)
    outs = []
    for i, arch in enumerate(archs):
        logits = np.asarray(run(small_params, x, arch))
        outs.append(logits)
        if i in (0, 5, 22, 23):
            plain = module.apply({"params": small_params}, x, arch)
            # jit vs op-by-op float32 only (BN over 3 samples at 1x1 in the last stage amplifies rounding).
            np.testing.assert_allclose(logits, plain, rtol=1e-3, atol=1e-3)
    assert np.isfinite(outs).all()
    assert len({o.tobytes() for o in outs}) == len({a.tobytes() for a in archs})


def test_vmap_and_taps(small_params):
    x = jax.random.normal(jax.random.key(1), (2, *IMG))
    archs = space.sample(jax.random.key(3), 3)
    batched = jax.jit(jax.vmap(net.apply_fn(SMALL), in_axes=(None, None, 0)))(small_params, x, archs)
    single = np.stack([np.asarray(jax.jit(net.apply_fn(SMALL))(small_params, x, a)) for a in archs])
    np.testing.assert_allclose(batched, single, rtol=1e-3, atol=2e-4)
    # Liveness: only the chosen op's convs are live; their count is the plain network's.
    arch = np.array([0, 0, 1, 1, 0, 2, 0, 0])
    _, state = net.MacroNetwork(SMALL).apply({"params": small_params}, x, jnp.asarray(arch), mutable=[layers.TAPS])
    plain = net.MacroNetwork(SMALL).apply({"params": small_params}, x, arch, mutable=[layers.TAPS])[1]
    live = sum(int(t.live) for t in layers.taps_of(state[layers.TAPS], layers.ConvTap))
    assert live == len(layers.taps_of(plain[layers.TAPS], layers.ConvTap))


def test_params_and_flops_equal_benchmark_for_all_archs(shared_data):
    shapes = data.load_macro_shapes(shared_data)
    assert len(shapes.arch) == space.NUM_ARCHS
    np.testing.assert_array_equal(net.param_count(list(shapes.arch)), shapes.params)
    np.testing.assert_array_equal(net.flops(list(shapes.arch)), shapes.flops)
    ops = np.stack([space.parse(a) for a in shapes.arch])
    np.testing.assert_array_equal(net.param_count(ops), shapes.params)


def test_param_mask_counts_the_plain_network(small_params):
    mask_fn = jax.jit(net.param_mask)
    for i, arch in enumerate(np.asarray(space.sample(jax.random.key(4), 6))):
        mask = jax.device_get(mask_fn(small_params, arch))
        used = sum(int(np.prod(p.shape)) for p, m in zip(jax.tree.leaves(small_params), jax.tree.leaves(mask)) if m)
        assert used == net.param_count(arch, SMALL)
        if i > 0:
            continue  # the plain init below runs op by op (slow)
        plain = net.MacroNetwork(SMALL).init(jax.random.key(0), jnp.zeros((2, *IMG)), arch)["params"]
        assert layers.param_count(plain) == used


def test_malformed_architectures_raise():
    with pytest.raises(ValueError, match="characters"):
        net.param_count("0120")
    with pytest.raises(ValueError, match="op id"):
        net.flops("01234567")
    with pytest.raises(ValueError, match="op ids"):
        net.param_count(np.array([0, 1, 2, 3, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="shape"):
        net.MacroNetwork(SMALL).init(jax.random.key(0), jnp.zeros((1, *IMG)), np.zeros(7, np.int32))
