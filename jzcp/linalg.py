"""Small numerical helpers: the references' NaN semantics (numpy / torch ``corrcoef``), and batched LAPACK
decompositions that cannot deadlock XLA's CPU runtime.

Why :func:`slogdet` / :func:`eigvalsh` and not ``jnp.linalg``'s directly: jaxlib's CPU LAPACK kernels split a
batch of matrices into tasks on XLA's intra-op thread pool and *block a pool thread* until they finish
(``ParallelBatchMap``). When XLA runs such a call from inside a pool worker while the other workers are blocked the
same way, nothing is left to run the tasks: on a 2-core machine (2 pool threads) a proxy with many log-determinants
hung forever on its first call (jaxlib 0.10; EZNAS-A on NB201 at batch 16). jaxlib runs a call inline -- no pool --
when its estimated work is under 2e5 FLOPs, so these wrappers hand LAPACK chunks of matrices below that bound, one
chunk after another (``lax.map``). Values are LAPACK's own, unchanged.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_INLINE_FLOPS = 150_000  # below jaxlib's 2e5-FLOP threshold for using the thread pool


def _chunked(fn, a: jax.Array, cost_per_matrix: int):
    """``fn`` over the (..., n, n) batch of ``a`` in chunks of at most ``_INLINE_FLOPS / cost_per_matrix``
    matrices (at least 1); ``fn`` maps (m, n, n) to a pytree of (m, ...) arrays."""
    n = a.shape[-1]
    batch = a.shape[:-2]
    total = int(np.prod(batch, dtype=np.int64))
    flat = a.reshape((total, n, n))
    chunk = max(1, _INLINE_FLOPS // max(cost_per_matrix, 1))
    if total <= chunk:
        out = fn(flat)
    else:
        pad = (-total) % chunk  # identity matrices: harmless for every decomposition
        if pad:
            flat = jnp.concatenate([flat, jnp.broadcast_to(jnp.eye(n, dtype=a.dtype), (pad, n, n))])
        out = jax.lax.map(fn, flat.reshape((-1, chunk, n, n)))
        out = jax.tree.map(lambda o: o.reshape((-1, *o.shape[2:]))[:total], out)
    return jax.tree.map(lambda o: o.reshape(batch + o.shape[1:]), out)


def _inline_lapack(fn, cost_of_n):
    """``fn`` (a jnp.linalg decomposition of (..., n, n)) run in chunks, also under ``vmap`` (whose batching would
    otherwise hand LAPACK one large batch again). Not differentiable (no proxy differentiates these)."""

    @jax.custom_batching.custom_vmap
    def run(a):
        return _chunked(fn, a, cost_of_n(a.shape[-1]))

    @run.def_vmap
    def _rule(axis_size, in_batched, a):  # a vmapped (leading) axis is one more batch dimension
        out = run(a)
        return out, jax.tree.map(lambda _: in_batched[0], out)

    return run


slogdet = _inline_lapack(jnp.linalg.slogdet, lambda n: n ** 3)
slogdet.__doc__ = """``jnp.linalg.slogdet`` of ``a`` (..., n, n) -> (sign, log|det|), each (...), deadlock-free."""
eigvalsh = _inline_lapack(jnp.linalg.eigvalsh, lambda n: 10 * n ** 3)
eigvalsh.__doc__ = """``jnp.linalg.eigvalsh`` of ``a`` (..., n, n) -> (..., n) ascending, deadlock-free."""


def corrcoef(a: jax.Array) -> jax.Array:
    """Row correlation matrix of ``a`` (n, d) -> (n, n), like ``np.corrcoef``: NaN in the rows / columns of
    constant rows, values clipped to [-1, 1].

    Rows are centred and scaled to unit norm before the product, so the result does not underflow for tiny
    inputs (input gradients can be ~1e-20) -- the same numbers ``cov / sqrt(d_i d_j)`` gives, in float32.
    """
    a = a - jnp.mean(a, axis=1, keepdims=True)
    norm = jnp.sqrt(jnp.sum(jnp.square(a / _row_scale(a)), axis=1, keepdims=True)) * _row_scale(a)
    u = a / norm  # NaN rows where norm == 0, as np.corrcoef
    return jnp.clip(u @ u.T, -1.0, 1.0)


def _row_scale(a: jax.Array) -> jax.Array:
    m = jnp.max(jnp.abs(a), axis=1, keepdims=True)
    return jnp.where(m > 0, m, 1.0)


def logdet_psd(k: jax.Array) -> jax.Array:
    """``log |det k|`` of a (n, n) matrix (``np.linalg.slogdet(k)[1]``); -inf when singular.

    ``k`` is scaled by its mean diagonal first so float32 LU works on O(1) entries.
    """
    n = k.shape[0]
    s = jnp.mean(jnp.diag(k))
    s = jnp.where(s > 0, s, 1.0)
    _, logabs = slogdet(k / s)
    return logabs + n * jnp.log(s)


def min_eig_corr_zeroed(f: jax.Array) -> jax.Array:
    """MeCo's per-feature term: smallest eigenvalue of the channel correlation matrix of one sample's
    feature map ``f`` (H, W, C) (or (..., C)), NaN / Inf entries set to 0 first (``torch.corrcoef`` over the
    C rows of ``f.reshape(C, -1)``)."""
    rows = jnp.reshape(jnp.moveaxis(f, -1, 0), (f.shape[-1], -1))
    c = corrcoef(rows)
    c = jnp.where(jnp.isfinite(c), c, 0.0)
    return eigvalsh(c)[0]
