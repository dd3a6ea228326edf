"""NAS-Bench-201 encodings against the benchmark's own arch list."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import data
from jzcp.spaces import nb201


@pytest.fixture(scope="module")
def gt(shared_data):
    return data.load_nb201(shared_data)


def test_parse_format_round_trip_all_cells(gt):
    ops = np.stack([nb201.parse(str(s)) for s in gt.arch_str])
    np.testing.assert_array_equal(ops, gt.op_idx)
    assert [nb201.format(o) for o in ops] == [str(s) for s in gt.arch_str]


def test_code_and_official_index_round_trip(gt, shared_data):
    codes = np.asarray(nb201.encode(gt.op_idx))
    assert sorted(codes.tolist()) == list(range(nb201.NUM_ARCHS))
    np.testing.assert_array_equal(np.asarray(nb201.decode(codes)), gt.op_idx)
    table = nb201.official_index(str(shared_data))
    np.testing.assert_array_equal(table.to_index(gt.op_idx), np.arange(nb201.NUM_ARCHS))
    np.testing.assert_array_equal(table.to_ops(np.arange(nb201.NUM_ARCHS)), gt.op_idx)
    # The ground truth's index column is the official one.
    np.testing.assert_array_equal(gt.nb201_index, np.arange(nb201.NUM_ARCHS))


@pytest.mark.parametrize(
    "arch, problem",
    [
        ("|nor_conv_3x3~0|+|none~0|none~1|", "expected 3 nodes"),
        ("|nor_conv_3x3~0|+|none~0|+|skip_connect~0|none~1|none~2|", "must have 2 input edges"),
        ("|conv_5x5~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", "unknown op 'conv_5x5'"),
        ("|nor_conv_3x3~1|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", "must read from node 0"),
        ("|nor_conv_3x3|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", "must look like 'op~i'"),
        ("nor_conv_3x3~0+|none~0|none~1|+|skip_connect~0|none~1|none~2|", "must look like '|op~0|...|'"),
    ],
)
def test_malformed_strings_raise_clear_errors(arch, problem):
    with pytest.raises(ValueError, match=problem.replace("|", r"\|").replace(".", r"\.")):
        nb201.parse(arch)


def test_bad_op_arrays_raise():
    with pytest.raises(ValueError, match="shape"):
        nb201.format([1, 2, 3])
    with pytest.raises(ValueError, match="op ids"):
        nb201.format([0, 1, 2, 3, 4, 5])


def test_unreachable_branch_flag_gives_the_9445_nbsz_cells(gt):
    valid = ~np.asarray(nb201.has_unreachable_branch(jnp.asarray(gt.op_idx)))
    assert valid.sum() == 9445
    ref = data.load_nb201_proxies("c10", "nbsz", gt.path.parent.parent)
    ref_valid = np.zeros(nb201.NUM_ARCHS, bool)
    ref_valid[[gt.index_of(str(s)) for s in ref.arch_str[ref.mask]]] = True
    np.testing.assert_array_equal(valid, ref_valid)


def test_reachability_examples():
    p = nb201.parse
    # conv on 0->1 but node 1 never reaches the output: unreachable branch, still connected via 0->3.
    ops = p("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert bool(nb201.has_unreachable_branch(ops)) and bool(nb201.is_connected(ops))
    ops = p("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert not bool(nb201.has_unreachable_branch(ops)) and not bool(nb201.is_connected(ops))
    ops = p("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|")
    assert not bool(nb201.has_unreachable_branch(ops)) and bool(nb201.is_connected(ops))
    np.testing.assert_array_equal(np.asarray(nb201.live_edges(ops)), [1, 0, 1, 0, 0, 1])


def test_sample_and_mutate():
    cells = nb201.sample(jax.random.key(0), 4000)
    assert cells.shape == (4000, 6) and cells.dtype == jnp.int32
    counts = np.bincount(np.asarray(cells).ravel(), minlength=5) / cells.size
    np.testing.assert_allclose(counts, 0.2, atol=0.02)
    keys = jax.random.split(jax.random.key(1), 4000)
    children = jax.jit(jax.vmap(nb201.mutate))(keys, cells)
    diff = np.asarray(children != cells).sum(-1)
    assert (diff == 1).all()  # exactly one edge changes, always to a different op
    assert int(children.min()) >= 0 and int(children.max()) < 5
