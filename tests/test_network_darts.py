"""The DARTS / NB301 / NDS-DARTS network: one compilation for all cells, traced == concrete, exact counts."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import data
from jzcp.networks import darts as net
from jzcp.networks import layers
from jzcp.spaces import darts as space

SMALL = net.DartsConfig(channels=4, layers=3)  # normal, reduce, reduce: both cell kinds, reduction_prev
IMG = (8, 8, 3)
# DARTS-V2 (Liu et al. 2019, genotypes.py): 3,349,342 parameters at C=36, 20 cells, without the auxiliary head
# (DARTS's train.py log "param size = 3.349342MB").
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


def _used(params, mask) -> int:
    return sum(int(np.prod(p.shape)) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if bool(m))


def _archs(n, seed, allow_none=False):
    a = np.array(space.sample(jax.random.key(seed), n, allow_none=allow_none))
    # Make sure every reduction edge kind occurs: a skip reading a node (identity) and reading an input (FR).
    a[0, 1, 2] = (2, space.OPS.index("skip_connect"))
    a[0, 1, 3] = (0, space.OPS.index("skip_connect"))
    return a


def test_one_compilation_serves_many_cells_and_equals_concrete_network():
    params = net.init(jax.random.key(0), SMALL, IMG)
    x = jax.random.normal(jax.random.key(1), (3, *IMG))
    module = net.DartsNetwork(SMALL)

    def run(p, x, a):
        logits, taps = module.apply({"params": p}, x, a, mutable=[layers.TAPS])
        flops = sum(t.flops for t in layers.taps_of(taps, layers.FlopsTap))
        return logits, flops

    apply = jax.jit(chex.assert_max_traces(run, n=1))
    archs = _archs(24, 2)
    outs, fl = zip(*[apply(params, x, a) for a in archs])
    outs = np.stack([np.asarray(o) for o in outs])
    assert outs.shape == (24, 3, 10) and np.isfinite(outs).all()
    assert len({o.tobytes() for o in outs}) == 24
    # The FLOPs the live taps record (per batch of 3: per-sample counts) equal the exact NumPy count.
    np.testing.assert_allclose(np.asarray(fl), net.flops(archs, SMALL, IMG), rtol=1e-6)
    for i in range(3):  # the plain network of the cell (only its ops built) computes the same logits
        concrete = module.apply({"params": params}, x, archs[i])
        np.testing.assert_allclose(outs[i], concrete, rtol=1e-4, atol=1e-5)


def test_param_count_matches_nb301_data(shared_data):
    """NAS-Bench-Suite-Zero's NB301 ``params`` (M) and ``flops`` (MFLOPs, tensorwatch) for all 1,218 cells."""
    zc = data.load_naslib_zc("nb301", "cifar10", data_dir=shared_data)
    archs = np.stack(zc.archs)
    assert archs.shape == (1218, 2, 8, 2)
    p = net.param_count(archs)
    f = net.flops(archs)
    assert p.dtype.kind == "i" and f.dtype.kind == "i"
    np.testing.assert_array_equal(p, np.round(zc.proxies["params"] * 1e6).astype(np.int64))
    np.testing.assert_array_equal(f, np.round(zc.proxies["flops"] * 1e6).astype(np.int64))
    assert len(set(p.tolist())) > 500  # the counts really depend on the cell


def test_nds_variant_matches_darts_v2_published_count():
    arch = space.parse_genotype(DARTS_V2)
    assert int(net.param_count(arch, net.DartsConfig.nds(36, 20))) == 3_349_342
    # NB301's network differs (non-affine cell BNs, C=32, 8 cells).
    assert int(net.param_count(arch, net.DartsConfig.nb301())) != 3_349_342


@pytest.mark.parametrize("cfg", [SMALL, net.DartsConfig(channels=6, layers=5, variant="nds", num_classes=7)])
def test_param_count_equals_used_leaves(cfg):
    shapes = net._param_shapes(cfg, IMG)  # abstract tree: no compilation
    for a in _archs(6, 3, allow_none=cfg.allow_none):
        assert _used(shapes, net.param_mask(shapes, a)) == int(net.param_count(a, cfg, IMG))
    assert net.param_count(_archs(6, 3, cfg.allow_none), cfg, IMG).shape == (6,)


def test_init_is_deterministic_and_follows_scheme():
    p1 = net.init(jax.random.key(0), SMALL, IMG)
    p2 = net.init(jax.random.key(0), SMALL, IMG)
    p3 = net.init(jax.random.key(1), SMALL, IMG)
    k = "cell1", "edge3", "sep_conv_5x5", "dw1", "kernel"
    leaf = lambda p: np.asarray(p[k[0]][k[1]][k[2]][k[3]][k[4]])  # noqa: E731
    np.testing.assert_array_equal(leaf(p1), leaf(p2))
    assert not np.array_equal(leaf(p1), leaf(p3))
    assert leaf(p1).shape == (5, 5, 1, 8)  # depthwise: fan-in 25, torch bound 1/5
    assert np.abs(leaf(p1)).max() <= 0.2
    pw = np.asarray(p1["cell0"]["edge0"]["sep_conv_3x3"]["pw1"]["kernel"])
    assert pw.shape == (1, 1, 4, 4) and np.abs(pw).max() <= 0.5
    assert "bn1" not in p1["cell0"]["edge0"]["sep_conv_3x3"]  # NB301 cell BNs are non-affine: no parameters
    np.testing.assert_array_equal(p1["stem_bn"]["scale"], 1.0)


def test_malformed_architectures_raise():
    good = _archs(1, 4)[0]
    module = net.DartsNetwork(SMALL)
    x = jnp.zeros((1, *IMG))
    with pytest.raises(ValueError, match="shape"):
        net.param_count(good[:, :7], SMALL, IMG)
    bad = good.copy()
    bad[0, 0, 0] = 2  # edge 0 may read states 0..1
    with pytest.raises(ValueError, match="reads state 2"):
        net.flops(bad, SMALL, IMG)
    none = good.copy()
    none[1, 3, 1] = space.NONE
    with pytest.raises(ValueError, match="allow_none"):
        module.apply({"params": {}}, x, none)
    assert int(net.param_count(none, net.DartsConfig(channels=4, layers=3, variant="nds"), IMG)) > 0
    with pytest.raises(ValueError, match="variant"):
        net.DartsConfig(variant="darts")
    with pytest.raises(ValueError, match="even"):
        net.DartsConfig(channels=5)


# Proxies whose value depends on how the select-dispatched network records its taps (liveness, fan-in, FLOPs,
# ReLU codes) and on its gradients; all four read the one cross-entropy pass, so the default run compiles it once.
TAP_PROXIES = ("fisher", "flops", "nwot", "snip")
OTHER_PROXIES = ("epe_nas", "grad_norm", "grasp", "jacov", "l2_norm", "meco", "params", "plain", "synflow", "zen",
                 "zico")


def _proxies_traced_vs_concrete(variant, names, archs):
    from jzcp import proxies

    cfg = proxies.ProxyConfig(batch_size=4, seed=5, meco_input_hw=(8, 8))
    spec = proxies.darts_net(10, cfg, channels=4, layers=3, variant=variant, image_shape=IMG)
    run = proxies.suite_fn(spec, names, cfg)
    fast = {"xla_backend_optimization_level": 0}
    traced = jax.jit(run, compiler_options=fast)
    x = jax.random.normal(jax.random.key(1), (4, *IMG))
    y = jnp.arange(4) % 10
    for a in archs:
        params = proxies.fresh_params(spec, cfg, a)
        # Closed over as NumPy, the architecture stays concrete: the plain network of the cell, only its ops built.
        plain = jax.jit(lambda p, x, y, k, a=np.asarray(a): run(p, x, y, a, k), compiler_options=fast)
        with jax.enable_x64(True):  # synflow in float64, as the suite runs it
            got = traced(params, x, y, jnp.asarray(a), jax.random.key(3))
            want = plain(params, x, y, jax.random.key(3))
        for n in names:
            np.testing.assert_allclose(float(got[n]), float(want[n]), rtol=2e-4, atol=1e-6, err_msg=f"{variant} {n}")


def _sep_dil_archs(allow_none):
    a = _archs(2, 4, allow_none)
    ops = [space.OPS.index(o) for o in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")]
    a[0, :, :4, 1] = ops  # both sizes of both merged ops in each cell kind
    a[1, :, 4:, 1] = ops[::-1]
    return a


def test_select_dispatched_proxies_equal_the_plain_network():
    """The architecture-as-data network (every op computed, sep / dil conv sizes merged into one 5x5 op) gives
    the plain network's proxy values: dead ops count as absent, a merged op as the variant it runs."""
    _proxies_traced_vs_concrete("nds", TAP_PROXIES, _sep_dil_archs(True)[:1])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["nb301", "nds"])
def test_select_dispatched_proxies_equal_the_plain_network_all_proxies(variant):
    _proxies_traced_vs_concrete(variant, TAP_PROXIES + OTHER_PROXIES, _sep_dil_archs(variant == "nds"))
