"""Computation graphs: golden NB201 cells counted by hand, invariance (unreachable branches, isomorphic
cells, node order, memoisation), op recognition on Flax layers, batching and the cached dataset."""
from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import graph as G
from jzcp.networks import layers
from jzcp.networks import nb201 as N

SMALL = N.NB201Config(cells_per_stage=1)  # 3 cells: same cell graph, 5x faster to trace

# A network of identity cells (NB201 with N=1): stem Conv+BN, two reduction blocks
# (ReLU, Conv s2, BN, ReLU, Conv, BN | AvgPool 2x2, Conv 1x1 | Add: 9 nodes, 10 edges counting the two
# leaving the previous node), head BN, ReLU, Mean, MatMul, plus Input and Output.
SKELETON_NODES, SKELETON_EDGES = 1 + 2 + 2 * 9 + 5, 2 + 2 * 10 + 5


def small(ops, **kw):
    return G.nb201_graph(np.asarray(ops), SMALL, **kw)


def preds_of(g: G.CompGraph, v: int) -> list[int]:
    return sorted(g.senders[g.receivers == v].tolist())


# --- golden NB201 cells --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ops, cell_nodes, cell_edges, cell_ops",
    [
        # all conv3x3: 6 x (Conv, BN); one ReLU per cell node read by convs (the three relu(x) of edges
        # leaving node 0 are one op); node 2 and node 3 sums are one Add each. Edges: input->ReLU, 6
        # ReLU->Conv, 6 Conv->BN, BN(e0)->ReLU(n1), 2 into Add(n2), Add(n2)->ReLU(n2), 3 into Add(n3).
        ((3, 3, 3, 3, 3, 3), 17, 20, {"Conv": 6, "BatchNorm": 6, "ReLU": 3, "Add": 2}),
        # skip only (node 3 = node 0): the cell is the identity and adds nothing.
        ((0, 0, 0, 1, 0, 0), 0, 0, {}),
        # unreachable branches: conv1x1 into node 1 and the pool into node 2 never reach node 3.
        ((2, 4, 0, 3, 0, 0), 3, 3, {"ReLU": 1, "Conv": 1, "BatchNorm": 1}),
        # node1 = conv3(x); node2 = x + conv1(node1); node3 = pool(x) + conv3(node2) (none dropped).
        ((3, 1, 2, 4, 0, 3), 12, 14, {"ReLU": 3, "Conv": 3, "BatchNorm": 3, "Add": 2, "AvgPool": 1}),
    ],
)
def test_golden_cells(ops, cell_nodes, cell_edges, cell_ops):
    g = small(ops)
    assert g.num_nodes == SKELETON_NODES + 3 * cell_nodes
    assert g.num_edges == SKELETON_EDGES + 3 * cell_edges
    skeleton = small((0, 0, 0, 1, 0, 0)).op_counts()
    counts = g.op_counts()
    for op in set(counts) | set(skeleton):
        assert counts.get(op, 0) == skeleton.get(op, 0) + 3 * cell_ops.get(op, 0), op


def test_golden_all_none_cell():
    g = small((0,) * 6)  # every cell outputs zeros: the logits do not depend on the image
    assert g.ops == ("Input", "Zero", "Output")
    assert list(zip(g.senders.tolist(), g.receivers.tolist())) == [(0, 1), (1, 2)]
    assert g.nodes[1, G.ATTRS.index("c_out")] == 10  # Zero stands for the constant (B, 10) logits


def test_golden_full_network_all_conv3x3():
    g = G.nb201_graph(np.full(6, 3))
    assert (g.num_nodes, g.num_edges) == (281, 327)  # 26 + 15 * 17, 27 + 15 * 20
    assert g.op_counts() == {"Input": 1, "Output": 1, "Conv": 97, "BatchNorm": 96, "ReLU": 50, "Add": 32,
                             "AvgPool": 2, "Mean": 1, "MatMul": 1}
    a = {name: i for i, name in enumerate(G.ATTRS)}
    # canonical order: node 0 is the Input, the last the Output; edges point forward
    assert g.ops[0] == "Input" and g.ops[-1] == "Output" and np.all(g.senders < g.receivers)
    rows = {tuple(r) for r in g.nodes[:, [a["op"], a["h_in"], a["c_in"], a["h_out"], a["c_out"],
                                          a["kernel_h"], a["stride"]]].tolist()}
    conv = G.OP_INDEX["Conv"]
    assert (conv, 32, 3, 32, 16, 3, 1) in rows  # stem
    assert (conv, 32, 16, 16, 32, 3, 2) in rows  # first reduction, stride 2
    assert (conv, 16, 16, 16, 32, 1, 1) in rows  # its shortcut 1x1 after the 2x2 pool
    assert (G.OP_INDEX["AvgPool"], 32, 16, 16, 16, 2, 2) in rows
    assert (G.OP_INDEX["MatMul"], 1, 64, 1, 10, 0, 0) in rows
    head = g.nodes[g.ops.index("MatMul")]
    assert head[a["bias"]] == 1 and g.nodes[g.ops.index("Conv")][a["bias"]] == 0


def test_cell_structure_edges():
    g = small((3, 1, 2, 4, 0, 3))
    a = {name: i for i, name in enumerate(G.ATTRS)}
    # the first cell's 3x3 pool reads the stem BN and feeds node 3's Add together with a BN
    stem_bn = g.ops.index("BatchNorm")
    pools = [v for v, op in enumerate(g.ops) if op == "AvgPool" and g.nodes[v, a["kernel_h"]] == 3]
    assert len(pools) == 3 and all(g.nodes[v, a["stride"]] == 1 for v in pools)
    first = min(pools, key=lambda v: preds_of(g, v))
    assert preds_of(g, first) == [stem_bn]
    (add,) = g.receivers[g.senders == first].tolist()
    assert g.ops[add] == "Add" and sorted(g.ops[u] for u in preds_of(g, add)) == ["AvgPool", "BatchNorm"]


# --- invariances -----------------------------------------------------------------------------------------------


def test_unreachable_branches_do_not_change_the_graph():
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 5, (80, 6))
    pruned = G.nb201_prune(cells)
    differ = np.flatnonzero(np.any(cells != pruned, axis=1))[:12]
    assert len(differ) >= 8
    for i in differ:
        assert small(cells[i]) == small(pruned[i]), (cells[i], pruned[i])


def test_isomorphic_cells_give_identical_graphs():
    # Without edge 1->2, nodes 1 and 2 play symmetric roles: swapping them permutes the edges.
    rng = np.random.default_rng(1)
    cells = rng.integers(0, 5, (6, 6))
    cells[:, 2] = 0
    for c in cells:
        assert small(c) == small(c[[1, 0, 2, 3, 5, 4]])
    assert small((3, 2, 0, 1, 0, 0)) != small((3, 2, 0, 1, 1, 0))  # and different cells do differ


def test_canonical_form_ignores_node_numbering():
    g = small((3, 1, 2, 4, 0, 3))
    rng = np.random.default_rng(2)
    for _ in range(3):
        perm = rng.permutation(g.num_nodes)  # new index -> old index
        inv = np.argsort(perm)
        shuffled = G.CompGraph(g.nodes[perm], inv[g.senders], inv[g.receivers])
        assert shuffled != g
        assert G.canonicalize(shuffled) == g


def test_memoised_cells_match_plain_tracing():
    for ops in [(3, 1, 2, 4, 0, 3), (0, 3, 4, 2, 1, 1), (1, 1, 1, 1, 1, 1), (0,) * 6]:
        assert small(ops) == small(ops, memo=False)


# --- op recognition on Flax layers --------------------------------------------------------------------------


class ZooNet(nn.Module):
    """One of everything the tracer recognises."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(16, (3, 3), strides=2)(x)
        x = nn.BatchNorm(use_running_average=False)(x)
        x = jax.nn.relu6(x)
        y = nn.Conv(16, (3, 3), feature_group_count=16)(x)  # depthwise
        y = jax.nn.hard_swish(nn.GroupNorm(num_groups=4)(y))
        z = nn.LayerNorm()(nn.Conv(16, (5, 5), kernel_dilation=2, use_bias=False)(x))
        z = z * jax.nn.sigmoid(z)  # swish written out
        w = nn.gelu(nn.Dense(16)(x))  # tanh form, on a 4-D dense
        u = jnp.clip(x, 0.0, 6.0)  # relu6 written as a clip
        s = jnp.mean(x, axis=(1, 2), keepdims=True)  # squeeze-excitation
        s = jax.nn.sigmoid(nn.Dense(16)(nn.relu(nn.Dense(4)(s))))
        t = x * s
        c = jnp.concatenate([y, z, w, u, t], axis=-1)
        c = nn.max_pool(c, (3, 3), strides=(2, 2), padding="SAME")
        c = nn.avg_pool(c, (2, 2), strides=(2, 2))
        c = jnp.tanh(c).reshape(c.shape[0], -1)
        return jax.nn.softmax(nn.Dense(10)(c))


def test_flax_layers_are_recognised():
    net = ZooNet()
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(net.init, jax.random.key(0), x)
    g = G.graph_of_module(net, variables, x, mutable=["batch_stats"])
    assert g.op_counts() == {
        "Input": 1, "Output": 1, "Conv": 2, "Depthwise": 1, "BatchNorm": 1, "LayerNorm": 2, "ReLU6": 2,
        "HSwish": 1, "Swish": 1, "GeLU": 1, "MatMul": 4, "ReLU": 1, "Sigmoid": 1, "Mean": 1, "Mul": 1,
        "Concat": 1, "MaxPool": 1, "AvgPool": 1, "Tanh": 1, "Softmax": 1,
    }
    a = {name: i for i, name in enumerate(G.ATTRS)}
    dw = g.nodes[g.ops.index("Depthwise")]
    assert (dw[a["groups"]], dw[a["kernel_h"]], dw[a["c_in"]]) == (16, 3, 16)
    dil = next(r for r, op in zip(g.nodes, g.ops) if op == "Conv" and r[a["dilation"]] == 2)
    assert dil[a["kernel_h"]] == 5 and dil[a["bias"]] == 0
    concat = g.ops.index("Concat")
    assert g.nodes[concat, a["c_out"]] == 80 and len(preds_of(g, concat)) == 5
    assert g.nodes[g.ops.index("MaxPool"), a["h_out"]] == 8
    # the two ReLU6 (named relu6 and clip) read different tensors: the BN and the BN->ReLU6
    relu6 = [v for v, op in enumerate(g.ops) if op == "ReLU6"]
    assert sorted(g.ops[preds_of(g, v)[0]] for v in relu6) == ["BatchNorm", "ReLU6"]


def test_jzcp_avg_pool_3x3_with_stride_is_one_pool():
    g = G.trace(lambda x: layers.avg_pool_3x3(x, 2), jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32))
    assert g.ops == ("Input", "AvgPool", "Output")
    a = {name: i for i, name in enumerate(G.ATTRS)}
    row = g.nodes[1]
    got = (row[a["kernel_h"]], row[a["kernel_w"]], row[a["stride"]], row[a["h_in"]], row[a["h_out"]])
    assert got == (3, 3, 2, 8, 4)


def test_dead_code_zeros_and_plumbing_are_removed():
    x = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32)
    k = jax.ShapeDtypeStruct((3, 3, 4, 4), jnp.float32)

    def fn(kernel, x):
        unused = jnp.tanh(x) * 2.0  # never reaches the output
        del unused
        y = layers.conv2d(x, kernel)
        y = jnp.transpose(jnp.transpose(y, (0, 3, 1, 2)), (0, 2, 3, 1)) + jnp.zeros_like(y)
        return jax.nn.relu(y) + 0.0 * jnp.exp(x)  # x * 0 is a constant: exp(x) feeds nothing

    g = G.trace(fn, k, x, data_argnums=1)
    assert g.ops == ("Input", "Conv", "ReLU", "Output")
    assert G.trace(lambda x: x * 0.0, x).ops == ("Input", "Zero", "Output")


def test_trace_validates_arguments():
    x = jax.ShapeDtypeStruct((2, 4), jnp.float32)
    with pytest.raises(ValueError, match="data_argnums"):
        G.trace(lambda x: x, x, data_argnums=3)
    with pytest.raises(ValueError, match="NB201 cell"):
        G.nb201_graph([0, 1, 5, 0, 0, 0], SMALL)
    with pytest.raises(ValueError, match="edge endpoints"):
        G.CompGraph(np.zeros((2, G.NUM_ATTRS)), [0], [2])
    with pytest.raises(ValueError, match="unknown op label"):
        G.CompGraph.from_dict({"nodes": [{"op": "Convolution"}], "edges": []})


# --- features, dict form ---------------------------------------------------------------------------------------


def test_features_and_dict_round_trip():
    g = small((3, 1, 2, 4, 0, 3))
    f = g.features()
    assert f.shape == (g.num_nodes, G.NUM_FEATURES) and f.dtype == np.float32
    np.testing.assert_array_equal(f[:, : G.NUM_OPS].sum(1), 1.0)
    np.testing.assert_array_equal(f[:, : G.NUM_OPS].argmax(1), g.nodes[:, 0])
    stem = g.ops.index("Conv")
    np.testing.assert_allclose(f[stem, G.NUM_OPS: G.NUM_OPS + 6], [32 / 256, 32 / 256, 32 / 256, 32 / 256,
                                                                    3 / 512, 16 / 512])
    assert f[stem, G.NUM_OPS + 6 + 2] == 1.0  # kernel bucket 3
    d = g.to_dict()
    assert d["nodes"][stem]["op"] == "Conv" and d["nodes"][stem]["kernel_h"] == 3
    import json

    back = G.CompGraph.from_dict(json.loads(g.to_json()))
    assert back == g and "stem_conv" in back.names[stem]


# --- batching ------------------------------------------------------------------------------------------------------


def test_bucket_sizes():
    # powers of two while small (compile-bound), quarter octaves once large (compute-bound): <= 25 % padding there
    assert [G.bucket_size(n) for n in (1, 16, 17, 1000, 1024, 1025, 1537, 2049, 2561, 9056)] == \
        [16, 16, 32, 1024, 1024, 1536, 2048, 2560, 3072, 10240]
    sizes = [G.bucket_size(n) for n in range(2049, 20000)]
    assert all(n <= s <= 1.25 * n for n, s in zip(range(2049, 20000), sizes))
    assert len(set(s for s in sizes if 4096 <= s < 8192)) == 4  # a few buckets per octave, not one per size
    assert [G.bucket_size(n, granule=4) for n in (17, 21)] == [20, 24]
    assert [G.bucket_size(n, steps_per_octave=1) for n in (1, 16, 17, 1000, 1024, 1025, 3000)] == \
        [16, 16, 32, 1024, 1024, 2048, 4096]
    with pytest.raises(ValueError, match="power of two"):
        G.bucket_size(100, steps_per_octave=3)
    assert G.bucket_size(70, [64, 96, 128]) == 96
    with pytest.raises(ValueError, match="exceeds"):
        G.bucket_size(200, [64, 128])


def test_batch_graphs_pads_to_buckets_and_masks():
    graphs = [small(c) for c in [(3, 1, 2, 4, 0, 3), (0,) * 6, (1, 1, 1, 1, 1, 1)]]
    b = G.batch_graphs(graphs, targets=[0.5, 0.1, 0.9], num_graphs=4)
    total_n = sum(g.num_nodes for g in graphs)
    total_e = sum(g.num_edges for g in graphs)
    assert b.n_node.shape == (5,) and b.nodes["op"].shape == (G.bucket_size(total_n + 1),)
    assert b.senders.shape == (G.bucket_size(total_e),)
    node_mask, edge_mask, graph_mask = jax.jit(G.padding_masks)(b)
    assert int(node_mask.sum()) == total_n and int(edge_mask.sum()) == total_e
    assert graph_mask.tolist() == [True, True, True, False, False] == b.globals["valid"].tolist()
    np.testing.assert_allclose(b.globals["target"][:3], [0.5, 0.1, 0.9])
    # edges are offset into the batch: graph 1 (3 nodes) starts after graph 0
    off = graphs[0].num_nodes
    e0 = graphs[0].num_edges
    np.testing.assert_array_equal(b.senders[e0: e0 + 2], graphs[1].senders + off)
    np.testing.assert_array_equal(np.asarray(G.graph_ids(b))[: total_n],
                                  np.repeat([0, 1, 2], [g.num_nodes for g in graphs]))


def test_padded_batches_compile_once_per_bucket():
    graphs = [small(c) for c in [(3, 1, 2, 4, 0, 3), (1, 1, 1, 1, 1, 1), (0, 3, 4, 2, 1, 1), (2, 2, 2, 2, 2, 2)]]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def readout(batch):
        nodes = batch.nodes["features"].sum(1)
        ids = G.graph_ids(batch)
        return jax.ops.segment_sum(nodes, ids, num_segments=batch.n_node.shape[0])

    buckets = dict(node_buckets=[512], edge_buckets=[512])
    for pair in [(0, 1), (2, 3), (1, 2), (3,)]:  # different totals and a short last batch
        readout(G.batch_graphs([graphs[i] for i in pair], num_graphs=2, **buckets))


# --- dataset ----------------------------------------------------------------------------------------------------------


def test_dataset_dedupes_saves_and_batches(tmp_path):
    cells = np.asarray([(3, 1, 2, 4, 0, 3), (0,) * 6, (1, 0, 0, 0, 0, 0), (3, 1, 2, 4, 0, 3)], np.int32)
    graphs = [small(c) for c in cells]
    ds = G.GraphDataset.from_graphs(graphs, cells, {"what": "test"})
    assert len(ds) == 4 and ds.num_graphs == 2  # equal graphs stored once (two disconnected cells)
    assert all(ds[i] == graphs[i] for i in range(4))
    ds.save(tmp_path / "g.npz")
    back = G.GraphDataset.load(tmp_path / "g.npz")
    assert all(back[i] == graphs[i] for i in range(4)) and back.meta["what"] == "test"
    np.testing.assert_array_equal(back.archs, cells)
    batches = list(back.batches(3, targets=np.arange(4.0)))
    assert len(batches) == 2 and batches[1].globals["valid"].tolist() == [True, False, False, False]
    assert batches[1].globals["index"][0] == 3 and batches[1].globals["target"][0] == 3.0
    np.testing.assert_array_equal(back.num_nodes, [g.num_nodes for g in graphs])


def test_nb201_dataset_is_cached(tmp_path, monkeypatch):
    cells = np.asarray([(3, 1, 2, 4, 0, 3), (2, 4, 0, 3, 0, 0), (0, 0, 0, 3, 0, 0), (0, 3, 4, 2, 1, 1)], np.int32)
    path = tmp_path / "nb201.npz"
    ds = G.nb201_dataset(cells, path, config=SMALL)
    assert ds.meta["traced"] == 3  # cells 1 and 2 are equal once the unreachable branches are pruned
    assert ds.num_graphs == 3 and ds[1] == ds[2] and ds[0] == small(cells[0])

    def fail(*args, **kwargs):
        raise AssertionError("should have loaded the cache")

    monkeypatch.setattr("jzcp.graph._dataset.extract", fail)
    again = G.nb201_dataset(cells, path, config=SMALL)
    assert all(again[i] == ds[i] for i in range(len(cells)))
    with pytest.raises(AssertionError, match="loaded the cache"):  # other cells: rebuilt
        G.nb201_dataset(cells[:2], path, config=SMALL)


def test_load_rejects_other_format_versions(tmp_path, monkeypatch):
    ds = G.GraphDataset.from_graphs([small((1,) * 6)])
    ds.save(tmp_path / "g.npz")
    monkeypatch.setattr("jzcp.graph._dataset.FORMAT_VERSION", G.FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="format version"):
        G.GraphDataset.load(tmp_path / "g.npz")


def test_generic_cached_dataset_rebuilds_on_a_new_key(tmp_path):
    calls = []

    def graph_fn(ops):
        calls.append(tuple(ops))
        return small(ops)

    cells = np.asarray([(1, 1, 1, 1, 1, 1), (0, 3, 4, 2, 1, 1)], np.int32)
    path = tmp_path / "c.npz"
    first = G.GraphDataset.cached(path, cells, graph_fn, key="nb201-small")
    again = G.GraphDataset.cached(path, cells, graph_fn, key="nb201-small")
    assert len(calls) == 2 and again[1] == first[1] == small(cells[1])
    G.GraphDataset.cached(path, cells, graph_fn, key="nb201-small-v2")
    assert len(calls) == 4


@pytest.mark.slow
def test_every_nb201_cell_extracts(tmp_path):
    """All 15,625 cells (~10-15 min): 9,445 distinct pruned cells (the cells without unreachable branches)
    are traced, disconnected cells give the Zero graph, the largest graph is the all-conv3x3 one."""
    from jzcp.spaces import nb201 as space

    ops = np.asarray(space.all_ops())
    ds = G.nb201_dataset(ops, tmp_path / "all.npz", workers=2)
    assert ds.meta["traced"] == 9445
    connected = np.asarray(space.is_connected(ops))
    assert np.all((ds.num_nodes == 3) == ~connected)
    assert ds.num_nodes.max() == 281 and ds.num_nodes[int(np.argmax(ds.num_nodes))] == 281
    assert ds[int(space.encode(np.full(6, 3)))] == G.nb201_graph(np.full(6, 3))
