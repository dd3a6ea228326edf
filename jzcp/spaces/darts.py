"""DARTS / NAS-Bench-301 cell space (Liu et al., ICLR 2019; Siems et al., NAS-Bench-301).

A network is defined by two cells, normal and reduction. Each cell has two input states (0 = ``c_{k-2}``,
1 = ``c_{k-1}``) and four intermediate nodes 2..5; node ``k + 2`` sums two edges, each applying an op to an
earlier state; the cell output concatenates nodes 2..5. jzcp encodes an architecture as an int32 array
``(2, 8, 2)`` = ``[cell][edge][input state, op id]`` -- NASLib's "compact" form: cell 0 normal, 1 reduction;
edges ``2k, 2k + 1`` feed node ``k + 2``, so edge ``e`` may read states ``0 .. e // 2 + 1``. Op ids (NASLib's
order):

    0 max_pool_3x3, 1 avg_pool_3x3, 2 skip_connect, 3 sep_conv_3x3, 4 sep_conv_5x5, 5 dil_conv_3x3,
    6 dil_conv_5x5, and 7 none (only in the NDS DARTS variant, ``allow_none=True``)

Text forms: NASLib compact tuples ``(((in, op), ...), (...))`` (:func:`parse_compact` / :func:`format_compact`;
``str(format_compact(a))`` is the text of NAS-Bench-Suite-Zero's files) and DARTS ``Genotype(normal=[('sep_conv_3x3',
0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])`` strings (:func:`parse_genotype`
/ :func:`format_genotype`; genotype pairs are ``(op name, input)``, compact pairs ``(input, op id)``).

The two edges of a node are summed, so swapping them gives the same network; the data keeps whatever order
it was produced in, and so does jzcp (exact round trips). :func:`canonicalize` sorts them.

Array functions take leading batch axes or vmap, and are jittable; parse / format run on the host.
"""
from __future__ import annotations

import ast
from collections import namedtuple
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

OPS: tuple[str, ...] = (
    "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)
NONE = len(OPS)  # 7: the NDS DARTS variant's extra op
OPS_WITH_NONE: tuple[str, ...] = OPS + ("none",)
NUM_OPS = len(OPS)  # 7 for NAS-Bench-301
NUM_CELLS = 2
NUM_NODES = 4
NUM_EDGES = 2 * NUM_NODES
CONCAT: tuple[int, ...] = (2, 3, 4, 5)
CELL_NAMES = ("normal", "reduce")

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
Genotype.__doc__ = "DARTS genotype (same fields as DARTS' / NASLib's): lists of (op name, input state) pairs."

# Highest input state each edge may read: edge e feeds node e // 2 + 2 and reads any earlier state.
MAX_INPUT = np.arange(NUM_EDGES) // 2 + 1


def _num_ops(allow_none: bool) -> int:
    return NUM_OPS + 1 if allow_none else NUM_OPS


def _check(arch: Any, what: str, allow_none: bool) -> np.ndarray:
    """Structural check of a ``(2, 8, 2)`` array; ``ValueError`` naming the first problem."""
    a = np.asarray(arch)
    if a.shape != (NUM_CELLS, NUM_EDGES, 2):
        raise ValueError(f"DARTS {what} must have shape (2, 8, 2) = [cell][edge][input, op], got {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"DARTS {what} must hold integers, got dtype {a.dtype}")
    n_ops = _num_ops(allow_none)
    for c in range(NUM_CELLS):
        for e in range(NUM_EDGES):
            src, op = int(a[c, e, 0]), int(a[c, e, 1])
            if not 0 <= src <= MAX_INPUT[e]:
                raise ValueError(
                    f"DARTS {what}: {CELL_NAMES[c]} edge {e} (into node {e // 2 + 2}) reads state {src}; "
                    f"it may read states 0..{MAX_INPUT[e]}"
                )
            if not 0 <= op < n_ops:
                extra = " (none is allowed only with allow_none=True)" if op == NONE else ""
                raise ValueError(f"DARTS {what}: {CELL_NAMES[c]} edge {e} has op id {op}, not in 0..{n_ops - 1}{extra}")
    return a.astype(np.int32)


# --- NASLib compact form -----------------------------------------------------------------------------------


def parse_compact(compact: Any, allow_none: bool = False) -> np.ndarray:
    """NASLib compact (nested tuples / lists / array, or their text) -> ``(2, 8, 2)`` int32 array.

    Raises ``ValueError`` for text that is not a literal, a wrong nesting / length, an input state that the
    edge cannot read, or an unknown op id.
    """
    if isinstance(compact, str):
        try:
            compact = ast.literal_eval(compact.strip())
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"DARTS compact text {compact[:60]!r} is not a Python literal: {e}") from None
    try:
        a = np.asarray(compact)
    except ValueError as e:  # ragged nesting
        raise ValueError(f"DARTS compact form must be 2 cells x 8 (input, op) pairs: {e}") from None
    return _check(a, "compact form", allow_none)


def format_compact(arch: Any, allow_none: bool = False) -> tuple:
    """``(2, 8, 2)`` array -> NASLib's immutable compact form: a tuple of 2 tuples of 8 ``(input, op)`` int pairs."""
    a = _check(arch, "array", allow_none)
    return tuple(tuple((int(s), int(o)) for s, o in cell) for cell in a)


# --- DARTS genotypes ---------------------------------------------------------------------------------------


def _literal(node: ast.AST, text: str) -> Any:
    """A literal, or ``range(a[, b])`` (DARTS prints ``normal_concat=range(2, 6)``); nothing else is evaluated."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" and not node.keywords:
        return list(range(*[_literal(a, text) for a in node.args]))
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(f"DARTS genotype {text[:80]!r}: {ast.unparse(node)!r} is not a literal") from None


def _genotype_fields(genotype: Any) -> dict[str, Any]:
    if isinstance(genotype, str):
        text = genotype.strip()
        try:
            tree = ast.parse(text, mode="eval").body
        except SyntaxError as e:
            raise ValueError(f"DARTS genotype {text[:80]!r} is not valid Python syntax: {e.msg}") from None
        if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "Genotype"):
            raise ValueError(f"DARTS genotype {text[:80]!r} must look like 'Genotype(normal=[...], ...)'")
        if tree.args:
            if len(tree.args) != 4 or tree.keywords:
                raise ValueError(f"DARTS genotype {text[:80]!r}: give the four fields by keyword or all four by position")
            return dict(zip(Genotype._fields, (_literal(a, text) for a in tree.args)))
        return {k.arg: _literal(k.value, text) for k in tree.keywords}
    if isinstance(genotype, dict):
        return dict(genotype)
    if all(hasattr(genotype, f) for f in Genotype._fields):
        return {f: getattr(genotype, f) for f in Genotype._fields}
    raise ValueError(f"DARTS genotype must be a string, a dict or a Genotype, got {type(genotype).__name__}")


def genotype_cells(genotype: Any, ops: Sequence[str], num_nodes: int) -> tuple[np.ndarray, list[list[int]]]:
    """Any genotype (string / dict / namedtuple) -> ``(2, 2 * num_nodes, 2)`` [input, op id] array over
    vocabulary ``ops`` and the two concat lists. Checks field names, pair shapes, op names and input ranges
    (not the concat lists); shared with :mod:`jzcp.spaces.nds`, whose families have other vocabularies and sizes.
    """
    fields = _genotype_fields(genotype)
    missing = [f for f in Genotype._fields if f not in fields]
    extra = [f for f in fields if f not in Genotype._fields]
    if missing or extra:
        raise ValueError(f"genotype fields must be {', '.join(Genotype._fields)}; missing {missing}, unexpected {extra}")
    cells = []
    for name in CELL_NAMES:
        edges = fields[name]
        if not isinstance(edges, (list, tuple)) or len(edges) != 2 * num_nodes:
            n = len(edges) if isinstance(edges, (list, tuple)) else type(edges).__name__
            raise ValueError(f"genotype {name} cell must list {2 * num_nodes} (op, input) pairs, got {n}")
        cell = []
        for e, pair in enumerate(edges):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"genotype {name} edge {e}: {pair!r} is not an (op, input) pair")
            op, src = pair
            if op not in ops:
                raise ValueError(f"genotype {name} edge {e}: unknown op {op!r}; valid ops are {', '.join(ops)}")
            if isinstance(src, bool) or not isinstance(src, (int, np.integer)) or not 0 <= src <= e // 2 + 1:
                raise ValueError(
                    f"genotype {name} edge {e} (into node {e // 2 + 2}) reads {src!r}; it may read states 0..{e // 2 + 1}"
                )
            cell.append((int(src), ops.index(op)))
        cells.append(cell)
    concats = []
    for name in CELL_NAMES:
        concat = fields[f"{name}_concat"]
        if not isinstance(concat, (list, tuple, range)) or not all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in concat
        ):
            raise ValueError(f"genotype {name}_concat must be a list of node indices, got {concat!r}")
        concats.append([int(i) for i in concat])
    return np.asarray(cells, np.int32), concats


def parse_genotype(genotype: Any, allow_none: bool = False) -> np.ndarray:
    """DARTS ``Genotype(...)`` string (or namedtuple / dict with the four fields) -> ``(2, 8, 2)`` int32 array.

    Both concat lists must be ``[2, 3, 4, 5]`` (``range(2, 6)`` is accepted): the compact form has no room for
    anything else. The string is parsed, never evaluated. Raises ``ValueError`` naming the problem.
    """
    arch, concats = genotype_cells(genotype, OPS_WITH_NONE if allow_none else OPS, NUM_NODES)
    for name, concat in zip(CELL_NAMES, concats):
        if concat != list(CONCAT):
            raise ValueError(f"DARTS genotype {name}_concat is {concat}; the DARTS / NB301 space concatenates [2, 3, 4, 5]")
    return arch


def parse_text(text: str, allow_none: bool = False) -> np.ndarray:
    """A user's text form of a cell -> ``(2, 8, 2)`` int32: a ``Genotype(...)`` string or a NASLib compact tuple
    literal (parsed, never evaluated). Raises ``ValueError`` naming the problem."""
    text = text.strip()
    if text.startswith("Genotype"):
        return parse_genotype(text, allow_none)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValueError(f"DARTS cell {text[:60]!r} is neither a Genotype(...) string nor a NASLib compact tuple") from None
    return parse_compact(value, allow_none)


def to_genotype(arch: Any, allow_none: bool = False) -> Genotype:
    """``(2, 8, 2)`` array -> :data:`Genotype` namedtuple with lists of ``(op name, input)`` and concat ``[2..5]``."""
    a = _check(arch, "array", allow_none)
    names = OPS_WITH_NONE
    cells = [[(names[int(o)], int(s)) for s, o in a[c]] for c in range(NUM_CELLS)]
    return Genotype(normal=cells[0], normal_concat=list(CONCAT), reduce=cells[1], reduce_concat=list(CONCAT))


def format_genotype(arch: Any, allow_none: bool = False) -> str:
    """``(2, 8, 2)`` array -> DARTS genotype string, ``str`` of :func:`to_genotype` (what DARTS code prints)."""
    return str(to_genotype(arch, allow_none))


# --- validity and canonical form (jittable) ----------------------------------------------------------------


def is_valid(arch: jax.Array, allow_none: bool = False) -> jax.Array:
    """``(..., 2, 8, 2)`` -> ``(...,)`` bool: every edge reads an earlier state, op ids in range, and the two
    edges of each node read *different* states (as NASLib samples NB301 cells and DARTS derives them)."""
    a = jnp.asarray(arch)
    src, op = a[..., 0], a[..., 1]
    ok = (src >= 0) & (src <= MAX_INPUT) & (op >= 0) & (op < _num_ops(allow_none))
    distinct = src[..., 0::2] != src[..., 1::2]
    return jnp.all(ok, axis=(-2, -1)) & jnp.all(distinct, axis=(-2, -1))


def canonicalize(arch: jax.Array) -> jax.Array:
    """Order the two edges of every node by ``(input, op)``; equal outputs <=> same network up to that swap."""
    a = jnp.asarray(arch, jnp.int32)
    pairs = a.reshape(a.shape[:-2] + (NUM_NODES, 2, 2))
    key = pairs[..., 0] * (NUM_OPS + 1) + pairs[..., 1]  # (..., node, edge)
    swap = (key[..., 0] > key[..., 1])[..., None, None]
    pairs = jnp.where(swap, pairs[..., ::-1, :], pairs)
    return pairs.reshape(a.shape)


# --- sampling and mutation ---------------------------------------------------------------------------------


def _sample_one(key: jax.Array, num_ops: int) -> jax.Array:
    k_first, k_second, k_ops = jax.random.split(key, 3)
    n_states = jnp.arange(NUM_NODES) + 2  # node k + 2 reads states 0 .. k + 1
    first = jax.random.randint(k_first, (NUM_CELLS, NUM_NODES), 0, n_states)
    # Uniform over the other n - 1 states: draw from n - 1 and skip over `first`.
    second = jax.random.randint(k_second, (NUM_CELLS, NUM_NODES), 0, n_states - 1)
    second = second + (second >= first)
    src = jnp.stack([first, second], axis=-1).reshape(NUM_CELLS, NUM_EDGES)
    ops = jax.random.randint(k_ops, (NUM_CELLS, NUM_EDGES), 0, num_ops)
    return jnp.stack([src, ops], axis=-1).astype(jnp.int32)


def sample(key: jax.Array, num: int | None = None, allow_none: bool = False) -> jax.Array:
    """Random cells as NASLib samples NB301: per node two distinct inputs in random order, ops uniform.

    ``(2, 8, 2)`` int32 if ``num`` is None else ``(num, 2, 8, 2)``. ``allow_none`` adds ``none`` to the ops.
    """
    n_ops = _num_ops(allow_none)
    if num is None:
        return _sample_one(key, n_ops)
    return jax.vmap(lambda k: _sample_one(k, n_ops))(jax.random.split(key, num))


def mutate(key: jax.Array, arch: jax.Array, allow_none: bool = False) -> jax.Array:
    """NASLib's NB301 mutation: change one op or one input, redrawn until something changed.

    Each round picks a cell, an edge and a field uniformly; an op is redrawn uniformly from all ops, an input
    uniformly from the states the edge may read but not the one its sibling edge reads. A round that changes
    nothing is redrawn, so the child differs from the parent in exactly one entry. ``(2, 8, 2)`` in and out;
    vmap for a population.
    """
    a = jnp.asarray(arch, jnp.int32)
    n_ops = _num_ops(allow_none)

    def draw(k):
        k_c, k_e, k_f, k_v = jax.random.split(k, 4)
        c = jax.random.randint(k_c, (), 0, NUM_CELLS)
        e = jax.random.randint(k_e, (), 0, NUM_EDGES)
        field = jax.random.randint(k_f, (), 0, 2)  # 0 input, 1 op
        n_states = e // 2 + 2
        value = jax.random.randint(k_v, (), 0, jnp.where(field == 1, n_ops, n_states))
        sibling = a[c, e ^ 1, 0]  # the other edge of the same node
        allowed = (value != a[c, e, field]) & ((field == 1) | (value != sibling))
        return allowed, a.at[c, e, field].set(value)

    def body(state):
        k, _, _ = state
        k, sub = jax.random.split(k)
        return (k, *draw(sub))

    key, sub = jax.random.split(key)
    return jax.lax.while_loop(lambda s: ~s[1], body, (key, *draw(sub)))[2]
