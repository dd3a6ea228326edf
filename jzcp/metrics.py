"""Rank metrics in JAX: ranks, Spearman ρ, Kendall τ-b and NDCG@k.

Everything here is written for the way zero-cost NAS results are checked: one
(or many) proxy score vectors of length ``N`` (e.g. N = 15,625 for
NAS-Bench-201) against ground-truth accuracies of the same length.

Shapes
------
All public array functions take 1-D inputs of static length ``N`` and return a
0-d array (``rankdata`` returns ``(N,)``).  They are ``jax.jit``-ed (string and
integer options are static arguments) and can be ``jax.vmap``-ed over a
leading axis, e.g. many score vectors against one accuracy vector::

    rho = jax.vmap(spearman, in_axes=(0, None))(scores, acc)   # (P, N), (N,) -> (P,)

Non-finite values
-----------------
``nan_policy="omit"`` (default) drops every *pair* in which either value is
NaN or ±Inf, exactly like computing the scipy statistic on the finite subset
``x[ok], y[ok]`` with ``ok = isfinite(x) & isfinite(y)``.  Because shapes have
to be static, this is done with masks, never with boolean indexing: invalid
entries are sorted to the end and excluded from every count.
``nan_policy="propagate"`` returns NaN as soon as any value is non-finite.
Any other policy raises ``ValueError``.  Statistics that are undefined --
fewer than 2 valid pairs, or a constant input among the valid pairs -- are NaN,
as in scipy.

Algorithms and complexity
-------------------------
* ``rankdata``: one stable sort + cumulative max/min to find tie groups,
  O(N log N), average ("mid") ranks for ties, 1-based.
* ``spearman``: Pearson correlation of the average ranks, O(N log N).  The
  mean of average ranks over ``n`` valid entries is exactly ``(n + 1) / 2``,
  so centring is exact; the products are summed in blocks of 256 (two-level
  summation) to keep float32 round-off at the 1e-7 level even for N ~ 1e5.
* ``kendall_tau`` (default ``method="sort"``): Knight's algorithm as in
  ``scipy.stats.kendalltau``: sort pairs by (x, y), count tie pairs in x, in y
  and joint ties from the group structure, and count discordant pairs as the
  number of inversions of the y sequence.  Inversions are counted level by
  level of a bottom-up merge sort (each level: one sort by (block, value,
  side) and a cumulative sum, in a ``fori_loop`` over the log2 N levels --
  no data-dependent loops), which is O(N log² N) work, O(N) memory,
  jittable and vmappable; ~30 ms at N = 15,625 on CPU.
* ``kendall_tau(method="blocked")``: the direct O(N²) definition: sign products
  ``sign(x_i - x_j) * sign(y_i - y_j)`` over valid pairs i < j, computed with
  ``jax.lax.map`` over blocks of ``block_size`` rows, each block against all N
  columns.  Blocks are what keep memory at O(block_size · N): at N = 15,625 a
  full N×N int32 matrix would take ~1 GB per intermediate, a 256-row block
  takes 16 MB.  It is kept as an independent cross-check of the sort method.

Integer counts
--------------
Pair counts reach N(N-1)/2 ≈ 1.2e8 at N = 15,625, beyond float32's exact
integer range (2^24 ≈ 1.7e7), so all Kendall counts are integers:

* with ``jax_enable_x64`` on, int64;
* otherwise int32.  Every per-element count is ≤ N and the final quantities
  (N(N-1)/2, n_c - n_d, ...) are < 2^31 whenever N ≤ 65,536, so the int32
  results are exact even though some intermediate sums (2·n_d) may wrap
  around: two's-complement arithmetic is exact modulo 2^32;
* for N > 65,536 without x64 the counts are summed in float32 (two-level
  summation): τ then carries ~1e-7·N(N-1)/2 / sqrt((n0-n1)(n0-n2)) absolute
  error -- ~1e-7 unless almost all pairs are ties.  Enable x64 for exactness.

Precision caveat
----------------
With x64 disabled (JAX's default) a float64 NumPy input is cast to float32
before ranking, and distinct float64 values closer than ~6e-8 relative become
ties.  :func:`rank_correlations` avoids this by converting each vector to exact
dense ranks on the host (in float64) before handing it to JAX; do the same
(or enable x64) when calling the jitted functions on raw float64 data.
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "rankdata",
    "spearman",
    "kendall_tau",
    "ndcg_at_k",
    "bootstrap_se",
    "rank_correlations",
]

_NAN_POLICIES = ("omit", "propagate")
_SUM_BLOCK = 256  # inner block of the two-level float summation
_INT32_EXACT_MAX_N = 65536  # N(N-1)/2 < 2^31 for N <= 65536


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _x64() -> bool:
    return bool(jax.config.jax_enable_x64)


def _float_dtype(*dtypes):
    """Default float dtype, widened to the widest inexact input dtype."""
    dt = jnp.result_type(float)
    for d in dtypes:
        if jnp.issubdtype(d, jnp.inexact):
            dt = jnp.promote_types(dt, d)
    return dt


def _check_policy(nan_policy: str) -> None:
    if nan_policy not in _NAN_POLICIES:
        raise ValueError(
            f"nan_policy must be one of {_NAN_POLICIES}, got {nan_policy!r}"
        )


def _prepare(x):
    """Return (x, finite_mask) with non-finite entries replaced by 0 and
    -0.0 canonicalised to +0.0 (a total-order sort would separate them)."""
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {x.shape}")
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.int32)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        if jnp.issubdtype(x.dtype, jnp.complexfloating):
            raise TypeError("complex inputs are not supported")
        valid = jnp.isfinite(x)
        x = jnp.where(valid & (x != 0), x, jnp.zeros((), x.dtype))
    else:
        valid = jnp.ones(x.shape, jnp.bool_)
    return x, valid


def _big(dtype):
    """A value >= every valid (finite) value of ``dtype``."""
    if jnp.issubdtype(dtype, jnp.inexact):
        return jnp.array(jnp.inf, dtype)
    return jnp.array(jnp.iinfo(dtype).max, dtype)


def _new_group(*sorted_keys):
    """Boolean (n,): True where a sorted row differs from the previous one."""
    n = sorted_keys[0].shape[0]
    diff = jnp.zeros((n - 1,), jnp.bool_)
    for k in sorted_keys:
        diff = diff | (k[1:] != k[:-1])
    return jnp.concatenate([jnp.ones((1,), jnp.bool_), diff])


def _group_start(new):
    pos = jnp.arange(new.shape[0], dtype=jnp.int32)
    return lax.cummax(jnp.where(new, pos, 0))


def _group_end(new):
    n = new.shape[0]
    pos = jnp.arange(n, dtype=jnp.int32)
    last = jnp.concatenate([new[1:], jnp.ones((1,), jnp.bool_)])
    return lax.cummin(jnp.where(last, pos, n - 1), reverse=True)


def _fsum(v):
    """Two-level (blocked) float sum of a 1-D array: error ~ (B + n/B)·eps."""
    n = v.shape[0]
    if n <= _SUM_BLOCK:
        return jnp.sum(v)
    nb = -(-n // _SUM_BLOCK)
    v = jnp.pad(v, (0, nb * _SUM_BLOCK - n))
    return jnp.sum(jnp.sum(v.reshape(nb, _SUM_BLOCK), axis=1))


def _count_dtype(n: int):
    if _x64():
        return jnp.int64
    if n <= _INT32_EXACT_MAX_N:
        return jnp.int32
    return jnp.float32


def _csum(c, n: int):
    """Sum of non-negative integer counts (each <= n) in the count dtype."""
    dt = _count_dtype(n)
    c = c.reshape(-1)
    if dt == jnp.float32:
        return _fsum(c.astype(jnp.float32))
    return jnp.sum(c.astype(dt), dtype=dt)


def _avg_ranks(x, valid):
    """Average 1-based ranks of ``x`` among ``valid`` entries; NaN elsewhere.
    ``x`` must already be free of NaN at valid positions."""
    n = x.shape[0]
    fdt = _float_dtype(x.dtype)
    if n == 0:
        return jnp.zeros((0,), fdt)
    pos = jnp.arange(n, dtype=jnp.int32)
    inv = (~valid).astype(jnp.int32)
    inv_s, x_s, perm = lax.sort((inv, x, pos), num_keys=2, is_stable=True)
    new = _new_group(inv_s, x_s)
    start = _group_start(new)
    end = _group_end(new)
    avg = (start + end).astype(fdt) * 0.5 + 1.0
    avg = jnp.where(inv_s == 0, avg, jnp.nan)
    return jnp.zeros((n,), fdt).at[perm].set(avg, unique_indices=True)


# ----------------------------------------------------------------------------
# rankdata
# ----------------------------------------------------------------------------


@jax.jit
def rankdata(x, mask=None):
    """Average ranks (1-based) of a 1-D array among entries where ``mask``.

    Ties get the mean of the ranks they span, like
    ``scipy.stats.rankdata(x[mask], method="average")``; the result has the
    shape of ``x`` with NaN at masked-out positions.  NaN values of ``x`` are
    always treated as masked out (±Inf are ranked as the extreme values).

    Args:
      x: (N,) real or integer array.
      mask: optional (N,) boolean array; ``None`` means all entries.

    Returns:
      (N,) float array (float32, or float64 under x64 / for float64 input).

    Sort based: O(N log N), no Python loops over data; jittable and vmappable.
    """
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {x.shape}")
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.int32)
    valid = jnp.ones(x.shape, jnp.bool_) if mask is None else jnp.asarray(mask, jnp.bool_)
    if valid.shape != x.shape:
        raise ValueError(f"mask shape {valid.shape} != x shape {x.shape}")
    if jnp.issubdtype(x.dtype, jnp.inexact):
        valid = valid & ~jnp.isnan(x)
        x = jnp.where(valid & (x != 0), x, jnp.zeros((), x.dtype))
    return _avg_ranks(x, valid)


# ----------------------------------------------------------------------------
# Spearman
# ----------------------------------------------------------------------------


def _check_pair(x, y):
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"x and y must be 1-D arrays of equal length, got {x.shape} and {y.shape}"
        )
    return x, y


@functools.partial(jax.jit, static_argnames=("nan_policy",))
def spearman(x, y, nan_policy: str = "omit"):
    """Spearman rank correlation ρ of two (N,) arrays -> 0-d float array.

    Pearson correlation of average ranks over the pairs where both values are
    finite (``nan_policy="omit"``), matching
    ``scipy.stats.spearmanr(x[ok], y[ok])``.  ``nan_policy="propagate"``
    returns NaN if any value is non-finite.  NaN when fewer than 2 valid
    pairs or either input is constant over them.
    """
    _check_policy(nan_policy)
    x, y = _check_pair(x, y)
    fdt = _float_dtype(x.dtype, y.dtype)
    n = x.shape[0]
    if n == 0:
        return jnp.array(jnp.nan, fdt)
    x, vx = _prepare(x)
    y, vy = _prepare(y)
    m = vx & vy
    rx = _avg_ranks(x, m).astype(fdt)
    ry = _avg_ranks(y, m).astype(fdt)
    nv = jnp.sum(m, dtype=jnp.int32)
    centre = (nv.astype(fdt) + 1.0) * 0.5  # exact mean of average ranks
    dx = jnp.where(m, rx - centre, 0.0)
    dy = jnp.where(m, ry - centre, 0.0)
    sxy = _fsum(dx * dy)
    sxx = _fsum(dx * dx)
    syy = _fsum(dy * dy)
    ok = (nv >= 2) & (sxx > 0) & (syy > 0)
    den = jnp.sqrt(jnp.where(ok, sxx, 1.0)) * jnp.sqrt(jnp.where(ok, syy, 1.0))
    rho = jnp.where(ok, jnp.clip(sxy / den, -1.0, 1.0), jnp.nan)
    if nan_policy == "propagate":
        rho = jnp.where(jnp.all(vx) & jnp.all(vy), rho, jnp.nan)
    return rho.astype(fdt)


# ----------------------------------------------------------------------------
# Kendall tau-b
# ----------------------------------------------------------------------------


def _inversions(k, n_count: int):
    """Number of pairs i < j with k[i] > k[j] (strict), summed level by level
    of a bottom-up merge sort.  ``k`` must be free of NaN.

    Level l (half-block size h = 2^l) counts, for every pair split between
    the left and right half of one aligned block of size 2h, whether the left
    value is larger; every pair i < j is counted at exactly one level.  Each
    level is one full-length sort by (block id, value, side) -- shapes do not
    depend on the level, so the levels run in a ``fori_loop`` (compiled once).
    """
    n = k.shape[0]
    p = 1 << max(n - 1, 0).bit_length()
    levels = max(p.bit_length() - 1, 0)
    k = jnp.concatenate([k, jnp.full((p - n,), _big(k.dtype), k.dtype)])
    pos = jnp.arange(p, dtype=jnp.int32)
    cdt = _count_dtype(n_count)

    def level(l, total):
        h = jnp.left_shift(jnp.int32(1), l)
        block = jnp.right_shift(pos, l + 1)
        side = jnp.right_shift(pos, l) & 1  # 0: left half, 1: right half
        # sort each block by value; on ties left-half entries come first, so
        # for a right-half entry `cum_left` counts left entries <= its value.
        block_s, _, side_s = lax.sort((block, k, side), num_keys=3, is_stable=True)
        cum_left = jnp.cumsum(1 - side_s, dtype=jnp.int32) - block_s * h
        cnt = jnp.where(side_s == 1, h - cum_left, 0)  # left entries > value
        return total + _csum(cnt, n_count)

    return lax.fori_loop(0, levels, level, jnp.zeros((), cdt))


def _kendall_counts_sort(x, y):
    """(n0, n1, n2, n3, n_d) of Knight's algorithm over valid pairs."""
    n = x.shape[0]
    x, vx = _prepare(x)
    y, vy = _prepare(y)
    m = vx & vy
    inv = (~m).astype(jnp.int32)
    pos = jnp.arange(n, dtype=jnp.int32)

    inv_s, x_s, y_s = lax.sort((inv, x, y), num_keys=3, is_stable=True)
    valid_s = inv_s == 0  # valid entries come first: pos == index among valid
    n0 = _csum(jnp.where(valid_s, pos, 0), n)  # nv (nv - 1) / 2
    newx = _new_group(inv_s, x_s)
    n1 = _csum(jnp.where(valid_s, pos - _group_start(newx), 0), n)
    newxy = newx | _new_group(y_s)
    n3 = _csum(jnp.where(valid_s, pos - _group_start(newxy), 0), n)
    # invalid entries sit at the end with key >= all valid keys: no inversions
    n_d = _inversions(jnp.where(valid_s, y_s, _big(y_s.dtype)), n)

    inv_y, y_y = lax.sort((inv, y), num_keys=2, is_stable=True)
    newy = _new_group(inv_y, y_y)
    n2 = _csum(jnp.where(inv_y == 0, pos - _group_start(newy), 0), n)
    return n0, n1, n2, n3, n_d


def _kendall_counts_blocked(x, y, block_size: int):
    """(n0, n1, n2, s) with s = n_c - n_d, from sign products over pairs i<j,
    computed in blocks of rows."""
    n = x.shape[0]
    x, vx = _prepare(x)
    y, vy = _prepare(y)
    m = vx & vy
    b = max(1, min(int(block_size), n))
    nb = -(-n // b)
    pad = nb * b - n
    col = jnp.arange(n, dtype=jnp.int32)
    xr = jnp.pad(x, (0, pad)).reshape(nb, b)
    yr = jnp.pad(y, (0, pad)).reshape(nb, b)
    mr = jnp.pad(m, (0, pad)).reshape(nb, b)
    ir = jnp.arange(nb * b, dtype=jnp.int32).reshape(nb, b)

    def sgn(a, v):
        return (a[:, None] > v[None, :]).astype(jnp.int32) - (
            a[:, None] < v[None, :]
        ).astype(jnp.int32)

    def block(args):
        xb, yb, mb, ib = args
        pair = mb[:, None] & m[None, :] & (ib[:, None] < col[None, :])
        sx = sgn(xb, x)
        sy = sgn(yb, y)
        # each count <= b * n < 2^31 for the block sizes used here
        tot = jnp.sum(pair, dtype=jnp.int32)
        xt = jnp.sum(pair & (sx == 0), dtype=jnp.int32)
        yt = jnp.sum(pair & (sy == 0), dtype=jnp.int32)
        s = jnp.sum(jnp.where(pair, sx * sy, 0), dtype=jnp.int32)
        return jnp.stack([tot, xt, yt, s])

    per_block = lax.map(block, (xr, yr, mr, ir))  # (nb, 4) int32
    dt = _count_dtype(n)
    if dt == jnp.float32:
        tot, xt, yt, s = (_fsum(per_block[:, i].astype(dt)) for i in range(4))
    else:
        tot, xt, yt, s = (jnp.sum(per_block[:, i].astype(dt), dtype=dt) for i in range(4))
    return tot, xt, yt, s


@functools.partial(jax.jit, static_argnames=("nan_policy", "method", "block_size"))
def kendall_tau(x, y, nan_policy: str = "omit", method: str = "sort", block_size: int = 256):
    """Kendall τ-b of two (N,) arrays -> 0-d float array.

    Equal to ``scipy.stats.kendalltau(x[ok], y[ok], variant="b").statistic``
    (ties in x, in y and joint ties handled) with ``ok`` the pairs where both
    values are finite (``nan_policy="omit"``); ``"propagate"`` returns NaN if
    any value is non-finite.  NaN when fewer than 2 valid pairs or either
    input is constant over them.

    Args:
      method: ``"sort"`` (default, Knight's algorithm, O(N log² N) work, O(N)
        memory) or ``"blocked"`` (direct O(N²) sign products, computed in
        ``lax.map`` blocks of ``block_size`` rows x N columns).
      block_size: rows per block for ``method="blocked"`` (static).
    """
    _check_policy(nan_policy)
    if method not in ("sort", "blocked"):
        raise ValueError(f"method must be 'sort' or 'blocked', got {method!r}")
    x, y = _check_pair(x, y)
    fdt = _float_dtype(x.dtype, y.dtype)
    n = x.shape[0]
    if n < 2:
        return jnp.array(jnp.nan, fdt)
    if method == "sort":
        n0, n1, n2, n3, n_d = _kendall_counts_sort(x, y)
        # n_c - n_d; exact modulo 2^32 in int32 even if 2*n_d wraps
        num = n0 - n1 - n2 + n3 - 2 * n_d
    else:
        n0, n1, n2, num = _kendall_counts_blocked(x, y, block_size)
    d1 = n0 - n1
    d2 = n0 - n2
    ok = (d1 > 0) & (d2 > 0)
    d1f = jnp.where(ok, d1, 1).astype(fdt)
    d2f = jnp.where(ok, d2, 1).astype(fdt)
    tau = num.astype(fdt) / (jnp.sqrt(d1f) * jnp.sqrt(d2f))
    tau = jnp.where(ok, jnp.clip(tau, -1.0, 1.0), jnp.nan)
    if nan_policy == "propagate":
        xa, ya = jnp.asarray(x), jnp.asarray(y)
        all_finite = jnp.all(_prepare(xa)[1]) & jnp.all(_prepare(ya)[1])
        tau = jnp.where(all_finite, tau, jnp.nan)
    return tau.astype(fdt)


# ----------------------------------------------------------------------------
# NDCG@k
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("k",))
def ndcg_at_k(scores, targets, k: int):
    """NDCG@k of a predicted ranking, with the true targets as relevance.

    Convention (the same as ``sklearn.metrics.ndcg_score(..., k=k)`` with its
    default ``ignore_ties=False``):

    * items are ranked by ``scores``, **descending** (higher score = predicted
      better); relevance of an item is its raw target value (e.g. test
      accuracy), linear gain, discount ``1 / log2(rank + 1)`` for 1-based
      ranks 1..k;
    * items with tied scores share their positions: each gets the mean
      relevance of its tie group (so the result does not depend on the order
      ties happen to be broken in);
    * ``NDCG@k = DCG@k / IDCG@k`` where IDCG@k is the DCG@k of the ranking by
      the targets themselves; it lies in [0, 1] for non-negative targets.
      Shift targets first if they can be negative (relevance is assumed
      >= 0);
    * pairs with a non-finite score or target are omitted; ``k`` larger than
      the number of valid items is clipped to it; NaN if no valid items or
      IDCG@k <= 0 (e.g. all-zero relevance).

    Args:
      scores: (N,) predicted scores.
      targets: (N,) true accuracies (relevance, >= 0).
      k: positive int (static).
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    s, t = _check_pair(scores, targets)
    fdt = _float_dtype(s.dtype, t.dtype)
    n = s.shape[0]
    if n == 0:
        return jnp.array(jnp.nan, fdt)
    s, vs = _prepare(s)
    t, vt = _prepare(t)
    m = vs & vt
    inv = (~m).astype(jnp.int32)
    gain = jnp.where(m, t.astype(fdt), 0.0)
    # descending order of scores: negate floats; bitwise-not ints (no overflow)
    key = -s if jnp.issubdtype(s.dtype, jnp.inexact) else ~s
    key = jnp.where(key == 0, jnp.zeros((), key.dtype), key)
    pos = jnp.arange(n, dtype=jnp.int32)
    kk = min(int(k), n)
    disc = jnp.where(pos < kk, 1.0 / jnp.log2(pos.astype(fdt) + 2.0), 0.0).astype(fdt)

    inv_s, key_s, gain_s = lax.sort((inv, key, gain), num_keys=2, is_stable=True)
    gid = jnp.cumsum(_new_group(inv_s, key_s).astype(jnp.int32)) - 1
    gsum = jax.ops.segment_sum(gain_s, gid, num_segments=n)
    gcnt = jax.ops.segment_sum(jnp.ones((n,), fdt), gid, num_segments=n)
    mean_gain = gsum[gid] / gcnt[gid]  # invalid entries: gain 0 -> mean 0
    dcg = jnp.sum(disc * mean_gain)

    ideal = -lax.sort(jnp.where(m, -gain, jnp.inf))  # descending, invalid -> -inf
    ideal = jnp.where(jnp.isfinite(ideal), ideal, 0.0)
    idcg = jnp.sum(disc * ideal)
    ok = (jnp.sum(m) > 0) & (idcg > 0)
    return jnp.where(ok, dcg / jnp.where(ok, idcg, 1.0), jnp.nan).astype(fdt)


# ----------------------------------------------------------------------------
# sampling uncertainty
# ----------------------------------------------------------------------------


def bootstrap_se(statistic, x, y, key, num_resamples: int = 1000):
    """Bootstrap standard error of ``statistic(x, y)`` over the items (pairs resampled with replacement).

    How much a correlation measured on a sample of N architectures would move on another sample of N from the
    same population: e.g. a Spearman of 0.5 on 1,000 NB201 cells has an SE of about 0.025, so two runs on
    different 1,000-cell samples differ by more than 0.03 about a third of the time.

    Args:
      statistic: ``(x, y) -> 0-d array``, e.g. :func:`spearman` or :func:`kendall_tau` (vmapped over the
        resamples, so it must be jittable; non-finite pairs follow its own ``nan_policy``).
      x, y: (N,) arrays.
      key: PRNG key of the resampling.
      num_resamples: number of bootstrap samples (static).

    Returns:
      0-d float array: the standard deviation (ddof 1) of the statistic over the resamples that are finite.
    """
    x, y = _check_pair(x, y)
    idx = jax.random.randint(key, (int(num_resamples), x.shape[0]), 0, x.shape[0])
    stats = jax.vmap(lambda i: statistic(x[i], y[i]))(idx)
    ok = jnp.isfinite(stats)
    n = jnp.sum(ok)
    mean = jnp.sum(jnp.where(ok, stats, 0.0)) / jnp.maximum(n, 1)
    var = jnp.sum(jnp.where(ok, jnp.square(stats - mean), 0.0)) / jnp.maximum(n - 1, 1)
    return jnp.where(n >= 2, jnp.sqrt(var), jnp.nan)


# ----------------------------------------------------------------------------
# host-side convenience
# ----------------------------------------------------------------------------


def _host_dense_ranks(a) -> np.ndarray:
    """Order-preserving float32 encoding of a 1-D vector: exact dense ranks of
    the finite values (computed in float64 / native ints on the host), NaN at
    non-finite entries.  Spearman and Kendall depend only on the order, so
    this loses nothing while avoiding float32 collisions."""
    a = np.asarray(a)
    if a.dtype == np.bool_:
        a = a.astype(np.int64)
    out = np.full(a.shape, np.nan, dtype=np.float32)
    ok = np.isfinite(a) if np.issubdtype(a.dtype, np.inexact) else np.ones(a.shape, bool)
    _, inv = np.unique(a[ok], return_inverse=True)
    if inv.size and inv.max() >= 2**24:
        raise ValueError("more than 2^24 distinct values: dense ranks not exact in float32")
    out[ok] = inv.astype(np.float32)
    return out


def rank_correlations(scores, targets: Mapping[str, object]) -> dict:
    """Spearman ρ and Kendall τ-b of one score vector against named targets.

    Args:
      scores: (N,) array-like of proxy scores.
      targets: mapping ``name -> (N,) array-like`` (e.g. accuracies per
        dataset).

    Returns:
      ``{name: {"spearman": float, "kendall": float, "n": int}}`` with plain
      Python types (JSON-ready); ``n`` is the number of pairs where both the
      score and the target are finite (the pairs used), and the statistics are
      NaN when undefined.  Inputs are reduced to exact dense ranks on the host
      first, so float64 data keep their full resolution even with x64 off.
    """
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    sr = _host_dense_ranks(s)
    out = {}
    for name, tgt in targets.items():
        t = np.asarray(tgt)
        if t.shape != s.shape:
            raise ValueError(
                f"target {name!r} has shape {t.shape}, scores have shape {s.shape}"
            )
        tr = _host_dense_ranks(t)
        n = int(np.sum(np.isfinite(sr) & np.isfinite(tr)))
        out[str(name)] = {
            "spearman": float(spearman(sr, tr)),
            "kendall": float(kendall_tau(sr, tr)),
            "n": n,
        }
    return out
