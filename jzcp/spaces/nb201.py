"""NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

A cell is a DAG on 4 nodes; each of the 6 edges ``i -> j`` (``i < j``) carries one of 5 ops. jzcp encodes a
cell as an integer array ``ops`` of shape ``(6,)`` in the edge order of the arch string
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, i.e. edges (0,1), (0,2), (1,2), (0,3), (1,3), (2,3), with op ids

    0 none, 1 skip_connect, 2 nor_conv_1x1, 3 nor_conv_3x3, 4 avg_pool_3x3

(the ``op_idx_nb201`` order of the ground-truth file). Three identifiers per cell:

* ``ops``   -- the (6,) array above; what networks and programs consume.
* ``code``  -- ``sum(ops[e] * 5**e)``, a dense integer in ``[0, 15625)`` that needs no data.
* ``index`` -- the official NAS-Bench-201 / NATS-Bench topology index (``api.arch(index)``). The official
  order is a permutation of the codes that only the benchmark defines, so it is read from the ground truth
  (:class:`NB201Index`).

Arrays here are JAX arrays; every function works on a leading batch axis ``(..., 6)`` and is jittable.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_NODES = 4
NUM_EDGES = len(EDGES)
NUM_OPS = len(OPS)
NUM_ARCHS = NUM_OPS**NUM_EDGES  # 15,625

NONE, SKIP, CONV1X1, CONV3X3, AVGPOOL = range(NUM_OPS)

_NODE_RE = re.compile(r"^\|(.*)\|$")


def parse(arch: str) -> np.ndarray:
    """Parse an NB201 arch string into its ``(6,)`` int32 op array.

    Raises ``ValueError`` naming the problem for a wrong node count, a wrong edge count in a node, an unknown
    op name, or an input index that does not match the edge's position.
    """
    if not isinstance(arch, str):
        raise ValueError(f"NB201 arch must be a string, got {type(arch).__name__}")
    nodes = arch.strip().split("+")
    if len(nodes) != NUM_NODES - 1:
        raise ValueError(
            f"NB201 arch {arch!r}: expected {NUM_NODES - 1} nodes separated by '+', found {len(nodes)}"
        )
    ops = []
    for j, node in enumerate(nodes, start=1):
        m = _NODE_RE.match(node)
        if m is None:
            raise ValueError(f"NB201 arch {arch!r}: node {j} {node!r} must look like '|op~0|...|'")
        edges = m.group(1).split("|")
        if len(edges) != j:
            raise ValueError(f"NB201 arch {arch!r}: node {j} must have {j} input edges, found {len(edges)}")
        for i, edge in enumerate(edges):
            name, sep, src = edge.partition("~")
            if not sep:
                raise ValueError(f"NB201 arch {arch!r}: edge {edge!r} must look like 'op~i'")
            if name not in OPS:
                raise ValueError(f"NB201 arch {arch!r}: unknown op {name!r}; valid ops are {', '.join(OPS)}")
            if src != str(i):
                raise ValueError(
                    f"NB201 arch {arch!r}: edge {edge!r} of node {j} must read from node {i}, not {src!r}"
                )
            ops.append(OPS.index(name))
    return np.asarray(ops, dtype=np.int32)


def format(ops) -> str:  # noqa: A001 - mirrors parse
    """Format a ``(6,)`` op array as an NB201 arch string."""
    ops = _check_ops(ops)
    names = [OPS[o] for o in ops.tolist()]
    nodes, e = [], 0
    for j in range(1, NUM_NODES):
        nodes.append("|" + "|".join(f"{names[e + i]}~{i}" for i in range(j)) + "|")
        e += j
    return "+".join(nodes)


def _check_ops(ops) -> np.ndarray:
    ops = np.asarray(ops)
    if ops.shape != (NUM_EDGES,):
        raise ValueError(f"NB201 op array must have shape ({NUM_EDGES},), got {ops.shape}")
    if not np.issubdtype(ops.dtype, np.integer) or ops.min() < 0 or ops.max() >= NUM_OPS:
        raise ValueError(f"NB201 op ids must be integers in [0, {NUM_OPS}), got {ops.tolist()}")
    return ops.astype(np.int32)


_POW = 5 ** np.arange(NUM_EDGES)


def encode(ops: jax.Array) -> jax.Array:
    """``(..., 6)`` op arrays -> ``(...,)`` dense codes in ``[0, 15625)``."""
    return jnp.sum(jnp.asarray(ops, jnp.int32) * _POW, axis=-1)


def decode(code: jax.Array) -> jax.Array:
    """``(...,)`` dense codes -> ``(..., 6)`` int32 op arrays."""
    code = jnp.asarray(code, jnp.int32)
    return (code[..., None] // _POW) % NUM_OPS


def all_ops() -> jax.Array:
    """Every cell of the space, ``(15625, 6)`` int32, in code order."""
    return decode(jnp.arange(NUM_ARCHS))


@dataclass(frozen=True)
class NB201Index:
    """Bijection between op arrays and official NB201 indices, built from the benchmark's own arch list.

    ``index_of_code`` (15625,) maps a dense code to the official index; ``ops_of_index`` (15625, 6) is the
    inverse. Build it with :meth:`from_ops` from the ground truth's ``op_idx_nb201`` (``jzcp.data``).
    """

    index_of_code: np.ndarray
    ops_of_index: np.ndarray

    @classmethod
    def from_ops(cls, ops_of_index: np.ndarray) -> "NB201Index":
        ops_of_index = np.asarray(ops_of_index, np.int32)
        codes = np.asarray(encode(ops_of_index))
        if ops_of_index.shape != (NUM_ARCHS, NUM_EDGES) or len(np.unique(codes)) != NUM_ARCHS:
            raise ValueError("NB201 index table must list each of the 15,625 cells exactly once")
        index_of_code = np.empty(NUM_ARCHS, np.int32)
        index_of_code[codes] = np.arange(NUM_ARCHS, dtype=np.int32)
        return cls(index_of_code, ops_of_index)

    def to_index(self, ops) -> np.ndarray:
        """``(..., 6)`` op arrays -> official indices ``(...,)``."""
        return self.index_of_code[np.asarray(encode(ops))]

    def to_ops(self, index) -> np.ndarray:
        """Official indices ``(...,)`` -> ``(..., 6)`` op arrays."""
        index = np.asarray(index)
        if index.size and (index.min() < 0 or index.max() >= NUM_ARCHS):
            raise ValueError(f"NB201 index must be in [0, {NUM_ARCHS})")
        return self.ops_of_index[index]


@functools.lru_cache(maxsize=4)
def official_index(data_dir: str | None = None) -> NB201Index:
    """The official index table, read once from ``nb201/nb201_gt.npz`` in the data directory."""
    from jzcp import data

    return NB201Index.from_ops(data.load_nb201(data_dir).op_idx)


# --- reachability ------------------------------------------------------------------------------------------


def live_edges(ops: jax.Array) -> jax.Array:
    """``(..., 6)`` op arrays -> ``(..., 6)`` bool: the edge carries an op and lies on an input->output path.

    An edge whose source cannot be reached from the cell input, or whose target cannot reach the cell
    output, contributes nothing to the output (its "branch is unreachable").
    """
    a = jnp.asarray(ops) != NONE
    a01, a02, a12, a03, a13, a23 = (a[..., e] for e in range(NUM_EDGES))
    fwd1 = a01
    fwd2 = a02 | (fwd1 & a12)
    bwd2 = a23
    bwd1 = a13 | (a12 & bwd2)
    true = jnp.ones_like(a01)
    fwd = (true, fwd1, fwd2)  # reachable from node 0, for sources 0, 1, 2
    bwd = {1: bwd1, 2: bwd2, 3: true}  # reaches node 3, for targets 1, 2, 3
    return jnp.stack([a[..., e] & fwd[i] & bwd[j] for e, (i, j) in enumerate(EDGES)], axis=-1)


def is_connected(ops: jax.Array) -> jax.Array:
    """``(..., 6)`` -> ``(...,)`` bool: some path of non-none edges joins the cell input to its output.

    Every one of the 15 cells of a disconnected architecture outputs zeros: the network's logits are constant.
    """
    return jnp.any(live_edges(ops), axis=-1)


def has_unreachable_branch(ops: jax.Array) -> jax.Array:
    """``(..., 6)`` -> ``(...,)`` bool: some non-none edge is not on an input->output path.

    The 9,445 cells without such a branch are the "valid" cells of NAS-Bench-Suite-Zero / zc_combine.
    """
    return jnp.any((jnp.asarray(ops) != NONE) & ~live_edges(ops), axis=-1)


# --- sampling and mutation ---------------------------------------------------------------------------------


def sample(key: jax.Array, num: int | None = None) -> jax.Array:
    """Uniform random cells: ``(6,)`` if ``num`` is None else ``(num, 6)`` int32."""
    shape = (NUM_EDGES,) if num is None else (num, NUM_EDGES)
    return jax.random.randint(key, shape, 0, NUM_OPS, dtype=jnp.int32)


def mutate(key: jax.Array, ops: jax.Array) -> jax.Array:
    """Change the op of one uniformly chosen edge to a different op (uniform over the other 4).

    ``ops`` is ``(6,)``; vmap for a population.
    """
    k_edge, k_op = jax.random.split(key)
    edge = jax.random.randint(k_edge, (), 0, NUM_EDGES)
    shift = jax.random.randint(k_op, (), 1, NUM_OPS)
    ops = jnp.asarray(ops, jnp.int32)
    return ops.at[edge].set((ops[edge] + shift) % NUM_OPS)
