"""EZNAS proxy programs as integer arrays, and one jitted interpreter for a whole population.

EZNAS (Akhauri et al., "EZNAS: Evolving Zero-Cost Proxies For Neural Architecture Scoring", NeurIPS 2022,
arXiv 2209.07413) evolves expression trees over 22 statistics of every ReLU -> Conv -> BatchNorm block of a network.
A tree's output on one block is reduced to its mean (the *block score*); the network score is the mean of the block
scores; a program that raises or yields NaN/Inf on any block is invalid (fitness -1). This module holds

* the op table (:data:`PRIMITIVES`, 33 ops, with the semantics of the official code, torch 1.8.1) and the terminal
  table (:data:`TERMINALS`, 22 statistics);
* the program encoding (:class:`Programs`), :func:`parse` / :func:`to_formula`, tree structure helpers
  (:func:`subtree_ends`, :func:`node_depths`, :func:`heights`) and DEAP-style random trees (:func:`generate`);
* the statistics contract (:class:`Statistics`, :func:`batch_networks`, :func:`synthetic_nb201_networks`);
* the interpreter :func:`evaluate`: P programs x N networks in one jitted call.

Typing (as in the original)
---------------------------
The official DEAP setup is ``gp.PrimitiveSetTyped("MAIN", repeat(torch.Tensor, 22), torch.Tensor)`` with every
primitive typed ``Tensor -> Tensor``: a single type, i.e. effectively **untyped**. Any subtree can be an argument of
any primitive, and crossover can swap any two subtrees. Shapes are not types: a wrong shape raises inside torch at
evaluation time, which the original counts as an invalid program. Here shapes are decided statically (below).

Symbols and programs
--------------------
A node is an int32 *symbol*: ``0..32`` = primitive (order of :data:`PRIMITIVES`, the pset order of the official
``evol_utilities.generate_pset``), ``33..54`` = terminal ``symbol - 33`` (order of :data:`TERMINALS`), ``-1`` =
padding. A program is the **prefix** (DEAP) order of its tree in a fixed-capacity array plus its length:
``Programs(nodes: int32[..., capacity], length: int32[...])``; a population is the same pytree with a leading axis.

Capacity: :data:`DEFAULT_CAPACITY` = 128 nodes. Every initial tree (half-and-half, depth <= 6; the largest possible
is the full binary tree of depth 6, 127 nodes) fits, so initialisation samples exactly DEAP's distribution; a
variation result larger than the capacity is treated like one over the height limit (DEAP ``staticLimit``: the
child is replaced by a parent). Height <= 10 allows 2,047 nodes in principle, but trees that large are vanishingly
rare under the EZNAS operators (see ``tests/test_evolution.py``) and the interpreter's cost does not depend on the
capacity (it runs ``length`` steps), only the O(capacity^2) tree surgery does.

Statistics contract (shared with the statistics collector)
----------------------------------------------------------
Statistics of **one network** are one *group* or a list of groups. A group is a mapping ``name -> array`` with the
22 names of :data:`TERMINALS` (``"wt"``, ``"wtgrad_D"``, ..., ``"inpact_D"``, ``"actgrad_P"``), each with a leading
block axis, all blocks of the group having one shape per name, e.g. for NB201 cells at batch 16::

    {"inpact_D": (nblocks, 16, 16, 32, 32), ..., "act_P": (nblocks, 16, 16, 32, 32), "wt": (nblocks, 16, 16, 3, 3)}

plus an optional ``"mask"`` ``(nblocks,)`` bool (False = padded block, ignored). Networks whose blocks have several
shapes (NB201: stage x kernel size, reduction convs) give a list of such groups. The network score is the mean over
all real blocks of all its groups of the block score (the mean of the program output on that block).
``P`` statistics are stored as differences (value under D + noise) - (value under D), as in the original.
:func:`batch_networks` merges the groups of many networks by shape into a :class:`Statistics` pytree (blocks of one
shape from all networks concatenated, with the network index of each block).

Shape rules (decided statically)
--------------------------------
Each op follows the torch 1.8 shape rules of the official code (broadcasting, ``torch.matmul``'s 1-D/batched rules,
``det`` over the last two square dims, the cosine op's ``B.flatten(A.shape[0], -1)``, ...). For one group the set of
shapes a value can take is closed over the *universe* ``U`` = terminal shapes + everything reachable from them by
unary ops (``det``/``logdet`` drop the last two dims, reductions give ``()``, ``numel`` gives ``(1,)``). A binary op
whose torch result shape is not in ``U`` is treated as **invalid** (deviation, measured on NB201 shapes: it only
happens for broadcasting a 1x1-conv weight ``(C, C, 1, 1)`` against an activation, whose result is C times larger
than any statistic; in the original such a program raises on every 3x3 block of the same network, and every NB201
network has 3x3 reduction convs, so whole-network validity is unchanged). Because shapes are static per group, the
validity of a program on a group is a cheap integer scan (:func:`shape_check`) done before touching any tensor.

Interpreter
-----------
One jitted call (:func:`evaluate`) scores P programs on all blocks of N networks. Programs are data: the op id of a
node is a traced integer, so one compilation serves every population of the same size (per capacity and statistics
shapes). Design, for speed and memory on CPU:

* Storage: values live in flat float32 buffers grouped in a few *tiers* by size (tier 0 = single elements; shapes
  within a factor :data:`TIER_RATIO` of a tier's size share it, a smaller value uses a prefix), so elementwise ops
  never depend on the shape, only on the tier.
* Per group, each node of a program is mapped (integer scan, vmapped over programs) to a *kernel*, an output tier,
  operand/result stack slots, a sub-op code and the operand sizes. Kernels are generic per tier where the semantics
  allow (elementwise unary ops in 3 merged kernels selected by the code; reductions, normalize, numel; binary
  elementwise ops, hamming, KL with a single-element operand broadcast) and shape specific only where the shape
  matters (softmax, det/logdet, eigen ratios, matmul, cosine, genuine broadcasts). Kernel count is what XLA compile
  time scales with (~0.1-0.2 s per kernel on CPU): 50-85 kernels per NB201 group, so ~10 s per shape group
  (8 groups for NB201: ~1.5-2 min, once per search; JAX's persistent compilation cache removes it on reruns).
* A stack machine runs the program in reverse prefix order: one stack per tier, ``(stack_depth, chunk, size)``; per
  step, one ``lax.cond`` per tier guards a ``lax.switch`` over that tier's kernels followed by an in-place
  ``dynamic_update_slice`` (this arrangement is what lets XLA update the stacks in place; a switch that returns
  every stack copies them at every step).
* Blocks are processed in chunks (``vmap`` inside each kernel) sized by ``chunk_bytes``; programs are iterated with
  ``lax.scan`` (not vmapped: a vmapped op id turns every ``switch`` into a select that runs all ops on every node).
* A program that is shape-invalid on a group skips that group entirely.

Stack depth: reverse-prefix evaluation of a tree of height h needs at most h + 1 slots (11 for the EZNAS height limit
of 10); programs needing more than ``stack_depth`` are reported invalid.

Differences from the original that are deliberate (all documented in :data:`PRIMITIVES`): no in-place mutation of the
cached statistics by ``log``/``abs_log`` (the original writes ``A[A<=0] = 1`` into its cache, which changes later
programs and even the other occurrences of the same terminal in one tree); ``heaviside`` works on CPU (the original
passes a CUDA ``values`` tensor, which raises on a CPU run); ``eig_ratio`` uses the ascending eigenvalues of the
symmetric ``A Aᵀ`` (the original's ``torch.eig`` returns them in LAPACK's unspecified order, and ``torch.eig`` /
``torch.symeig`` no longer exist); a LAPACK non-convergence (NaN input to an eigen op) gives NaN instead of raising.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from jzcp import linalg

__all__ = [
    "Primitive",
    "PRIMITIVES",
    "TERMINALS",
    "PRIMITIVE_NAMES",
    "NUM_PRIMITIVES",
    "NUM_TERMINALS",
    "NUM_SYMBOLS",
    "PAD",
    "ARITY",
    "DEFAULT_CAPACITY",
    "DEFAULT_STACK_DEPTH",
    "EZNAS_A",
    "EZNAS_A_PAPER",
    "Programs",
    "parse",
    "parse_many",
    "to_formula",
    "to_formulas",
    "symbol_name",
    "subtree_ends",
    "node_depths",
    "heights",
    "well_formed",
    "generate",
    "apply_primitive",
    "output_shape",
    "GroupSpec",
    "group_spec",
    "StatGroup",
    "Statistics",
    "batch_networks",
    "synthetic_nb201_networks",
    "Evaluation",
    "shape_check",
    "evaluate",
    "op_table",
]

# ----------------------------------------------------------------------------------------------------------------
# op and terminal tables
# ----------------------------------------------------------------------------------------------------------------


class Primitive(NamedTuple):
    """One EZNAS primitive: name used in formulas, arity, official op number (``OPk`` in ``gp_func_defs.py``),
    semantics (torch 1.8.1, as the official code), output shape."""

    name: str
    arity: int
    original: str
    semantics: str
    shape: str


PRIMITIVES: tuple[Primitive, ...] = (
    Primitive("add", 2, "OP0", "A + B", "broadcast(A, B)"),
    Primitive("mul", 2, "OP1", "A * B", "broadcast(A, B)"),
    Primitive("matmul", 2, "OP2", "torch.matmul(A, B); a 0-d operand is first unsqueezed to shape (1,)",
              "torch.matmul rules (1-D dot/mv, 2-D mm, batched with broadcast batch dims)"),
    Primitive("lt", 2, "OP3", "float(A < B)", "broadcast(A, B)"),
    Primitive("gt", 2, "OP4", "float(A > B)", "broadcast(A, B)"),
    Primitive("eq", 2, "OP5", "float(A == B)", "broadcast(A, B)"),
    Primitive("log", 1, "OP7", "log(A) after A[A <= 0] = 1 (NaN stays NaN)", "same"),
    Primitive("abs_log", 1, "OP8", "|log(A)| after A[A == 0] = 1 (negative entries give NaN)", "same"),
    Primitive("abs", 1, "OP9", "|A|", "same"),
    Primitive("square", 1, "OP10", "A ** 2", "same"),
    Primitive("exp", 1, "OP11", "exp(A)", "same"),
    Primitive("normalize", 1, "OP12", "(A - mean(A)) / std(A) (unbiased std over all entries), NaN -> 0; "
              "a single entry gives std NaN -> 0", "same"),
    Primitive("relu", 1, "OP13", "max(A, 0) (NaN propagates)", "same"),
    Primitive("sign", 1, "OP14", "sign(A); NaN -> 0 (torch CPU kernel (0 < a) - (a < 0))", "same"),
    Primitive("heaviside", 1, "OP15", "heaviside(A, values=0) = float(A > 0); NaN -> 0", "same"),
    Primitive("invert", 1, "OP16", "1 / A (0 -> inf)", "same"),
    Primitive("frobenius_norm", 1, "OP18", "sqrt(sum(A ** 2)) over all entries", "()"),
    Primitive("det", 1, "OP19", "det over the last two dims", "A.shape[:-2]; needs ndim >= 2, square last dims"),
    Primitive("logdet", 1, "OP20", "log det over the last two dims: det < 0 -> NaN -> 0; det == 0 -> -inf (kept)",
              "A.shape[:-2]; needs ndim >= 2, square last dims"),
    Primitive("sym_eig_ratio", 1, "OP21", "M = A.reshape(A.shape[0], -1); G = M Mᵀ + (M Mᵀ)ᵀ; ascending "
              "eigenvalues e of G; e[-1] / e[0]. 0-d input -> [0.]", "(); (1,) for a 0-d input"),
    Primitive("eig_ratio", 1, "OP22", "M = A.reshape(A.shape[0], -1); G = M Mᵀ; e[-1] / e[0] of the ascending "
              "eigenvalues (original: torch.eig order, unspecified). 0-d input -> [0.]",
              "(); (1,) for a 0-d input"),
    Primitive("mean", 1, "OP23", "sum(A) / numel(A)", "()"),
    Primitive("mean_abs", 1, "OP24", "sum(|A|) / numel(A)", "()"),
    Primitive("hamming", 2, "OP25", "number of positions where heaviside(flatten(A), 0) != heaviside(flatten(B), 0)",
              "(); needs numel(A) == numel(B) or one of them 1"),
    Primitive("kl_div", 2, "OP26", "KLDivLoss(batchmean)(input=A, target=B): sum(where(B > 0, B (log B - A), 0)) "
              "/ A.shape[0] (no division for 0-d A)", "(); needs broadcast(A, B)"),
    Primitive("cosine", 2, "OP27", "bs = A.shape[0]; sum(CosineSimilarity(dim=1, eps=1e-8)(A.reshape(bs, -1), "
              "B.flatten(bs, -1))) with torch 1.8's w12 / sqrt(clamp_min(w1 w2, eps^2)); 0-d A -> [0.]",
              "(); (1,) for 0-d A; needs 1 <= A.shape[0] <= B.ndim - 1 and broadcastable operands"),
    Primitive("softmax", 1, "OP28", "F.softmax(A) with torch's implicit dim: 0 for ndim 0, 1, 3; 1 otherwise",
              "same"),
    Primitive("sigmoid", 1, "OP29", "1 / (1 + exp(-A))", "same"),
    Primitive("ones_like", 1, "OP30", "ones (NaN input -> ones)", "same"),
    Primitive("zeros_like", 1, "OP31", "zeros", "same"),
    Primitive("gt0", 1, "OP32", "float(A > 0)", "same"),
    Primitive("lt0", 1, "OP33", "float(A < 0)", "same"),
    Primitive("numel", 1, "OP34", "[numel(A)] as float", "(1,)"),
)

PRIMITIVE_NAMES: tuple[str, ...] = tuple(p.name for p in PRIMITIVES)

# Terminal order: the order the official code meant to use ("required_order"). The official populate() reads
# ARG_i from fixed_ordering[i - 1], which shifts that order by one (ARG0 = actgradperturb, ARG8 = inpactgraddata,
# the EZNAS-A input); names are what matter here, so the intended order is kept.
_KINDS = ("inpact", "inpactgrad", "preact", "preactgrad", "act", "actgrad")
TERMINALS: tuple[str, ...] = ("wt", "wtgrad_D", "wtgrad_N", "wtgrad_P") + tuple(
    f"{k}_{x}" for k in _KINDS for x in ("D", "N", "P")
)
TERMINAL_DOC = {
    "wt": "conv weight (Cout, Cin, k, k)",
    "wtgrad": "gradient of the conv weight (Cout, Cin, k, k)",
    "inpact": "block input before the ReLU (B, Cin, H, W)",
    "inpactgrad": "gradient w.r.t. the block input",
    "preact": "ReLU output = conv input (B, Cin, H, W)",
    "preactgrad": "gradient w.r.t. the conv input",
    "act": "BatchNorm output (B, Cout, H', W')",
    "actgrad": "gradient w.r.t. the BatchNorm output",
}

NUM_PRIMITIVES = len(PRIMITIVES)  # 33
NUM_TERMINALS = len(TERMINALS)  # 22
NUM_SYMBOLS = NUM_PRIMITIVES + NUM_TERMINALS  # 55
PAD = -1
ARITY = np.array([p.arity for p in PRIMITIVES] + [0] * NUM_TERMINALS, np.int32)
_ARITY_PAD = np.concatenate([ARITY, np.zeros(1, np.int32)])  # index NUM_SYMBOLS = padding/invalid -> arity 0
# DEAP's pset.terminalRatio: terminals / (terminals + primitives), the leaf probability of genGrow.
TERMINAL_RATIO = NUM_TERMINALS / NUM_SYMBOLS

DEFAULT_CAPACITY = 128
DEFAULT_STACK_DEPTH = 11  # height limit 10 + 1
DEFAULT_CHUNK_BYTES = 48 << 20  # stack memory per group

# EZNAS-A: code-faithful (block-input gradient on the data pass; the published re-run numbers) and paper wording.
EZNAS_A = "frobenius_norm(sigmoid(logdet(sign(inpactgrad_D))))"
EZNAS_A_PAPER = "frobenius_norm(sigmoid(logdet(sign(wtgrad_N))))"

_SYMBOL_OF = {n: i for i, n in enumerate(PRIMITIVE_NAMES)}
_SYMBOL_OF.update({n: NUM_PRIMITIVES + i for i, n in enumerate(TERMINALS)})


def symbol_name(sym: int) -> str:
    """Name of a symbol id (primitive or terminal)."""
    sym = int(sym)
    if 0 <= sym < NUM_PRIMITIVES:
        return PRIMITIVE_NAMES[sym]
    if NUM_PRIMITIVES <= sym < NUM_SYMBOLS:
        return TERMINALS[sym - NUM_PRIMITIVES]
    raise ValueError(f"symbol {sym} is not in [0, {NUM_SYMBOLS})")


def op_table() -> str:
    """The op and terminal table as Markdown (one documentation source for both)."""
    rows = ["| id | name | arity | original | semantics | output shape |", "|---|---|---|---|---|---|"]
    for i, p in enumerate(PRIMITIVES):
        rows.append(f"| {i} | `{p.name}` | {p.arity} | {p.original} | {p.semantics} | {p.shape} |")
    rows += ["", "| id | terminal | meaning |", "|---|---|---|"]
    for i, t in enumerate(TERMINALS):
        kind, _, x = t.partition("_")
        pas = {"D": "data", "N": "Gaussian noise", "P": "(data + 0.1 noise) - data"}.get(x, "")
        rows.append(f"| {NUM_PRIMITIVES + i} | `{t}` | {TERMINAL_DOC[kind]}{', pass ' + pas if pas else ''} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------------------------
# programs: encoding, parse / format
# ----------------------------------------------------------------------------------------------------------------


@struct.dataclass
class Programs:
    """Prefix-order programs: ``nodes`` int32 ``(..., capacity)`` (``PAD`` after ``length``), ``length`` ``(...)``."""

    nodes: jax.Array
    length: jax.Array

    @property
    def capacity(self) -> int:
        return int(self.nodes.shape[-1])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.length.shape)

    def __len__(self) -> int:
        if self.length.ndim == 0:
            raise TypeError("a single program has no len(); use .length")
        return int(self.length.shape[0])

    def __getitem__(self, idx) -> "Programs":
        return Programs(self.nodes[idx], self.length[idx])

    @staticmethod
    def stack(programs: Sequence["Programs"]) -> "Programs":
        if not programs:
            raise ValueError("cannot stack an empty list of programs")
        caps = {p.capacity for p in programs}
        if len(caps) != 1:
            raise ValueError(f"programs have different capacities {sorted(caps)}")
        return Programs(
            np.stack([np.asarray(p.nodes) for p in programs]), np.stack([np.asarray(p.length) for p in programs])
        )


_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\()|(\))|(,))")


def _tokenize(formula: str) -> list[tuple[str, int]]:
    toks, pos = [], 0
    s = formula.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if m is None:
            raise ValueError(f"formula {formula!r}: unexpected character {s[pos:].lstrip()[:1]!r} at {pos}")
        tok = next(g for g in m.groups() if g is not None)
        toks.append((tok, m.start(m.lastindex)))
        pos = m.end()
    return toks


def _parse_symbols(formula: str) -> list[int]:
    if not isinstance(formula, str):
        raise ValueError(f"formula must be a string, got {type(formula).__name__}")
    toks = _tokenize(formula)
    if not toks:
        raise ValueError("empty formula")
    out: list[int] = []
    i = 0

    def expr() -> None:
        nonlocal i
        if i >= len(toks):
            raise ValueError(f"formula {formula!r}: unexpected end")
        name, pos = toks[i]
        if name not in _SYMBOL_OF:
            raise ValueError(
                f"formula {formula!r}: unknown name {name!r} at {pos}; primitives are {', '.join(PRIMITIVE_NAMES)}; "
                f"terminals are {', '.join(TERMINALS)}"
            )
        sym = _SYMBOL_OF[name]
        out.append(sym)
        i += 1
        arity = int(ARITY[sym])
        if arity == 0:
            if i < len(toks) and toks[i][0] == "(":
                raise ValueError(f"formula {formula!r}: terminal {name!r} at {pos} takes no arguments")
            return
        if i >= len(toks) or toks[i][0] != "(":
            raise ValueError(f"formula {formula!r}: primitive {name!r} at {pos} needs {arity} argument(s)")
        i += 1
        for a in range(arity):
            expr()
            want = "," if a < arity - 1 else ")"
            if i >= len(toks) or toks[i][0] != want:
                got = toks[i][0] if i < len(toks) else "end"
                raise ValueError(
                    f"formula {formula!r}: {name!r} at {pos} takes {arity} argument(s); expected {want!r}, got {got!r}"
                )
            i += 1

    expr()
    if i != len(toks):
        raise ValueError(f"formula {formula!r}: trailing text at {toks[i][1]}")
    return out


def parse(formula: str, capacity: int = DEFAULT_CAPACITY) -> Programs:
    """Parse ``"frobenius_norm(sigmoid(logdet(sign(inpactgrad_D))))"`` into a single :class:`Programs` (numpy).

    Raises ``ValueError`` naming the problem (unknown name, wrong arity, bad syntax, too many nodes).
    """
    syms = _parse_symbols(formula)
    if len(syms) > capacity:
        raise ValueError(f"formula {formula!r} has {len(syms)} nodes, more than the capacity {capacity}")
    nodes = np.full(capacity, PAD, np.int32)
    nodes[: len(syms)] = syms
    return Programs(nodes, np.int32(len(syms)))


def parse_many(formulas: Sequence[str], capacity: int = DEFAULT_CAPACITY) -> Programs:
    """Parse a list of formulas into a population ``(P, capacity)`` (numpy)."""
    return Programs.stack([parse(f, capacity) for f in formulas])


def _check_single(program: Programs) -> tuple[np.ndarray, int]:
    nodes = np.asarray(program.nodes)
    length = np.asarray(program.length)
    if nodes.ndim != 1 or length.ndim != 0:
        raise ValueError(f"expected a single program (nodes (capacity,), length ()), got {nodes.shape}, {length.shape}")
    n = int(length)
    if not 1 <= n <= nodes.shape[0]:
        raise ValueError(f"program length {n} is not in [1, capacity={nodes.shape[0]}]")
    syms = nodes[:n]
    if syms.min() < 0 or syms.max() >= NUM_SYMBOLS:
        raise ValueError(f"program has symbols outside [0, {NUM_SYMBOLS}): {syms.tolist()}")
    return syms, n


def to_formula(program: Programs) -> str:
    """Formula string of a single program, e.g. ``frobenius_norm(sigmoid(logdet(sign(inpactgrad_D))))``.

    Raises ``ValueError`` for malformed programs (wrong length, unknown symbols, arity structure that does not form
    exactly one tree).
    """
    syms, n = _check_single(program)
    parts: list[str] = []
    # iterative prefix walk: a stack of remaining argument counts
    pending: list[int] = []
    for k, s in enumerate(syms.tolist()):
        if k > 0 and not pending:
            raise ValueError(f"program {syms.tolist()}: the tree ends before position {k} (length {n})")
        if pending:
            if pending[-1] < 0:
                parts.append(", ")
            pending[-1] = abs(pending[-1]) - 1
        name = symbol_name(s)
        a = int(ARITY[s])
        parts.append(name)
        if a:
            parts.append("(")
            pending.append(a)
        while pending and pending[-1] == 0:
            parts.append(")")
            pending.pop()
        if pending and pending[-1] > 0:
            # the next argument of the innermost open primitive; mark "needs a comma" if it is not the first
            if parts[-1] != "(":
                pending[-1] = -pending[-1]
    if pending:
        raise ValueError(f"program {syms.tolist()}: incomplete tree (missing {sum(map(abs, pending))} argument(s))")
    return "".join(parts)


def to_formulas(programs: Programs) -> list[str]:
    """Formulas of a population ``(P, capacity)``."""
    nodes = np.asarray(programs.nodes)
    length = np.asarray(programs.length)
    if nodes.ndim != 2:
        raise ValueError(f"expected a population (P, capacity), got nodes of shape {nodes.shape}")
    return [to_formula(Programs(nodes[i], length[i])) for i in range(nodes.shape[0])]


# ----------------------------------------------------------------------------------------------------------------
# structure (jittable; O(capacity^2) vectorised, no data-dependent loops)
# ----------------------------------------------------------------------------------------------------------------


def _arity_of(nodes, length):
    pos = jnp.arange(nodes.shape[-1], dtype=jnp.int32)
    sym = jnp.where((nodes >= 0) & (nodes < NUM_SYMBOLS), nodes, NUM_SYMBOLS)
    ar = jnp.asarray(_ARITY_PAD)[sym]
    return jnp.where(pos < length, ar, 0), pos


def subtree_ends(nodes: jax.Array, length: jax.Array) -> jax.Array:
    """``(capacity,)`` exclusive end of the subtree rooted at every position (positions >= length: length).

    With ``c = cumsum(arity - 1)``, the subtree starting at i is ``i..j`` for the first ``j >= i`` where
    ``c[j] = c[i-1] - 1``. Single program; vmap for a population.
    """
    ar, pos = _arity_of(nodes, length)
    c = jnp.cumsum(ar - 1)
    cprev = c - (ar - 1)
    hit = (pos[None, :] >= pos[:, None]) & (c[None, :] == (cprev - 1)[:, None]) & (pos[None, :] < length)
    end = jnp.where(jnp.any(hit, axis=1), jnp.argmax(hit, axis=1) + 1, length)
    return jnp.where(pos < length, end, length).astype(jnp.int32)


def node_depths(nodes: jax.Array, length: jax.Array, ends: jax.Array | None = None) -> jax.Array:
    """``(capacity,)`` depth of every node (root 0; -1 at padding): the number of proper ancestors."""
    if ends is None:
        ends = subtree_ends(nodes, length)
    pos = jnp.arange(nodes.shape[-1], dtype=jnp.int32)
    anc = (pos[:, None] < pos[None, :]) & (pos[None, :] < ends[:, None]) & (pos[:, None] < length)
    d = jnp.sum(anc, axis=0, dtype=jnp.int32)
    return jnp.where(pos < length, d, -1)


@jax.jit
def heights(programs: Programs) -> jax.Array:
    """Tree height (DEAP ``PrimitiveTree.height``: a single leaf has height 0) of each program ``(...)``."""
    flat_n = programs.nodes.reshape(-1, programs.capacity)
    flat_l = programs.length.reshape(-1)
    h = jax.vmap(lambda n, l: jnp.max(node_depths(n, l)))(flat_n, flat_l)
    return h.reshape(programs.batch_shape)


def well_formed(nodes: jax.Array, length: jax.Array) -> jax.Array:
    """True if the first ``length`` symbols are valid and form exactly one tree (single program)."""
    ar, pos = _arity_of(nodes, length)
    ok_sym = jnp.all(jnp.where(pos < length, (nodes >= 0) & (nodes < NUM_SYMBOLS), True))
    c = jnp.cumsum(ar - 1)
    # a prefix sequence is one tree iff the running need 1 + c stays > 0 before the end and hits 0 at the end
    need = 1 + c
    inside = pos < length - 1
    ok = jnp.all(jnp.where(inside, need > 0, True)) & (need[jnp.clip(length - 1, 0, None)] == 0)
    return ok_sym & ok & (length >= 1) & (length <= nodes.shape[-1])


_GEN_STACK = 34  # pending-slot stack of the generator: supports depths up to 31 (each level pushes <= 2, pops 1)


def _generate_one(key, grow, min_depth, max_depth, *, capacity: int):
    """DEAP ``generate`` (genFull / genGrow) for one tree; depths are traced. Returns (nodes, length)."""
    k_h, k_nodes = jax.random.split(key)
    height = jax.random.randint(k_h, (), min_depth, max_depth + 1)
    nodes = jnp.full((capacity,), PAD, jnp.int32)
    stack = jnp.zeros((_GEN_STACK,), jnp.int32)
    arity = jnp.asarray(ARITY)

    def cond(c):
        nodes, pos, stack, sp = c
        return (sp > 0) & (pos < capacity)

    def body(c):
        nodes, pos, stack, sp = c
        depth = stack[sp - 1]
        sp = sp - 1
        k1, k2, k3 = jax.random.split(jax.random.fold_in(k_nodes, pos), 3)
        leaf = (depth == height) | (grow & (depth >= min_depth) & (jax.random.uniform(k1) < TERMINAL_RATIO))
        t = jax.random.randint(k2, (), 0, NUM_TERMINALS)
        p = jax.random.randint(k3, (), 0, NUM_PRIMITIVES)
        sym = jnp.where(leaf, NUM_PRIMITIVES + t, p)
        nodes = nodes.at[pos].set(sym)
        a = jnp.where(leaf, 0, arity[p])
        # push `a` children at depth + 1 (all at the same depth, so their order does not matter)
        idx = jnp.arange(_GEN_STACK)
        stack = jnp.where((idx >= sp) & (idx < sp + a), depth + 1, stack)
        return nodes, pos + 1, stack, sp + a

    nodes, pos, stack, sp = lax.while_loop(cond, body, (nodes, jnp.int32(0), stack, jnp.int32(1)))
    return nodes, pos


@functools.partial(jax.jit, static_argnames=("num", "capacity"))
def _generate(key, min_depth, max_depth, p_grow, *, num, capacity):
    k_m, k_t = jax.random.split(key)
    grow = jax.random.bernoulli(k_m, p_grow, (num,))
    keys = jax.random.split(k_t, num)
    f = functools.partial(_generate_one, min_depth=min_depth, max_depth=max_depth, capacity=capacity)
    nodes, length = jax.vmap(f)(keys, grow)
    return Programs(nodes, length)


def generate(key: jax.Array, num: int, min_depth: int, max_depth: int, capacity: int = DEFAULT_CAPACITY,
             method: str = "half_and_half") -> Programs:
    """``num`` random trees as DEAP's ``genHalfAndHalf`` / ``genFull`` / ``genGrow`` (jitted; depths are data).

    The height is uniform in ``[min_depth, max_depth]``; full trees put primitives (uniform) above that height and
    terminals (uniform) at it; grow trees also stop at depth >= ``min_depth`` with probability terminalRatio = 22/55.
    Half-and-half picks full or grow with probability 1/2 per tree. Requires ``capacity >= 2**(max_depth+1) - 1``
    (the largest binary tree), so no tree is ever truncated.
    """
    if not 0 <= min_depth <= max_depth <= _GEN_STACK - 3:
        raise ValueError(f"need 0 <= min_depth <= max_depth <= {_GEN_STACK - 3}, got {min_depth}, {max_depth}")
    if capacity < 2 ** (max_depth + 1) - 1:
        raise ValueError(f"capacity {capacity} cannot hold a full binary tree of depth {max_depth}")
    p_grow = {"half_and_half": 0.5, "full": 0.0, "grow": 1.0}.get(method)
    if p_grow is None:
        raise ValueError(f"method must be half_and_half, full or grow, got {method!r}")
    return _generate(key, jnp.int32(min_depth), jnp.int32(max_depth), jnp.float32(p_grow), num=int(num),
                     capacity=int(capacity))


# ----------------------------------------------------------------------------------------------------------------
# shape rules (torch 1.8) and op implementations (single block, static shapes)
# ----------------------------------------------------------------------------------------------------------------

Shape = tuple[int, ...]


def _bcast(a: Shape, b: Shape) -> Shape | None:
    n = max(len(a), len(b))
    a2, b2 = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a2, b2):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(out)


def _matmul_shape(a: Shape, b: Shape) -> Shape | None:
    a = a or (1,)
    b = b or (1,)
    if len(a) == 1 and len(b) == 1:
        return () if a == b else None
    pa, pb = len(a) == 1, len(b) == 1
    a2 = (1,) + a if pa else a
    b2 = b + (1,) if pb else b
    if a2[-1] != b2[-2]:
        return None
    batch = _bcast(a2[:-2], b2[:-2])
    if batch is None:
        return None
    out = batch + (a2[-2], b2[-1])
    if pa:
        out = out[:-2] + out[-1:]
    if pb:
        out = out[:-1]
    return out


def _cosine_shape(a: Shape, b: Shape) -> Shape | None:
    if len(a) == 0:
        return (1,)
    bs = a[0]
    if len(b) == 0 or bs > len(b) - 1:
        return None  # B.flatten(bs, -1): start_dim out of range
    x1 = (bs, math.prod(a) // bs)
    x2 = tuple(b[:bs]) + (math.prod(b[bs:]),)
    p = _bcast(x1, x2)
    if p is None:
        return None
    w12 = p[:1] + p[2:]
    w1 = (bs,)
    w2 = x2[:1] + x2[2:]
    n12 = _bcast(w1, w2)
    if n12 is None or _bcast(w12, n12) is None:
        return None
    return ()


_SAME_SHAPE = {
    "log", "abs_log", "abs", "square", "exp", "normalize", "relu", "sign", "heaviside", "invert", "softmax",
    "sigmoid", "ones_like", "zeros_like", "gt0", "lt0",
}


def output_shape(op: int | str, *shapes: Shape) -> Shape | None:
    """torch 1.8 output shape of primitive ``op`` on operands of the given shapes, or None if torch would raise."""
    name = PRIMITIVE_NAMES[op] if isinstance(op, (int, np.integer)) else op
    if name not in _SYMBOL_OF or _SYMBOL_OF[name] >= NUM_PRIMITIVES:
        raise ValueError(f"unknown primitive {op!r}")
    arity = PRIMITIVES[_SYMBOL_OF[name]].arity
    if len(shapes) != arity:
        raise ValueError(f"{name} takes {arity} operand(s), got {len(shapes)}")
    shapes = tuple(tuple(int(d) for d in s) for s in shapes)
    a = shapes[0]
    if name in _SAME_SHAPE:
        return a
    if name in ("frobenius_norm", "mean", "mean_abs"):
        return ()
    if name == "numel":
        return (1,)
    if name in ("det", "logdet"):
        return a[:-2] if len(a) >= 2 and a[-1] == a[-2] else None
    if name in ("sym_eig_ratio", "eig_ratio"):
        return (1,) if len(a) == 0 else ()
    b = shapes[1]
    if name in ("add", "mul", "lt", "gt", "eq"):
        return _bcast(a, b)
    if name == "matmul":
        return _matmul_shape(a, b)
    if name == "hamming":
        na, nb = math.prod(a), math.prod(b)
        return () if (na == nb or na == 1 or nb == 1) else None
    if name == "kl_div":
        return () if _bcast(a, b) is not None else None
    if name == "cosine":
        return _cosine_shape(a, b)
    raise AssertionError(name)


_F32 = jnp.float32
_HI = lax.Precision.HIGHEST


def _p_matmul(a, b):
    a = a.reshape(1) if a.ndim == 0 else a
    b = b.reshape(1) if b.ndim == 0 else b
    return jnp.matmul(a, b, precision=_HI)


def _p_normalize(a):
    z = (a - jnp.mean(a)) / jnp.std(a, ddof=1)  # one entry: 0 / 0 = NaN -> 0, as torch
    return jnp.where(jnp.isnan(z), 0.0, z)


def _slogdet_parts(a):
    """(sign, log|det|) over the last two dims from one LU factorisation with partial pivoting (as torch)."""
    return linalg.slogdet(a)  # LAPACK in chunks: a large batched call can deadlock XLA's CPU runtime


def _p_det(a):
    sign, logabs = _slogdet_parts(a)
    return sign * jnp.exp(logabs)


def _p_logdet(a):
    sign, logabs = _slogdet_parts(a)
    r = jnp.where(sign < 0, jnp.nan, jnp.where(sign == 0, -jnp.inf, logabs))
    return jnp.where(jnp.isnan(r), 0.0, r)  # z[z != z] = 0: negative det (and NaN input) -> 0


def _detlog(a, code):
    """det (code 0) or logdet (code 1) from one factorisation (the interpreter's merged kernel)."""
    sign, logabs = _slogdet_parts(a)
    r = jnp.where(sign < 0, jnp.nan, jnp.where(sign == 0, -jnp.inf, logabs))
    return jnp.where(code == 0, sign * jnp.exp(logabs), jnp.where(jnp.isnan(r), 0.0, r))


def _p_eig_ratio(a, symmetrize: bool):
    if a.ndim == 0:
        return jnp.zeros((1,), _F32)
    m = a.reshape(a.shape[0], -1)
    g = jnp.matmul(m, m.T, precision=_HI)
    if symmetrize:
        g = g + g.T
    e = linalg.eigvalsh(g)  # ascending
    return e[-1] / e[0]


def _p_hamming(a, b):
    return jnp.sum((a.reshape(-1) > 0) != (b.reshape(-1) > 0)).astype(_F32)


def _p_kl_div(a, b):
    pos = b > 0
    out = jnp.where(pos, b * (jnp.log(jnp.where(pos, b, 1.0)) - a), 0.0)
    total = jnp.sum(out)
    return total / a.shape[0] if a.ndim > 0 else total


_COS_EPS = 1e-8


def _p_cosine(a, b):
    if a.ndim == 0:
        return jnp.zeros((1,), _F32)
    bs = a.shape[0]
    x1 = a.reshape(bs, -1)
    x2 = b.reshape(b.shape[:bs] + (-1,))
    w12 = jnp.sum(x1 * x2, axis=1)
    w1 = jnp.sum(x1 * x1, axis=1)
    w2 = jnp.sum(x2 * x2, axis=1)
    n12 = jnp.sqrt(jnp.maximum(w1 * w2, jnp.float32(_COS_EPS * _COS_EPS)))
    return jnp.sum(w12 / n12)


def _p_softmax(a):
    if a.ndim == 0:
        return jnp.where(jnp.isfinite(a), 1.0, jnp.nan)  # exp(a - a) / exp(a - a)
    return jax.nn.softmax(a, axis=0 if a.ndim in (1, 3) else 1)


_OP_FN = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "matmul": _p_matmul,
    "lt": lambda a, b: (a < b).astype(_F32),
    "gt": lambda a, b: (a > b).astype(_F32),
    "eq": lambda a, b: (a == b).astype(_F32),
    "log": lambda a: jnp.log(jnp.where(a <= 0, 1.0, a)),
    "abs_log": lambda a: jnp.abs(jnp.log(jnp.where(a == 0, 1.0, a))),
    "abs": jnp.abs,
    "square": lambda a: a * a,
    "exp": jnp.exp,
    "normalize": _p_normalize,
    "relu": lambda a: jnp.maximum(a, 0.0),
    "sign": lambda a: (a > 0).astype(_F32) - (a < 0).astype(_F32),
    "heaviside": lambda a: (a > 0).astype(_F32),
    "invert": lambda a: 1.0 / a,
    "frobenius_norm": lambda a: jnp.sqrt(jnp.sum(a * a)),
    "det": _p_det,
    "logdet": _p_logdet,
    "sym_eig_ratio": lambda a: _p_eig_ratio(a, True),
    "eig_ratio": lambda a: _p_eig_ratio(a, False),
    "mean": lambda a: jnp.sum(a) / a.size,
    "mean_abs": lambda a: jnp.sum(jnp.abs(a)) / a.size,
    "hamming": _p_hamming,
    "kl_div": _p_kl_div,
    "cosine": _p_cosine,
    "softmax": _p_softmax,
    "sigmoid": jax.nn.sigmoid,
    "ones_like": lambda a: jnp.ones(a.shape, _F32),
    "zeros_like": lambda a: jnp.zeros(a.shape, _F32),
    "gt0": lambda a: (a > 0).astype(_F32),
    "lt0": lambda a: (a < 0).astype(_F32),
    "numel": lambda a: jnp.full((1,), a.size, _F32),
}
assert set(_OP_FN) == set(PRIMITIVE_NAMES)


def apply_primitive(op: int | str, *args) -> jax.Array:
    """Apply one primitive to single-block float32 arrays (torch 1.8 semantics of the official code).

    Raises ``ValueError`` when the operand shapes are invalid for ``op`` (where torch raises).
    """
    name = PRIMITIVE_NAMES[op] if isinstance(op, (int, np.integer)) else op
    args = tuple(jnp.asarray(a, _F32) for a in args)
    shape = output_shape(name, *(a.shape for a in args))
    if shape is None:
        raise ValueError(f"{name}: invalid operand shapes {[a.shape for a in args]}")
    out = jnp.asarray(_OP_FN[name](*args), _F32)
    assert out.shape == shape, (name, out.shape, shape)
    return out


# ----------------------------------------------------------------------------------------------------------------
# per-group static spec: shape universe, storage tiers, kernels, lookup tables
# ----------------------------------------------------------------------------------------------------------------

_UNARY = tuple(i for i, p in enumerate(PRIMITIVES) if p.arity == 1)
_BINARY = tuple(i for i, p in enumerate(PRIMITIVES) if p.arity == 2)

# Sub-op codes of the merged generic kernels (one compiled kernel per storage tier serves all of them; the code
# is a traced integer, the cases are cheap selects). softmax0 = softmax of a single element.
_CHEAP = ("abs", "square", "relu", "sign", "heaviside", "invert", "ones_like", "zeros_like", "gt0", "lt0", "softmax0")
_LOGS = ("log", "abs_log")
_EXPS = ("exp", "sigmoid")
_REDUCE = ("frobenius_norm", "mean", "mean_abs", "const", "gram1_sym", "gram1")
_EW2 = ("add", "mul", "lt", "gt", "eq")
# Shapes whose sizes are within this factor of a tier's size share the tier (padded flat storage).
TIER_RATIO = 16


@dataclass(frozen=True, eq=False)
class GroupSpec:
    """Static description of one group (one shape signature), built by :func:`group_spec`.

    * ``universe[s]``: the shapes a value can take; ``tier_of[s]``: its storage tier. Tier 0 holds the
      single-element shapes (``()``, ``(1,)``); the others hold flat buffers of ``tier_size[t]`` floats (a value of
      ``numel < tier_size`` uses a prefix). Shapes of equal size always share a tier.
    * ``array_shapes[a]``: the distinct terminal shapes; terminal ``t`` is entry ``term_pos[t]`` of stacked
      array ``term_array[t]``.
    * ``kernels[t]``: the kernels writing tier ``t`` -- generic ``("cheap"|"log"|"exp"|"normalize"|"reduce", tier)``,
      ``("ew2"|"hamming"|"kl", tier_a, tier_b)``, shape specific ``("softmax"|"detlog"|"eig", shape)``,
      ``("matmul"|"cosine"|"bcast2"|"klb", shape_a, shape_b)`` and ``("load", array)``.
    * tables (numpy int32 / float32): ``term_*`` ``(22,)``, ``un_*`` ``(33, U)``, ``bin_*`` ``(33, U, U)`` giving the
      output shape id (-1 = invalid), the kernel index within the output tier, the sub-op code, a float
      parameter (numel constant, KL divisor) and ``bin_swap`` (operands exchanged).
    """

    terminal_shapes: tuple
    universe: tuple
    tier_of: np.ndarray
    tier_size: tuple
    numel: np.ndarray
    array_shapes: tuple
    tier_of_numel: dict
    term_array: tuple
    term_pos: tuple
    kernels: tuple
    tables: dict

    @property
    def num_shapes(self) -> int:
        return len(self.universe)

    @property
    def num_tiers(self) -> int:
        return len(self.tier_size)

    @property
    def num_kernels(self) -> int:
        return sum(len(k) for k in self.kernels)


def _assign_tiers(universe: Sequence[Shape]) -> tuple[list[int], list[int]]:
    sizes = [math.prod(s) for s in universe]
    tier_of = [0] * len(universe)
    tier_size = [1]
    order = sorted((n for n in set(sizes) if n > 1), reverse=True)
    tier_for_size = {1: 0}
    for n in order:
        if tier_size[-1] > 1 and n * TIER_RATIO >= tier_size[-1] and len(tier_size) > 1:
            tier_for_size[n] = len(tier_size) - 1
        else:
            tier_for_size[n] = len(tier_size)
            tier_size.append(n)
    for s, n in enumerate(sizes):
        tier_of[s] = tier_for_size[n]
    return tier_of, tier_size


@functools.lru_cache(maxsize=64)
def group_spec(terminal_shapes: tuple[Shape, ...]) -> GroupSpec:
    """Build the :class:`GroupSpec` of a group from its 22 terminal shapes (block axis excluded)."""
    if len(terminal_shapes) != NUM_TERMINALS:
        raise ValueError(f"need {NUM_TERMINALS} terminal shapes, got {len(terminal_shapes)}")
    terminal_shapes = tuple(tuple(int(d) for d in s) for s in terminal_shapes)
    if any(d < 1 for s in terminal_shapes for d in s):
        raise ValueError(f"terminal shapes must have positive dims, got {terminal_shapes}")
    universe: list[Shape] = list(dict.fromkeys(terminal_shapes))
    array_shapes = tuple(universe)  # distinct terminal shapes, in first-appearance order
    i = 0
    while i < len(universe):  # closure under unary ops (det/logdet reductions, scalars, numel)
        for op in _UNARY:
            o = output_shape(op, universe[i])
            if o is not None and o not in universe:
                universe.append(o)
        i += 1
    sid = {s: k for k, s in enumerate(universe)}
    nu = len(universe)
    numel = np.array([math.prod(s) for s in universe], np.int32)
    tier_of, tier_size = _assign_tiers(universe)
    kern: list[dict] = [dict() for _ in tier_size]

    def kid(tier: int, desc: tuple) -> int:
        return kern[tier].setdefault(desc, len(kern[tier]))

    term_array = tuple(array_shapes.index(s) for s in terminal_shapes)
    term_pos = tuple(sum(1 for u in range(t) if term_array[u] == term_array[t]) for t in range(NUM_TERMINALS))
    tb = {
        "term_shape": np.array([sid[s] for s in terminal_shapes], np.int32),
        "term_kid": np.array([kid(tier_of[sid[s]], ("load", term_array[t])) for t, s in enumerate(terminal_shapes)],
                             np.int32),
        "term_code": np.array(term_pos, np.int32),
    }
    for pre, dims in (("un", (NUM_PRIMITIVES, nu)), ("bin", (NUM_PRIMITIVES, nu, nu))):
        tb[f"{pre}_out"] = np.full(dims, -1, np.int32)
        tb[f"{pre}_kid"] = np.zeros(dims, np.int32)
        tb[f"{pre}_code"] = np.zeros(dims, np.int32)
        tb[f"{pre}_f"] = np.zeros(dims, np.float32)

    for op in _UNARY:
        name = PRIMITIVE_NAMES[op]
        for s1, sh in enumerate(universe):
            o = output_shape(op, sh)
            if o is None or o not in sid:
                continue
            t1, code, f = tier_of[s1], 0, 0.0
            if name == "softmax" and numel[s1] == 1:
                desc, code = ("cheap", t1), _CHEAP.index("softmax0")
            elif name in _CHEAP:
                desc, code = ("cheap", t1), _CHEAP.index(name)
            elif name in _LOGS:
                desc, code = ("log", t1), _LOGS.index(name)
            elif name in _EXPS:
                desc, code = ("exp", t1), _EXPS.index(name)
            elif name == "normalize":
                desc = ("normalize", t1)
            elif name in ("frobenius_norm", "mean", "mean_abs"):
                desc, code = ("reduce", t1), _REDUCE.index(name)
            elif name == "numel":
                desc, code, f = ("reduce", t1), _REDUCE.index("const"), float(numel[s1])
            elif name in ("sym_eig_ratio", "eig_ratio") and len(sh) == 0:
                desc, code, f = ("reduce", t1), _REDUCE.index("const"), 0.0  # torch.Tensor([0])
            elif name in ("sym_eig_ratio", "eig_ratio") and sh[0] == 1:
                # one row: the Gram matrix is the 1x1 [sum A^2] (doubled if symmetrised), ratio g / g
                desc, code = ("reduce", t1), _REDUCE.index("gram1" if name == "eig_ratio" else "gram1_sym")
            elif name in ("sym_eig_ratio", "eig_ratio"):
                desc, code = ("eig", sh), int(name == "eig_ratio")
            elif name in ("det", "logdet"):
                desc, code = ("detlog", sh), int(name == "logdet")
            elif name == "softmax":
                desc = ("softmax", sh)
            else:  # pragma: no cover - every unary op is covered above
                raise AssertionError(name)
            so = sid[o]
            tb["un_out"][op, s1] = so
            tb["un_kid"][op, s1] = kid(tier_of[so], desc)
            tb["un_code"][op, s1], tb["un_f"][op, s1] = code, f

    # Kernel-count economies (every distinct kernel costs ~0.1 s of XLA compile time): operands are swapped so
    # that symmetric ops (add, mul, eq, hamming; lt <-> gt) only exist with the single-element operand second;
    # () and (1,) share storage, so matmul treats () as (1,) (as torch's unsqueeze) and (1,) @ (1,) is a mul.
    tb["bin_swap"] = np.zeros((NUM_PRIMITIVES, nu, nu), np.int32)
    swapped_code = {"lt": "gt", "gt": "lt"}
    for op in _BINARY:
        name = PRIMITIVE_NAMES[op]
        for s1, sh1 in enumerate(universe):
            for s2, sh2 in enumerate(universe):
                o = output_shape(op, sh1, sh2)
                if o is None or o not in sid:
                    continue
                t1, t2, n1, n2 = tier_of[s1], tier_of[s2], int(numel[s1]), int(numel[s2])
                code, f, swap = 0, 0.0, 0

                def flat_ok(nout: int) -> bool:  # broadcasting is a no-op or a single-element broadcast
                    return (n1 == n2 == nout) or (n1 == 1 and n2 == nout) or (n2 == 1 and n1 == nout)

                if name in _EW2:
                    code = _EW2.index(name)
                    if flat_ok(math.prod(o)):
                        if t1 == 0 and t2 != 0:
                            swap, code = 1, _EW2.index(swapped_code.get(name, name))
                            t1, t2 = t2, t1
                        desc = ("ew2", t1, t2)
                    else:
                        desc = ("bcast2", sh1, sh2)
                elif name == "hamming":
                    if t1 == 0 and t2 != 0:
                        swap, t1, t2 = 1, t2, t1
                    desc = ("hamming", t1, t2)
                elif name == "kl_div":
                    p = _bcast(sh1, sh2)
                    if p not in sid:
                        continue  # the broadcast intermediate is outside the universe (see "Shape rules")
                    f = float(sh1[0]) if len(sh1) else 1.0
                    desc = ("kl", t1, t2) if flat_ok(math.prod(p)) else ("klb", sh1, sh2)
                elif name == "matmul":
                    c1, c2 = sh1 or (1,), sh2 or (1,)
                    if c1 == (1,) and c2 == (1,):
                        desc, code = ("ew2", 0, 0), _EW2.index("mul")
                    else:
                        desc = ("matmul", c1, c2)
                elif name == "cosine" and len(sh1) == 0:
                    desc, code = ("reduce", t1), _REDUCE.index("const")  # torch.Tensor([0]); reads A only
                elif name == "cosine":
                    desc = ("cosine", sh1, sh2)
                else:  # pragma: no cover
                    raise AssertionError(name)
                so = sid[o]
                tb["bin_out"][op, s1, s2] = so
                tb["bin_kid"][op, s1, s2] = kid(tier_of[so], desc)
                tb["bin_code"][op, s1, s2], tb["bin_f"][op, s1, s2] = code, f
                tb["bin_swap"][op, s1, s2] = swap

    tb["tier_of"] = np.array(tier_of, np.int32)
    tb["numel"] = numel
    tier_of_numel = {int(numel[k]): tier_of[k] for k in range(nu)}
    return GroupSpec(
        terminal_shapes=terminal_shapes,
        universe=tuple(universe),
        tier_of=np.array(tier_of, np.int32),
        tier_size=tuple(tier_size),
        numel=numel,
        array_shapes=array_shapes,
        tier_of_numel=tier_of_numel,
        term_array=term_array,
        term_pos=term_pos,
        kernels=tuple(tuple(sorted(k, key=k.get)) for k in kern),
        tables=tb,
    )


# ----------------------------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------------------------


@struct.dataclass
class StatGroup:
    """Blocks of one shape signature from many networks.

    ``arrays[a]``: the terminals of shape ``spec.array_shapes[a]`` stacked, ``(k_a, nblocks, *shape)`` float32 (the
    order of :data:`TERMINALS`; terminal t is ``arrays[spec.term_array[t]][spec.term_pos[t]]``); ``mask``
    ``(nblocks,)`` bool (False = padding); ``network`` ``(nblocks,)`` int32 index of the owning network.
    ``terminal_shapes`` (static) are the 22 per-block shapes.
    """

    arrays: tuple
    mask: jax.Array
    network: jax.Array
    terminal_shapes: tuple = struct.field(pytree_node=False)

    @property
    def num_blocks(self) -> int:
        return int(self.mask.shape[0])

    def terminal(self, name: str) -> jax.Array:
        """``(nblocks, *shape)`` array of one terminal."""
        spec = group_spec(self.terminal_shapes)
        t = TERMINALS.index(name)
        return self.arrays[spec.term_array[t]][spec.term_pos[t]]


@struct.dataclass
class Statistics:
    """Statistics of ``num_networks`` networks: a tuple of :class:`StatGroup` (one per shape signature)."""

    groups: tuple
    num_networks: int = struct.field(pytree_node=False)

    @property
    def num_blocks(self) -> int:
        return sum(g.num_blocks for g in self.groups)


def _network_groups(net, i: int) -> list[Mapping]:
    if isinstance(net, Mapping):
        return [net]
    if isinstance(net, (list, tuple)) and net and all(isinstance(g, Mapping) for g in net):
        return list(net)
    raise ValueError(f"network {i}: statistics must be a mapping name -> array or a non-empty list of them")


def batch_networks(networks: Sequence) -> Statistics:
    """Merge per-network statistics (see the module docstring) into one :class:`Statistics`.

    ``networks[i]`` is a mapping with the 22 :data:`TERMINALS` names (each ``(nblocks, *shape)``, one ``nblocks`` per
    mapping) and an optional ``"mask"``, or a list of such mappings. Groups of equal shapes from all networks are
    concatenated along the block axis (host numpy, one device transfer), terminals of equal shape stacked.
    Raises ``ValueError`` for missing or unknown names, inconsistent block counts, bad masks, non-floating or
    non-finite data, or a network without real blocks.
    """
    if len(networks) == 0:
        raise ValueError("no networks given")
    buckets: dict[tuple, dict[str, list]] = {}
    for i, net in enumerate(networks):
        real = 0
        for g, grp in enumerate(_network_groups(net, i)):
            names = set(grp) - {"mask"}
            missing = [t for t in TERMINALS if t not in names]
            unknown = sorted(names - set(TERMINALS))
            if missing or unknown:
                raise ValueError(f"network {i} group {g}: missing terminals {missing}, unknown names {unknown}")
            arrs = [np.asarray(grp[t]) for t in TERMINALS]
            nbs = {a.shape[0] if a.ndim else -1 for a in arrs}
            if len(nbs) != 1 or -1 in nbs:
                raise ValueError(f"network {i} group {g}: every statistic needs the same leading block axis, got "
                                 f"{ {t: a.shape for t, a in zip(TERMINALS, arrs)} }")
            nblocks = nbs.pop()
            if nblocks == 0:
                continue
            mask = np.ones(nblocks, bool) if "mask" not in grp else np.asarray(grp["mask"])
            if mask.shape != (nblocks,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"network {i} group {g}: mask must be bool ({nblocks},), got {mask.dtype} {mask.shape}"
                )
            for t, a in zip(TERMINALS, arrs):
                if not np.issubdtype(a.dtype, np.floating):
                    raise ValueError(f"network {i} group {g}: {t} must be floating point, got {a.dtype}")
                if a.ndim < 2 or min(a.shape[1:]) < 1:
                    raise ValueError(f"network {i} group {g}: {t} has an empty or 0-d block shape {a.shape}")
                if not np.all(np.isfinite(a[mask])):
                    raise ValueError(f"network {i} group {g}: {t} has non-finite values")
            key = tuple(a.shape[1:] for a in arrs)
            b = buckets.setdefault(key, {"tensors": [], "mask": [], "network": []})
            b["tensors"].append(arrs)
            b["mask"].append(mask)
            b["network"].append(np.full(nblocks, i, np.int32))
            real += int(mask.sum())
        if real == 0:
            raise ValueError(f"network {i} has no real blocks")
    groups = []
    for key, b in buckets.items():
        spec = group_spec(key)
        arrays = []
        for a, _ in enumerate(spec.array_shapes):
            members = [t for t in range(NUM_TERMINALS) if spec.term_array[t] == a]
            stacked = np.stack(
                [np.concatenate([ts[t] for ts in b["tensors"]]).astype(np.float32, copy=False) for t in members]
            )
            arrays.append(jnp.asarray(stacked))
        groups.append(StatGroup(tuple(arrays), jnp.asarray(np.concatenate(b["mask"])),
                                jnp.asarray(np.concatenate(b["network"])), spec.terminal_shapes))
    return Statistics(tuple(groups), len(networks))


def synthetic_nb201_networks(seed: int, num_networks: int, batch_size: int = 16, *, channels: int = 16,
                             resolution: int = 32, cells_per_stage: int = 5) -> list[list[dict]]:
    """Random statistics with the block shapes of NAS-Bench-201 networks (for tests and benchmarks).

    Each network gets a random cell (6 edges, ops none/skip/conv1x1/conv3x3/avgpool); its RCB blocks are the
    cell convs of 3 stages (C, 2C, 4C channels at H, H/2, H/4) repeated ``cells_per_stage`` times, plus the two
    stride-2 conv_a (C -> 2C) and two conv_b blocks of the residual reduction cells. Tensors are Gaussian with
    plausible scales (activations ~1, gradients ~1e-2, kaiming fan-out weights, P = small differences);
    ``preact = relu(inpact)``. Returns one list of group dicts (numpy) per network, in the format of
    :func:`batch_networks`.
    """
    rng = np.random.default_rng(seed)
    nets = []
    for _ in range(num_networks):
        ops = rng.integers(0, 5, size=6)
        n1, n3 = int(np.sum(ops == 2)), int(np.sum(ops == 3))
        blocks: list[tuple[int, int, int, int, int, int]] = []  # (cin, cout, h, hout, k, count)
        for s in range(3):
            c, h = channels * 2**s, resolution // 2**s
            if n1:
                blocks.append((c, c, h, h, 1, n1 * cells_per_stage))
            extra = 1 if s > 0 else 0  # conv_b of the reduction cell before this stage
            if n3 * cells_per_stage + extra:
                blocks.append((c, c, h, h, 3, n3 * cells_per_stage + extra))
        for r in range(2):
            c, h = channels * 2**r, resolution // 2**r
            blocks.append((c, 2 * c, h, h // 2, 3, 1))
        groups = []
        for cin, cout, h, ho, k, n in blocks:
            g = {"wt": rng.normal(0, math.sqrt(2.0 / (cout * k * k)), (n, cout, cin, k, k)).astype(np.float32)}
            for x, scale in (("D", 1.0), ("N", 1.0), ("P", 0.1)):
                g[f"wtgrad_{x}"] = rng.normal(0, 1e-2 * scale, (n, cout, cin, k, k)).astype(np.float32)
                inp = rng.normal(0, scale, (n, batch_size, cin, h, h)).astype(np.float32)
                g[f"inpact_{x}"] = inp
                g[f"preact_{x}"] = np.maximum(inp, 0)
                g[f"act_{x}"] = rng.normal(0, scale, (n, batch_size, cout, ho, ho)).astype(np.float32)
                for kind, (cc, hh) in (("inpactgrad", (cin, h)), ("preactgrad", (cin, h)), ("actgrad", (cout, ho))):
                    g[f"{kind}_{x}"] = rng.normal(0, 1e-2 * scale, (n, batch_size, cc, hh, hh)).astype(np.float32)
            groups.append(g)
        nets.append(groups)
    return nets


# ----------------------------------------------------------------------------------------------------------------
# plan: the integer pass over a program for one group (shape inference + kernel/slot assignment)
# ----------------------------------------------------------------------------------------------------------------


class _Plan(NamedTuple):
    """Per execution step (reverse prefix order), ``(capacity,)`` each, plus scalars."""

    tier: jax.Array  # output tier
    kid: jax.Array  # kernel index within the output tier
    code: jax.Array  # sub-op code of merged kernels / position of a loaded terminal
    f: jax.Array  # float parameter (numel constant, KL divisor)
    in1: jax.Array  # slot of the first operand
    in2: jax.Array  # slot of the second operand
    slot: jax.Array  # slot of the result
    n1: jax.Array  # numel of the operands and of the result
    n2: jax.Array
    nout: jax.Array
    steps: jax.Array  # () number of steps (= length)
    root_tier: jax.Array  # () tier of the result
    root_numel: jax.Array  # () numel of the result
    valid: jax.Array  # () bool


def _plan_one(nodes, length, tables, stack_depth: int) -> _Plan:
    """Reverse-prefix pass over one program: shape ids on an integer stack, kernel/slot assignment per step."""
    cap = nodes.shape[-1]
    T = tables
    ok_form = well_formed(nodes, length)
    arity = jnp.asarray(_ARITY_PAD)

    def step(carry, e):
        sp, shp, ok = carry
        active = e < length
        sym = nodes[jnp.clip(length - 1 - e, 0, cap - 1)]
        sym = jnp.where((sym >= 0) & (sym < NUM_SYMBOLS), sym, NUM_SYMBOLS)
        ar = arity[sym]
        is_term = sym >= NUM_PRIMITIVES
        op = jnp.clip(sym, 0, NUM_PRIMITIVES - 1)
        t = jnp.clip(sym - NUM_PRIMITIVES, 0, NUM_TERMINALS - 1)
        s1 = shp[jnp.clip(sp - 1, 0, stack_depth - 1)]
        s2 = shp[jnp.clip(sp - 2, 0, stack_depth - 1)]

        def pick(term_key, key):
            by_arity = jnp.where(ar == 1, T[f"un_{key}"][op, s1], T[f"bin_{key}"][op, s1, s2])
            return jnp.where(is_term, T[term_key][t], by_arity)

        out = pick("term_shape", "out")
        kid = pick("term_kid", "kid")
        code = pick("term_code", "code")
        f = jnp.where(is_term, 0.0, jnp.where(ar == 1, T["un_f"][op, s1], T["bin_f"][op, s1, s2]))
        swap = (ar == 2) & (T["bin_swap"][op, s1, s2] == 1)
        slot = sp - ar
        new_sp = slot + 1
        good = (out >= 0) & (sym < NUM_SYMBOLS) & (slot >= 0) & (new_sp <= stack_depth)
        ok = ok & (~active | good)
        out = jnp.maximum(out, 0)
        shp = jnp.where(active & good, shp.at[jnp.clip(slot, 0, stack_depth - 1)].set(out), shp)
        numel = T["numel"]
        # operands before the step: the first on top of the stack (sp - 1), the second below it (sp - 2)
        i1, i2 = jnp.where(swap, sp - 2, sp - 1), jnp.where(swap, sp - 1, sp - 2)
        m1, m2 = jnp.where(swap, numel[s2], numel[s1]), jnp.where(swap, numel[s1], numel[s2])
        ys = (T["tier_of"][out], kid, code, f, i1, i2, slot, m1, m2, numel[out])
        return (jnp.where(active, new_sp, sp), shp, ok), ys

    init = (jnp.int32(0), jnp.zeros((stack_depth,), jnp.int32), jnp.bool_(True))
    (sp, shp, ok), ys = lax.scan(step, init, jnp.arange(cap, dtype=jnp.int32))
    valid = ok & ok_form & (sp == 1)
    return _Plan(*ys, steps=length.astype(jnp.int32), root_tier=T["tier_of"][shp[0]],
                 root_numel=T["numel"][shp[0]], valid=valid)


def _jnp_tables(spec: GroupSpec) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in spec.tables.items()}


def shape_check(programs: Programs, stats: Statistics, stack_depth: int = DEFAULT_STACK_DEPTH) -> jax.Array:
    """``(..., G)`` bool: program is well formed and shape-valid on group g (no tensor is touched). Jittable."""
    flat_n = jnp.asarray(programs.nodes, jnp.int32).reshape(-1, programs.capacity)
    flat_l = jnp.asarray(programs.length, jnp.int32).reshape(-1)
    cols = []
    for g in stats.groups:
        tables = _jnp_tables(group_spec(g.terminal_shapes))
        cols.append(jax.vmap(lambda n, l: _plan_one(n, l, tables, stack_depth).valid)(flat_n, flat_l))
    return jnp.stack(cols, axis=-1).reshape(tuple(programs.length.shape) + (len(stats.groups),))


# ----------------------------------------------------------------------------------------------------------------
# kernels: (own tier stack, other tier stacks, stat arrays, start, step info) -> (chunk, tier_size) float32
# ----------------------------------------------------------------------------------------------------------------


class _Info(NamedTuple):
    start: jax.Array
    code: jax.Array
    f: jax.Array
    in1: jax.Array
    in2: jax.Array
    n1: jax.Array
    n2: jax.Array
    nout: jax.Array


def _select(code, cases):
    """cases[code] for a traced scalar code (all cases are computed: only used for cheap elementwise cases)."""
    out = cases[-1]
    for k in range(len(cases) - 2, -1, -1):
        out = jnp.where(code == k, cases[k], out)
    return out


def _masked(x, n):
    return jnp.arange(x.shape[-1], dtype=jnp.int32)[None, :] < n


def _cheap(x, code):
    return _select(code, [
        jnp.abs(x), x * x, jnp.maximum(x, 0.0), (x > 0).astype(_F32) - (x < 0).astype(_F32),
        (x > 0).astype(_F32), 1.0 / x,
        jnp.ones_like(x), jnp.zeros_like(x), (x > 0).astype(_F32), (x < 0).astype(_F32),
        jnp.where(jnp.isfinite(x), 1.0, jnp.nan),
    ])


def _log(x, code):
    y = jnp.log(jnp.where(code == 0, jnp.where(x <= 0, 1.0, x), jnp.where(x == 0, 1.0, x)))
    return jnp.where(code == 0, y, jnp.abs(y))


def _exp(x, code):
    e = jnp.exp(jnp.where(code == 0, x, -x))
    return jnp.where(code == 0, e, 1.0 / (1.0 + e))


def _normalize(x, n):
    m = _masked(x, n)
    nf = n.astype(_F32)
    mean = jnp.sum(jnp.where(m, x, 0.0), axis=1, keepdims=True) / nf
    d = x - mean
    std = jnp.sqrt(jnp.sum(jnp.where(m, d * d, 0.0), axis=1, keepdims=True) / (nf - 1.0))
    z = d / std
    return jnp.where(jnp.isnan(z), 0.0, z)


def _reduce(x, code, n, f):
    y = _select(code, [x * x, x, jnp.abs(x), x, x * x, x * x])
    total = jnp.sum(jnp.where(_masked(x, n), y, 0.0), axis=1)
    g = jnp.where(code == 4, total + total, total)
    return _select(code, [jnp.sqrt(total), total / n.astype(_F32), total / n.astype(_F32),
                          jnp.full_like(total, f), g / g, g / g])[:, None]


def _ew2(a, b, code):
    return _select(code, [a + b, a * b, (a < b).astype(_F32), (a > b).astype(_F32), (a == b).astype(_F32)])


def _pad_to(y, size: int):
    y = y.reshape(y.shape[0], -1).astype(_F32)
    return y if y.shape[1] == size else jnp.pad(y, ((0, 0), (0, size - y.shape[1])))


def _make_kernel(desc: tuple, tier: int, spec: GroupSpec, chunk: int):
    tsize = spec.tier_size[tier]

    def read(own, others, t, slot):
        return lax.dynamic_index_in_dim(own if t == tier else others[t], slot, 0, keepdims=False)

    def read_shaped(own, others, shape, slot):
        n = math.prod(shape)
        x = read(own, others, spec.tier_of_numel[n], slot)
        return x[:, :n].reshape((chunk,) + tuple(shape))

    kind = desc[0]
    if kind == "load":
        a = desc[1]

        def k_load(own, others, arrays, i: _Info):
            x = lax.dynamic_slice_in_dim(arrays[a], i.code, 1, 0)[0]
            return _pad_to(lax.dynamic_slice_in_dim(x, i.start, chunk, 0), tsize)

        return k_load
    if kind in ("cheap", "log", "exp", "normalize", "reduce"):
        t1 = desc[1]

        def k_unary_generic(own, others, arrays, i: _Info):
            x = read(own, others, t1, i.in1)
            if kind == "cheap":
                return _cheap(x, i.code)
            if kind == "log":
                return _log(x, i.code)
            if kind == "exp":
                return _exp(x, i.code)
            if kind == "normalize":
                return _normalize(x, i.n1)
            return _reduce(x, i.code, i.n1, i.f)

        return k_unary_generic
    if kind in ("ew2", "hamming", "kl"):
        t1, t2 = desc[1], desc[2]

        def k_binary_generic(own, others, arrays, i: _Info):
            a, b = read(own, others, t1, i.in1), read(own, others, t2, i.in2)  # (chunk, T) or (chunk, 1)
            if kind == "ew2":
                return _ew2(a, b, i.code)
            width = max(a.shape[1], b.shape[1])
            m = jnp.arange(width, dtype=jnp.int32)[None, :] < jnp.maximum(i.n1, i.n2)
            if kind == "hamming":
                return jnp.sum(m & ((a > 0) != (b > 0)), axis=1).astype(_F32)[:, None]
            pos = b > 0
            out = jnp.where(pos, b * (jnp.log(jnp.where(pos, b, 1.0)) - a), 0.0)
            return (jnp.sum(jnp.where(m, out, 0.0), axis=1) / i.f)[:, None]

        return k_binary_generic
    if kind in ("softmax", "detlog", "eig"):
        s1 = desc[1]

        def block_fn(x, code):
            if kind == "softmax":
                return _p_softmax(x)
            if kind == "detlog":
                return _detlog(x, code)
            m = x.reshape(x.shape[0], -1)
            g = jnp.matmul(m, m.T, precision=_HI)
            e = linalg.eigvalsh(jnp.where(code == 0, g + g.T, g))
            return e[-1] / e[0]

        def k_unary_shaped(own, others, arrays, i: _Info):
            x = read_shaped(own, others, s1, i.in1)
            return _pad_to(jax.vmap(block_fn, in_axes=(0, None))(x, i.code), tsize)

        return k_unary_shaped
    s1, s2 = desc[1], desc[2]

    def block_fn2(a, b, code):
        if kind == "bcast2":
            return _ew2(a, b, code)
        return _OP_FN[{"matmul": "matmul", "cosine": "cosine", "klb": "kl_div"}[kind]](a, b)

    def k_binary_shaped(own, others, arrays, i: _Info):
        a, b = read_shaped(own, others, s1, i.in1), read_shaped(own, others, s2, i.in2)
        return _pad_to(jax.vmap(block_fn2, in_axes=(0, 0, None))(a, b, i.code), tsize)

    return k_binary_shaped


# ----------------------------------------------------------------------------------------------------------------
# the interpreter
# ----------------------------------------------------------------------------------------------------------------


@struct.dataclass
class Evaluation:
    """Result of :func:`evaluate`: ``scores`` ``(P, N)`` float32 (NaN where invalid) and ``valid`` ``(P, N)`` bool.

    A program is invalid on a network if it is malformed, shape-invalid on one of the network's groups, or gives a
    non-finite block score on one of its real blocks.
    """

    scores: jax.Array
    valid: jax.Array


def _chunk_size(spec: GroupSpec, nblocks: int, stack_depth: int, chunk_bytes: int) -> int:
    per_block = stack_depth * sum(spec.tier_size) * 4
    return int(max(1, min(nblocks, chunk_bytes // max(per_block, 1))))


def _run_group(plan: _Plan, spec: GroupSpec, group: StatGroup, stacks: tuple, chunk: int):
    """Execute one program (its plan) on every block of a group: returns (stacks, block scores (nblocks,))."""
    nb = group.num_blocks
    ntiers = spec.num_tiers
    nchunks = -(-nb // chunk)
    branches = [[_make_kernel(d, t, spec, chunk) for d in spec.kernels[t]] for t in range(ntiers)]
    arrays = group.arrays

    def chunk_body(ci, carry):
        stacks, scores = carry
        # the last chunk overlaps the previous one instead of padding (same values are written twice)
        start = jnp.minimum(ci * chunk, nb - chunk)

        def step(e, stacks):
            info = _Info(start, plan.code[e], plan.f[e], plan.in1[e], plan.in2[e], plan.n1[e], plan.n2[e],
                         plan.nout[e])
            kid, slot, tier = plan.kid[e], plan.slot[e], plan.tier[e]
            new = list(stacks)
            for t in range(ntiers):
                if not branches[t]:
                    continue
                others = {j: new[j] for j in range(ntiers) if j != t}

                # The tier's stack is the cond's updated operand and is written in place; the other tiers are
                # read-only operands. (Any arrangement returning all stacks from one switch copies them.)
                def write(own, others, t=t):
                    val = lax.switch(kid, branches[t], own, others, arrays, info)
                    return lax.dynamic_update_index_in_dim(own, val, slot, 0)

                new[t] = lax.cond(tier == t, write, lambda own, others: own, new[t], others)
            return tuple(new)

        stacks = lax.fori_loop(0, plan.steps, step, stacks)

        def root_mean(st, t):
            x = st[t][0]
            return jnp.sum(jnp.where(_masked(x, plan.root_numel), x, 0.0), axis=1) / plan.root_numel.astype(_F32)

        means = lax.switch(plan.root_tier, [functools.partial(root_mean, t=t) for t in range(ntiers)], stacks)
        return stacks, lax.dynamic_update_slice_in_dim(scores, means, start, 0)

    scores0 = jnp.full((nb,), jnp.nan, _F32)
    return lax.fori_loop(0, nchunks, chunk_body, (stacks, scores0))


def _evaluate(programs: Programs, stats: Statistics, stack_depth: int = DEFAULT_STACK_DEPTH,
              chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Evaluation:
    if programs.nodes.ndim != 2 or programs.length.ndim != 1:
        raise ValueError(f"evaluate expects a population: nodes (P, capacity), length (P,); got "
                         f"{programs.nodes.shape}, {programs.length.shape}")
    if not stats.groups:
        raise ValueError("statistics have no groups")
    nodes = jnp.asarray(programs.nodes, jnp.int32)
    length = jnp.asarray(programs.length, jnp.int32)
    specs = [group_spec(g.terminal_shapes) for g in stats.groups]
    chunks = [_chunk_size(s, g.num_blocks, stack_depth, chunk_bytes) for s, g in zip(specs, stats.groups)]
    plans = [jax.vmap(functools.partial(_plan_one, tables=_jnp_tables(s), stack_depth=stack_depth))(nodes, length)
             for s in specs]
    stacks0 = tuple(tuple(jnp.zeros((stack_depth, ch, n), _F32) for n in s.tier_size) for s, ch in zip(specs, chunks))

    def per_program(stacks, plans_p):
        new_stacks, outs = [], []
        for gi, (spec, group, ch) in enumerate(zip(specs, stats.groups, chunks)):
            plan = plans_p[gi]

            def run(st, plan=plan, spec=spec, group=group, ch=ch):
                return _run_group(plan, spec, group, st, ch)

            def skip(st, group=group):
                return st, jnp.full((group.num_blocks,), jnp.nan, _F32)

            st, sc = lax.cond(plan.valid, run, skip, stacks[gi])
            new_stacks.append(st)
            outs.append(sc)
        return tuple(new_stacks), tuple(outs)

    _, block_scores = lax.scan(per_program, stacks0, tuple(plans))

    n = stats.num_networks
    p = nodes.shape[0]
    total = jnp.zeros((p, n), _F32)
    count = jnp.zeros((n,), _F32)
    bad = jnp.zeros((p, n), bool)
    for group, sc, plan in zip(stats.groups, block_scores, plans):
        real = group.mask
        fin = jnp.isfinite(sc) & plan.valid[:, None]

        def seg(x, group=group):
            return jax.ops.segment_sum(x, group.network, num_segments=n)

        total = total + jax.vmap(seg)(jnp.where(real[None, :] & fin, sc, 0.0))
        count = count + seg(real.astype(_F32))
        bad = bad | (jax.vmap(seg)((real[None, :] & ~fin).astype(_F32)) > 0)
    valid = ~bad & (count[None, :] > 0)
    scores = jnp.where(valid, total / jnp.maximum(count, 1.0)[None, :], jnp.nan)
    return Evaluation(scores, valid)


evaluate = jax.jit(_evaluate, static_argnames=("stack_depth", "chunk_bytes"))
evaluate.__doc__ = """Score P programs on N networks in one jitted call -> :class:`Evaluation` ``(P, N)``.

Args:
  programs: population, ``nodes`` ``(P, capacity)`` int32, ``length`` ``(P,)``.
  stats: :class:`Statistics` (see :func:`batch_networks`).
  stack_depth: stack slots (static; programs needing more are invalid). Default 11 (height limit 10).
  chunk_bytes: stack memory per group (static); blocks are processed in chunks that fit.

Compiled once per (P, capacity, statistics shapes, stack_depth, chunk_bytes); the program contents are data.
The network score is the mean over its real blocks of the mean of the program output on the block.
"""
