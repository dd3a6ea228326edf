"""The OFA MobileNetV3 network: exact parameter counts, one compilation for all sub-networks, traced == plain."""
from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from jzcp.networks import mobilenetv3 as net
from jzcp.spaces import mobilenetv3 as space

SMALL = net.MobileNetV3NetConfig(resolution=64, num_classes=10)
LARGEST = space.Arch(np.full(20, 7), np.full(20, 6), np.full(5, 4))
SMALLEST = space.Arch(np.full(20, 3), np.full(20, 3), np.full(5, 2))


def _one(archs, j):
    return space.Arch(*(np.asarray(a[j]) for a in archs))


def test_largest_subnet_param_counts():
    """OFA MobileNetV3 max sub-network at 1000 classes: 7.66 M parameters at width 1.0 (OFA's "7.7M"),
    10.70 M at width 1.2."""
    assert int(net.param_count(LARGEST, net.MobileNetV3NetConfig(1.0))) == 7_664_760
    assert int(net.param_count(LARGEST, net.MobileNetV3NetConfig(1.2))) == 10_701_632
    small = int(net.param_count(SMALLEST))
    assert 3.0e6 < small < 4.0e6
    # The classifier is 1280 x classes + classes.
    assert int(net.param_count(LARGEST)) - int(net.param_count(LARGEST, net.MobileNetV3NetConfig(num_classes=10))) == 990 * 1281


def test_flops_are_ofa_macs():
    f224 = int(net.flops(LARGEST))
    assert 5.0e8 < f224 < 6.0e8
    f160 = int(net.flops(LARGEST, net.MobileNetV3NetConfig(resolution=160)))
    assert f160 < f224 and int(net.flops(SMALLEST)) < f224
    batch = space.sample(jax.random.key(0), 4)
    assert net.flops(batch).shape == (4,) and net.param_count(batch).shape == (4,)


def test_param_count_equals_used_leaves():
    shapes = net._param_shapes(SMALL)  # abstract tree: nothing compiled
    archs = space.sample(jax.random.key(1), 5)
    for j in range(5):
        a = _one(archs, j)
        mask = net.param_mask(shapes, a)
        used = sum(int(np.prod(p.shape)) for p, m in zip(jax.tree.leaves(shapes), jax.tree.leaves(mask)) if bool(m))
        assert used == int(net.param_count(a, SMALL))


def test_malformed_architectures_raise():
    bad = space.Arch(np.full(20, 4), np.full(20, 6), np.full(5, 4))
    with pytest.raises(ValueError, match="ks"):
        net.param_count(bad)
    with pytest.raises(ValueError, match="depth"):
        net.flops(space.Arch(np.full(20, 3), np.full(20, 3), np.full(5, 5)))
    with pytest.raises(ValueError, match="shapes"):
        net.param_count(space.Arch(np.full(19, 3), np.full(20, 3), np.full(5, 2)))
    with pytest.raises(ValueError, match="resolution"):
        net.MobileNetV3NetConfig(resolution=16)
    with pytest.raises(ValueError, match="init scheme"):
        net.MobileNetV3NetConfig(init="xavier")


@pytest.mark.slow
def test_one_compilation_serves_many_subnets_and_equals_plain_network():
    """~2 minutes on a 2-core CPU (init of ~700 leaves and one compilation of the super-network)."""
    params = net.init(jax.random.key(0), SMALL)
    x = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
    apply = jax.jit(chex.assert_max_traces(net.apply_fn(SMALL), n=1))
    archs = space.sample(jax.random.key(2), 20)
    outs = np.stack([np.asarray(apply(params, x, _one(archs, j))) for j in range(20)])
    assert outs.shape == (20, 4, 10) and np.isfinite(outs).all()
    assert len({o.tobytes() for o in outs}) == 20
    module = net.MobileNetV3Network(SMALL)
    for j in range(2):
        plain = module.apply({"params": params}, x, _one(archs, j))
        np.testing.assert_allclose(outs[j], plain, rtol=1e-4, atol=1e-5)
