"""Small numerical helpers with the references' NaN semantics (numpy / torch ``corrcoef``)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


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
    _, logabs = jnp.linalg.slogdet(k / s)
    return logabs + n * jnp.log(s)


def min_eig_corr_zeroed(f: jax.Array) -> jax.Array:
    """MeCo's per-feature term: smallest eigenvalue of the channel correlation matrix of one sample's
    feature map ``f`` (H, W, C) (or (..., C)), NaN / Inf entries set to 0 first (``torch.corrcoef`` over the
    C rows of ``f.reshape(C, -1)``)."""
    rows = jnp.reshape(jnp.moveaxis(f, -1, 0), (f.shape[-1], -1))
    c = corrcoef(rows)
    c = jnp.where(jnp.isfinite(c), c, 0.0)
    return jnp.linalg.eigvalsh(c)[0]
