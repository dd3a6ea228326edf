"""NAS-Bench-101 cell space (Ying et al., ICML 2019).

A cell is a DAG on at most 7 vertices: vertex 0 is the input, the last vertex the output, every interior
vertex carries one of three ops. jzcp encodes a cell as a :class:`Cell` of fixed-size integer arrays

* ``adj``  ``(7, 7)`` int32, strictly upper-triangular 0/1 adjacency (``adj[i, j] = 1``: edge ``i -> j``);
* ``ops``  ``(7,)`` int32 op ids ``0 input, 1 conv3x3-bn-relu, 2 conv1x1-bn-relu, 3 maxpool3x3, 4 output``
  (interior ids minus one are the labels of the nasbench graph hash: the order of its ``available_ops``);
* ``mask`` ``(7,)`` bool, the vertices that exist.

A spec with ``n < 7`` vertices (what the benchmark stores after pruning) is *padded*: its vertices
``0 .. n-2`` keep their positions, its output moves to position 6, and positions ``n-1 .. 5`` are absent
(``mask`` False, no edges, op :data:`PAD_OP` = conv3x3 -- NASLib's ``convert_to_cell`` convention, so a padded
cell equals NASLib's 7x7 form). The output is therefore always vertex 6, which lets one compiled network serve
every cell.

Pruning follows ``nasbench.lib.model_spec.ModelSpec._prune``: a vertex that is not on some input -> output
path is dropped. :func:`prune` does it on fixed-size arrays (dropped vertices become padding, survivors are
packed to the front in their original order), so it is jittable. Validity follows ``nasbench.api.is_valid``:
the input reaches the output and the *pruned* cell has at most 9 edges.

Isomorphic cells share the nasbench graph hash (:func:`spec_hash`, an exact re-implementation of
``graph_util.hash_module``: iterated MD5 of sorted in/out-degree and label fingerprints), the key of the
benchmark's tables.

Text forms: :func:`parse` / :func:`format` for the nasbench / NASLib spec ``{'matrix': n x n, 'ops': [labels]}``
and :func:`parse_naslib` / :func:`format_naslib` for NASLib's flat tuple (the ``naslib_zc`` data: flattened
``n x n`` adjacency then ``n`` op ids in NASLib's order ``0 input, 1 output, 2 maxpool3x3, 3 conv1x1-bn-relu,
4 conv3x3-bn-relu``).

Array functions (:func:`live_vertices`, :func:`prune`, :func:`is_valid`, :func:`sample`, :func:`mutate`) are
jittable and take a leading batch axis through ``jax.vmap``; parse / format / hashing run on the host.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

OPS: tuple[str, ...] = ("input", "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3", "output")
INPUT, CONV3X3, CONV1X1, MAXPOOL3X3, OUTPUT = range(len(OPS))
INTERIOR_OPS: tuple[int, ...] = (CONV3X3, CONV1X1, MAXPOOL3X3)
NUM_OPS = len(OPS)
NUM_VERTICES = 7
OP_SPOTS = NUM_VERTICES - 2
MAX_EDGES = 9
PAD_OP = CONV3X3
# NASLib's flat-tuple op ids (naslib/search_spaces/nasbench101/conversions.py ``all_ops``).
NASLIB_OPS: tuple[str, ...] = ("input", "output", "maxpool3x3", "conv1x1-bn-relu", "conv3x3-bn-relu")

_TRIU = np.triu(np.ones((NUM_VERTICES, NUM_VERTICES), dtype=bool), 1)


class Cell(NamedTuple):
    """One NB101 cell (or a batch, with leading axes): ``adj (..., 7, 7)``, ``ops (..., 7)``, ``mask (..., 7)``.

    A NamedTuple, hence a pytree: jit / vmap / tree-map it like any array tuple.
    """

    adj: Any
    ops: Any
    mask: Any


# --- host-side checks and conversions ----------------------------------------------------------------------


def _check_matrix(matrix: Any, what: str) -> np.ndarray:
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"NB101 {what}: adjacency must be a square matrix, got shape {m.shape}")
    n = m.shape[0]
    if not 2 <= n <= NUM_VERTICES:
        raise ValueError(f"NB101 {what}: {n} vertices; a cell has between 2 and {NUM_VERTICES}")
    if m.size and not np.isin(m, (0, 1)).all():
        raise ValueError(f"NB101 {what}: adjacency entries must be 0 or 1, got {sorted(set(m.ravel().tolist()))}")
    if np.any(np.tril(m) != 0):
        i, j = map(int, np.argwhere(np.tril(m) != 0)[0])
        raise ValueError(f"NB101 {what}: adjacency must be strictly upper-triangular (edge {i} -> {j} goes backwards)")
    return m.astype(np.int32)


def _pad(matrix: np.ndarray, ops: Sequence[int]) -> Cell:
    """An ``n x n`` spec (ops as jzcp ids) -> padded :class:`Cell` of numpy arrays, output moved to vertex 6."""
    n = matrix.shape[0]
    pos = np.array(list(range(n - 1)) + [NUM_VERTICES - 1])  # where each spec vertex goes
    adj = np.zeros((NUM_VERTICES, NUM_VERTICES), np.int32)
    adj[np.ix_(pos, pos)] = matrix
    out_ops = np.full(NUM_VERTICES, PAD_OP, np.int32)
    out_ops[pos] = ops
    mask = np.zeros(NUM_VERTICES, bool)
    mask[pos] = True
    return Cell(adj, out_ops, mask)


def _check_ops(ops: Sequence[int], what: str) -> None:
    if ops[0] != INPUT:
        raise ValueError(f"NB101 {what}: the first op must be 'input', got {OPS[ops[0]]!r}")
    if ops[-1] != OUTPUT:
        raise ValueError(f"NB101 {what}: the last op must be 'output', got {OPS[ops[-1]]!r}")
    bad = [i for i, o in enumerate(ops[1:-1], start=1) if o not in INTERIOR_OPS]
    if bad:
        raise ValueError(
            f"NB101 {what}: interior vertex {bad[0]} has op {OPS[ops[bad[0]]]!r}; interior ops are "
            + ", ".join(OPS[o] for o in INTERIOR_OPS)
        )


def parse(spec: Mapping[str, Any] | tuple) -> Cell:
    """nasbench / NASLib spec -> padded :class:`Cell` (numpy arrays).

    ``spec`` is ``{'matrix': (n, n) 0/1, 'ops': [n labels]}`` (also accepted: the nasbench ``fixed_stats`` keys
    ``module_adjacency`` / ``module_operations``, or a ``(matrix, ops)`` pair), ``2 <= n <= 7``. Raises
    ``ValueError`` naming the problem for a non-square or non-0/1 or not strictly upper-triangular matrix, a
    length mismatch, an unknown label, or input / output / interior labels in the wrong places.
    """
    if isinstance(spec, Mapping):
        if "matrix" in spec and "ops" in spec:
            matrix, labels = spec["matrix"], spec["ops"]
        elif "module_adjacency" in spec and "module_operations" in spec:
            matrix, labels = spec["module_adjacency"], spec["module_operations"]
        else:
            raise ValueError(f"NB101 spec needs keys 'matrix' and 'ops', got {sorted(spec)}")
    elif isinstance(spec, tuple) and len(spec) == 2:
        matrix, labels = spec
    else:
        raise ValueError(f"NB101 spec must be a dict with 'matrix' and 'ops' or a (matrix, ops) pair, got {type(spec).__name__}")
    m = _check_matrix(matrix, "spec")
    labels = list(labels)
    if len(labels) != m.shape[0]:
        raise ValueError(f"NB101 spec: {len(labels)} ops for a {m.shape[0]}x{m.shape[0]} matrix")
    unknown = [lab for lab in labels if lab not in OPS]
    if unknown:
        raise ValueError(f"NB101 spec: unknown op {unknown[0]!r}; valid ops are {', '.join(OPS)}")
    ids = [OPS.index(lab) for lab in labels]
    _check_ops(ids, "spec")
    return _pad(m, ids)


def _check_cell(cell: Cell) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    adj, ops, mask = (np.asarray(x) for x in cell)
    if adj.shape != (NUM_VERTICES, NUM_VERTICES) or ops.shape != (NUM_VERTICES,) or mask.shape != (NUM_VERTICES,):
        raise ValueError(
            f"NB101 cell arrays must have shapes (7, 7), (7,), (7,); got {adj.shape}, {ops.shape}, {mask.shape}"
        )
    mask = mask.astype(bool)
    if not (mask[0] and mask[-1]):
        raise ValueError("NB101 cell: the input (vertex 0) and output (vertex 6) must exist (mask True)")
    if np.any(adj[~mask, :]) or np.any(adj[:, ~mask]):
        raise ValueError("NB101 cell: an absent vertex (mask False) has edges")
    _check_matrix(adj, "cell")
    if ops.min() < 0 or ops.max() >= NUM_OPS:
        raise ValueError(f"NB101 cell: op ids must be in [0, {NUM_OPS}), got {ops.tolist()}")
    _check_ops(ops[mask].tolist(), "cell")
    return adj.astype(np.int32), ops.astype(np.int32), mask


def _unpad(cell: Cell) -> tuple[np.ndarray, list[int]]:
    adj, ops, mask = _check_cell(cell)
    keep = np.flatnonzero(mask)
    return adj[np.ix_(keep, keep)], ops[keep].tolist()


def format(cell: Cell) -> dict[str, Any]:  # noqa: A001 - mirrors parse
    """:class:`Cell` -> nasbench / NASLib spec ``{'matrix': (n, n) int32 ndarray, 'ops': [n labels]}``.

    Absent vertices are dropped, so ``format(parse(spec))`` gives back ``spec`` exactly.
    """
    matrix, ids = _unpad(cell)
    return {"matrix": matrix, "ops": [OPS[i] for i in ids]}


def parse_naslib(flat: Sequence[int] | str) -> Cell:
    """NASLib flat tuple (``n*n`` adjacency row-major, then ``n`` NASLib op ids; or its text) -> :class:`Cell`."""
    if isinstance(flat, str):
        text = flat.strip().strip("()[]")
        try:
            flat = [int(t) for t in text.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"NB101 NASLib tuple {flat[:40]!r}... must be a list of integers") from None
    enc = np.asarray(flat)
    if enc.ndim != 1 or not np.issubdtype(enc.dtype, np.integer):
        raise ValueError(f"NB101 NASLib tuple must be a flat sequence of integers, got shape {enc.shape} dtype {enc.dtype}")
    n = int(round((math.sqrt(1 + 4 * len(enc)) - 1) / 2))
    if n * n + n != len(enc):
        raise ValueError(f"NB101 NASLib tuple of length {len(enc)} is not n*n + n for an integer n")
    m = _check_matrix(enc[: n * n].reshape(n, n), "NASLib tuple")
    naslib_ids = enc[n * n:]
    if naslib_ids.min() < 0 or naslib_ids.max() >= len(NASLIB_OPS):
        raise ValueError(f"NB101 NASLib tuple: op ids must be in [0, {len(NASLIB_OPS)}), got {naslib_ids.tolist()}")
    ids = [OPS.index(NASLIB_OPS[i]) for i in naslib_ids.tolist()]
    _check_ops(ids, "NASLib tuple")
    return _pad(m, ids)


def format_naslib(cell: Cell) -> tuple[int, ...]:
    """:class:`Cell` -> NASLib flat tuple of Python ints (``n*n + n`` long, ``n`` = existing vertices)."""
    matrix, ids = _unpad(cell)
    return tuple(int(x) for x in matrix.ravel()) + tuple(NASLIB_OPS.index(OPS[i]) for i in ids)


def stack(cells: Sequence[Cell]) -> Cell:
    """Stack cells into one batched :class:`Cell` of numpy arrays (leading axis = cell)."""
    return Cell(*(np.stack(parts) for parts in zip(*cells)))


# --- jittable graph functions ------------------------------------------------------------------------------


def _edges(cell: Cell) -> jax.Array:
    """Boolean adjacency restricted to existing vertices and the strict upper triangle, ``(..., 7, 7)``."""
    adj, _, mask = cell
    mask = jnp.asarray(mask, bool)
    return (jnp.asarray(adj) != 0) & mask[..., :, None] & mask[..., None, :] & _TRIU


def live_vertices(cell: Cell) -> jax.Array:
    """``(..., 7)`` bool: the vertex lies on some input -> output path (the ones nasbench's pruning keeps).

    All False when the input does not reach the output.
    """
    a = _edges(cell)
    mask = jnp.asarray(cell.mask, bool)
    first = jnp.arange(NUM_VERTICES) == 0
    fwd = first & mask[..., :1]  # reachable from the input
    bwd = first[::-1] & mask[..., -1:]  # reaches the output
    # A DAG on 7 vertices has paths of at most 6 edges: 6 relaxation steps reach the fixed point.
    for _ in range(NUM_VERTICES - 1):
        fwd = fwd | jnp.any(fwd[..., :, None] & a, axis=-2)
        bwd = bwd | jnp.any(a & bwd[..., None, :], axis=-1)
    return fwd & bwd


def is_connected(cell: Cell) -> jax.Array:
    """``(...,)`` bool: some path joins the input to the output (nasbench's ``valid_spec``)."""
    return live_vertices(cell)[..., 0]


def prune(cell: Cell) -> Cell:
    """Drop vertices off every input -> output path, as ``ModelSpec._prune``; jittable, ``(..., 7, 7)`` in and out.

    Survivors keep their relative order and are packed to the front (output stays at vertex 6); dropped
    vertices become padding (no edges, mask False, op :data:`PAD_OP`). So ``format(prune(c))`` is the pruned
    spec nasbench builds and stores, and ``prune(parse(s)) == parse(pruned s)`` array for array. A
    disconnected cell comes back with an all-False mask (test :func:`is_connected` first).
    """
    live = live_vertices(cell)
    a = _edges(cell) & live[..., :, None] & live[..., None, :]
    idx = jnp.arange(NUM_VERTICES)
    # Stable left-packing of the live interior vertices; the output (index 6) always sorts last.
    key = jnp.where(live, idx, idx + NUM_VERTICES).at[..., -1].set(3 * NUM_VERTICES)
    perm = jnp.argsort(key, axis=-1, stable=True)
    # new vertex i = old vertex perm[i]; as a 0/1 matrix P, new adjacency = P A P^T.
    p = (perm[..., :, None] == idx).astype(jnp.int32)
    a = jnp.einsum("...ij,...jk,...lk->...il", p, a.astype(jnp.int32), p)
    mask = jnp.einsum("...ij,...j->...i", p, live.astype(jnp.int32)) > 0
    ops = jnp.where(mask, jnp.einsum("...ij,...j->...i", p, jnp.asarray(cell.ops, jnp.int32)), PAD_OP)
    ops = ops.at[..., 0].set(INPUT).at[..., -1].set(OUTPUT)
    return Cell(a, ops, mask)


def num_edges(cell: Cell) -> jax.Array:
    """``(...,)`` int32: edges of the *pruned* cell (the count nasbench's ``max_edges`` check uses)."""
    live = live_vertices(cell)
    return jnp.sum(_edges(cell) & live[..., :, None] & live[..., None, :], axis=(-2, -1), dtype=jnp.int32)


def is_valid(cell: Cell) -> jax.Array:
    """``(...,)`` bool: in the NAS-Bench-101 space, i.e. ``nasbench.api.NASBench.is_valid`` would accept it.

    Connected, at most 9 edges after pruning, input / output ops at the ends and interior ops of the live
    vertices in {conv3x3, conv1x1, maxpool3x3}.
    """
    live = live_vertices(cell)
    ops = jnp.asarray(cell.ops)
    interior = live.at[..., 0].set(False).at[..., -1].set(False)
    ops_ok = jnp.all(~interior | ((ops >= CONV3X3) & (ops <= MAXPOOL3X3)), axis=-1)
    ends_ok = (ops[..., 0] == INPUT) & (ops[..., -1] == OUTPUT)
    return live[..., 0] & (num_edges(cell) <= MAX_EDGES) & ops_ok & ends_ok


# --- graph hash (host) -------------------------------------------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def graph_hash(matrix: Any, labels: Sequence[int]) -> str:
    """The nasbench isomorphism-invariant hash of a labelled directed graph (``graph_util.hash_module``).

    ``matrix`` is any square 0/1 matrix (not necessarily a DAG), ``labels`` one int per vertex (nasbench uses
    -1 input, -2 output, 0 conv3x3, 1 conv1x1, 2 maxpool3x3). Each vertex starts from the MD5 of its
    ``(out-degree, in-degree, label)``; then, once per vertex, every fingerprint is replaced by the MD5 of its
    sorted in-neighbour fingerprints, ``|``, sorted out-neighbour fingerprints, ``|``, itself. The result is the
    MD5 of the sorted final fingerprints. The text fed to MD5 reproduces the reference byte for byte.
    """
    m = np.asarray(matrix) != 0
    n = m.shape[0]
    labels = [int(x) for x in labels]
    if m.shape != (n, n) or len(labels) != n:
        raise ValueError(f"graph_hash needs a square matrix and one label per vertex, got {m.shape} and {len(labels)}")
    out_deg, in_deg = m.sum(1).tolist(), m.sum(0).tolist()
    fp = [_md5(str((int(o), int(i), lab))) for o, i, lab in zip(out_deg, in_deg, labels)]
    preds = [np.flatnonzero(m[:, v]).tolist() for v in range(n)]
    succs = [np.flatnonzero(m[v, :]).tolist() for v in range(n)]
    for _ in range(n):
        fp = [
            _md5("".join(sorted(fp[w] for w in preds[v])) + "|" + "".join(sorted(fp[w] for w in succs[v])) + "|" + fp[v])
            for v in range(n)
        ]
    return _md5(str(sorted(fp)))


def spec_hash(cell: Cell) -> str:
    """The nasbench module hash of a cell: prune, then :func:`graph_hash` with nasbench's labels.

    Equals ``ModelSpec(matrix, ops).hash_spec(config['available_ops'])``, the key of the benchmark's tables.
    Raises ``ValueError`` for a disconnected cell (nasbench has no hash for it).
    """
    return spec_hashes(stack([cell]))[0]


def spec_hashes(cells: Cell) -> list[str]:
    """:func:`spec_hash` of every cell of a batch ``(N, 7, 7)``: one jitted prune, then hashing on the host."""
    cells = Cell(*(np.asarray(x) for x in cells))
    if cells.adj.ndim != 3:
        raise ValueError(f"spec_hashes needs a batch of cells (N, 7, 7), got adjacency shape {cells.adj.shape}")
    for i in range(len(cells.adj)):
        _check_cell(Cell(*(x[i] for x in cells)))
    pruned = Cell(*(np.asarray(x) for x in _prune_jit(cells)))
    out = []
    for i in range(len(cells.adj)):
        if not pruned.mask[i, 0]:
            raise ValueError(f"NB101 cell {i} is disconnected (no input -> output path); it has no nasbench hash")
        matrix, ids = _unpad(Cell(*(x[i] for x in pruned)))
        labels = [-1] + [o - CONV3X3 for o in ids[1:-1]] + [-2]
        out.append(graph_hash(matrix, labels))
    return out


_prune_jit = jax.jit(prune)


# --- sampling and mutation ---------------------------------------------------------------------------------


def _random_cell(key: jax.Array) -> Cell:
    """nasbench's ``random_spec`` draw: each upper-triangular edge with probability 1/2, interior ops uniform."""
    k_adj, k_ops = jax.random.split(key)
    adj = (jax.random.bernoulli(k_adj, 0.5, (NUM_VERTICES, NUM_VERTICES)) & _TRIU).astype(jnp.int32)
    ops = jax.random.randint(k_ops, (NUM_VERTICES,), CONV3X3, MAXPOOL3X3 + 1, dtype=jnp.int32)
    ops = ops.at[0].set(INPUT).at[-1].set(OUTPUT)
    return Cell(adj, ops, jnp.ones(NUM_VERTICES, bool))


def _until_valid(draw, key: jax.Array) -> Cell:
    """Redraw ``draw(key)`` with fresh keys until the cell is valid (nasbench's ``while True`` loops)."""
    key, sub = jax.random.split(key)

    def body(state):
        k, _ = state
        k, s = jax.random.split(k)
        return k, draw(s)

    return jax.lax.while_loop(lambda s: ~is_valid(s[1]), body, (key, draw(sub)))[1]


def sample(key: jax.Array, num: int | None = None) -> Cell:
    """Random valid 7-vertex cells, as nasbench's ``random_spec`` (uniform raw matrix + ops, redrawn until valid).

    Returns one :class:`Cell` (``(7, 7)``, ``(7,)``, ``(7,)``; mask all True, unpruned like the reference) if
    ``num`` is None, else a batch with leading axis ``num``. Jittable (a ``while_loop`` per cell).
    """
    if num is None:
        return _until_valid(_random_cell, key)
    return jax.vmap(lambda k: _until_valid(_random_cell, k))(jax.random.split(key, num))


def mutate(key: jax.Array, cell: Cell, mutation_rate: float = 1.0) -> Cell:
    """nasbench's ``mutate_spec``: flip each upper-triangular edge w.p. ``rate/7``, change each interior op
    w.p. ``rate/5`` to one of the two other ops; redraw until the result is valid.

    Works on the full 7-vertex matrix: a padded cell's absent vertices take part (with their op
    :data:`PAD_OP`), and the result has mask all True. The child may equal the parent (no flip drawn), as in
    the reference. One cell in, one out; vmap for a population.
    """
    adj = jnp.asarray(cell.adj, jnp.int32)
    ops = jnp.asarray(cell.ops, jnp.int32).at[0].set(INPUT).at[-1].set(OUTPUT)

    def draw(k):
        k_e, k_o, k_s = jax.random.split(k, 3)
        flip = jax.random.bernoulli(k_e, mutation_rate / NUM_VERTICES, adj.shape) & _TRIU
        change = jax.random.bernoulli(k_o, mutation_rate / OP_SPOTS, ops.shape)
        change = change.at[0].set(False).at[-1].set(False)
        shift = jax.random.randint(k_s, ops.shape, 1, len(INTERIOR_OPS))  # to a different interior op
        new_ops = jnp.where(change, (ops - CONV3X3 + shift) % len(INTERIOR_OPS) + CONV3X3, ops)
        return Cell(jnp.where(flip, 1 - adj, adj), new_ops, jnp.ones(NUM_VERTICES, bool))

    return _until_valid(draw, key)
