"""The NB101 network: one compilation for all cells, traced == plain network, exact params / FLOPs (NASLib)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import data
from jzcp.networks import layers
from jzcp.networks import nb101 as net
from jzcp.spaces import nb101 as space

SMALL = net.NB101Config(stem_channels=8, num_stacks=2, cells_per_stack=1)
IMG = (8, 8, 3)


def _reference_channels(cin, c, m):
    """nasbench ``compute_vertex_channels`` on a pruned n x n matrix, transcribed loop for loop."""
    n = m.shape[0]
    vc = [0] * n
    vc[0], vc[-1] = cin, c
    if n == 2:
        return vc
    k = m[1:].sum(0)[-1]
    interior, corr = c // k, c % k
    for v in range(1, n - 1):
        if m[v, -1]:
            vc[v] = interior + (1 if corr else 0)
            corr -= 1 if corr else 0
    for v in range(n - 3, 0, -1):
        if not m[v, -1]:
            for d in range(v + 1, n - 1):
                if m[v, d]:
                    vc[v] = max(vc[v], vc[d])
    return vc


def _cells(key, num):
    return net.encode(jax.tree.map(np.asarray, space.sample(jax.random.key(key), num)))


def _tapped(config):
    module = net.NB101Network(config)

    def run(params, x, arch):
        return module.apply({"params": params}, x, arch, mutable=[layers.TAPS])

    return jax.jit(chex.assert_max_traces(run, n=1))


@pytest.fixture(scope="module")
def small_params():
    return net.init(jax.random.key(0), SMALL, IMG)


def test_vertex_channels_match_nasbench():
    cells = jax.tree.map(np.asarray, jax.jit(lambda k: space.prune(space.sample(k, 40)))(jax.random.key(7)))
    for c in (128, 256, 9):
        ours = np.asarray(net.vertex_channels(cells.adj, c))
        np.testing.assert_array_equal(ours, net.vertex_channels(cells.adj, c, np))
        for i in range(len(cells.adj)):
            spec = space.format(space.Cell(cells.adj[i], cells.ops[i], cells.mask[i]))
            ref = _reference_channels(0, c, spec["matrix"])
            keep = np.flatnonzero(cells.mask[i])
            assert ours[i][keep][1:-1].tolist() == ref[1:-1]
            assert set(ref[1:-1]) <= set(net.channel_options(c))


@pytest.mark.slow  # ~110 s on the shared 2-core machine (one compile of the tapped network)
def test_one_compilation_traced_equals_plain_network_and_flops(small_params):
    """One compiled function serves 24 cells; it computes the plain network of each cell exactly, and its
    FLOP taps sum to :func:`net.flops`."""
    x = jax.random.normal(jax.random.key(1), (3, *IMG))
    run = _tapped(SMALL)
    archs = np.concatenate([_cells(2, 16), net.encode(space.stack([
        space.parse({"matrix": [[0, 1], [0, 0]], "ops": ["input", "output"]}),
        space.parse({"matrix": [[0, 1, 1], [0, 0, 1], [0, 0, 0]], "ops": ["input", "maxpool3x3", "output"]}),
        space.parse({"matrix": np.triu(np.ones((5, 5), int), 1) * (np.arange(5) != 0)[None] - np.eye(5, k=4, dtype=int),
                     "ops": ["input", "conv1x1-bn-relu", "conv3x3-bn-relu", "maxpool3x3", "output"]}),
        space.parse({"matrix": [[0, 1, 1, 1, 0, 0, 1], [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1, 0],
                                [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1],
                                [0, 0, 0, 0, 0, 0, 0]],
                     "ops": ["input", "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3", "conv3x3-bn-relu",
                             "conv1x1-bn-relu", "output"]}),
    ]))])
    module = net.NB101Network(SMALL)
    outs = []
    for i, arch in enumerate(archs):
        logits, state = run(small_params, x, arch)
        outs.append(np.asarray(logits))
        taps = state[layers.TAPS]
        total = sum(float(t.flops) for t in layers.taps_of(taps, layers.FlopsTap))
        assert total == pytest.approx(float(net.flops(arch, SMALL, IMG)), rel=1e-6)
        if i == 0 or i >= 18:  # the plain network of the concrete cell
            plain = module.apply({"params": small_params}, x, arch)
            np.testing.assert_allclose(logits, plain, rtol=1e-4, atol=1e-5)
    # Different cells compute different functions (a sample may repeat a pruned cell).
    pruned = jax.jit(jax.vmap(lambda a: net.encode_jnp(space.prune(net.decode(a)))))(archs)
    assert np.isfinite(outs).all()
    assert len({o.tobytes() for o in outs}) == len({p.tobytes() for p in np.asarray(pruned)})


def test_param_mask_counts_the_plain_network(small_params):
    mask_fn = jax.jit(net.param_mask)
    archs = _cells(3, 6)
    counts = net.param_count(archs, SMALL)
    for arch, count in zip(archs, counts):
        mask = jax.device_get(mask_fn(small_params, arch))
        used = sum(int(np.prod(p.shape)) for p, m in zip(jax.tree.leaves(small_params), jax.tree.leaves(mask)) if m)
        assert used == count


def test_params_and_flops_equal_naslib(shared_data):
    """Exact on all 500 NAS-Bench-Suite-Zero NB101 cells (NASLib: params in millions, MFLOPs, 6 decimals)."""
    zc = data.load_naslib_zc("nb101", "cifar10", data_dir=shared_data)
    archs = np.stack([net.encode(space.parse_naslib(a)) for a in zc.archs])
    assert len(archs) == 500
    np.testing.assert_array_equal(net.param_count(archs), np.round(zc.proxies["params"] * 1e6).astype(np.int64))
    np.testing.assert_array_equal(net.flops(archs), np.round(zc.proxies["flops"] * 1e6).astype(np.int64))


def test_init_schemes_follow_layers():
    shapes = {"conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 64, 32), jnp.float32)},
              "head": {"kernel": jax.ShapeDtypeStruct((512, 10), jnp.float32),
                       "bias": jax.ShapeDtypeStruct((10,), jnp.float32)},
              "bn": {"scale": jax.ShapeDtypeStruct((32,), jnp.float32), "bias": jax.ShapeDtypeStruct((32,), jnp.float32)}}
    for name in layers.INIT_SCHEMES:
        scheme = layers.init_scheme(name)
        ours = net.init_from_shapes(jax.random.key(0), shapes, scheme)
        ref = {"conv": scheme.conv(jax.random.key(1), (3, 3, 64, 32)),
               "head": scheme.dense_kernel(jax.random.key(2), (512, 10)), "bias": scheme.dense_bias(512)(jax.random.key(3), (10,))}
        np.testing.assert_allclose(np.std(ours["conv"]["kernel"]), np.std(ref["conv"]), rtol=0.05)
        np.testing.assert_allclose(np.std(ours["head"]["kernel"]), np.std(ref["head"]), rtol=0.1)
        assert np.abs(ours["head"]["bias"]).max() <= max(np.abs(ref["bias"]).max() * 1.5, 1e-12) + 1 / np.sqrt(512)
        assert (ours["bn"]["scale"] == 1).all() and (ours["bn"]["bias"] == 0).all()
    scheme = layers.init_scheme("pytorch")
    a, b, c = (net.init_from_shapes(jax.random.key(k), shapes, scheme) for k in (5, 5, 6))
    assert all((x == y).all() for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert not (a["conv"]["kernel"] == c["conv"]["kernel"]).all()


def test_malformed_architectures_raise():
    good = net.encode(space.parse({"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["input", "conv3x3-bn-relu", "output"]}))
    with pytest.raises(ValueError, match="shape"):
        net.check_arch(good[:-1])
    with pytest.raises(ValueError, match="disconnected"):
        net.check_arch(np.where(np.arange(56) == 1, 0, good))
    dense = net.encode(space.Cell(np.triu(np.ones((7, 7), np.int32), 1), np.array([0, 1, 1, 1, 1, 1, 4], np.int32),
                                  np.ones(7, bool)))
    with pytest.raises(ValueError, match="edges"):
        net.param_count(dense)
    wrong_op = good.copy()
    wrong_op[49 + 1] = space.OUTPUT
    with pytest.raises(ValueError, match="interior"):
        net.flops(wrong_op)
    with pytest.raises(ValueError, match="stem_channels"):
        net.NB101Config(stem_channels=4)
    with pytest.raises(ValueError):
        net.NB101Network(SMALL).init(jax.random.key(0), jnp.zeros((1, *IMG)), np.where(np.arange(56) == 1, 0, good))
