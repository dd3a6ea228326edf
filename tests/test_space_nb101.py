"""NAS-Bench-101 encodings: spec / NASLib forms, pruning, validity, graph hash, sampling and mutation."""
from __future__ import annotations

import collections
import itertools

import chex
import jax
import numpy as np
import pytest

from jzcp import data
from jzcp.spaces import nb101

# The first row of the official nasbench tfrecord (hash and spec as published with the benchmark).
OFFICIAL_SPEC = {
    "matrix": [
        [0, 1, 0, 0, 1, 1, 0],
        [0, 0, 1, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0, 1],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0],
    ],
    "ops": ["input", "conv3x3-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "conv3x3-bn-relu", "conv1x1-bn-relu", "output"],
}
OFFICIAL_HASH = "00005c142e6f48ac74fdcf73e3439874"


def _np(cell):
    return nb101.Cell(*(np.asarray(x) for x in cell))


def _reference_prune(matrix, labels):
    """Independent pruning by set-based search from the input and back from the output (as nasbench's)."""
    n = len(labels)
    fwd, stack = {0}, [0]
    while stack:
        v = stack.pop()
        for w in range(n):
            if matrix[v][w] and w not in fwd:
                fwd.add(w)
                stack.append(w)
    bwd, stack = {n - 1}, [n - 1]
    while stack:
        v = stack.pop()
        for u in range(n):
            if matrix[u][v] and u not in bwd:
                bwd.add(u)
                stack.append(u)
    keep = sorted(fwd & bwd)
    if len(keep) < 2:
        return None
    return np.asarray(matrix)[np.ix_(keep, keep)], [labels[i] for i in keep]


def _canonical_form(matrix, labels):
    """Isomorphism class by brute force: the smallest relabelled (matrix, labels) over interior permutations."""
    n = len(labels)
    best = None
    for perm in itertools.permutations(range(1, n - 1)):
        p = [0, *perm, n - 1]
        key = (np.asarray(matrix)[np.ix_(p, p)].tobytes(), tuple(labels[i] for i in p))
        best = key if best is None or key < best else best
    return best


@pytest.fixture(scope="module")
def naslib_cells(shared_data):
    z = data.load_naslib_zc("nb101", data_dir=shared_data)
    return z, [nb101.parse_naslib(a) for a in z.archs]


def test_official_hash_and_isomorphism():
    cell = nb101.parse(OFFICIAL_SPEC)
    assert nb101.spec_hash(cell) == OFFICIAL_HASH
    # Swapping the two parallel branches (vertices 1-2-3 vs 4) is an isomorphism: same hash ...
    m = np.asarray(OFFICIAL_SPEC["matrix"])
    order = [0, 4, 1, 2, 3, 5, 6]
    swapped = {"matrix": m[np.ix_(order, order)], "ops": [OFFICIAL_SPEC["ops"][i] for i in order]}
    assert nb101.spec_hash(nb101.parse(swapped)) == OFFICIAL_HASH
    # ... while changing one op or one edge changes it.
    other_op = dict(OFFICIAL_SPEC, ops=OFFICIAL_SPEC["ops"][:2] + ["conv1x1-bn-relu"] + OFFICIAL_SPEC["ops"][3:])
    assert nb101.spec_hash(nb101.parse(other_op)) != OFFICIAL_HASH
    other_edge = {"matrix": m.copy(), "ops": OFFICIAL_SPEC["ops"]}
    other_edge["matrix"][0, 6] = 1
    assert nb101.spec_hash(nb101.parse(other_edge)) != OFFICIAL_HASH
    # graph_hash is invariant under any vertex permutation, even one that breaks the topological order.
    labels = [-1, 0, 2, 0, 0, 1, -2]
    perm = np.random.default_rng(0).permutation(7)
    assert nb101.graph_hash(m[np.ix_(perm, perm)], [labels[i] for i in perm]) == nb101.graph_hash(m, labels)


def test_naslib_cells_round_trip_exactly(naslib_cells):
    z, cells = naslib_cells
    assert len(cells) == 500
    for flat, cell in zip(z.archs, cells):
        assert nb101.format_naslib(cell) == tuple(flat)
        spec = nb101.format(cell)
        adj, ops = data.decode_nb101(flat)  # the data layer's independent decoder (NASLib op ids)
        np.testing.assert_array_equal(spec["matrix"], adj)
        assert spec["ops"] == [nb101.NASLIB_OPS[o] for o in ops]
        back = nb101.parse(spec)
        for a, b in zip(back, cell):
            np.testing.assert_array_equal(a, b)
    # The text form of the CSV parses to the same cells.
    text = "(" + ", ".join(map(str, z.archs[0])) + ")"
    np.testing.assert_array_equal(nb101.parse_naslib(text).adj, cells[0].adj)


def test_naslib_cells_prune_validate_and_hash_consistently(naslib_cells):
    z, cells = naslib_cells
    batch = nb101.stack(cells)
    # NASLib only kept cells nasbench accepted.
    assert np.asarray(jax.jit(nb101.is_valid)(batch)).all()
    pruned = _np(jax.jit(nb101.prune)(batch))
    classes = []
    for i, cell in enumerate(cells):
        spec = nb101.format(cell)
        ref = _reference_prune(spec["matrix"].tolist(), spec["ops"])
        got = nb101.format(nb101.Cell(*(x[i] for x in pruned)))
        np.testing.assert_array_equal(got["matrix"], ref[0])
        assert got["ops"] == ref[1]
        assert int(ref[0].sum()) <= nb101.MAX_EDGES
        classes.append(_canonical_form(*ref))
    hashes = nb101.spec_hashes(batch)
    # The hash partitions the cells exactly into isomorphism classes (brute force over vertex orders).
    by_hash = collections.defaultdict(set)
    by_class = collections.defaultdict(set)
    for i, (h, c) in enumerate(zip(hashes, classes)):
        by_hash[h].add(i)
        by_class[c].add(i)
    assert sorted(map(sorted, by_hash.values())) == sorted(map(sorted, by_class.values()))
    # NASLib sampled raw matrices, so the 500 cells are only ~290 distinct networks. The benchmark's table
    # is keyed by hash: within a hash the accuracy is one of its 3 training repeats.
    assert len(by_hash) < len(cells)
    for members in by_hash.values():
        assert len(set(np.round(z.val_accuracy[sorted(members)], 6).tolist())) <= 3
    # NASLib's parameter count is of the network it built, and nasbench's channel split follows the vertex
    # order (isomorphic cells can differ by a few channels), so it is constant per identical pruned spec.
    by_spec = collections.defaultdict(list)
    for i in range(len(cells)):
        spec = nb101.format(nb101.Cell(*(x[i] for x in pruned)))
        by_spec[(spec["matrix"].tobytes(), tuple(spec["ops"]))].append(i)
    params = z.proxy("params")
    assert len(by_spec) < len(cells)
    for idx in by_spec.values():
        assert len(set(params[idx].tolist())) == 1


def test_padded_specs_and_pruning():
    # A 5-vertex spec (as the benchmark stores pruned cells): output moves to vertex 6, 2 vertices padded.
    spec = {
        "matrix": [[0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]],
        "ops": ["input", "conv1x1-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "output"],
    }
    cell = nb101.parse(spec)
    np.testing.assert_array_equal(cell.mask, [1, 1, 1, 1, 0, 0, 1])
    np.testing.assert_array_equal(cell.ops, [0, 2, 3, 1, nb101.PAD_OP, nb101.PAD_OP, 4])
    assert cell.adj[3, 6] == 1 and cell.adj[2, 6] == 1 and cell.adj[:, 4:6].sum() == 0
    out = nb101.format(cell)
    np.testing.assert_array_equal(out["matrix"], spec["matrix"])
    assert out["ops"] == spec["ops"]
    # Already pruned: prune is the identity on it.
    for a, b in zip(_np(jax.jit(nb101.prune)(cell)), cell):
        np.testing.assert_array_equal(a, b)
    # Add a dangling vertex (input -> v, v feeds nothing) and an isolated one: pruning gives the spec back.
    full = {
        "matrix": np.zeros((7, 7), int),
        "ops": ["input", "maxpool3x3", "conv1x1-bn-relu", "conv3x3-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "output"],
    }
    # vertices: 1 dangling, 2 -> node 1 of spec, 3 -> isolated, 4 -> spec 2, 5 -> spec 3
    for i, j in [(0, 1), (0, 2), (0, 4), (2, 5), (4, 6), (5, 6)]:
        full["matrix"][i, j] = 1
    full["ops"][4] = "maxpool3x3"
    pruned = _np(jax.jit(nb101.prune)(nb101.parse(full)))
    expected = nb101.parse({
        "matrix": [[0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]],
        "ops": ["input", "conv1x1-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "output"],
    })
    for a, b in zip(pruned, expected):
        np.testing.assert_array_equal(a, b)
    assert nb101.spec_hash(nb101.parse(full)) == nb101.spec_hash(cell)


def test_validity_rules():
    ops = ["input"] + ["conv3x3-bn-relu"] * 5 + ["output"]
    dense = np.triu(np.ones((7, 7), int), 1)  # 21 edges
    assert not bool(nb101.is_valid(nb101.parse({"matrix": dense, "ops": ops})))
    chain = np.diag(np.ones(6, int), 1)  # 0 -> 1 -> ... -> 6, 6 edges
    assert bool(nb101.is_valid(nb101.parse({"matrix": chain, "ops": ops})))
    # 10 edges, but 4 of them hang off a vertex that reaches nothing: 6 edges after pruning, valid.
    m = chain.copy()
    m[5, 6] = 0
    m[0, 5] = m[1, 5] = m[2, 5] = m[3, 5] = 1
    m[4, 6] = 1
    c = nb101.parse({"matrix": m, "ops": ops})
    assert int(c.adj.sum()) > nb101.MAX_EDGES and int(nb101.num_edges(c)) == 5 and bool(nb101.is_valid(c))
    # Disconnected: no path from input to output.
    cut = chain.copy()
    cut[2, 3] = 0
    c = nb101.parse({"matrix": cut, "ops": ops})
    assert not bool(nb101.is_connected(c)) and not bool(nb101.is_valid(c))
    assert not np.asarray(nb101.prune(c).mask).any()
    with pytest.raises(ValueError, match="disconnected"):
        nb101.spec_hash(c)


@pytest.mark.parametrize(
    "spec, problem",
    [
        ({"matrix": [[0, 1, 0]], "ops": ["input", "output"]}, "square"),
        ({"matrix": [[0, 1], [1, 0]], "ops": ["input", "output"]}, "upper-triangular"),
        ({"matrix": [[0, 2], [0, 0]], "ops": ["input", "output"]}, "0 or 1"),
        ({"matrix": [[0, 1], [0, 0]], "ops": ["input", "conv5x5", "output"]}, "3 ops for a 2x2 matrix"),
        ({"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["input", "conv5x5", "output"]}, "unknown op 'conv5x5'"),
        ({"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["output", "maxpool3x3", "input"]}, "first op must be 'input'"),
        ({"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["input", "output", "output"]}, "interior vertex 1"),
        ({"matrix": np.zeros((8, 8), int), "ops": ["input"] * 8}, "8 vertices"),
        ({"adjacency": [[0, 1], [0, 0]]}, "needs keys 'matrix' and 'ops'"),
    ],
)
def test_malformed_specs_raise_clear_errors(spec, problem):
    with pytest.raises(ValueError, match=problem):
        nb101.parse(spec)


def test_malformed_naslib_tuples_and_cells_raise():
    with pytest.raises(ValueError, match="not n\\*n \\+ n"):
        nb101.parse_naslib([0, 1, 0, 0, 0])
    with pytest.raises(ValueError, match="op ids must be in"):
        nb101.parse_naslib([0, 1, 0, 0, 0, 7])
    with pytest.raises(ValueError, match="last op must be 'output'"):
        nb101.parse_naslib([0, 1, 0, 0, 0, 4])
    cell = nb101.parse(OFFICIAL_SPEC)
    with pytest.raises(ValueError, match="absent vertex"):
        nb101.format(cell._replace(mask=np.array([1, 1, 0, 1, 1, 1, 1], bool)))
    with pytest.raises(ValueError, match="shapes"):
        nb101.format(cell._replace(ops=cell.ops[:5]))


def test_sample_and_mutate_are_jittable_and_valid():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def population(key):
        k_s, k_m = jax.random.split(key)
        cells = nb101.sample(k_s, 256)
        children = jax.vmap(nb101.mutate)(jax.random.split(k_m, 256), cells)
        return cells, children

    for seed in range(2):
        cells, children = (_np(c) for c in population(jax.random.key(seed)))
        assert cells.adj.shape == (256, 7, 7) and cells.adj.dtype == np.int32 and cells.mask.all()
        assert np.asarray(nb101.is_valid(cells)).all() and np.asarray(nb101.is_valid(children)).all()
        assert (np.tril(cells.adj) == 0).all() and (np.tril(children.adj) == 0).all()
        assert (children.ops[:, 1:-1] >= 1).all() and (children.ops[:, 1:-1] <= 3).all()
        # nasbench's mutation flips 21/7 = 3 edges and resamples 1 op in expectation (fewer survive the
        # validity filter): most children differ, by a few entries.
        changed = (children.adj != cells.adj).sum((1, 2)) + (children.ops != cells.ops).sum(1)
        assert (changed > 0).mean() > 0.9 and 1.5 < changed.mean() < 6
        assert len(set(nb101.spec_hashes(cells))) > 100  # diverse networks
    # A padded cell mutates as a 7-vertex cell.
    child = nb101.mutate(jax.random.key(3), nb101.parse({"matrix": [[0, 1], [0, 0]], "ops": ["input", "output"]}))
    assert np.asarray(child.mask).all() and bool(nb101.is_valid(child))


def test_sampler_matches_naslibs_sampled_cells(naslib_cells):
    """NASLib drew its 500 cells with the same procedure (nasbench's ``random_spec``): the distribution of
    the number of vertices left after pruning must agree (NASLib: 11 % of cells are just input -> output)."""
    _, cells = naslib_cells
    prune = jax.jit(nb101.prune)
    ref = np.bincount(np.asarray(prune(nb101.stack(cells)).mask).sum(1), minlength=8) / len(cells)
    ours = prune(jax.jit(nb101.sample, static_argnums=1)(jax.random.key(7), 2000))
    ours = np.bincount(np.asarray(ours.mask).sum(1), minlength=8) / 2000
    assert 0.5 * np.abs(ref - ours).sum() < 0.08  # total variation; ~0.04 expected from 500 reference cells
