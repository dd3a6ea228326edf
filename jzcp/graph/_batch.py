"""Batching computation graphs into padded ``jraph.GraphsTuple``s with a few fixed sizes.

A jitted GNN step compiles once per array shape. Padding every batch to the same number of graphs and to
node/edge counts rounded up to a bucket (powers of two for small batches, quarter octaves for large ones:
:func:`bucket_size`) bounds the number of compilations by the number of buckets a dataset's batches fall
into -- a handful -- instead of one per batch.

Layout of a batch (numpy arrays; ``jax.device_put`` or pass to a jitted function as is)::

    nodes   = {"op": (N,) int32 op ids, "features": (N, NUM_FEATURES) float32}   # node_features()
    edges   = None
    globals = {"target": (G,) float32, "index": (G,) int32 item index, "valid": (G,) bool}
    senders, receivers (E,) int32;  n_node, n_edge (G,) int32

``G = num_graphs + 1``: jraph's padding adds one dummy graph holding every padding node and edge; padding
graphs have ``valid == False``, ``op == 0`` and zero features. :func:`padding_masks` gives node/edge/graph
masks inside jit.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import jraph
import numpy as np

from jzcp.graph._types import CompGraph, node_features


def bucket_size(n: int, buckets: Sequence[int] | None = None, minimum: int = 16, steps_per_octave: int = 4,
                granule: int = 512) -> int:
    """Smallest size ``>= n``: the first of ``buckets`` (ascending) that fits, else the smallest multiple of
    ``max(2^e / steps_per_octave, granule)`` (capped at ``2^e``), ``2^e`` the largest power of two below
    ``max(n, minimum)``. With the defaults: powers of two up to 1,024, then 1,536 and 2,048, then quarter
    octaves (``2^e`` times 1, 1.25, 1.5, 1.75). Raises ``ValueError`` if ``n`` exceeds every given bucket.

    Why: padding rows are computed like real ones. A batch of 64 NB201 graphs (~9k nodes) ran on 16k rows with
    powers of two; quarter octaves waste at most 25 % (an NB201 contrastive epoch: 15.8 -> 12.3 ms per graph).
    Small batches are bound by compilation, not compute, so there a few coarse buckets are cheaper."""
    if buckets is not None:
        for b in sorted(buckets):
            if b >= n:
                return int(b)
        raise ValueError(f"size {n} exceeds the largest bucket {max(buckets)}")
    if steps_per_octave < 1 or steps_per_octave & (steps_per_octave - 1):
        raise ValueError(f"steps_per_octave must be a power of two, got {steps_per_octave}")
    n = max(int(n), int(minimum), 1)
    base = 1 << (n - 1).bit_length() - 1 if n > 1 else 1  # largest power of two < n (1 for n = 1)
    step = min(base, max(base // steps_per_octave, int(granule)))
    return -(-n // step) * step


def _assemble(nodes, edges, n_node, n_edge, targets, index) -> jraph.GraphsTuple:
    """Unpadded batch from concatenated attribute rows and graph-local edges."""
    offsets = np.repeat(np.cumsum(np.concatenate([[0], n_node[:-1]])), n_edge)
    g = len(n_node)
    return jraph.GraphsTuple(
        nodes={"op": nodes[:, 0].astype(np.int32), "features": node_features(nodes)},
        edges=None,
        senders=(edges[:, 0] + offsets).astype(np.int32),
        receivers=(edges[:, 1] + offsets).astype(np.int32),
        n_node=np.asarray(n_node, np.int32),
        n_edge=np.asarray(n_edge, np.int32),
        globals={
            "target": np.zeros(g, np.float32) if targets is None else np.asarray(targets, np.float32).reshape(g),
            "index": np.arange(g, dtype=np.int32) if index is None else np.asarray(index, np.int32).reshape(g),
            "valid": np.ones(g, bool),
        },
    )


def pad(graph: jraph.GraphsTuple, num_graphs: int, node_buckets: Sequence[int] | None = None,
        edge_buckets: Sequence[int] | None = None) -> jraph.GraphsTuple:
    """Pad an unpadded batch to ``num_graphs + 1`` graphs and bucketed node/edge counts (at least one
    padding node, as jraph requires)."""
    g = int(graph.n_node.shape[0])
    if g > num_graphs:
        raise ValueError(f"batch holds {g} graphs, more than num_graphs={num_graphs}")
    n_node = bucket_size(int(np.sum(graph.n_node)) + 1, node_buckets)
    n_edge = bucket_size(int(np.sum(graph.n_edge)), edge_buckets)
    return jraph.pad_with_graphs(graph, n_node, n_edge, num_graphs + 1)


def batch_graphs(graphs: Sequence[CompGraph], targets=None, *, num_graphs: int | None = None,
                 node_buckets: Sequence[int] | None = None, edge_buckets: Sequence[int] | None = None,
                 index=None) -> jraph.GraphsTuple:
    """Padded batch of ``graphs`` (see the module docstring); ``targets`` (len(graphs),) go to
    ``globals["target"]``, ``index`` (default ``arange``) to ``globals["index"]``. ``num_graphs`` defaults to
    ``len(graphs)``; fix it (the batch size) so the last, smaller batch has the same shape."""
    if not graphs:
        raise ValueError("batch_graphs needs at least one graph")
    nodes = np.concatenate([g.nodes for g in graphs])
    edges = np.concatenate([np.stack([g.senders, g.receivers], 1) for g in graphs])
    n_node = np.asarray([g.num_nodes for g in graphs])
    n_edge = np.asarray([g.num_edges for g in graphs])
    gt = _assemble(nodes, edges, n_node, n_edge, targets, index)
    return pad(gt, num_graphs or len(graphs), node_buckets, edge_buckets)


def padding_masks(graph: jraph.GraphsTuple):
    """``(node_mask (N,), edge_mask (E,), graph_mask (G,))`` booleans, True for real entries; jittable."""
    return (
        jraph.get_node_padding_mask(graph),
        jraph.get_edge_padding_mask(graph),
        jraph.get_graph_padding_mask(graph),
    )


def graph_ids(graph: jraph.GraphsTuple) -> jnp.ndarray:
    """``(N,)`` int32: the graph each node belongs to (for segment readouts); jittable."""
    n = graph.nodes["op"].shape[0]
    return jnp.repeat(jnp.arange(graph.n_node.shape[0], dtype=jnp.int32), graph.n_node, total_repeat_length=n)
