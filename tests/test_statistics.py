"""EZNAS statistics from real NB201 networks: one compilation for many cells, torch-layout shapes, finite values,
dead candidate blocks flagged, every tensor checked against an independent computation (parameter gradients,
the proxies' block-input gradients, ReLU identities), the disk cache, and EZNAS-A as a program == EZNAS-A as a
proxy."""
from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import programs as pg
from jzcp import proxies as P
from jzcp import statistics as st
from jzcp.proxies.context import Context
from jzcp.proxies.net import Net, ProxyNet

CFG = P.ProxyConfig(batch_size=2, seed=1, init="kaiming_fan_out")
N_CELLS = 1
SPEC = P.nb201_net(10, CFG, channels=4, cells_per_stage=N_CELLS, image_shape=(8, 8, 3))
CELLS = [
    np.array([3, 2, 1, 0, 4, 3], np.int32),  # mixed
    np.array([3, 3, 3, 3, 3, 3], np.int32),  # every edge a 3x3 conv
    np.array([1, 4, 0, 1, 4, 0], np.int32),  # no conv: only the 4 reduction blocks
    np.array([2, 0, 0, 0, 0, 0], np.int32),  # disconnected (no path to the output): zero gradients
]


def _images(b=2, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, 8, 8, 3)).astype(np.float32))


@pytest.fixture(scope="module")
def collected():
    fn = jax.jit(chex.assert_max_traces(st.statistics_fn(SPEC, CFG), n=1))
    x = _images()
    outs = [fn(P.fresh_params(SPEC, CFG, c), x, jnp.asarray(c), st.noise_key(CFG.seed)) for c in CELLS]
    return x, outs, fn


def test_one_compilation_shapes_finite_and_dead_blocks(collected):
    x, outs, _ = collected
    for cell, records in zip(CELLS, outs):
        groups = st.live_groups(records, live_only=False)
        n1, n3 = int(np.sum(cell == 2)), int(np.sum(cell == 3))
        live = {}
        for g in groups:
            assert set(g) == set(pg.TERMINALS) | {"mask"}
            n = g["mask"].shape[0]
            b, cin, h, w = g["inpact_D"].shape[1:]
            cout, cin2, k, k2 = g["wt"].shape[1:]
            assert b == 2 and cin2 == cin and k == k2 and h == w
            for kind in ("inpact", "inpactgrad", "preact", "preactgrad"):
                for p in "DNP":
                    assert g[f"{kind}_{p}"].shape == (n, b, cin, h, w)
            for kind in ("act", "actgrad"):
                for p in "DNP":
                    assert g[f"{kind}_{p}"].shape[:3] == (n, b, cout)
            for p in "DNP":
                assert g[f"wtgrad_{p}"].shape == g["wt"].shape
            for t in pg.TERMINALS:
                assert np.all(np.isfinite(np.asarray(g[t]))), t
            key = (k, h, int(g["act_D"].shape[-1]))
            live[key] = live.get(key, 0) + int(np.sum(g["mask"]))
        # NB201 (C=4, 8x8): cell convs at 8, 4, 2 px; reduction conv_a (stride 2) and conv_b at 4 and 2 px
        for h in (8, 4, 2):
            assert live.get((1, h, h), 0) == N_CELLS * n1
            assert live.get((3, h, h), 0) == N_CELLS * n3 + (1 if h < 8 else 0)
        assert live[(3, 8, 4)] == 1 and live[(3, 4, 2)] == 1
        assert sum(live.values()) == 3 * N_CELLS * (n1 + n3) + 4
        total = sum(int(g["mask"].shape[0]) for g in groups)
        assert total == 3 * N_CELLS * 12 + 4  # every edge has a 1x1 and a 3x3 candidate; dead ones are kept
    # a no-conv cell keeps only the 4 reduction blocks after live_groups
    assert sum(g["wt"].shape[0] for g in st.live_groups(outs[2])) == 4


def test_statistics_match_independent_computations(collected):
    x, outs, _ = collected
    cell = CELLS[0]
    groups = st.live_groups(outs[0])
    params = P.fresh_params(SPEC, CFG, cell)
    net_ = Net(jnp.asarray(cell), SPEC, CFG)
    xs = st.pass_inputs(x, st.noise_key(CFG.seed))
    # wtgrad_D: every live block's weight gradient is the gradient of sum(logits) w.r.t. one conv kernel parameter
    pgrads = jax.grad(lambda p: jnp.sum(net_.apply(p, x)[0]))(params)
    flat_w = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    flat_g = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(pgrads)[0]}
    used = set()
    for g in groups:
        for i in range(g["wt"].shape[0]):
            w = np.transpose(g["wt"][i], (2, 3, 1, 0))  # OIHW -> HWIO
            owner = [k for k, v in flat_w.items() if k.endswith("['kernel']") and v.shape == w.shape
                     and np.array_equal(v, w)]
            assert len(owner) == 1  # the block's weight is exactly one conv kernel parameter...
            kg, wg = flat_g[owner[0]], np.transpose(g["wtgrad_D"][i], (2, 3, 1, 0))
            assert np.abs(kg - wg).max() <= 1e-4 * np.abs(kg).max()  # ...and wtgrad_D its gradient
            used.add(owner[0])
    assert len(used) == 3 * N_CELLS * 3 + 4  # three conv edges per cell (ops 3, 2, 3) + 4 reduction convs
    # inpactgrad_D: the proxies' block-input gradients (an independent pass through Context)
    ctx = Context(net_, params, x, jnp.zeros(2, jnp.int32), jax.random.key(0))
    ref = sorted(float(np.sum(np.abs(np.asarray(gr)))) for _, gr, live in ctx.block_input_grads() if bool(live))
    ours = sorted(float(np.sum(np.abs(b))) for g in groups for b in g["inpactgrad_D"])
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    # ReLU identities and the P pass as a difference
    for g in groups:
        for p in "DN":
            np.testing.assert_array_equal(g[f"preact_{p}"], np.maximum(g[f"inpact_{p}"], 0))
            np.testing.assert_allclose(g[f"preactgrad_{p}"] * (g[f"inpact_{p}"] > 0), g[f"inpactgrad_{p}"],
                                       atol=1e-7)
        # relu(D + dP) - relu(D) is what preact_P holds
        np.testing.assert_allclose(g["preact_P"], np.maximum(g["inpact_D"] + g["inpact_P"], 0) - g["preact_D"],
                                   atol=1e-5)
    # the D pass input is x itself, N is standard Gaussian noise, P = x + 0.1 noise
    assert np.array_equal(np.asarray(xs[0]), np.asarray(x))
    assert abs(float(jnp.std(xs[1])) - 1.0) < 0.2
    assert 0.05 < float(jnp.std(xs[2] - xs[0])) < 0.15


def test_disconnected_cell_has_zero_gradients(collected):
    _, outs, _ = collected
    cell_groups = [g for g in st.live_groups(outs[3]) if g["inpact_D"].shape[-1] == 8 and g["wt"].shape[-1] == 1]
    assert cell_groups and np.all(cell_groups[0]["actgrad_D"] == 0) and np.all(cell_groups[0]["wtgrad_D"] == 0)


def test_cache_round_trip_and_batching(collected, tmp_path):
    _, outs, _ = collected
    cache = st.StatisticsCache(tmp_path, {"space": "nb201-test", "batch": 2})
    live = st.live_groups(outs[0])
    assert cache.load("a") is None
    cache.save("a", live)
    back = cache.load("a")
    assert len(back) == len(live)
    for g, h in zip(live, back):
        for t in pg.TERMINALS:
            np.testing.assert_array_equal(g[t], h[t])
    other = st.StatisticsCache(tmp_path, {"space": "nb201-test", "batch": 4})
    assert other.dir != cache.dir and other.load("a") is None
    stats = pg.batch_networks([st.live_groups(o) for o in outs])
    assert stats.num_networks == len(CELLS)
    assert st.memory_bytes(outs[0], live_only=True) < st.memory_bytes(outs[0])


def test_collect_uses_the_cache(collected, tmp_path):
    _, outs, fn = collected  # the same compiled collector (its trace counter allows one trace)
    cache = st.StatisticsCache(tmp_path, {"t": 1})
    x = np.asarray(_images())
    first, t1 = st.collect(SPEC, CFG, CELLS[:2], x, keys=["c0", "c1"], cache=cache, collector=fn)
    again, t2 = st.collect(SPEC, CFG, CELLS[:2], x, keys=["c0", "c1"], cache=cache, collector=fn)
    for a, b in zip(first, [st.live_groups(o) for o in outs[:2]]):
        for g, h in zip(a, b):
            np.testing.assert_array_equal(g["wtgrad_P"], h["wtgrad_P"])
    assert t1["computed"] == 2 and t2["cached"] == 2 and t2["computed"] == 0
    for a, b in zip(first, again):
        for g, h in zip(a, b):
            np.testing.assert_array_equal(g["actgrad_N"], h["actgrad_N"])
    seen = []
    st.collect(SPEC, CFG, CELLS[:2], x, keys=["c0", "c1"], cache=cache, collector=fn,
               on_network=lambda i, g: seen.append(i))
    assert seen == [0, 1]
    with pytest.raises(ValueError, match="cache key"):
        st.collect(SPEC, CFG, CELLS[:2], x, keys=["c0"])


def test_network_without_rcb_blocks_is_refused():
    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x, arch):
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    model = Plain()
    spec = ProxyNet("plain", model, model, lambda p, a: jax.tree.map(lambda _: True, p),
                    lambda k: model.init(k, jnp.zeros((1, 4, 4, 3)), jnp.zeros(1))["params"], 3, (4, 4, 3), (1,))
    fn = st.statistics_fn(spec, CFG)
    with pytest.raises(ValueError, match="no ReLU-Conv-BN block"):
        fn(spec.init(jax.random.key(0)), jnp.zeros((2, 4, 4, 3)), jnp.zeros(1, jnp.int32), jax.random.key(0))


def _walk(formula: str, groups) -> float:
    """Network score of a formula by a recursive walk with jzcp.programs.apply_primitive (block by block)."""
    syms = np.asarray(pg.parse(formula).nodes)[: int(pg.parse(formula).length)].tolist()
    scores = []
    for g in groups:
        for b in range(g["wt"].shape[0]):
            pos = 0

            def rec():
                nonlocal pos
                s = syms[pos]
                pos += 1
                if s >= pg.NUM_PRIMITIVES:
                    return jnp.asarray(g[pg.TERMINALS[s - pg.NUM_PRIMITIVES]][b])
                return pg.apply_primitive(s, *[rec() for _ in range(pg.PRIMITIVES[s].arity)])

            scores.append(float(jnp.mean(rec())))
    return float(np.mean(scores))


NAMES = ("eznas_a", "eznas_a_t3gn", "eznas_a_thirdparty")


@pytest.fixture(scope="module")
def proxy_values(collected):
    x, _, _ = collected
    suite = P.make_suite(SPEC, NAMES, CFG)
    out = {n: [] for n in NAMES}
    for c in CELLS[:3]:
        vals = suite(P.fresh_params(SPEC, CFG, c), x, jnp.zeros(2, jnp.int32), c, jax.random.key(CFG.seed))
        for n in NAMES:
            out[n].append(float(vals[n]))
    return out


def test_eznas_a_formulas_on_statistics_equal_the_proxies(collected, proxy_values):
    """EZNAS-A's two program forms, walked over the collected statistics, score every cell as the eznas_a and
    eznas_a_t3gn proxies do (same batch, init, noise key): the statistics hold the proxies' tensors."""
    _, outs, _ = collected
    for i in range(3):
        groups = st.live_groups(outs[i])
        assert _walk(pg.EZNAS_A, groups) == pytest.approx(proxy_values["eznas_a"][i], rel=1e-5)
        assert _walk(pg.EZNAS_A_PAPER, groups) == pytest.approx(proxy_values["eznas_a_t3gn"][i], rel=1e-5)
    assert len(set(proxy_values["eznas_a"])) == 3  # the cells are told apart
    assert all(np.isfinite(proxy_values["eznas_a_thirdparty"]))
    assert proxy_values["eznas_a_thirdparty"] != proxy_values["eznas_a_t3gn"]


@pytest.mark.slow
def test_eznas_a_program_in_the_interpreter_equals_the_proxy(collected, proxy_values):
    """The same through the jitted population interpreter, and through statistics + interpreter in one jitted call
    (slow: each compiles the interpreter for 8 groups)."""
    _, outs, _ = collected
    stats = pg.batch_networks([st.live_groups(o) for o in outs[:3]])
    ev = pg.evaluate(pg.parse_many([pg.EZNAS_A, pg.EZNAS_A_PAPER]), stats)
    assert np.all(np.asarray(ev.valid))
    np.testing.assert_allclose(np.asarray(ev.scores[0]), proxy_values["eznas_a"], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ev.scores[1]), proxy_values["eznas_a_t3gn"], rtol=1e-5)
    # statistics and programs in one jitted call (every candidate block, dead ones masked): the same scores
    x = collected[0]
    scorer = st.make_program_scorer(SPEC, CFG)
    progs = pg.parse_many([pg.EZNAS_A, pg.EZNAS_A_PAPER])
    for i, c in enumerate(CELLS[:3]):
        r = scorer(P.fresh_params(SPEC, CFG, c), x, jnp.asarray(c), st.noise_key(CFG.seed), progs)
        assert np.all(np.asarray(r.valid))
        np.testing.assert_allclose(np.asarray(r.scores)[:, 0], np.asarray(ev.scores)[:, i], rtol=1e-5)


def test_eznas_a_proxy_against_numpy():
    """eznas_a from its definition in numpy (float64 slogdet over H x W of the sign of the block-input gradient)."""
    cell = CELLS[1]
    x = _images()
    params = P.fresh_params(SPEC, CFG, cell)
    ctx = Context(Net(jnp.asarray(cell), SPEC, CFG), params, x, jnp.zeros(2, jnp.int32), jax.random.key(1))
    per = []
    for _, g, live in ctx.block_input_grads():
        if not bool(live):
            continue
        a = np.sign(np.transpose(np.asarray(g, np.float64), (0, 3, 1, 2)))
        sign, logabs = np.linalg.slogdet(a)
        ld = np.where(sign < 0, 0.0, np.where(sign == 0, -np.inf, logabs))
        per.append(np.sqrt(np.sum((1 / (1 + np.exp(-ld))) ** 2)))
    got = float(P.PROXIES["eznas_a"].impl(ctx))
    assert got == pytest.approx(float(np.mean(per)), rel=1e-5)
