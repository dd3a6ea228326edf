"""jzcp.linalg: LAPACK's own values, handed to LAPACK in chunks small enough that jaxlib runs them inline (its
batched kernels otherwise block XLA's CPU pool threads and deadlocked EZNAS-A on a 2-core machine), also under
vmap."""
from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import linalg

POOL_THRESHOLD_FLOPS = 200_000  # jaxlib: one matrix, or a batch under this much work, runs inline (no pool)
COST = {"lu": lambda n: n ** 3, "eigh": lambda n: n ** 3}  # jaxlib's own estimates are at least this


def _lapack_calls(fn, *args):
    """(primitive, operand shape) of every LAPACK decomposition in the jaxpr of ``fn``, sub-jaxprs included."""
    calls = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in COST:
                calls.append((eqn.primitive.name, eqn.invars[0].aval.shape))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return calls


@pytest.mark.parametrize("fn, ref, shape", [
    (linalg.slogdet, jnp.linalg.slogdet, (3, 70, 32, 32)),
    (jax.vmap(linalg.slogdet), jnp.linalg.slogdet, (16, 64, 8, 8)),
    (jax.vmap(jax.vmap(linalg.eigvalsh)), jnp.linalg.eigvalsh, (4, 16, 24, 24)),
    (linalg.eigvalsh, jnp.linalg.eigvalsh, (64, 64)),
])
def test_same_values_and_every_lapack_call_runs_inline(fn, ref, shape):
    a = jax.random.normal(jax.random.key(0), shape)
    if ref is jnp.linalg.eigvalsh:
        a = a @ jnp.swapaxes(a, -1, -2)
    calls = _lapack_calls(fn, a)
    assert calls
    for prim, s in calls:
        batch = int(np.prod(s[:-2]))
        assert batch == 1 or batch * COST[prim](s[-1]) < POOL_THRESHOLD_FLOPS, (prim, s)
    for ours, theirs in zip(jax.tree.leaves(jax.jit(fn)(a)), jax.tree.leaves(jax.jit(ref)(a))):
        theirs = np.asarray(theirs)  # XLA may order a reduction differently: float32 rounding
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-6, atol=1e-6 * np.abs(theirs).max())


def test_singular_matrices_keep_lapack_semantics():
    sign, logabs = linalg.slogdet(jnp.zeros((5, 3, 3)))
    assert np.all(np.asarray(sign) == 0) and np.all(np.isneginf(np.asarray(logabs)))
