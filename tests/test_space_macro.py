"""NAS-Bench-Macro encodings against the benchmark's 6,561 architecture codes and their published counts."""
from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from jzcp import data
from jzcp.spaces import macro


@pytest.fixture(scope="module")
def shapes(shared_data):
    return data.load_macro_shapes(shared_data)


def _real_arch(code: str) -> str:
    """The benchmark's training representative, re-derived: per stage (2, 3, 3 layers) keep the first layer,
    then the non-identity layers in order, then the identities."""
    out, pos = "", 0
    for size in (2, 3, 3):
        stage = code[pos: pos + size]
        rest = stage[1:]
        out += stage[0] + rest.replace("0", "") + "0" * rest.count("0")
        pos += size
    return out


def test_all_6561_strings_round_trip(shapes):
    assert len(shapes.arch) == macro.NUM_ARCHS == 6561
    archs = np.stack([macro.parse(str(s)) for s in shapes.arch])
    assert archs.dtype == np.int32 and archs.shape == (6561, 8)
    assert [macro.format(a) for a in archs] == [str(s) for s in shapes.arch]
    idx = np.asarray(macro.encode(archs))
    assert sorted(idx.tolist()) == list(range(6561))
    np.testing.assert_array_equal(np.asarray(macro.decode(idx)), archs)
    # Index order is the benchmark's enumeration order and the strings' lexicographic order.
    strings = macro.all_strings()
    assert strings == sorted(str(s) for s in shapes.arch)
    assert [macro.format(a) for a in np.asarray(macro.all_archs())] == strings
    assert strings[int(macro.encode(macro.parse("01202120")))] == "01202120"


def test_digit_meaning_from_published_parameter_counts(shapes):
    """0 < 1 < 2 in size at every layer: Identity (or the conv1x1 downsample), MB3_K3, MB6_K5."""
    archs = np.stack([macro.parse(str(s)) for s in shapes.arch])
    params = dict(zip(np.asarray(macro.encode(archs)).tolist(), shapes.params.tolist()))
    for layer in range(macro.NUM_LAYERS):
        base = archs[archs[:, layer] == 0]
        p = []
        for op in range(3):
            variant = base.copy()
            variant[:, layer] = op
            p.append(np.array([params[i] for i in np.asarray(macro.encode(variant)).tolist()]))
        assert (p[0] < p[1]).all() and (p[1] < p[2]).all()
    # Identity everywhere is the smallest network; layers shape: strides and widths per layer.
    assert shapes.params[0] == shapes.params.min()
    assert macro.STRIDES == (2, 1, 2, 1, 1, 2, 1, 1)
    assert macro.OUT_CHANNELS == (64, 64, 128, 128, 128, 256, 256, 256)


def test_canonical_representatives(shapes):
    archs = np.stack([macro.parse(str(s)) for s in shapes.arch])
    canon = np.asarray(jax.jit(macro.canonicalize)(archs))
    assert [macro.format(c) for c in canon] == [_real_arch(str(s)) for s in shapes.arch]
    ci = np.asarray(macro.encode(canon))
    assert len(np.unique(ci)) == int(np.asarray(macro.is_canonical(archs)).sum()) == 3969
    # The benchmark copied each representative's record to its equivalents.
    np.testing.assert_array_equal(shapes.params, shapes.params[ci])
    np.testing.assert_array_equal(shapes.flops, shapes.flops[ci])


@pytest.mark.parametrize(
    "arch, problem",
    [("0120212", "must have 8 characters"), ("01202123", "character '3'"), ("0120 120", "character ' '"), (12021201, "must be a string")],
)
def test_malformed_strings_raise(arch, problem):
    with pytest.raises(ValueError, match=problem):
        macro.parse(arch)


def test_bad_arrays_raise():
    with pytest.raises(ValueError, match="shape"):
        macro.format([0, 1, 2])
    with pytest.raises(ValueError, match="op ids"):
        macro.format([0, 1, 2, 3, 0, 0, 0, 0])


def test_sample_and_mutate():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def population(key):
        k_s, k_m = jax.random.split(key)
        archs = macro.sample(k_s, 3000)
        return archs, jax.vmap(macro.mutate)(jax.random.split(k_m, 3000), archs)

    for seed in range(2):
        archs, children = (np.asarray(x) for x in population(jax.random.key(seed)))
        assert archs.shape == (3000, 8) and archs.dtype == np.int32
        np.testing.assert_allclose(np.bincount(archs.ravel(), minlength=3) / archs.size, 1 / 3, atol=0.02)
        assert ((archs != children).sum(1) == 1).all()
        assert children.min() >= 0 and children.max() <= 2
