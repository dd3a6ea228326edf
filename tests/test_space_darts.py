"""DARTS / NB301 encodings against NAS-Bench-Suite-Zero's files, and the NDS loader on hand-made fixtures."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from jzcp import data
from jzcp.spaces import darts, nds

FIXTURES = Path(__file__).parent / "fixtures" / "nds"

# DARTS' published DARTS_V2 cell, as the DARTS code prints it (concat written as a range).
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=range(2, 6), "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=range(2, 6))"
)


@pytest.fixture(scope="module")
def encodings_text(shared_data):
    path = data.data_file("nb301_encodings", shared_data)
    raw = json.loads(path.read_text())
    return [raw[str(i)] for i in range(len(raw))]


def test_11221_encodings_parse_and_round_trip(shared_data, encodings_text):
    arrays = np.stack([darts.parse_compact(t) for t in encodings_text])
    np.testing.assert_array_equal(arrays, data.load_nb301_encodings(shared_data))
    assert arrays.shape == (11221, 2, 8, 2) and arrays.dtype == np.int32
    assert [str(darts.format_compact(a)) for a in arrays] == encodings_text
    genotypes = [darts.format_genotype(a) for a in arrays]
    np.testing.assert_array_equal(np.stack([darts.parse_genotype(g) for g in genotypes]), arrays)
    assert np.asarray(jax.jit(darts.is_valid)(arrays)).all()


def test_1218_scored_cells_parse_and_round_trip(shared_data):
    z = data.load_naslib_zc("nb301", data_dir=shared_data)
    arrays = z.arch_array().astype(np.int32)
    assert arrays.shape == (1218, 2, 8, 2)
    # The CSV's own text ("[[(0, 0), ...], [...]]", a list of lists of tuples) parses to the same arrays.
    with open(data.data_file("naslib_zc", shared_data), newline="") as f:
        texts = [r["arch"] for r in csv.DictReader(f) if r["benchmark"] == "nasbench301"]
    parsed = {darts.parse_compact(t).tobytes() for t in texts}
    assert parsed == {a.tobytes() for a in arrays}
    for a in arrays:
        np.testing.assert_array_equal(darts.parse_compact(darts.format_compact(a)), a)
        np.testing.assert_array_equal(darts.parse_genotype(darts.to_genotype(a)), a)
        np.testing.assert_array_equal(darts.parse_genotype(darts.format_genotype(a)), a)
    assert np.asarray(darts.is_valid(arrays)).all()
    # NASLib sampled these with np.random.choice(..., 2, replace=False): the two inputs of a node come in
    # random order, about half of the pairs ascending (the 11,221 suite encodings are all sorted instead).
    src = arrays[..., 0]
    assert 0.45 < (src[:, :, 0::2] < src[:, :, 1::2]).mean() < 0.55


def test_genotype_and_compact_meaning():
    a = darts.parse_genotype(DARTS_V2)
    assert darts.OPS[a[0, 7, 1]] == "dil_conv_3x3" and a[0, 7, 0] == 2  # normal node 5, 2nd edge from node 2
    assert darts.OPS[a[1, 0, 1]] == "max_pool_3x3" and a[1, 0, 0] == 0
    assert darts.format_compact(a)[0][:2] == ((0, 3), (1, 3))  # (input, op id): sep_conv_3x3 = 3
    text = darts.format_genotype(a)
    assert text.startswith("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1),")
    assert "normal_concat=[2, 3, 4, 5]" in text and text.endswith("reduce_concat=[2, 3, 4, 5])")
    g = darts.to_genotype(a)
    assert g.normal[7] == ("dil_conv_3x3", 2) and list(g.reduce_concat) == [2, 3, 4, 5]
    # canonicalize: edge order within a node does not matter.
    swapped = a.copy()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]
    np.testing.assert_array_equal(darts.canonicalize(swapped), darts.canonicalize(a))
    np.testing.assert_array_equal(darts.canonicalize(darts.canonicalize(a)), darts.canonicalize(a))


@pytest.mark.parametrize(
    "fn, arg, problem",
    [
        (darts.parse_compact, [[(0, 1)] * 8], "shape \\(2, 8, 2\\)"),
        (darts.parse_compact, [[(2, 1)] + [(0, 1)] * 7, [(0, 1)] * 8], "normal edge 0 \\(into node 2\\) reads state 2"),
        (darts.parse_compact, [[(0, 1)] * 8, [(0, 7)] + [(0, 1)] * 7], "reduce edge 0 has op id 7.*allow_none"),
        (darts.parse_compact, "(((0, 1), (1, 2)", "not a Python literal"),
        (darts.parse_genotype, DARTS_V2.replace("dil_conv_3x3", "conv_9x9"), "unknown op 'conv_9x9'"),
        (darts.parse_genotype, DARTS_V2.replace("normal_concat=range(2, 6)", "normal_concat=[2, 5]"), "concatenates"),
        (darts.parse_genotype, DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 6)"), "reads 6"),
        (darts.parse_genotype, DARTS_V2.replace("Genotype(", "Genome("), "must look like 'Genotype"),
        (darts.parse_genotype, "Genotype(normal=__import__('os').getcwd())", "is not a literal"),
        (darts.parse_genotype, "Genotype(normal=[], normal_concat=[2])", "missing \\['reduce', 'reduce_concat'\\]"),
    ],
)
def test_malformed_inputs_raise_clear_errors(fn, arg, problem):
    with pytest.raises(ValueError, match=problem):
        fn(arg)


def test_sample_matches_naslib_and_mutate_changes_one_entry():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def population(key):
        k_s, k_m = jax.random.split(key)
        archs = darts.sample(k_s, 4000)
        return archs, jax.vmap(darts.mutate)(jax.random.split(k_m, 4000), archs)

    for seed in range(2):
        archs, children = (np.asarray(x) for x in population(jax.random.key(seed)))
        assert archs.shape == (4000, 2, 8, 2) and archs.dtype == np.int32
        assert np.asarray(darts.is_valid(archs)).all() and np.asarray(darts.is_valid(children)).all()
        np.testing.assert_allclose(np.bincount(archs[..., 1].ravel(), minlength=7) / archs[..., 1].size, 1 / 7, atol=0.01)
        # Node 5 (edges 6, 7) reads two distinct states of 0..4 in random order: 20 ordered pairs, uniform.
        pairs = np.bincount((archs[:, :, 6, 0] * 5 + archs[:, :, 7, 0]).ravel(), minlength=25).reshape(5, 5)
        assert np.diag(pairs).sum() == 0
        np.testing.assert_allclose(pairs[~np.eye(5, dtype=bool)] / 8000, 1 / 20, atol=0.012)
        diff = archs != children
        assert (diff.sum((1, 2, 3)) == 1).all()
        # NASLib redraws until something changed; an input of node 2 has no alternative, an op always has 6:
        # op changes are 1/2*6/7 / (1/2*6/7 + 1/2*mean(0, 1/3, 2/4, 3/5)) = 70.5 % of mutations.
        assert abs(diff[..., 1].sum() / 4000 - 0.705) < 0.03
        assert not diff[:, :, :2, 0].any()


def test_none_op_for_nds_variant():
    archs = np.asarray(darts.sample(jax.random.key(3), 500, allow_none=True))
    assert (archs[..., 1] == darts.NONE).any() and archs[..., 1].max() == darts.NONE
    assert not np.asarray(darts.is_valid(archs)).all()  # without allow_none, 'none' is out of range
    assert np.asarray(darts.is_valid(archs, allow_none=True)).all()
    text = darts.format_genotype(archs[0], allow_none=True)
    np.testing.assert_array_equal(darts.parse_genotype(text, allow_none=True), archs[0])
    child = darts.mutate(jax.random.key(4), archs[0], allow_none=True)
    assert int((np.asarray(child) != archs[0]).sum()) == 1


# --- NDS ---------------------------------------------------------------------------------------------------


def _fixture_records(path: Path) -> list[dict]:
    obj = json.loads(path.read_text())
    return obj["top"] + obj["mid"] if isinstance(obj, dict) else obj


@pytest.mark.parametrize(
    "name, family, dataset, num_nodes",
    [
        ("DARTS.json", "DARTS", "cifar10", 4),
        ("Amoeba_in.json", "Amoeba", "imagenet", 5),
        ("ENAS_fix-w-d.json", "ENAS", "cifar10", 5),
        ("NASNet.json", "NASNet", "cifar10", 5),
        ("PNAS.json", "PNAS", "cifar10", 5),
    ],
)
def test_nds_loader_reads_every_family(name, family, dataset, num_nodes):
    path = FIXTURES / name
    space = nds.load_nds(path)
    records = _fixture_records(path)
    n = len(records)
    assert (space.family, space.dataset, space.sweep, space.num_nodes) == (family, dataset, name[:-5], num_nodes)
    assert space.ops == nds.FAMILY_OPS[family] and len(space) == n
    assert space.genotypes.shape == (n, 2, 2 * num_nodes, 2) and space.genotypes.dtype == np.int32
    assert space.concat.shape == (n, 2, num_nodes + 2) and space.concat.dtype == bool
    for i, rec in enumerate(records):
        net = rec["net"]
        assert space.genotype(i) == net["genotype"]  # exact round trip to the JSON form
        for c, cell in enumerate(("normal", "reduce")):
            for e, (op, src) in enumerate(net["genotype"][cell]):
                assert space.ops[space.genotypes[i, c, e, 1]] == op and space.genotypes[i, c, e, 0] == src
        assert (space.width[i], space.depth[i], space.aux[i]) == (net["width"], net["depth"], net["aux"])
        assert space.test_acc[i] == pytest.approx(100 - rec["test_ep_top1"][-1])
        assert space.best_test_acc[i] == pytest.approx(100 - min(rec["test_ep_top1"]))
        np.testing.assert_allclose(space.test_acc_curve[i], 100 - np.asarray(rec["test_ep_top1"]))
        assert space.flops[i] == rec["flops"]
    assert np.isfinite(space.test_acc).all() and (space.best_test_acc >= space.test_acc).all()


def test_nds_darts_family_is_the_darts_encoding():
    space = nds.load_nds(FIXTURES / "DARTS.json")
    records = _fixture_records(FIXTURES / "DARTS.json")
    # Record 0 uses 'none' (id 7 = darts.NONE); the arrays are jzcp.spaces.darts arrays.
    assert space.genotypes[0, 0, 3, 1] == darts.NONE
    for i, rec in enumerate(records):
        np.testing.assert_array_equal(darts.parse_genotype(rec["net"]["genotype"], allow_none=True), space.genotypes[i])
    assert space.concat[:, :, 2:].all() and not space.concat[:, :, :2].any()
    # Record 1 lacks the optional drop_prob and params.
    assert np.isnan(space.drop_prob[1]) and np.isnan(space.params[1]) and np.isfinite(space.params[0])


def test_nds_genotype_helpers():
    rec = _fixture_records(FIXTURES / "NASNet.json")[0]["net"]["genotype"]
    edges, concat = nds.parse_genotype(rec, "NASNet")
    assert nds.format_genotype(edges, concat, nds.NASNET_OPS) == rec
    with pytest.raises(ValueError, match="unknown op 'dil_conv_5x5'"):
        nds.parse_genotype(dict(rec, normal=[["dil_conv_5x5", 0]] + rec["normal"][1:]), "NASNet")
    with pytest.raises(ValueError, match="must list 10"):
        nds.parse_genotype(dict(rec, normal=rec["normal"][:8]), "NASNet")
    with pytest.raises(ValueError, match="distinct states in 0..6"):
        nds.parse_genotype(dict(rec, normal_concat=[2, 7]), "NASNet")
    with pytest.raises(ValueError, match="unknown NDS cell family 'ResNet'"):
        nds.parse_genotype(rec, "ResNet")
    assert nds.sweep_info("PNAS_fix-w-d_in.json") == ("PNAS", "imagenet", "PNAS_fix-w-d_in")


def test_nds_missing_and_corrupt_files_give_clear_errors(tmp_path):
    with pytest.raises(data.DataError, match="not found at .*DARTS.json"):
        nds.load_nds(tmp_path / "DARTS.json")
    assert issubclass(data.DataError, FileNotFoundError)
    with pytest.raises(data.DataError, match="is a directory"):
        nds.load_nds(tmp_path)
    corrupt = tmp_path / "ENAS.json"
    corrupt.write_text((FIXTURES / "ENAS_fix-w-d.json").read_text()[:500])  # truncated
    with pytest.raises(data.DataError, match="ENAS.json.*corrupt or not valid JSON"):
        nds.load_nds(corrupt)
    (tmp_path / "ResNet.json").write_text("[]")
    with pytest.raises(data.DataError, match="AnyNet family without cells"):
        nds.load_nds(tmp_path / "ResNet.json")
    (tmp_path / "Foo.json").write_text("[]")
    with pytest.raises(data.DataError, match="cannot tell the NDS family"):
        nds.load_nds(tmp_path / "Foo.json")
    (tmp_path / "PNAS.json").write_text("[]")
    with pytest.raises(data.DataError, match="non-empty list of records"):
        nds.load_nds(tmp_path / "PNAS.json")

    good = _fixture_records(FIXTURES / "PNAS.json")
    cases = [
        (lambda r: r["net"]["genotype"]["reduce"].__setitem__(0, ["conv_9x9", 0]), "record 1 NDS PNAS genotype reduce edge 0: unknown op"),
        (lambda r: r.pop("test_ep_top1"), "record 1 'test_ep_top1' must be a non-empty list"),
        (lambda r: r["net"].__setitem__("width", "wide"), "record 1 net 'width' must be a positive integer"),
        (lambda r: r["optim"].__setitem__("max_ep", 100), "record 1 'test_ep_top1' has 5 epochs but optim.max_ep is 100"),
        (lambda r: r["net"].pop("genotype"), "record 1 'net' has no 'genotype'"),
    ]
    for k, (spoil, problem) in enumerate(cases):
        recs = json.loads(json.dumps(good))
        spoil(recs[1])
        path = tmp_path / f"case{k}" / "PNAS.json"
        path.parent.mkdir()
        path.write_text(json.dumps(recs))
        with pytest.raises(data.DataError, match=problem):
            nds.load_nds(path)
    # An explicit family overrides the file name.
    path = tmp_path / "renamed.json"
    path.write_text(json.dumps(good))
    assert nds.load_nds(path, family="PNAS").family == "PNAS"
