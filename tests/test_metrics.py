"""Tests for jzcp.metrics against scipy.stats (float32 JAX, x64 disabled)."""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss

from jzcp.metrics import bootstrap_se, kendall_tau, ndcg_at_k, rank_correlations, rankdata, spearman

TOL = 1e-5


def _ref(x, y):
    """scipy Spearman / Kendall tau-b on the finite subset."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return np.nan, np.nan
    return ss.spearmanr(x, y).statistic, ss.kendalltau(x, y, variant="b").statistic


def _check(x, y, methods=("sort", "blocked")):
    rho_ref, tau_ref = _ref(x, y)
    x32 = jnp.asarray(np.asarray(x, np.float32))
    y32 = jnp.asarray(np.asarray(y, np.float32))
    np.testing.assert_allclose(float(spearman(x32, y32)), rho_ref, atol=TOL, rtol=0)
    for m in methods:
        np.testing.assert_allclose(
            float(kendall_tau(x32, y32, method=m, block_size=64)), tau_ref, atol=TOL, rtol=0
        )


def _data(kind, n, seed):
    rng = np.random.default_rng(seed)
    if kind == "continuous":
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
    elif kind == "ties":
        x = rng.integers(0, 6, n)
        y = np.clip(x + rng.integers(-2, 3, n), 0, 5)
    else:  # mixed: ties in one, continuous in the other
        x = rng.integers(0, 6, n)
        y = x + rng.normal(size=n)
    return x.astype(np.float32), y.astype(np.float32)


# ----------------------------------------------------------------------------
# rankdata
# ----------------------------------------------------------------------------


def test_rankdata_matches_scipy_with_ties_and_mask():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 200).astype(np.float32)
    np.testing.assert_allclose(rankdata(x), ss.rankdata(x), atol=0)
    mask = rng.random(200) < 0.7
    r = np.asarray(rankdata(x, mask))
    assert np.all(np.isnan(r[~mask]))
    np.testing.assert_allclose(r[mask], ss.rankdata(x[mask]), atol=0)
    # NaN entries are never ranked; -0.0 ties with +0.0; ints work
    xn = np.array([3.0, -0.0, 0.0, np.nan, -np.inf, 2.0], np.float32)
    np.testing.assert_array_equal(rankdata(xn), [5.0, 2.5, 2.5, np.nan, 1.0, 4.0])
    np.testing.assert_array_equal(rankdata(np.array([2, 2, 7, 1])), [2.5, 2.5, 4.0, 1.0])


# ----------------------------------------------------------------------------
# Spearman / Kendall vs scipy
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["continuous", "ties", "mixed"])
@pytest.mark.parametrize("n", [3, 17, 500])
def test_matches_scipy(kind, n):
    for seed in range(3):
        _check(*_data(kind, n, seed))


def test_anticorrelated_and_perfect():
    x = np.arange(50, dtype=np.float32)
    assert float(spearman(x, x)) == pytest.approx(1.0, abs=TOL)
    assert float(kendall_tau(x, -x)) == pytest.approx(-1.0, abs=TOL)
    _check(x, np.sin(x))


@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_nonfinite_omitted(kind):
    x, y = _data(kind, 400, 7)
    rng = np.random.default_rng(1)
    x[rng.choice(400, 30, replace=False)] = np.nan
    y[rng.choice(400, 20, replace=False)] = np.inf
    x[rng.choice(400, 5, replace=False)] = -np.inf
    _check(x, y)
    # the omitted values do not matter
    x2 = np.where(np.isfinite(x), x, np.nan).astype(np.float32)
    assert float(spearman(x, y)) == float(spearman(x2, y))
    assert float(kendall_tau(x, y)) == float(kendall_tau(x2, y))


def test_nan_policy():
    x, y = _data("continuous", 50, 3)
    assert float(spearman(x, y, nan_policy="propagate")) == pytest.approx(
        float(spearman(x, y)), abs=0
    )
    assert float(kendall_tau(x, y, nan_policy="propagate")) == pytest.approx(
        float(kendall_tau(x, y)), abs=0
    )
    x[4] = np.nan
    assert np.isnan(float(spearman(x, y, nan_policy="propagate")))
    assert np.isnan(float(kendall_tau(x, y, nan_policy="propagate")))
    y[5] = -np.inf
    assert np.isfinite(float(spearman(x, y)))
    for bad in ("raise", "Omit", None):
        with pytest.raises(ValueError):
            spearman(x, y, nan_policy=bad)
        with pytest.raises(ValueError):
            kendall_tau(x, y, nan_policy=bad)
    with pytest.raises(ValueError):
        kendall_tau(x, y, method="quadratic")


def test_undefined_cases_are_nan():
    rng = np.random.default_rng(0)
    y = rng.normal(size=20).astype(np.float32)
    const = np.full(20, 3.0, np.float32)
    for f in (spearman, kendall_tau):
        assert np.isnan(float(f(const, y)))
        assert np.isnan(float(f(y, const)))
        # constant over the valid pairs only
        x = y.copy()
        x[1:] = np.nan
        assert np.isnan(float(f(x, y)))  # 1 valid pair
        assert np.isnan(float(f(np.full(20, np.nan, np.float32), y)))  # 0 valid
        assert np.isnan(float(f(y[:1], y[:1])))  # n = 1
        z = np.where(np.arange(20) < 10, 1.0, np.nan).astype(np.float32)
        assert np.isnan(float(f(z, y)))
    assert np.isnan(float(kendall_tau(const, y, method="blocked")))


def test_n_equals_2():
    a = np.array([1.0, 2.0], np.float32)
    b = np.array([5.0, -1.0], np.float32)
    assert float(spearman(a, a)) == pytest.approx(1.0, abs=TOL)
    assert float(spearman(a, b)) == pytest.approx(-1.0, abs=TOL)
    for m in ("sort", "blocked"):
        assert float(kendall_tau(a, a, method=m)) == pytest.approx(1.0, abs=TOL)
        assert float(kendall_tau(a, b, method=m)) == pytest.approx(-1.0, abs=TOL)
    assert np.isnan(float(kendall_tau(a, np.array([1.0, 1.0], np.float32))))


def test_integer_inputs():
    x, y = _data("ties", 300, 11)
    xi, yi = x.astype(np.int32), y.astype(np.int32)
    rho_ref, tau_ref = _ref(x, y)
    assert float(spearman(xi, yi)) == pytest.approx(rho_ref, abs=TOL)
    assert float(kendall_tau(xi, yi)) == pytest.approx(tau_ref, abs=TOL)
    assert float(kendall_tau(xi, y, method="blocked")) == pytest.approx(tau_ref, abs=TOL)


def test_negative_zero_ties_with_zero():
    x = np.array([-0.0, 0.0, 0.0, -0.0, 1.0, 2.0], np.float32)
    y = np.array([3.0, 1.0, 2.0, 0.0, 5.0, 4.0], np.float32)
    _check(x, y)


# ----------------------------------------------------------------------------
# vmap / jit
# ----------------------------------------------------------------------------


def test_vmap_batch_of_score_vectors():
    rng = np.random.default_rng(5)
    n = 300
    acc = rng.normal(size=n).astype(np.float32)
    scores = (acc[None] * rng.uniform(-1, 1, (8, 1)) + rng.normal(size=(8, n))).astype(np.float32)
    scores[2] = np.round(scores[2])  # ties
    scores[3, ::7] = np.nan  # per-row masks differ
    scores[4] = 1.0  # constant -> NaN
    rho = np.asarray(jax.vmap(spearman, in_axes=(0, None))(scores, acc))
    tau = np.asarray(jax.vmap(kendall_tau, in_axes=(0, None))(scores, acc))
    tau_b = np.asarray(
        jax.vmap(lambda s, a: kendall_tau(s, a, method="blocked"), in_axes=(0, None))(scores, acc)
    )
    assert rho.shape == tau.shape == (8,)
    for i in range(8):
        r_ref, t_ref = _ref(scores[i], acc)
        np.testing.assert_allclose(rho[i], r_ref, atol=TOL, rtol=0)
        np.testing.assert_allclose(tau[i], t_ref, atol=TOL, rtol=0)
        np.testing.assert_allclose(tau_b[i], t_ref, atol=TOL, rtol=0)
    assert np.isnan(rho[4]) and np.isnan(tau[4])


def test_jit_traces_once_per_shape():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def both(x, y):
        return spearman(x, y), kendall_tau(x, y), rankdata(x), ndcg_at_k(x, y, k=5)

    rng = np.random.default_rng(0)
    for seed in range(4):
        x, y = rng.normal(size=(2, 64)).astype(np.float32)
        if seed % 2:
            x[3] = np.nan
        out = both(x, y)
        rho_ref, tau_ref = _ref(x, y)
        assert float(out[0]) == pytest.approx(rho_ref, abs=TOL)
        assert float(out[1]) == pytest.approx(tau_ref, abs=TOL)
    chex.clear_trace_counter()


# ----------------------------------------------------------------------------
# large n
# ----------------------------------------------------------------------------


def test_kendall_nb201_size_matches_scipy():
    n = 15625
    rng = np.random.default_rng(42)
    acc = rng.normal(size=n).astype(np.float32)
    score = (acc + rng.normal(size=n)).astype(np.float32)
    score_ties = np.round(score * 4).astype(np.float32)  # heavy ties
    acc_ties = np.round(acc * 10).astype(np.float32)
    score_ties[rng.choice(n, 100, replace=False)] = np.nan
    for s, a in ((score, acc), (score_ties, acc_ties)):
        rho_ref, tau_ref = _ref(s, a)
        assert float(kendall_tau(s, a)) == pytest.approx(tau_ref, abs=TOL)
        assert float(spearman(s, a)) == pytest.approx(rho_ref, abs=TOL)
    # the O(n^2) blocked path agrees at full size too (row blocks, no n x n matrix)
    assert float(kendall_tau(score_ties, acc_ties, method="blocked", block_size=512)) == (
        pytest.approx(_ref(score_ties, acc_ties)[1], abs=TOL)
    )


def test_kendall_int32_limit_n_65536():
    """N = 65536 is the largest N with exact int32 counts; 2*n_d wraps around
    for strongly anti-correlated data and the result must still be right."""
    n = 65536
    rng = np.random.default_rng(9)
    x = rng.normal(size=n).astype(np.float32)
    y = np.round(-x * 8 + rng.normal(size=n)).astype(np.float32)
    tau_ref = ss.kendalltau(x, y).statistic
    assert tau_ref < -0.5
    assert float(kendall_tau(x, y)) == pytest.approx(tau_ref, abs=TOL)


def test_x64_mode_is_exact():
    """Under x64 the counts are int64 and the result matches scipy to 1e-12."""
    code = textwrap.dedent(
        """
        import jax, numpy as np, scipy.stats as ss
        jax.config.update("jax_enable_x64", True)
        from jzcp.metrics import kendall_tau, spearman
        rng = np.random.default_rng(0)
        x = np.round(rng.normal(size=3000), 1); y = x + rng.normal(size=3000)
        x[::50] = np.nan
        ok = np.isfinite(x)
        t = float(kendall_tau(x, y)); r = float(spearman(x, y))
        assert kendall_tau(x, y).dtype == np.float64
        assert abs(t - ss.kendalltau(x[ok], y[ok]).statistic) < 1e-12, t
        assert abs(r - ss.spearmanr(x[ok], y[ok]).statistic) < 1e-12, r
        print("ok")
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


# ----------------------------------------------------------------------------
# rank_correlations
# ----------------------------------------------------------------------------


def test_rank_correlations_report():
    rng = np.random.default_rng(3)
    n = 200
    acc = rng.normal(size=n)
    acc2 = acc.copy()
    acc2[:10] = np.nan
    score = acc + rng.normal(size=n)
    rep = rank_correlations(score, {"cifar10": acc, "cifar100": acc2})
    json.dumps(rep)  # plain Python types
    assert set(rep) == {"cifar10", "cifar100"}
    for name, a in (("cifar10", acc), ("cifar100", acc2)):
        r = rep[name]
        assert type(r["spearman"]) is float and type(r["kendall"]) is float
        assert type(r["n"]) is int
        rho_ref, tau_ref = _ref(score, a)
        assert r["spearman"] == pytest.approx(rho_ref, abs=TOL)
        assert r["kendall"] == pytest.approx(tau_ref, abs=TOL)
    assert rep["cifar10"]["n"] == 200 and rep["cifar100"]["n"] == 190
    with pytest.raises(ValueError):
        rank_correlations(score, {"bad": acc[:-1]})


def test_rank_correlations_keeps_float64_resolution():
    # distinct in float64, mostly equal once cast to float32
    x = 1.0 + np.arange(100) * 1e-10
    y = x[::-1].copy()
    rep = rank_correlations(x, {"y": y, "x": x})
    assert rep["y"]["spearman"] == pytest.approx(-1.0, abs=TOL)
    assert rep["y"]["kendall"] == pytest.approx(-1.0, abs=TOL)
    assert rep["x"]["kendall"] == pytest.approx(1.0, abs=TOL)


# ----------------------------------------------------------------------------
# NDCG@k
# ----------------------------------------------------------------------------


def _ndcg_ref(scores, rel, k):
    """sklearn.metrics.ndcg_score convention (tie-averaged gains), finite pairs."""
    scores = np.asarray(scores, np.float64)
    rel = np.asarray(rel, np.float64)
    ok = np.isfinite(scores) & np.isfinite(rel)
    scores, rel = scores[ok], rel[ok]
    disc = np.zeros(len(rel))
    kk = min(k, len(rel))
    disc[:kk] = 1.0 / np.log2(np.arange(kk) + 2)
    cum = np.cumsum(disc)
    _, inv, counts = np.unique(-scores, return_inverse=True, return_counts=True)
    mean_gain = np.zeros(len(counts))
    np.add.at(mean_gain, inv, rel)
    mean_gain /= counts
    ends = np.cumsum(counts) - 1
    dsum = np.diff(np.concatenate([[0.0], cum[ends]]))
    dcg = np.sum(mean_gain * dsum)
    idcg = np.sum(np.sort(rel)[::-1] * disc)
    return dcg / idcg


@pytest.mark.parametrize("k", [1, 5, 50, 1000])
def test_ndcg_matches_reference(k):
    rng = np.random.default_rng(k)
    n = 300
    acc = rng.uniform(50, 95, n).astype(np.float32)
    score = (acc + rng.normal(scale=10, size=n)).astype(np.float32)
    score_t = np.round(score / 10).astype(np.float32)  # ties in scores
    score_t[::17] = np.nan
    for s in (score, score_t):
        np.testing.assert_allclose(float(ndcg_at_k(s, acc, k)), _ndcg_ref(s, acc, k), atol=TOL, rtol=0)
    assert float(ndcg_at_k(acc, acc, k)) == pytest.approx(1.0, abs=TOL)
    assert float(ndcg_at_k(-acc, acc, k)) < 1.0 or k >= n


def test_ndcg_edge_cases():
    acc = np.array([0.9, 0.5, 0.7], np.float32)
    assert np.isnan(float(ndcg_at_k(acc, np.zeros(3, np.float32), 2)))
    assert np.isnan(float(ndcg_at_k(np.full(3, np.nan, np.float32), acc, 2)))
    # all scores tied -> every position gets the mean gain
    got = float(ndcg_at_k(np.ones(3, np.float32), acc, 2))
    want = acc.mean() * (1 + 1 / np.log2(3)) / (0.9 + 0.7 / np.log2(3))
    assert got == pytest.approx(want, abs=TOL)
    v = jax.vmap(ndcg_at_k, in_axes=(0, None, None))(np.stack([acc, -acc]), acc, 2)
    assert v.shape == (2,) and float(v[0]) == pytest.approx(1.0, abs=TOL)
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError):
            ndcg_at_k(acc, acc, bad)


def test_bootstrap_se_matches_a_scipy_loop_on_the_same_resamples():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = 0.6 * x + rng.normal(size=300)
    x[5] = np.nan  # omitted pairs stay omitted in every resample
    key = jax.random.key(7)
    se = float(bootstrap_se(spearman, x, y, key, num_resamples=200))
    idx = np.asarray(jax.random.randint(key, (200, 300), 0, 300))
    ref = []
    for i in idx:
        ok = np.isfinite(x[i])
        ref.append(ss.spearmanr(x[i][ok], y[i][ok])[0])
    assert se == pytest.approx(np.std(ref, ddof=1), rel=1e-4)
    # about 1/sqrt(N): four times the items, half the error
    big = float(bootstrap_se(spearman, np.tile(x, 4), np.tile(y, 4) + rng.normal(size=1200) * 1e-9, key, 200))
    assert 0.35 < big / se < 0.7


def test_bootstrap_se_undefined_statistic_is_nan():
    assert np.isnan(float(bootstrap_se(spearman, np.ones(50), np.arange(50.0), jax.random.key(0), 20)))
