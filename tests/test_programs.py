"""EZNAS programs: op semantics against an independent numpy implementation of the official (torch 1.8) code,
formula round trips, tree structure, the jitted interpreter against a numpy tree walker, one compilation for
many populations, invalid programs, and a crash hunt over random programs."""
from __future__ import annotations

import math
import time
import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import programs as pg

# ------------------------------------------------------------------------------------------------------------
# numpy reference of the official op semantics (gp_func_defs.py, torch 1.8.1); raises on torch's errors
# ------------------------------------------------------------------------------------------------------------


class ShapeError(Exception):
    pass


def _np_bcast(a, b):
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError as e:
        raise ShapeError(str(e)) from None


def np_op(name, a, b=None):
    a = np.asarray(a, np.float32)
    b = None if b is None else np.asarray(b, np.float32)
    with np.errstate(all="ignore"):
        if name in ("add", "mul", "lt", "gt", "eq"):
            _np_bcast(a, b)
            f = {"add": np.add, "mul": np.multiply, "lt": np.less, "gt": np.greater, "eq": np.equal}[name]
            return f(a, b).astype(np.float32)
        if name == "matmul":
            a2 = a.reshape(1) if a.ndim == 0 else a
            b2 = b.reshape(1) if b.ndim == 0 else b
            try:
                return np.asarray(np.matmul(a2, b2), np.float32)
            except ValueError as e:
                raise ShapeError(str(e)) from None
        if name == "log":
            x = a.copy()
            x[x <= 0] = 1
            return np.log(x)
        if name == "abs_log":
            x = a.copy()
            x[x == 0] = 1
            return np.abs(np.log(x))
        if name == "abs":
            return np.abs(a)
        if name == "square":
            return a**2
        if name == "exp":
            return np.exp(a)
        if name == "normalize":
            z = (a - a.mean()) / (a.std(ddof=1) if a.size > 1 else np.float32(np.nan))
            z = np.asarray(z, np.float32)
            z[z != z] = 0
            return z
        if name == "relu":
            return np.where(a > 0, a, np.where(np.isnan(a), a, 0)).astype(np.float32)
        if name == "sign":  # torch CPU kernel (0 < a) - (a < 0): NaN -> 0
            return ((a > 0).astype(np.float32) - (a < 0).astype(np.float32))
        if name in ("heaviside", "gt0"):
            return (a > 0).astype(np.float32)
        if name == "lt0":
            return (a < 0).astype(np.float32)
        if name == "invert":
            return (1 / a).astype(np.float32)
        if name == "frobenius_norm":
            return np.sqrt(np.sum(a.astype(np.float64) ** 2)).astype(np.float32)
        if name in ("det", "logdet"):
            if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
                raise ShapeError("det needs square matrices")
            sign, logabs = np.linalg.slogdet(a.astype(np.float64))
            if name == "det":
                return (sign * np.exp(logabs)).astype(np.float32)
            z = np.where(sign < 0, np.nan, np.where(sign == 0, -np.inf, logabs))
            z = np.asarray(z, np.float32)
            z[z != z] = 0
            return z
        if name in ("sym_eig_ratio", "eig_ratio"):
            if a.ndim == 0:
                return np.zeros(1, np.float32)
            m = a.reshape(a.shape[0], -1).astype(np.float64)
            g = m @ m.T
            if name == "sym_eig_ratio":
                g = g + g.T
            if not np.all(np.isfinite(g)):
                return np.float32(np.nan)
            e = np.linalg.eigvalsh(g)
            return np.float32(e[-1] / e[0])
        if name == "mean":
            return np.float32(a.sum(dtype=np.float64) / a.size)
        if name == "mean_abs":
            return np.float32(np.abs(a).sum(dtype=np.float64) / a.size)
        if name == "hamming":
            x, y = (a.reshape(-1) > 0), (b.reshape(-1) > 0)
            _np_bcast(x, y)
            return np.float32(np.sum(x != y))
        if name == "kl_div":
            _np_bcast(a, b)
            out = np.where(b > 0, b.astype(np.float64) * (np.log(np.where(b > 0, b, 1)) - a), 0.0)
            total = out.sum()
            return np.float32(total / a.shape[0] if a.ndim else total)
        if name == "cosine":
            if a.ndim == 0:
                return np.zeros(1, np.float32)
            bs = a.shape[0]
            if b.ndim == 0 or bs > b.ndim - 1:  # torch: B.flatten(bs, -1) -> dimension out of range
                raise ShapeError("flatten start_dim out of range")
            x1 = a.reshape(bs, -1).astype(np.float64)
            x2 = b.reshape(b.shape[:bs] + (-1,)).astype(np.float64)
            _np_bcast(x1, x2)
            w12 = np.sum(x1 * x2, axis=1)
            w1 = np.sum(x1 * x1, axis=1)
            w2 = np.sum(x2 * x2, axis=1)
            _np_bcast(w1, w2)
            n12 = np.sqrt(np.maximum(w1 * w2, 1e-16))
            _np_bcast(w12, n12)
            return np.float32(np.sum(w12 / n12))
        if name == "softmax":
            if a.ndim == 0:
                return np.float32(1.0 if np.isfinite(a) else np.nan)
            ax = 0 if a.ndim in (1, 3) else 1
            e = np.exp(a - a.max(axis=ax, keepdims=True))
            return (e / e.sum(axis=ax, keepdims=True)).astype(np.float32)
        if name == "sigmoid":
            return (1 / (1 + np.exp(-a.astype(np.float64)))).astype(np.float32)
        if name == "ones_like":
            return np.ones_like(a)
        if name == "zeros_like":
            return np.zeros_like(a)
        if name == "numel":
            return np.array([a.size], np.float32)
    raise AssertionError(name)


SHAPES = [(2, 3, 4, 4), (3, 3, 2, 2), (3, 3, 1, 1), (2, 3), (3, 3), (), (1,), (1, 3, 4, 4), (1, 3)]
rng0 = np.random.default_rng(0)


def _data(shape, rng, kind="normal"):
    x = rng.normal(0, 1, shape).astype(np.float32)
    if kind == "special" and x.size > 3:
        x.reshape(-1)[:3] = [0.0, -1.5, 2.0]
    return x


def _close(ours, ref, rtol=2e-4, atol=2e-5):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol, equal_nan=True)


def test_tables_match_the_original():
    assert pg.NUM_PRIMITIVES == 33 and pg.NUM_TERMINALS == 22 and pg.NUM_SYMBOLS == 55
    assert len(set(pg.PRIMITIVE_NAMES)) == 33 and len(set(pg.TERMINALS)) == 22
    binary = {p.name for p in pg.PRIMITIVES if p.arity == 2}
    assert binary == {"add", "mul", "matmul", "lt", "gt", "eq", "hamming", "kl_div", "cosine"}
    # the official pset: OP0-5, OP7-16, OP18-34 in this order (OP6 AddNoise and OP17 normal_init are unused)
    expected = [f"OP{i}" for i in list(range(0, 6)) + list(range(7, 17)) + list(range(18, 35))]
    assert [p.original for p in pg.PRIMITIVES] == expected
    assert pg.TERMINALS[:4] == ("wt", "wtgrad_D", "wtgrad_N", "wtgrad_P")
    assert {t.split("_")[0] for t in pg.TERMINALS} == {"wt", "wtgrad", "inpact", "inpactgrad", "preact",
                                                      "preactgrad", "act", "actgrad"}
    table = pg.op_table()
    assert all(f"`{n}`" in table for n in pg.PRIMITIVE_NAMES + pg.TERMINALS)


@pytest.mark.parametrize("name", [p.name for p in pg.PRIMITIVES if p.arity == 1])
def test_unary_primitive_matches_numpy(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # hash() of a str changes per process
    checked = 0
    for shape in SHAPES:
        for kind in ("normal", "special"):
            x = _data(shape, rng, kind)
            try:
                ref = np_op(name, x)
            except ShapeError:
                assert pg.output_shape(name, shape) is None, (name, shape)
                with pytest.raises(ValueError):
                    pg.apply_primitive(name, x)
                continue
            assert pg.output_shape(name, shape) == np.shape(ref), (name, shape)
            rtol = 2e-3 if name in ("det", "sym_eig_ratio", "eig_ratio", "logdet") else 2e-4
            _close(pg.apply_primitive(name, x), ref, rtol=rtol, atol=1e-4)
            checked += 1
    assert checked >= 6


@pytest.mark.parametrize("name", [p.name for p in pg.PRIMITIVES if p.arity == 2])
def test_binary_primitive_matches_numpy(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # hash() of a str changes per process
    valid = invalid = 0
    for sa in SHAPES:
        for sb in SHAPES:
            a, b = _data(sa, rng, "special"), _data(sb, rng)
            try:
                ref = np_op(name, a, b)
            except ShapeError:
                assert pg.output_shape(name, sa, sb) is None, (name, sa, sb)
                invalid += 1
                continue
            assert pg.output_shape(name, sa, sb) == np.shape(ref), (name, sa, sb)
            _close(pg.apply_primitive(name, a, b), ref, rtol=1e-3, atol=1e-4)
            valid += 1
    assert valid >= 5 and invalid >= 5, (valid, invalid)


def test_special_value_rules():
    ap = lambda n, *a: np.asarray(pg.apply_primitive(n, *a))  # noqa: E731
    nan = np.float32(np.nan)
    assert ap("sign", np.array([nan, -2, 0, 3], np.float32)).tolist() == [0, -1, 0, 1]  # torch CPU: NaN -> 0
    assert ap("heaviside", np.array([nan, -1, 0, 1], np.float32)).tolist() == [0, 0, 0, 1]
    assert ap("log", np.array([-1, 0, math.e], np.float32)).tolist() == pytest.approx([0, 0, 1])
    assert np.isnan(ap("abs_log", np.array([-1.0], np.float32))[0])  # log of a negative entry
    assert ap("abs_log", np.array([0.0, math.e**-2], np.float32)).tolist() == pytest.approx([0, 2])
    assert ap("normalize", np.full((2, 3), 5.0, np.float32)).tolist() == [[0.0] * 3] * 2  # std 0 -> NaN -> 0
    assert ap("normalize", np.array(4.0, np.float32)) == 0.0  # a single entry: std NaN -> 0
    # logdet: det < 0 -> NaN -> 0; singular -> -inf kept; logdet over the LAST TWO dims
    m = np.array([[[1, 0], [0, -2]], [[1, 2], [2, 4]], [[2, 0], [0, 3]]], np.float32)
    assert ap("logdet", m).tolist() == pytest.approx([0.0, -np.inf, math.log(6)])
    assert ap("det", m).tolist() == pytest.approx([-2.0, 0.0, 6.0])
    assert ap("softmax", np.array(3.0, np.float32)) == 1.0 and np.isnan(ap("softmax", np.array(np.inf, np.float32)))
    assert ap("numel", np.zeros((2, 3, 4), np.float32)).tolist() == [24.0]
    assert ap("sym_eig_ratio", np.array(2.0, np.float32)).tolist() == [0.0]  # torch.Tensor([0]) for 0-d
    assert ap("cosine", np.array(2.0, np.float32), np.ones((2, 2), np.float32)).tolist() == [0.0]
    assert ap("kl_div", np.ones((4, 2), np.float32), np.array([[0.5, -1]] * 4, np.float32)) == pytest.approx(
        (0.5 * (math.log(0.5) - 1)) * 4 / 4)  # negative targets contribute 0; batchmean divides by A.shape[0]
    with pytest.raises(ValueError, match="invalid operand shapes"):
        pg.apply_primitive("matmul", np.zeros((2, 3, 4, 4), np.float32), np.zeros((3, 3, 2, 2), np.float32))


# ------------------------------------------------------------------------------------------------------------
# formulas and structure
# ------------------------------------------------------------------------------------------------------------


def test_formula_round_trip_on_random_programs():
    pop = pg.generate(jax.random.key(1), 400, 0, 6)
    nodes, length = np.asarray(pop.nodes), np.asarray(pop.length)
    formulas = pg.to_formulas(pop)
    back = pg.parse_many(formulas)
    np.testing.assert_array_equal(np.asarray(back.nodes), nodes)
    np.testing.assert_array_equal(np.asarray(back.length), length)
    assert pg.to_formula(pg.parse(pg.EZNAS_A)) == "frobenius_norm(sigmoid(logdet(sign(inpactgrad_D))))"
    assert pg.to_formula(pg.parse(" add( wt ,mul(act_D,act_N) ) ")) == "add(wt, mul(act_D, act_N))"


@pytest.mark.parametrize("bad, msg", [
    ("frobenius_norm(foo)", "unknown name"),
    ("add(wt)", "takes 2"),
    ("sign(wt, wt)", "takes 1"),
    ("sign", "needs 1"),
    ("wt(act_D)", "no arguments"),
    ("sign(wt))", "trailing"),
    ("", "empty"),
    ("sign(wt", "end"),
    ("sign(wt) $", "unexpected character"),
])
def test_parse_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        pg.parse(bad)


def test_parse_capacity_and_malformed_programs():
    deep = "wt"
    for _ in range(200):
        deep = f"sign({deep})"
    with pytest.raises(ValueError, match="capacity"):
        pg.parse(deep)
    with pytest.raises(ValueError, match="incomplete"):
        pg.to_formula(pg.Programs(np.array([0, 33, -1], np.int32), np.int32(2)))
    with pytest.raises(ValueError, match="ends before"):
        pg.to_formula(pg.Programs(np.array([33, 34, -1], np.int32), np.int32(2)))
    with pytest.raises(ValueError, match="outside"):
        pg.to_formula(pg.Programs(np.array([99, -1], np.int32), np.int32(1)))


def _py_structure(syms):
    """(ends, depths) by recursion, for cross-checking the vectorised versions."""
    ends, depths = [0] * len(syms), [0] * len(syms)

    def rec(i, d):
        depths[i] = d
        j = i + 1
        for _ in range(int(pg.ARITY[syms[i]])):
            j = rec(j, d + 1)
        ends[i] = j
        return j

    rec(0, 0)
    return ends, depths


_ends = jax.jit(jax.vmap(pg.subtree_ends))
_depths = jax.jit(jax.vmap(pg.node_depths))


def test_structure_helpers_and_generation():
    for method, (lo, hi) in (("full", (2, 4)), ("grow", (1, 5)), ("half_and_half", (2, 6))):
        pop = pg.generate(jax.random.key(7), 200, lo, hi, method=method)
        h = np.asarray(pg.heights(pop))
        assert h.min() >= (lo if method != "grow" else 0) and h.max() <= hi
        all_ends = np.asarray(_ends(pop.nodes, pop.length))
        all_depths = np.asarray(_depths(pop.nodes, pop.length))
        for i in range(0, 200, 3):
            n = int(pop.length[i])
            syms = np.asarray(pop.nodes[i])[:n].tolist()
            ends, depths = _py_structure(syms)
            assert all_ends[i, :n].tolist() == ends
            assert all_depths[i, :n].tolist() == depths
            assert h[i] == max(depths)
            if method == "full":  # all leaves at the drawn height
                assert {d for s, d in zip(syms, depths) if s >= pg.NUM_PRIMITIVES} == {h[i]}
    # leaf probability of grow trees ~ terminalRatio = 22/55; primitives and terminals roughly uniform
    pop = pg.generate(jax.random.key(8), 2000, 2, 6)
    syms = np.asarray(pop.nodes)[np.asarray(pop.nodes) >= 0]
    counts = np.bincount(syms, minlength=pg.NUM_SYMBOLS)
    assert counts[: pg.NUM_PRIMITIVES].min() > 0.5 * counts[: pg.NUM_PRIMITIVES].mean()
    assert counts[pg.NUM_PRIMITIVES:].min() > 0.5 * counts[pg.NUM_PRIMITIVES:].mean()


# ------------------------------------------------------------------------------------------------------------
# interpreter
# ------------------------------------------------------------------------------------------------------------


def two_group_networks(seed, n, B=2, C=3, H=4):
    """Networks with a cell group (C -> C, 3x3) and a stride-2 reduction group (C -> 2C): 2 shape groups."""
    rng = np.random.default_rng(seed)
    nets = []
    for _ in range(n):
        groups = []
        for cin, cout, h, ho, nb in ((C, C, H, H, int(rng.integers(1, 4))), (C, 2 * C, H, H // 2, 1)):
            g = {"wt": rng.normal(0, 0.7, (nb, cout, cin, 3, 3))}
            for x in "DNP":
                g[f"wtgrad_{x}"] = rng.normal(0, 0.1, (nb, cout, cin, 3, 3))
                for kind, (c, hh) in (("inpact", (cin, h)), ("inpactgrad", (cin, h)), ("preact", (cin, h)),
                                      ("preactgrad", (cin, h)), ("act", (cout, ho)), ("actgrad", (cout, ho))):
                    g[f"{kind}_{x}"] = rng.normal(0, 1, (nb, B, c, hh, hh))
            g["preact_D"] = np.maximum(g["inpact_D"], 0)
            groups.append({k: v.astype(np.float32) for k, v in g.items()})
        nets.append(groups)
    return nets


def _universe(shapes):
    """Terminal shapes closed under the unary ops (independent re-implementation of the documented rule)."""
    u = list(dict.fromkeys(shapes))
    i = 0
    while i < len(u):
        s = u[i]
        new = [(), (1,)]
        if len(s) >= 2 and s[-1] == s[-2]:
            new.append(s[:-2])
        for o in new:
            if o not in u:
                u.append(o)
        i += 1
    return set(u)


def np_score(formula_syms, net):
    """Network score by walking the tree with numpy on every block; None if invalid."""
    scores = []
    for g in net:
        uni = _universe([g[t].shape[1:] for t in pg.TERMINALS])
        for b in range(g["wt"].shape[0]):
            pos = 0

            def rec():
                nonlocal pos
                s = formula_syms[pos]
                pos += 1
                if s >= pg.NUM_PRIMITIVES:
                    return g[pg.TERMINALS[s - pg.NUM_PRIMITIVES]][b]
                name = pg.PRIMITIVE_NAMES[s]
                args = [rec() for _ in range(pg.PRIMITIVES[s].arity)]
                if name == "kl_div" and _np_bcast(*args) not in uni:
                    raise ShapeError("kl broadcast outside the universe")
                out = np.asarray(np_op(name, *args), np.float32)
                if len(args) == 2 and out.shape not in uni:
                    raise ShapeError("binary result outside the universe")
                return out

            try:
                out = rec()
            except ShapeError:
                return None
            m = float(np.sum(out, dtype=np.float64) / out.size)
            if not np.isfinite(m):
                return None
            scores.append(m)
    return float(np.mean(scores))


CURATED = [pg.EZNAS_A, pg.EZNAS_A_PAPER] + [
    "add(act_D, mul(act_N, numel(wt)))", "matmul(inpact_D, preact_N)", "lt(act_P, gt(act_N, act_D))",
    "eq(sign(inpact_D), sign(preact_D))", "log(abs_log(exp(inpactgrad_N)))", "normalize(square(relu(actgrad_D)))",
    "heaviside(invert(mean(wt)))", "det(wtgrad_P)", "sym_eig_ratio(act_D)", "eig_ratio(wt)",
    "mean_abs(inpact_P)", "hamming(act_D, act_N)", "hamming(wt, numel(act_D))",
    "kl_div(softmax(act_D), softmax(act_N))",
    "cosine(numel(act_D), wt)", "cosine(mean(act_D), act_N)", "softmax(logdet(act_D))", "sigmoid(ones_like(preact_P))",
    "add(zeros_like(act_D), gt0(act_N))", "lt0(preactgrad_P)", "frobenius_norm(logdet(wt))",
    "matmul(logdet(inpact_D), logdet(inpact_N))", "kl_div(mean(act_D), sigmoid(act_N))", "mul(numel(wt), preact_D)",
    "eig_ratio(mean(wt))", "sym_eig_ratio(numel(wt))", "softmax(mean(act_D))", "det(logdet(wt))",
    "add(act_D, inpact_D)",  # shape error on the reduction group (act is C->2C there): invalid
    "matmul(wt, act_D)",  # shape error everywhere
    "abs_log(act_D)",  # NaN (log of negatives): invalid
    "invert(zeros_like(wt))",  # inf: invalid
    "normalize(invert(zeros_like(wt)))",  # NaN -> 0 after normalize: valid
]


@pytest.fixture(scope="module")
def small():
    nets = two_group_networks(0, 3)
    stats = pg.batch_networks(nets)
    assert len(stats.groups) == 2
    return nets, stats


P_FIXED = 64


def _pad_population(formulas, key=0):
    """Formulas + random fillers up to P_FIXED programs (one compilation for every call)."""
    fill = pg.generate(jax.random.key(key), P_FIXED, 1, 5)
    given = pg.parse_many(formulas)
    nodes = np.array(fill.nodes)
    length = np.array(fill.length)
    nodes[: len(formulas)] = np.asarray(given.nodes)
    length[: len(formulas)] = np.asarray(given.length)
    return pg.Programs(jnp.asarray(nodes), jnp.asarray(length))


def _compare(pop, ev, nets, rows):
    mismatch = []
    for i in rows:
        syms = np.asarray(pop.nodes[i])[: int(pop.length[i])].tolist()
        for j, net in enumerate(nets):
            ref = np_score(syms, net)
            ok, s = bool(ev.valid[i, j]), float(ev.scores[i, j])
            if ref is None:
                good = not ok and np.isnan(s)
            else:
                good = ok and abs(s - ref) <= 2e-3 * (1 + abs(ref))
            if not good:
                mismatch.append((pg.to_formula(pop[i]), j, ref, s, ok))
    return mismatch


def test_interpreter_matches_numpy_on_every_primitive(small):
    nets, stats = small
    assert {n for f in CURATED for n in pg.PRIMITIVE_NAMES if f"{n}(" in f} == set(pg.PRIMITIVE_NAMES)
    pop = _pad_population(CURATED)
    ev = pg.evaluate(pop, stats)
    assert ev.scores.shape == (P_FIXED, 3)
    assert _compare(pop, ev, nets, range(len(CURATED))) == []
    names = {f: i for i, f in enumerate(CURATED)}
    assert not np.any(ev.valid[names["matmul(wt, act_D)"]]) and not np.any(ev.valid[names["abs_log(act_D)"]])
    assert not np.any(ev.valid[names["add(act_D, inpact_D)"]])
    assert np.all(ev.valid[names["normalize(invert(zeros_like(wt)))"]])
    assert np.all(ev.valid[names[pg.EZNAS_A]])


def test_interpreter_matches_numpy_on_random_programs(small):
    nets, stats = small
    agree = total = 0
    bad = []
    for k in range(3):
        pop = pg.generate(jax.random.key(100 + k), P_FIXED, 2, 6)
        ev = pg.evaluate(pop, stats)
        mm = _compare(pop, ev, nets, range(P_FIXED))
        bad += mm
        total += P_FIXED * len(nets)
        agree += P_FIXED * len(nets) - len(mm)
    print(f"\nrandom programs: {agree}/{total} program x network results agree with numpy")
    # float32 vs float64 reference: only numerically chaotic programs (eigen ratios of singular Gram matrices,
    # exp overflow at the float32 edge) may disagree
    assert agree >= 0.97 * total, bad[:5]


def test_eznas_a_is_logdet_over_hw(small):
    nets, stats = small
    pop = _pad_population([pg.EZNAS_A])
    ev = pg.evaluate(pop, stats)
    for j, net in enumerate(nets):
        per_block = []
        for g in net:
            x = np.sign(g["inpactgrad_D"])  # (nb, B, C, H, W)
            sign, logabs = np.linalg.slogdet(x.astype(np.float64))  # over H x W -> (nb, B, C)
            ld = np.where(sign < 0, 0.0, np.where(sign == 0, -np.inf, logabs))
            sig = 1 / (1 + np.exp(-ld))
            per_block += list(np.sqrt(np.sum(sig**2, axis=(1, 2))))
        assert float(ev.scores[0, j]) == pytest.approx(np.mean(per_block), rel=1e-5)


def test_invalid_programs_do_not_affect_others_and_masked_blocks_are_ignored(small):
    nets, stats = small
    good = ["mean(mul(act_D, act_N))", pg.EZNAS_A, "hamming(act_D, act_P)"]
    base = pg.evaluate(_pad_population(good), stats)
    pop = _pad_population(good)
    nodes, length = np.array(pop.nodes), np.array(pop.length)
    # malformed: a symbol out of range, an incomplete tree, length 0, a tree ending early, a too-long length
    nodes[10, 0], length[10] = 99, 1
    nodes[11, :2], length[11] = [0, 33], 2
    length[12] = 0
    nodes[13, :3], length[13] = [33, 34, 35], 3
    length[14] = pg.DEFAULT_CAPACITY + 5
    bad = pg.Programs(jnp.asarray(nodes), jnp.asarray(length))
    ev = pg.evaluate(bad, stats)
    assert not np.any(np.asarray(ev.valid[10:15]))
    np.testing.assert_array_equal(np.asarray(ev.scores[:3]), np.asarray(base.scores[:3]))
    # a masked block (mask False, garbage content) is ignored: same shapes as `small`, so no recompilation
    masked = [[dict(g) for g in net] for net in nets]
    g0 = masked[0][0]
    g0["mask"] = np.arange(g0["wt"].shape[0]) > 0
    if g0["mask"].sum() == 0:
        pytest.skip("first group of network 0 has a single block")
    for k in pg.TERMINALS:
        g0[k] = g0[k].copy()
        g0[k][0] = 1e3
    ev2 = pg.evaluate(_pad_population(good), pg.batch_networks(masked))
    kept = [[{k: v[1:] for k, v in nets[0][0].items()}, nets[0][1]]]
    for i, f in enumerate(good):
        ref = np_score(np.asarray(pg.parse(f).nodes)[: int(pg.parse(f).length)].tolist(), kept[0])
        assert float(ev2.scores[i, 0]) == pytest.approx(ref, rel=2e-3)
    np.testing.assert_array_equal(np.asarray(ev2.scores[:3, 1:]), np.asarray(base.scores[:3, 1:]))


def test_shape_check_agrees_with_evaluate(small):
    nets, stats = small
    pop = pg.generate(jax.random.key(5), P_FIXED, 2, 6)
    sc = np.asarray(pg.shape_check(pop, stats))
    assert sc.shape == (P_FIXED, 2)
    ev = pg.evaluate(pop, stats)
    # a program shape-invalid on any group is invalid on every network (all networks have both groups)
    assert not np.any(np.asarray(ev.valid)[~sc.all(axis=1)])


def test_batch_networks_validates_input():
    nets = two_group_networks(1, 2)
    with pytest.raises(ValueError, match="no networks"):
        pg.batch_networks([])
    g = dict(nets[0][0])
    del g["act_N"]
    with pytest.raises(ValueError, match="missing terminals"):
        pg.batch_networks([[g]])
    g = dict(nets[0][0], act_X=g["act_D"])
    with pytest.raises(ValueError, match="unknown names"):
        pg.batch_networks([[g]])
    g = dict(nets[0][0], wt=nets[0][0]["wt"][:0])
    with pytest.raises(ValueError, match="same leading block axis"):
        pg.batch_networks([[g]])
    g = dict(nets[0][0], mask=np.ones(7, bool))
    with pytest.raises(ValueError, match="mask"):
        pg.batch_networks([[g]])
    g = dict(nets[0][0])
    g["act_D"] = g["act_D"].copy()
    g["act_D"].reshape(-1)[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        pg.batch_networks([[g]])
    g = dict(nets[0][0], mask=np.zeros(nets[0][0]["wt"].shape[0], bool))
    with pytest.raises(ValueError, match="no real blocks"):
        pg.batch_networks([[g]])
    with pytest.raises(ValueError, match="mapping"):
        pg.batch_networks([42])


# ------------------------------------------------------------------------------------------------------------
# one compilation, and a crash hunt over random programs (tiny statistics: one group, few kernels)
# ------------------------------------------------------------------------------------------------------------


def tiny_networks(seed, n):
    rng = np.random.default_rng(seed)
    nets = []
    for _ in range(n):
        g = {"wt": rng.normal(0, 1, (2, 2, 2, 1, 1))}
        for x in "DNP":
            g[f"wtgrad_{x}"] = rng.normal(0, 1, (2, 2, 2, 1, 1))
            for kind in ("inpact", "inpactgrad", "preact", "preactgrad", "act", "actgrad"):
                g[f"{kind}_{x}"] = rng.normal(0, 1, (2, 1, 2, 3, 3))
        nets.append({k: v.astype(np.float32) for k, v in g.items()})
    return nets


@pytest.fixture(scope="module")
def tiny():
    return pg.batch_networks(tiny_networks(3, 4))


CRASH_P = 500


def _crash_hunt(stats, num, seed):
    invalid = 0
    t0 = time.time()
    for k in range(num // CRASH_P):
        pop = pg.generate(jax.random.key(seed + k), CRASH_P, 2, 6)
        ev = pg.evaluate(pop, stats)
        valid, scores = np.asarray(ev.valid), np.asarray(ev.scores)
        assert np.all(np.isfinite(scores[valid])) and np.all(np.isnan(scores[~valid]))
        invalid += int(np.sum(~valid.all(axis=1)))
    return invalid, time.time() - t0


def test_random_programs_never_crash_and_compile_once(tiny):
    invalid, dt = _crash_hunt(tiny, 5_000, 1000)
    print(f"\n5,000 random programs: {invalid} invalid ({invalid / 50:.1f}%), {dt:.1f} s")
    assert 0 < invalid < 5_000
    assert pg.evaluate._cache_size() >= 1
    before = pg.evaluate._cache_size()
    pg.evaluate(pg.generate(jax.random.key(99), CRASH_P, 2, 6), tiny)
    assert pg.evaluate._cache_size() == before  # 10 + 1 populations, one compilation


def test_one_trace_for_many_populations(tiny):
    stats = pg.Statistics(tiny.groups, tiny.num_networks)
    f = jax.jit(chex.assert_max_traces(pg._evaluate, n=1))
    outs = [f(pg.generate(jax.random.key(k), 8, 2, 6), stats) for k in range(3)]
    assert not np.array_equal(np.asarray(outs[0].scores), np.asarray(outs[1].scores), equal_nan=True)


@pytest.mark.slow
def test_random_programs_never_crash_100k(tiny):
    invalid, dt = _crash_hunt(tiny, 100_000, 50_000)
    print(f"\n100,000 random programs: {invalid} invalid ({invalid / 1000:.1f}%), {dt:.1f} s")
    assert 0 < invalid < 100_000
