"""Trace any JAX function into a computation graph (CG) of primitive operators.

Pipeline (each step a small function below):

1. ``jax.make_jaxpr`` of the function; call-like primitives (``jit``, ``custom_jvp_call``,
   ``custom_vjp_call``, ``remat``, ``closed_call``) are inlined -- except calls whose name is a known
   activation (``jax.nn.relu``, ``relu6``, ``silu``, ``hard_swish``, ...), which become one op directly.
2. Every variable is *data* (depends on a network input) or *constant* (parameters, literals, and anything
   computed from them only). Constant subgraphs never become nodes; uniform constant values (literal
   ``0.0``, a broadcast zero) are tracked so that ``max(x, 0)`` reads as ReLU and ``x * 0`` as a constant.
3. Patterns over the data equations are fused into single ops, each checked to have one data input and
   one data output (otherwise the equations stay separate):

   * normalisation: elementwise arithmetic that combines a tensor with a broadcast statistic of itself
     (a reduction of it through pure arithmetic) -- ``jzcp.networks.layers.batch_norm``, Flax's
     ``BatchNorm``/``LayerNorm``/``GroupNorm``, softmax. Labelled BatchNorm when a statistic reduces the
     batch axis 0, Softmax when it contains ``exp``, else LayerNorm;
   * shifted-window sums/maxima: slices of one (padded) tensor summed or maximised together, as
     ``jzcp.networks.layers.avg_pool_3x3`` writes a pool; a trailing ``[::s, ::s]`` subsample is its stride;
   * elementwise fan-out/re-join regions (``x * sigmoid(x)``, GeLU's tanh and erf forms, hand-written
     hard-swish), which are Swish / GeLU / HSwish.
4. Remaining equations map one to one: conv (Depthwise when groups == input channels), dot_general
   (MatMul), add/sub (Add), mul/div of two data tensors (Mul), concatenate, reduce_sum (Mean), reduce_max
   (Global), reduce_window (pools), ``max(x, 0)`` (ReLU, ReLU6 when followed by ``min(., 6)``), logistic,
   tanh. Arithmetic with a constant (bias, BN affine, scaling) is folded into the op that produced the data
   (a parameter added sets that op's bias flag); layout plumbing (reshape, transpose, broadcast, pad,
   slice, convert, ...) is removed. Anything else is an OOV node named after its primitive.
5. Clean-up: chains of Add (Mul, Concat) whose inner results have one consumer become one n-ary node;
   Add/Mul/Concat with a single distinct input disappear; identical parameter-free ops on the same inputs
   are merged (common subexpressions: the three ``relu(x)`` of three edges leaving one NB201 node are one
   ReLU); nodes from which the output cannot be reached are dropped. Edges are a set (GENNAPE's
   convention: ``x + x`` is ``x``). If the output does not depend on the input at all, the graph is
   Input -> Zero -> Output.
6. Canonical node order (:mod:`jzcp.graph._canonical`).

Speed. Tracing is Python-bound (Flax module overhead dominates). :class:`ModuleMemo` traces each distinct
call of chosen submodules once (an NB201 cell per stage, the reduction blocks once for all architectures)
and splices its graph in; :func:`skip_flax_param_checks` drops Flax's per-``apply`` initialiser shape checks.

Limits (pattern-based recognition, no tags in the networks): an eval-mode BatchNorm (fixed statistics) is
plain affine arithmetic and is folded into the op before it; ``x - y`` is an Add; ``x + x`` and ``x`` give
the same graph, as do ops that differ only in constants (GeLU's tanh and erf forms on the same input are one
node); control flow (``cond``/``scan``/``while``) is one OOV node.

Shapes. Tensors are batch-first and channel-last (jzcp's NHWC): ``(B, H, W, C)`` gives ``(H, W, C)``,
``(B, C)`` gives ``(1, 1, C)``, ``(B, L, C)`` gives ``(L, 1, C)``; convolutions read their own dimension
numbers. A node's input shape is that of the largest data tensor it reads, as that op reads it (after any
removed plumbing, before padding folded into it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import OrderedDict, defaultdict
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from jzcp.graph._canonical import canonicalize
from jzcp.graph._types import NUM_ATTRS, OP_INDEX, CompGraph

# --- primitive tables ----------------------------------------------------------------------------------------

CALL_PRIMS = frozenset(
    {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
     "remat", "remat2", "checkpoint", "named_call"}
)
# Names of jitted / custom-derivative functions that are one activation (jax.nn's own names).
NAMED_ACTIVATIONS = {
    "relu": "ReLU", "relu6": "ReLU6", "leaky_relu": "ReLU", "silu": "Swish", "swish": "Swish",
    "hard_silu": "HSwish", "hard_swish": "HSwish", "hard_sigmoid": "HSigmoid", "sigmoid": "Sigmoid",
    "gelu": "GeLU", "tanh": "Tanh",
}
ELEMENTWISE = frozenset(
    {"add", "add_any", "sub", "mul", "div", "max", "min", "neg", "exp", "exp2", "log", "log1p", "expm1", "tanh",
     "logistic", "erf", "erfc", "erf_inv", "sqrt", "rsqrt", "cbrt", "integer_pow", "pow", "square", "abs", "sign",
     "select_n", "clamp", "convert_element_type", "rem", "floor", "ceil", "round", "sin", "cos", "tan", "atan2",
     "atan", "asin", "acos", "sinh", "cosh", "asinh", "acosh", "atanh", "is_finite", "eq", "ne", "lt", "le", "gt",
     "ge", "and", "or", "not", "xor", "stop_gradient", "reduce_precision", "copy", "copy_p", "nextafter", "named"}
)
# Elementwise ops that are activations: a normalisation region never extends through them.
ACTIVATION_PRIMS = frozenset({"max", "min", "clamp", "logistic", "tanh", "erf", "erfc", "select_n", "named"})
FOLD_PRIMS = frozenset({"add", "add_any", "sub", "mul", "div", "neg"})  # with a constant: folded away
PLUMBING = frozenset(
    {"reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "convert_element_type", "copy",
     "copy_p", "reduce_precision", "stop_gradient", "pad", "slice", "dynamic_slice", "gather", "rev", "split",
     "optimization_barrier", "sharding_constraint", "real", "imag", "device_put"}
)
# Shape/value-preserving ops through which a constant's uniform value is known.
_VALUE_KEEPING = frozenset(
    {"convert_element_type", "broadcast_in_dim", "reshape", "squeeze", "expand_dims", "copy", "copy_p",
     "transpose", "reduce_precision", "slice", "stop_gradient", "rev", "device_put"}
)
NORM_REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min"})
_STAT_PLUMBING = frozenset({"broadcast_in_dim", "reshape", "squeeze", "expand_dims", "convert_element_type",
                            "stop_gradient", "copy", "copy_p", "reduce_precision"})
_OUT = -1  # consumer id of the function's outputs


class _Eqn:
    """One data equation of the flattened program (at least one operand depends on a network input)."""

    __slots__ = ("prim", "ins", "din", "outs", "params", "label", "scope")

    def __init__(self, prim, ins, din, outs, params, label, scope):
        self.prim, self.ins, self.din, self.outs = prim, ins, din, outs
        self.params, self.label, self.scope = params, label, scope


class _Flat:
    """The function's program flattened into data equations over integer variable ids."""

    def __init__(self, memo: "ModuleMemo | None" = None):
        self.shapes: list[tuple[int, ...]] = []
        self.is_data: list[bool] = []
        self.value: dict[int, float] = {}  # constant var -> its uniform value, when known
        self.roots: dict[int, frozenset] = {}  # constant var -> parameter/constant leaves it is computed from
        self.direct: set[int] = set()  # constant vars that are a leaf up to layout (reshape, broadcast, ...)
        self.eqns: list[_Eqn] = []
        self.memo = memo

    def new_var(self, shape, data: bool) -> int:
        self.shapes.append(tuple(shape))
        self.is_data.append(data)
        return len(self.shapes) - 1

    def leaf(self, shape) -> int:
        """A constant leaf (parameter or closed-over constant): its own root."""
        i = self.new_var(shape, False)
        self.roots[i] = frozenset((i,))
        self.direct.add(i)
        return i

    def _read(self, env, atom) -> int:
        if isinstance(atom, jcore.Literal):
            val = np.asarray(atom.val)
            i = self.new_var(val.shape, False)
            if val.size == 1 or (val.size and np.all(val == val.flat[0])):
                self.value[i] = float(val.flat[0])
            return i
        return env[atom]

    def walk(self, jaxpr, const_ids, in_ids, scope: str = "") -> list[int]:
        env = dict(zip(jaxpr.constvars, const_ids))
        env.update(zip(jaxpr.invars, in_ids))
        for eqn in jaxpr.eqns:
            ins = [self._read(env, a) for a in eqn.invars]
            outs = self._equation(eqn, ins, scope)
            env.update(zip(eqn.outvars, outs))
        return [self._read(env, a) for a in jaxpr.outvars]

    def _equation(self, eqn, ins, scope) -> list[int]:
        prim = eqn.primitive.name
        out_shapes = [getattr(v.aval, "shape", ()) for v in eqn.outvars]
        din = tuple(i for i in ins if self.is_data[i])
        if not din:
            return self._constant(prim, ins, out_shapes, eqn.params)
        if prim in CALL_PRIMS:
            return self._call(eqn, prim, ins, din, out_shapes, scope)
        if prim == "mul" and any(self.value.get(i) == 0.0 for i in ins if not self.is_data[i]):
            outs = [self.new_var(s, False) for s in out_shapes]  # x * 0 is a constant zero
            self.value[outs[0]] = 0.0
            return outs
        outs = [self.new_var(s, True) for s in out_shapes]
        self.eqns.append(_Eqn(prim, tuple(ins), din, tuple(outs), eqn.params, None, _scope(scope, eqn)))
        return outs

    def _call(self, eqn, prim, ins, din, out_shapes, scope) -> list[int]:
        name = eqn.params.get("name", "")
        entry = self.memo.by_name.get(name) if self.memo is not None and isinstance(name, str) else None
        if entry is not None:  # a memoised module call: its graph is spliced in when emitting
            out_data = entry.output_data([self.is_data[i] for i in ins])
            outs = [self.new_var(s, d) for s, d in zip(out_shapes, out_data)]
            if any(out_data):
                self.eqns.append(_Eqn("memo", tuple(ins), din, tuple(outs), {"entry": entry}, None,
                                      _scope(scope, eqn)))
            return outs
        label = NAMED_ACTIVATIONS.get(name)
        if (label and len(set(din)) == 1 and len(out_shapes) == 1
                and tuple(out_shapes[0]) == self.shapes[din[0]]):
            out = self.new_var(out_shapes[0], True)
            self.eqns.append(_Eqn("named", tuple(ins), din, (out,), {}, label, _scope(scope, eqn)))
            return [out]
        sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr")))
        if sub is None:  # an unknown call-like primitive: one opaque op
            outs = [self.new_var(s, True) for s in out_shapes]
            self.eqns.append(_Eqn(prim, tuple(ins), din, tuple(outs), eqn.params, None, _scope(scope, eqn)))
            return outs
        if isinstance(sub, jcore.ClosedJaxpr):
            jaxpr, consts = sub.jaxpr, sub.consts
        else:
            jaxpr, consts = sub, ()
        const_ids = [self.leaf(np.shape(c)) for c in consts]
        return self.walk(jaxpr, const_ids, ins, _scope(scope, eqn))

    def _constant(self, prim, ins, out_shapes, params) -> list[int]:
        outs = [self.new_var(s, False) for s in out_shapes]
        roots = frozenset().union(*(self.roots.get(i, frozenset()) for i in ins)) if ins else frozenset()
        for o in outs:
            if roots:
                self.roots[o] = roots
        if len(outs) == 1 and prim in _VALUE_KEEPING and ins and ins[0] in self.direct:
            self.direct.add(outs[0])
        if len(outs) == 1:
            v = self._constant_value(prim, ins)
            if v is not None:
                self.value[outs[0]] = v
        return outs

    def _constant_value(self, prim, ins):
        vals = [self.value.get(i) for i in ins]
        if prim in _VALUE_KEEPING and ins:
            return vals[0]
        if prim == "pad" and len(vals) == 2 and vals[0] is not None and vals[0] == vals[1]:
            return vals[0]
        if prim == "mul" and any(v == 0.0 for v in vals):
            return 0.0
        if any(v is None for v in vals):
            return None
        ops = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
               "max": max, "min": min, "neg": lambda a: -a}
        if prim in ops:
            try:
                return float(ops[prim](*vals))
            except TypeError:
                return None
        return None


def _scope(prefix: str, eqn) -> str:
    stack = str(eqn.source_info.name_stack)
    return f"{prefix}/{stack}" if prefix and stack else prefix or stack


# --- shapes -----------------------------------------------------------------------------------------------------


def shape_hwc(shape: Sequence[int]) -> tuple[int, int, int]:
    """``(H, W, C)`` of a batch-first, channel-last tensor shape (see the module docstring)."""
    r = len(shape)
    if r <= 1:
        return (1, 1, 1)
    if r == 2:
        return (1, 1, int(shape[1]))
    if r == 3:
        return (int(shape[1]), 1, int(shape[2]))
    return (int(shape[1]), int(math.prod(shape[2:-1])), int(shape[-1]))


def _spec_hwc(shape, spec) -> tuple[int, int, int]:
    """``(H, W, C)`` from a conv dimension spec ``(batch, feature, spatial...)``."""
    spatial = [shape[d] for d in spec[2:]]
    h = spatial[0] if spatial else 1
    w = int(math.prod(spatial[1:])) if len(spatial) > 1 else 1
    return (int(h), int(w), int(shape[spec[1]]))


# --- the fine graph ---------------------------------------------------------------------------------------------


class _Region:
    """Fused data equations: one op reading ``inp`` and writing ``out``."""

    __slots__ = ("members", "inp", "out", "label", "kernel", "stride")

    def __init__(self, members, inp, out, label, kernel=(0, 0), stride=0):
        self.members, self.inp, self.out, self.label = members, inp, out, label
        self.kernel, self.stride = kernel, stride


class _Fine:
    """Producer/consumer maps over the data equations, and which region owns each equation."""

    def __init__(self, flat: _Flat, outputs: Sequence[int]):
        self.flat, self.eqns = flat, flat.eqns
        self.producer: dict[int, int] = {}
        self.consumers: dict[int, list[int]] = defaultdict(list)
        for k, e in enumerate(self.eqns):
            for o in e.outs:
                self.producer[o] = k
            for i in dict.fromkeys(e.din):
                self.consumers[i].append(k)
        for o in outputs:
            self.consumers[o].append(_OUT)
        self.owner: dict[int, _Region] = {}

    def single_consumer(self, var: int) -> bool:
        return len(self.consumers.get(var, ())) == 1 and self.consumers[var][0] != _OUT

    def consts_known(self, e: _Eqn) -> bool:
        flat = self.flat
        return all(flat.is_data[i] or i in flat.value for i in e.ins)

    def is_unary_elementwise(self, k: int) -> bool:
        e = self.eqns[k]
        return (e.prim in ELEMENTWISE and len(set(e.din)) == 1 and len(e.outs) == 1
                and self.flat.shapes[e.outs[0]] == self.flat.shapes[e.din[0]])

    def region_io(self, members: set[int]) -> tuple[set[int], list[int]]:
        """(data vars read from outside ``members``, member outputs read outside ``members``)."""
        ins = {i for k in members for i in self.eqns[k].din if self.producer.get(i) not in members}
        outs = [o for k in members for o in self.eqns[k].outs
                if any(c not in members for c in self.consumers.get(o, ()))]
        return ins, outs

    def claim(self, region: _Region) -> None:
        for k in region.members:
            self.owner[k] = region


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, *gs: int) -> int:
        roots = sorted({self.find(g) for g in gs})
        for r in roots[1:]:
            self.parent[r] = roots[0]
        return roots[0]


def _find_normalisations(fine: _Fine) -> None:
    """Fuse normalisation regions (see the module docstring) into one op each."""
    eqns, flat = fine.eqns, fine.flat
    uf = _UnionFind()
    stat: dict[int, int] = {}  # var -> group: a statistic (reduction of data through pure arithmetic)
    joined: dict[int, int] = {}  # var -> group: data combined with a broadcast statistic
    tentative: dict[int, tuple[int, bool]] = {}  # var -> (group, pure): arithmetic on joined data
    kind: dict[int, tuple[str, int]] = {}
    for k, e in enumerate(eqns):
        p = e.prim
        if p in NORM_REDUCTIONS:
            g = uf.new()
            stat[e.outs[0]] = g
            kind[k] = ("core", g)
            continue
        if (p not in ELEMENTWISE and p not in _STAT_PLUMBING) or len(e.outs) != 1:
            continue
        ins = list(dict.fromkeys(e.din))
        known = fine.consts_known(e)
        stats = [stat[i] for i in ins if i in stat]
        out = e.outs[0]
        if len(stats) == len(ins):  # arithmetic on statistics (and constants, e.g. rsqrt(var) * scale)
            stat[out] = uf.union(*stats)
            kind[k] = ("core", stat[out])
            continue
        if p in ("sub", "mul", "div", "add") and stats and len(ins) - len(stats) == 1:
            full = next(i for i in ins if i not in stat)
            if flat.shapes[out] != flat.shapes[full]:
                continue
            g = uf.union(*stats)
            if full in joined:
                g = uf.union(g, joined[full])
            elif full in tentative and tentative[full][1]:
                g = uf.union(g, tentative[full][0])
            joined[out] = g
            kind[k] = ("core", g)
            continue
        if p in ACTIVATION_PRIMS:
            continue
        groups, pure = set(), known
        for i in ins:
            if i in joined:
                groups.add(uf.find(joined[i]))
            elif i in tentative:
                groups.add(uf.find(tentative[i][0]))
                pure = pure and tentative[i][1]
            else:
                groups = None
                break
        if groups and len(groups) == 1:
            g = groups.pop()
            tentative[out] = (g, pure)
            kind[k] = ("tentative", g)

    has_join: set[int] = {uf.find(g) for v, g in joined.items()}
    members: dict[int, set[int]] = defaultdict(set)
    for k, (what, g) in kind.items():
        if what == "core":
            members[uf.find(g)].add(k)
    # Keep a tentative equation only if it feeds its own group (e.g. the square inside a variance).
    for k in sorted((k for k, (what, _) in kind.items() if what == "tentative"), reverse=True):
        g = uf.find(kind[k][1])
        if any(c in members[g] for c in fine.consumers.get(eqns[k].outs[0], ())):
            members[g].add(k)
    for g, mem in members.items():
        if g not in has_join:
            continue  # a plain reduction (global pooling), not a normalisation
        ins, outs = fine.region_io(mem)
        ins, mem = _absorb_between(fine, mem, ins)
        if len(ins) != 1 or len(outs) != 1 or any(k in fine.owner for k in mem):
            continue
        axes_batch = any(0 in eqns[k].params.get("axes", ()) for k in mem if eqns[k].prim in NORM_REDUCTIONS)
        if any(eqns[k].prim == "exp" for k in mem):
            label = "Softmax"
        else:
            label = "BatchNorm" if axes_batch else "LayerNorm"
        fine.claim(_Region(mem, next(iter(ins)), outs[0], label))


def _absorb_between(fine: _Fine, mem: set[int], ins: set[int]):
    """Pull in elementwise/reshape equations that sit between a region's inputs and the region (Flax's
    ``mean(square(x))`` variance, GroupNorm's reshape into groups), until the region reads a single tensor
    or nothing more fits."""
    mem = set(mem)
    for _ in range(4):
        if len(ins) <= 1:
            break
        grew = False
        for v in list(ins):
            k = fine.producer.get(v)
            if k is None or k in fine.owner or k in mem or (
                    fine.eqns[k].prim not in ELEMENTWISE and fine.eqns[k].prim not in _STAT_PLUMBING):
                continue
            if all(c in mem for c in fine.consumers.get(v, ())) and set(fine.eqns[k].din) <= ins | {v}:
                mem.add(k)
                grew = True
        if grew:
            ins, _ = fine.region_io(mem)
    return ins, mem


def _find_window_pools(fine: _Fine) -> None:
    """Fuse sums (maxima) of shifted slices of one tensor into AvgPool (MaxPool)."""
    eqns, flat = fine.eqns, fine.flat
    for k in range(len(eqns) - 1, -1, -1):
        e = eqns[k]
        if k in fine.owner or e.prim not in ("add", "max") or len(set(e.din)) != 2:
            continue
        out = e.outs[0]
        if any(c != _OUT and eqns[c].prim == e.prim and len(set(eqns[c].din)) == 2 and c not in fine.owner
               for c in fine.consumers.get(out, ())) and fine.single_consumer(out):
            continue  # not the root of its tree
        members, leaves = {k}, []
        stack = list(e.din)
        while stack:
            v = stack.pop()
            p = fine.producer.get(v)
            if (p is not None and p not in fine.owner and eqns[p].prim == e.prim and len(set(eqns[p].din)) == 2
                    and fine.single_consumer(v)):
                members.add(p)
                stack.extend(eqns[p].din)
                continue
            while (p is not None and p not in fine.owner and eqns[p].prim in FOLD_PRIMS
                   and fine.is_unary_elementwise(p) and fine.single_consumer(v)):
                members.add(p)
                v = eqns[p].din[0]
                p = fine.producer.get(v)
            if p is None or p in fine.owner or eqns[p].prim != "slice" or not fine.single_consumer(v):
                leaves = None
                break
            leaves.append(p)
        if not leaves or len(leaves) < 2:
            continue
        sources = {eqns[p].din[0] for p in leaves}
        if len(sources) != 1 or len({flat.shapes[eqns[p].outs[0]] for p in leaves}) != 1:
            continue
        if any(eqns[p].params.get("strides") not in (None,) and any(s != 1 for s in eqns[p].params["strides"])
               for p in leaves):
            continue
        src = sources.pop()
        rank = len(flat.shapes[src])
        starts = np.asarray([eqns[p].params["start_indices"] for p in leaves])
        span = starts.max(0) - starts.min(0) + 1
        if rank < 3 or np.any(span[[0, rank - 1]] != 1):
            continue  # windows must move over spatial axes only
        kernel = (int(span[1]), int(span[2]) if rank >= 4 else 1)
        members.update(leaves)
        out, stride = _window_tail(fine, members, out)
        inp = src
        pad = fine.producer.get(src)
        if (pad is not None and pad not in fine.owner and eqns[pad].prim == "pad"
                and all(c in members for c in fine.consumers.get(src, ()))):
            members.add(pad)
            inp = eqns[pad].din[0]
        fine.claim(_Region(members, inp, out, "AvgPool" if e.prim == "add" else "MaxPool", kernel, stride))


def _window_tail(fine: _Fine, members: set[int], out: int) -> tuple[int, int]:
    """Follow a window sum through constant scaling and an optional ``[::s, ::s]`` subsample."""
    eqns = fine.eqns
    stride = 1
    while fine.single_consumer(out):
        c = fine.consumers[out][0]
        e = eqns[c]
        if c in fine.owner:
            break
        if e.prim in FOLD_PRIMS and fine.is_unary_elementwise(c):
            members.add(c)
            out = e.outs[0]
            continue
        strides = e.params.get("strides") if e.prim == "slice" else None
        if strides and not any(e.params["start_indices"]) and len(set(strides[1:-1])) == 1 and strides[0] == 1:
            members.add(c)
            out, stride = e.outs[0], int(strides[1])
        break
    return out, stride


def _find_rejoins(fine: _Fine) -> None:
    """Fuse elementwise regions where a tensor fans out and re-joins (x * sigmoid(x), GeLU, hard-swish)."""
    eqns, flat = fine.eqns, fine.flat
    region_of_out: dict[int, _Region] = {}
    found: list[_Region] = []

    def walk(v):
        chain, steps = [v], []
        while fine.single_consumer(v):
            r = region_of_out.get(v)
            if r is not None:
                steps.append(r.members)
                v = r.inp
            else:
                k = fine.producer.get(v)
                if k is None or k in fine.owner or not fine.is_unary_elementwise(k):
                    break
                steps.append({k})
                v = eqns[k].din[0]
            chain.append(v)
        return chain, steps

    for k, e in enumerate(eqns):
        if k in fine.owner or e.prim not in ELEMENTWISE or len(e.outs) != 1:
            continue
        ins = list(dict.fromkeys(e.din))
        if len(ins) != 2 or any(flat.shapes[i] != flat.shapes[e.outs[0]] for i in ins):
            continue
        (ca, sa), (cb, sb) = walk(ins[0]), walk(ins[1])
        common = next((j for j, v in enumerate(ca) if v in cb), None)
        if common is None:
            continue
        root = ca[common]
        members = {k}
        for s in sa[:common]:
            members |= s
        for s in sb[: cb.index(root)]:
            members |= s
        region = _Region(members, root, e.outs[0], None)
        region_of_out[e.outs[0]] = region
        found.append(region)
    claimed: set[int] = set()
    for region in reversed(found):  # outermost first
        if region.members & claimed:
            continue
        label = _rejoin_label(eqns, region.members)
        if label is not None:
            claimed |= region.members
            region.label = label
            fine.claim(region)


def _rejoin_label(eqns, members) -> str | None:
    prims = {eqns[k].prim for k in members} | {eqns[k].label for k in members if eqns[k].label}
    if prims & {"logistic", "Sigmoid", "Swish"}:
        return "Swish"
    if prims & {"tanh", "erf", "erfc", "Tanh", "GeLU"}:
        return "GeLU"
    if {"max", "min"} <= prims or prims & {"clamp", "ReLU6", "HSigmoid", "HSwish"}:
        return "HSwish"
    if "select_n" in prims:
        return "ReLU"  # leaky ReLU / ELU written with where
    return None


# --- coarse graph ------------------------------------------------------------------------------------------


class _Coarse:
    """The op graph under construction: parallel lists, one entry per node (index = creation order, which is
    topological)."""

    def __init__(self):
        self.label: list[str] = []
        self.attrs: list[list[int]] = []  # NUM_ATTRS - 1 ints: shapes, kernel, stride, dilation, groups, bias
        self.inputs: list[list[int]] = []
        self.roots: list[set] = []
        self.names: list[str] = []
        self.instances = 0  # memoised module calls spliced in so far

    def add(self, label, inputs, hwc_in, hwc_out, kernel=(0, 0), stride=0, dilation=0, groups=0,
            roots=(), name="") -> int:
        attrs = [*hwc_in, *hwc_out, kernel[0], kernel[1], stride, dilation, groups, 0]
        return self.add_raw(label, inputs, attrs, roots, name)

    def add_raw(self, label, inputs, attrs, roots, name) -> int:
        self.label.append(label)
        self.attrs.append(list(attrs))
        self.inputs.append(list(inputs))
        self.roots.append(set(roots))
        self.names.append(name)
        return len(self.label) - 1


def _const_roots(flat: _Flat, ins) -> set:
    """Parameters an equation reads directly (up to layout). Constants computed by other ops -- e.g. a
    BatchNorm applied to the zeros of a ``none`` edge, which equals its bias -- are not counted: they belong
    to branches that do not depend on the input."""
    out = set()
    for i in ins:
        if i in flat.direct:
            out |= flat.roots[i]
    return out


def _emit(fine: _Fine, input_ids: Sequence[int], output_ids: Sequence[int],
          separate_inputs: bool = False) -> tuple[_Coarse, list[int], list[int | None]]:
    """Map the data equations to op nodes.

    Returns the graph, its Input nodes (one for all inputs, or one per input with ``separate_inputs``) and,
    per output var, the node computing it (None for a constant output).
    """
    flat, eqns = fine.flat, fine.eqns
    g = _Coarse()
    node_of: dict[int, int] = {}
    inputs = []
    for i in input_ids:
        if separate_inputs or not inputs:
            hwc = shape_hwc(flat.shapes[i])
            inputs.append(g.add("Input", [], hwc, hwc, name="input"))
        node_of[i] = inputs[-1]

    def primary(din):
        return max(dict.fromkeys(din), key=lambda i: math.prod(flat.shapes[i]))

    for k, e in enumerate(eqns):
        region = fine.owner.get(k)
        if region is not None:
            if region.out in e.outs:
                members = region.members
                roots = set().union(*(_const_roots(flat, eqns[m].ins) for m in members))
                node_of[region.out] = g.add(
                    region.label, [node_of[region.inp]], shape_hwc(flat.shapes[region.inp]),
                    shape_hwc(flat.shapes[region.out]), kernel=region.kernel, stride=region.stride,
                    dilation=1 if region.stride else 0, roots=roots, name=e.scope)
            continue
        if e.prim == "memo":
            _splice(g, flat, e, node_of)
            continue
        _emit_one(g, flat, e, node_of, primary)

    outputs = [node_of[o] if flat.is_data[o] else None for o in output_ids]
    return g, inputs, outputs


def _splice(g: _Coarse, flat: _Flat, e: _Eqn, node_of: dict) -> None:
    """Copy a memoised module's graph in place of its call; its roots are made distinct per call."""
    entry = e.params["entry"]
    sub: _Coarse = entry.graph
    g.instances += 1
    inst = g.instances
    mapping: dict[int, int | None] = {}
    for node, i in zip(entry.inputs, e.ins):
        mapping[node] = node_of[i] if flat.is_data[i] else None
    for v in range(len(sub.label)):
        if v in mapping:
            continue
        ins = [mapping[u] for u in sub.inputs[v] if mapping.get(u) is not None]
        if not ins:  # fed only by constant inputs of this call
            mapping[v] = None
            continue
        mapping[v] = g.add_raw(sub.label[v], ins, sub.attrs[v], {(inst, r) for r in sub.roots[v]}, sub.names[v])
    for o, node in zip(e.outs, entry.outputs):
        if flat.is_data[o]:
            node_of[o] = mapping[node]


def _emit_one(g: _Coarse, flat: _Flat, e: _Eqn, node_of: dict, primary: Callable) -> None:
    p, din = e.prim, e.din
    distinct = list(dict.fromkeys(din))
    inputs = [node_of[i] for i in distinct]
    main = primary(din)
    hwc_in, hwc_out = shape_hwc(flat.shapes[main]), shape_hwc(flat.shapes[e.outs[0]])
    roots = _const_roots(flat, e.ins)
    name = e.scope

    def alias():
        for o in e.outs:
            node_of[o] = node_of[main]

    def node(label, **kw):
        kw.setdefault("roots", roots)
        n = g.add(label, inputs, kw.pop("hwc_in", hwc_in), kw.pop("hwc_out", hwc_out), name=f"{name}:{p}", **kw)
        for o in e.outs:
            node_of[o] = n

    if p == "named":
        return node(e.label)
    if p == "select_n":
        if flat.is_data[e.ins[0]] or len(distinct) > 1:
            return node("OOV")
        return alias()
    if p in PLUMBING:
        return alias() if len(distinct) == 1 else node("OOV")
    if p == "concatenate":
        return alias() if len(distinct) == 1 else node("Concat")
    if p in ELEMENTWISE:
        if len(distinct) > 1:
            return node({"add": "Add", "add_any": "Add", "sub": "Add", "mul": "Mul", "div": "Mul"}.get(p, "OOV"))
        consts = [flat.value.get(i) for i in e.ins if not flat.is_data[i]]
        if p in FOLD_PRIMS:
            n = node_of[main]
            g.roots[n] |= roots
            if p in ("add", "sub", "add_any") and roots:
                g.attrs[n][-1] = 1  # a parameter added to the op's output: its bias
            return alias()
        if p == "max" and consts == [0.0]:
            return node("ReLU")
        if p == "min" and consts == [6.0]:
            return node("min6")  # ReLU6 when it follows a ReLU (merged later)
        if p == "clamp":
            lo, hi = flat.value.get(e.ins[0]), flat.value.get(e.ins[2])
            if lo == 0.0:
                return node("ReLU6" if hi == 6.0 else "ReLU")
        return node({"logistic": "Sigmoid", "tanh": "Tanh"}.get(p, "OOV"))
    if p == "conv_general_dilated":
        lhs, rhs = e.ins[0], e.ins[1]
        dn = e.params["dimension_numbers"]
        h_in = _spec_hwc(flat.shapes[lhs], dn.lhs_spec)
        h_out = _spec_hwc(flat.shapes[e.outs[0]], dn.out_spec)
        rs = flat.shapes[rhs]
        kh = rs[dn.rhs_spec[2]] if len(dn.rhs_spec) > 2 else 1
        kw = int(math.prod(rs[d] for d in dn.rhs_spec[3:])) if len(dn.rhs_spec) > 3 else 1
        groups = int(e.params.get("feature_group_count", 1))
        label = "Depthwise" if groups > 1 and groups == h_in[2] else "Conv"
        strides = e.params.get("window_strides") or (1,)
        dil = e.params.get("rhs_dilation") or (1,)
        if not flat.is_data[lhs]:  # data only in the kernel: read it as the op's input
            h_in = shape_hwc(flat.shapes[main])
        return node(label, hwc_in=h_in, hwc_out=h_out, kernel=(int(kh), int(kw)), stride=int(strides[0]),
                    dilation=int(dil[0]), groups=groups)
    if p == "dot_general":
        return node("MatMul")
    if p in ("reduce_sum", "reduce_max", "reduce_min"):
        return node("Mean" if p == "reduce_sum" else "Global")
    if p in ("reduce_window_sum", "reduce_window_max"):
        wd, ws = e.params["window_dimensions"], e.params["window_strides"]
        kernel = (int(wd[1]), int(wd[2]) if len(wd) >= 4 else 1) if len(wd) >= 3 else (int(wd[-1]), 1)
        stride = int(ws[1]) if len(ws) >= 3 else int(ws[-1])
        return node("AvgPool" if p == "reduce_window_sum" else "MaxPool", kernel=kernel, stride=stride,
                    dilation=1)
    return node("OOV")


def _simplify(g: _Coarse, outputs: list[int], keep: Sequence[int] = (0,)) -> tuple[_Coarse, list[int]]:
    """ReLU6 merge, n-ary Add/Mul/Concat, single-input pruning, common subexpressions, dead nodes."""
    n = len(g.label)
    consumers: list[set[int]] = [set() for _ in range(n)]
    for v in range(n):
        for u in g.inputs[v]:
            consumers[u].add(v)
    is_output = set(outputs)
    repl: dict[int, int] = {}

    def res(u):
        while u in repl:
            u = repl[u]
        return u

    seen: dict[tuple, int] = {}
    for v in range(n):
        ins = list(dict.fromkeys(res(u) for u in g.inputs[v]))
        label = g.label[v]
        if label == "min6":
            u = ins[0]
            if g.label[u] == "ReLU" and consumers[u] == {v} and u not in is_output:
                label = "ReLU6"
                ins = list(g.inputs[u])
                g.attrs[v][0:3] = g.attrs[u][0:3]
                g.roots[v] |= g.roots[u]  # u itself stays (a merged duplicate may still read it) or dies unread
            else:
                label = "OOV"
            g.label[v] = label
        if label in ("Add", "Mul", "Concat"):
            flat_ins = []
            for u in ins:
                if g.label[u] == label and len(consumers[u]) == 1 and u not in is_output:
                    flat_ins.extend(g.inputs[u])  # already resolved (u < v)
                else:
                    flat_ins.append(u)
            ins = list(dict.fromkeys(flat_ins))
            if len(ins) == 1:
                repl[v] = ins[0]
                continue
        g.inputs[v] = ins
        if label in ("Input", "Output"):
            continue
        key = (label, tuple(g.attrs[v]), tuple(sorted(ins)), frozenset(g.roots[v]))
        if key in seen:
            repl[v] = seen[key]
        else:
            seen[key] = v
    outputs = [res(o) for o in outputs]
    # Live nodes: those the outputs depend on (and the Input nodes ``keep``).
    live = set()
    stack = list(outputs)
    while stack:
        v = stack.pop()
        if v in live or v in repl:
            continue
        live.add(v)
        stack.extend(res(u) for u in g.inputs[v])
    live.update(keep)
    kept = sorted(live)
    index = {v: i for i, v in enumerate(kept)}
    h = _Coarse()
    for v in kept:
        h.add_raw(g.label[v], [index[res(u)] for u in g.inputs[v]], g.attrs[v], g.roots[v], g.names[v])
    return h, [index[o] for o in outputs]


def _finish(g: _Coarse, outputs: list[int], out_hwc) -> CompGraph:
    outputs = list(dict.fromkeys(outputs))
    if not outputs:  # the output is a constant: the network ignores its input
        outputs = [g.add("Zero", [0], g.attrs[0][3:6], out_hwc, name="zero")]
    o_hwc = g.attrs[outputs[0]][3:6]
    g.add("Output", outputs, o_hwc, o_hwc, name="output")
    rows = np.zeros((len(g.label), NUM_ATTRS), np.int32)
    for v, (label, attrs) in enumerate(zip(g.label, g.attrs)):
        rows[v, 0] = OP_INDEX[label]
        rows[v, 1:] = attrs
    edges = np.asarray([(u, v) for v in range(len(g.label)) for u in g.inputs[v]], np.int32).reshape(-1, 2)
    return canonicalize(CompGraph(rows, edges[:, 0], edges[:, 1], tuple(g.names)))


def _coarse_of(closed: jcore.ClosedJaxpr, data_mask: Sequence[bool], memo: "ModuleMemo | None" = None,
               separate_inputs: bool = False):
    """Steps 1-5 of the module docstring: (graph, Input nodes, output node per output var or None, output
    (H, W, C) of the first output)."""
    jaxpr = closed.jaxpr
    if len(data_mask) != len(jaxpr.invars):
        raise ValueError(f"data_mask has {len(data_mask)} entries for {len(jaxpr.invars)} jaxpr inputs")
    if not any(data_mask):
        raise ValueError("no input of the function is marked as data (see data_argnums)")
    flat = _Flat(memo)
    in_ids = [flat.new_var(v.aval.shape, True) if d else flat.leaf(v.aval.shape)
              for v, d in zip(jaxpr.invars, data_mask)]
    const_ids = [flat.leaf(np.shape(c)) for c in closed.consts]
    out_ids = flat.walk(jaxpr, const_ids, in_ids)
    fine = _Fine(flat, [o for o in out_ids if flat.is_data[o]])
    _find_normalisations(fine)
    _find_window_pools(fine)
    _find_rejoins(fine)
    g, inputs, outputs = _emit(fine, [i for i, d in zip(in_ids, data_mask) if d], out_ids, separate_inputs)
    live_outputs = [o for o in outputs if o is not None]
    g, live_outputs = _simplify(g, live_outputs, keep=inputs)
    it = iter(live_outputs)
    outputs = [None if o is None else next(it) for o in outputs]
    out_hwc = shape_hwc(flat.shapes[out_ids[0]]) if out_ids else (1, 1, 1)
    return g, list(range(len(inputs))), outputs, out_hwc


# --- public entry points ---------------------------------------------------------------------------------------


def from_jaxpr(closed: jcore.ClosedJaxpr, data_mask: Sequence[bool], memo: "ModuleMemo | None" = None
               ) -> CompGraph:
    """Computation graph of a closed jaxpr whose invars flagged in ``data_mask`` are the network inputs
    (all others are parameters/constants). ``memo``: the :class:`ModuleMemo` the jaxpr was traced under, if
    any. Raises ``ValueError`` if no invar is data."""
    g, _, outputs, out_hwc = _coarse_of(closed, data_mask, memo)
    return _finish(g, [o for o in outputs if o is not None], out_hwc)


def trace(fn: Callable, *args, data_argnums: int | Sequence[int] = 0, memo: "ModuleMemo | None" = None
          ) -> CompGraph:
    """Computation graph of ``fn(*args)``.

    ``args`` are arrays or ``jax.ShapeDtypeStruct`` pytrees (only shapes matter, nothing is computed);
    the leaves of the arguments at ``data_argnums`` are the network inputs, every other leaf is a parameter.
    Static configuration (an architecture as a tuple of Python ints) belongs in ``fn``'s closure, so that
    only the ops the architecture uses are traced. ``memo`` (a :class:`ModuleMemo`) traces each distinct call
    of chosen Flax submodules once. Example::

        graph = trace(lambda p, x: net.apply({"params": p}, x, arch), params, x, data_argnums=1)
    """
    nums = (data_argnums,) if isinstance(data_argnums, int) else tuple(data_argnums)
    nums = tuple(a % len(args) if -len(args) <= a < len(args) else a for a in nums)
    if not nums or any(not 0 <= a < len(args) for a in nums):
        raise ValueError(f"data_argnums {data_argnums} out of range for {len(args)} arguments")
    if memo is None:
        closed = jax.make_jaxpr(fn)(*args)
    else:
        import flax.linen as nn

        with nn.intercept_methods(memo.intercept):
            closed = jax.make_jaxpr(fn)(*args)
    mask = [a in nums for a, arg in enumerate(args) for _ in jax.tree.leaves(arg)]
    return from_jaxpr(closed, mask, memo)


class _MemoEntry:
    __slots__ = ("name", "fn", "graph", "inputs", "outputs")

    def __init__(self, name, fn, graph, inputs, outputs):
        self.name, self.fn, self.graph, self.inputs, self.outputs = name, fn, graph, inputs, outputs

    def output_data(self, in_data: Sequence[bool]) -> list[bool]:
        """Which outputs depend on a data input, given which inputs of the call are data."""
        data = [False] * len(self.graph.label)
        for node, d in zip(self.inputs, in_data):
            data[node] = d
        inputs = set(self.inputs)
        for v in range(len(data)):
            if v not in inputs:
                data[v] = any(data[u] for u in self.graph.inputs[v])
        return [o is not None and data[o] for o in self.outputs]


class ModuleMemo:
    """Trace each distinct call of the Flax module classes ``modules`` once and reuse its graph.

    While :func:`trace` runs with a memo, a call ``m(x, ...)`` of such a module is intercepted: its key is
    the module's class and fields (except ``ignore_fields``), its variables' shapes, the shapes of its array
    arguments and the values of the others (which must be hashable, e.g. an architecture as a tuple of
    ints; otherwise the call is traced normally). The first call with a key traces the module alone
    (``module.unbind()``, arrays as data) into a sub-graph; every call then returns placeholder zeros from a
    jitted function, which the graph builder replaces by the sub-graph. The result is the same graph as
    without the memo (tested), but an NB201 network's 15 cells cost 3 cell traces. ``ignore_fields`` may
    only name fields that do not change the ops (e.g. weights of proxy records). ``mutable`` is passed to
    the sub-module's ``apply`` (as in :func:`graph_of_module`). A memo may serve many traces (the skeleton
    blocks of a space are then traced once for all architectures); ``max_entries`` bounds it (least
    recently used entries go first). Not thread-safe.
    """

    def __init__(self, modules: type | Sequence[type], ignore_fields: Sequence[str] = (), mutable=False,
                 max_entries: int | None = None):
        self.modules = tuple(modules) if isinstance(modules, (tuple, list)) else (modules,)
        self.ignore = frozenset(ignore_fields) | {"parent", "name"}
        self.mutable = mutable
        self.max_entries = max_entries
        self.entries: OrderedDict[Any, _MemoEntry] = OrderedDict()
        self.by_name: dict[str, _MemoEntry] = {}
        self.hits = self.misses = 0
        self._depth = 0
        self._count = 0

    def intercept(self, next_fun, args, kwargs, context):
        module = context.module
        if self._depth or context.method_name != "__call__" or not isinstance(module, self.modules):
            return next_fun(*args, **kwargs)
        key = self._key(module, args, kwargs)
        if key is None:
            return next_fun(*args, **kwargs)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = self._build(module, args, kwargs)
            self.by_name[entry.name] = entry
            self.misses += 1
            if self.max_entries is not None and len(self.entries) > self.max_entries:
                _, old = self.entries.popitem(last=False)  # least recently used
                del self.by_name[old.name]
        else:
            self.entries.move_to_end(key)
            self.hits += 1
        return entry.fn(*[a for a in args if isinstance(a, jax.Array)])

    def _key(self, module, args, kwargs):
        try:
            fields = tuple((f.name, getattr(module, f.name)) for f in dataclasses.fields(module)
                           if f.name not in self.ignore)
            shapes = tuple((v.shape, v.dtype) for v in jax.tree.leaves(module.variables))
            a = tuple(("array", x.shape, x.dtype) if isinstance(x, jax.Array) else x for x in args)
            key = (type(module), fields, shapes, a, tuple(sorted(kwargs.items())))
            hash(key)
        except TypeError:  # an unhashable static argument or field
            return None
        return key

    def _build(self, module, args, kwargs) -> _MemoEntry:
        unbound, variables = module.unbind()
        spec = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731
        vspec = jax.tree.map(spec, variables)
        pos = [i for i, a in enumerate(args) if isinstance(a, jax.Array)]
        mutable = self.mutable

        def call(v, *data):
            full = list(args)
            for i, d in zip(pos, data):
                full[i] = d
            out = unbound.apply(v, *full, mutable=mutable, **kwargs)
            return out[0] if mutable else out

        self._depth += 1
        try:
            closed, out_shape = jax.make_jaxpr(call, return_shape=True)(vspec, *[spec(args[i]) for i in pos])
        finally:
            self._depth -= 1
        mask = [False] * len(jax.tree.leaves(vspec)) + [True] * len(pos)
        graph, inputs, outputs, _ = _coarse_of(closed, mask, self, separate_inputs=True)
        leaves, treedef = jax.tree.flatten(out_shape)

        def placeholder(*data):
            return jax.tree.unflatten(treedef, [jnp.zeros(s.shape, s.dtype) for s in leaves])

        self._count += 1
        name = f"jzcp_memo_{id(self):x}_{self._count}"
        placeholder.__name__ = placeholder.__qualname__ = name
        return _MemoEntry(name, jax.jit(placeholder, keep_unused=True), graph, inputs, outputs)


@contextlib.contextmanager
def skip_flax_param_checks():
    """Within this context, Flax Linen's ``Scope.param`` returns existing parameters without re-checking
    their shapes against their initialisers.

    The check runs ``jax.eval_shape`` of every initialiser on every ``apply`` and is ~75 % of the time to
    trace a network; graph extraction passes parameters from ``jax.eval_shape(init)``, whose shapes match by
    construction. Patches a class attribute: do not trace from other threads meanwhile. A no-op if Flax's
    internals differ from the version this was written for (0.12).
    """
    try:
        from flax.core import meta
        from flax.core.scope import Scope
    except ImportError:  # pragma: no cover
        yield
        return
    original = Scope.__dict__.get("param")
    if original is None or not hasattr(Scope, "has_variable") or not hasattr(Scope, "reserve"):
        yield
        return

    def param(self, name, init_fn, *init_args, unbox=True, **init_kwargs):
        if self.has_variable("params", name):
            self.reserve(name, "params")
            value = self.get_variable("params", name)
            return meta.unbox(value) if unbox else value
        return original(self, name, init_fn, *init_args, unbox=unbox, **init_kwargs)

    Scope.param = param
    try:
        yield
    finally:
        Scope.param = original


def graph_of_module(module: Any, variables: Any, x: Any, *call_args, mutable=False,
                    memo_modules: Sequence[type] = (), ignore_fields: Sequence[str] = (),
                    memo: ModuleMemo | None = None, **call_kwargs) -> CompGraph:
    """Graph of a Flax Linen ``module.apply(variables, x, *call_args, **call_kwargs)``.

    ``variables`` is the variable dict (``{"params": ..., "batch_stats": ...}``) or just the params tree;
    leaves may be ``jax.eval_shape`` structs and ``x`` a ``ShapeDtypeStruct``. ``mutable`` is passed to
    ``apply`` (e.g. ``["batch_stats"]`` for a train-mode Flax ``BatchNorm``); the output is then ``apply``'s
    first result. Static call arguments (an architecture as Python ints) are closed over, so only the ops
    they select are traced. ``memo_modules`` / ``ignore_fields``: submodule classes traced once per distinct
    call (:class:`ModuleMemo`); or pass a ``memo`` to share between calls.
    """
    if not (isinstance(variables, dict) and "params" in variables):
        variables = {"params": variables}

    def fn(v, inp):
        out = module.apply(v, inp, *call_args, mutable=mutable, **call_kwargs)
        return out[0] if mutable else out

    if memo is None and memo_modules:
        memo = ModuleMemo(memo_modules, ignore_fields, mutable)
    with skip_flax_param_checks():
        return trace(fn, variables, x, data_argnums=1, memo=memo)
