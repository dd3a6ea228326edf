"""GNN encoder over computation graphs (jraph ``GraphsTuple``) with a contrastive and a regression head.

Template: flax ``examples/ogbg_molpcba`` (pure Linen modules, the graph as a ``GraphsTuple``). Message
passing is written on ``jax.ops.segment_sum`` directly -- jraph's padding helpers that call the removed
``jax.tree_map`` are never used.

Input batch (see :mod:`jzcp.graph._batch`): ``nodes["features"]`` ``(N, F)`` float32 (the op one-hot is in
its first ``NUM_OPS`` columns, so ``nodes["op"]`` is not read), ``senders``/``receivers`` ``(E,)`` int32,
``n_node``/``n_edge`` ``(G,)``, ``globals["valid"]`` ``(G,)`` bool. Padding (jraph's dummy graph) only
ever connects padding nodes to padding nodes, so messages never reach real nodes; the readout masks the
padding nodes out. Hence embeddings of real graphs do not depend on the amount of padding (tested).

Layers (``EncoderConfig.layer``):

* ``"graphconv"`` -- the k-GNN layer of Morris et al. (AAAI 2019) that GENNAPE stacks six of:
  ``h_i' = act(W_self h_i + W_in sum_{j->i} h_j [+ W_out sum_{i->k} h_k])``;
* ``"gin"`` -- GIN (Xu et al., ICLR 2019): ``h_i' = MLP((1 + eps) h_i + sum_{j->i} h_j [+ out-sum])``;
* ``"gat"`` -- single-head GAT (Velickovic et al., ICLR 2018) with a softmax over each node's in-edges
  plus a self loop (segment max/sum), out-edges as a second attention when ``bidirectional``.

Readout (``EncoderConfig.readout``): ``mean`` (GENNAPE), ``sum`` or ``mean+sum``; the sum keeps how much
computation a graph holds, which the mean normalises away (measured effect: README, predictor section).
``features="cost"`` adds each node's log MACs / parameters / output size to GENNAPE's features
(:func:`jzcp.graph.node_costs`); ``graph_features`` feeds log totals of MACs / parameters / nodes to the
regression head (not to the contrastive projection).

``bidirectional=True`` (default) adds a separately weighted aggregation over successors: CGs are DAGs
and a purely forward pass lets the Output node see everything but the Input node nothing; GENNAPE uses
PyG's forward-only GraphConv (``bidirectional=False`` reproduces that). An optional ``edge_weight``
``(E,)`` in ``[0, 1]`` scales every message (0 = the edge is dropped; the edge-drop augmentation uses it so
that augmented batches keep their shapes and compile once).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from jzcp.graph._types import NUM_BASE_FEATURES

ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu}
LAYERS = ("graphconv", "gin", "gat")
READOUTS = ("mean", "sum", "mean+sum")
FEATURE_SETS = ("base", "cost")
SUM_SCALE = 1.0 / 64.0  # sum readout scale: graphs have ~30-300 nodes, keeps it near the mean's magnitude


@dataclass(frozen=True)
class EncoderConfig:
    """Encoder hyper-parameters. Defaults follow GENNAPE (6 GraphConv layers, hidden 32, tanh) with a wider
    hidden size (64) and a residual connection, which trained more stably in the contrastive stage."""

    layer: str = "graphconv"
    hidden: int = 64
    num_layers: int = 6
    activation: str = "tanh"
    bidirectional: bool = True
    residual: bool = True
    layer_norm: bool = True  # per node: keeps padding invariance (no statistics across nodes)
    proj_dim: int = 32  # contrastive projection output
    head_hidden: int = 64
    readout: str = "mean"  # "mean", "sum" (times SUM_SCALE) or "mean+sum" (concatenated)
    features: str = "base"  # "base": GENNAPE-style node features; "cost": plus log MACs / params / size per node
    graph_features: bool = False  # regression head also reads log total MACs / params / nodes of the graph

    @property
    def embed_dim(self) -> int:
        """Width of the embedding the regression head reads: the readout (``2 * hidden`` for ``mean+sum``)
        plus 3 graph features if ``graph_features``."""
        return (2 * self.hidden if self.readout == "mean+sum" else self.hidden) + (3 if self.graph_features else 0)

    def __post_init__(self):
        if self.layer not in LAYERS:
            raise ValueError(f"unknown layer {self.layer!r}; choose one of {LAYERS}")
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; choose one of {READOUTS}")
        if self.features not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {self.features!r}; choose one of {FEATURE_SETS}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of {tuple(ACTIVATIONS)}")
        if self.hidden < 1 or self.num_layers < 1 or self.proj_dim < 1 or self.head_hidden < 1:
            raise ValueError("hidden, num_layers, proj_dim and head_hidden must be positive")


def node_graph_ids(graph: jraph.GraphsTuple) -> jax.Array:
    """``(N,)`` int32: the graph each node belongs to (padding nodes belong to the last, dummy graph)."""
    n = graph.nodes["features"].shape[0]
    g = graph.n_node.shape[0]
    return jnp.repeat(jnp.arange(g, dtype=jnp.int32), graph.n_node, total_repeat_length=n)


def node_mask(graph: jraph.GraphsTuple) -> jax.Array:
    """``(N,)`` bool, True for nodes of valid (non-padding) graphs."""
    return graph.globals["valid"][node_graph_ids(graph)]


def _aggregate(h, senders, receivers, weight, n, reverse: bool = False):
    """Sum of (weighted) neighbour states: predecessors by default, successors if ``reverse``."""
    src, dst = (receivers, senders) if reverse else (senders, receivers)
    msg = h[src] if weight is None else h[src] * weight[:, None]
    return jax.ops.segment_sum(msg, dst, num_segments=n)


def _segment_softmax(logits, segments, n):
    """Softmax of ``logits`` (E,) within each segment (max-subtracted, empty segments give no NaN)."""
    mx = jax.ops.segment_max(logits, segments, num_segments=n)
    mx = jnp.where(jnp.isfinite(mx), mx, 0.0)
    e = jnp.exp(logits - mx[segments])
    return e / (jax.ops.segment_sum(e, segments, num_segments=n)[segments] + 1e-16)


class GraphConvLayer(nn.Module):
    hidden: int
    bidirectional: bool

    @nn.compact
    def __call__(self, h, senders, receivers, weight):
        n = h.shape[0]
        out = nn.Dense(self.hidden, name="self")(h)
        out = out + nn.Dense(self.hidden, use_bias=False, name="in")(_aggregate(h, senders, receivers, weight, n))
        if self.bidirectional:
            out = out + nn.Dense(self.hidden, use_bias=False, name="out")(
                _aggregate(h, senders, receivers, weight, n, reverse=True))
        return out


class GINLayer(nn.Module):
    hidden: int
    bidirectional: bool

    @nn.compact
    def __call__(self, h, senders, receivers, weight):
        n = h.shape[0]
        eps = self.param("eps", nn.initializers.zeros, ())
        agg = (1.0 + eps) * h + _aggregate(h, senders, receivers, weight, n)
        if self.bidirectional:
            agg = jnp.concatenate([agg, _aggregate(h, senders, receivers, weight, n, reverse=True)], -1)
        return nn.Dense(self.hidden)(nn.relu(nn.Dense(self.hidden)(agg)))


class GATLayer(nn.Module):
    hidden: int
    bidirectional: bool

    def _attend(self, z, src, dst, weight, n, name):
        a_src = nn.Dense(1, use_bias=False, name=f"{name}_src")(z)[:, 0]
        a_dst = nn.Dense(1, use_bias=False, name=f"{name}_dst")(z)[:, 0]
        # Self loops so that every node (the Input too) attends to something.
        idx = jnp.arange(n, dtype=src.dtype)
        src_all, dst_all = jnp.concatenate([src, idx]), jnp.concatenate([dst, idx])
        logits = nn.leaky_relu(a_src[src_all] + a_dst[dst_all], 0.2)
        if weight is not None:  # a dropped edge gets zero attention
            w = jnp.concatenate([weight, jnp.ones((n,), weight.dtype)])
            logits = jnp.where(w > 0, logits, -1e9)
        alpha = _segment_softmax(logits, dst_all, n)
        return jax.ops.segment_sum(z[src_all] * alpha[:, None], dst_all, num_segments=n)

    @nn.compact
    def __call__(self, h, senders, receivers, weight):
        n = h.shape[0]
        z = nn.Dense(self.hidden, name="proj")(h)
        out = self._attend(z, senders, receivers, weight, n, "in")
        if self.bidirectional:
            out = out + self._attend(nn.Dense(self.hidden, name="proj_out")(h), receivers, senders, weight, n, "out")
        return out


_LAYER_CLS = {"graphconv": GraphConvLayer, "gin": GINLayer, "gat": GATLayer}


class GraphEncoder(nn.Module):
    """``GraphsTuple`` -> graph embeddings ``(G, D)``: the readout of the final node states over each graph's
    nodes, ``D = hidden`` (``mean`` / ``sum``) or ``2 * hidden`` (``mean+sum``); rows of padding graphs are
    zero. ``features="base"`` reads only the first ``NUM_BASE_FEATURES`` columns of the node features."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, edge_weight: Optional[jax.Array] = None,
                 features: Optional[jax.Array] = None) -> jax.Array:
        cfg = self.config
        act = ACTIVATIONS[cfg.activation]
        x = graph.nodes["features"] if features is None else features
        if cfg.features == "base":
            x = x[:, :NUM_BASE_FEATURES]
        g = graph.n_node.shape[0]
        h = act(nn.Dense(cfg.hidden, name="embed")(x))
        for i in range(cfg.num_layers):
            upd = _LAYER_CLS[cfg.layer](cfg.hidden, cfg.bidirectional, name=f"layer{i}")(
                h, graph.senders, graph.receivers, edge_weight)
            upd = act(upd)
            h = h + upd if cfg.residual else upd
            if cfg.layer_norm:
                h = nn.LayerNorm(name=f"norm{i}")(h)
        gid = node_graph_ids(graph)
        mask = graph.globals["valid"][gid].astype(h.dtype)
        total = jax.ops.segment_sum(h * mask[:, None], gid, num_segments=g)
        count = jax.ops.segment_sum(mask, gid, num_segments=g)
        mean = total / jnp.maximum(count, 1.0)[:, None]
        if cfg.readout == "mean":
            return mean
        if cfg.readout == "sum":
            return total * SUM_SCALE
        return jnp.concatenate([mean, total * SUM_SCALE], axis=-1)


def graph_cost_features(graph: jraph.GraphsTuple) -> jax.Array:
    """``(G, 3)`` graph-level features from the node cost columns (:func:`jzcp.graph.node_features`):
    ``log10(1 + total MACs) / 10``, ``log10(1 + total params) / 8``, ``log10(nodes) / 3`` (zero rows for
    padding graphs). Read from the un-augmented features."""
    x = graph.nodes["features"][:, NUM_BASE_FEATURES:NUM_BASE_FEATURES + 2]
    raw = jnp.power(10.0, x * jnp.asarray([10.0, 8.0], x.dtype)) - 1.0
    gid = node_graph_ids(graph)
    g = graph.n_node.shape[0]
    valid = graph.globals["valid"]
    mask = valid[gid].astype(x.dtype)
    tot = jax.ops.segment_sum(raw * mask[:, None], gid, num_segments=g)
    cnt = jax.ops.segment_sum(mask, gid, num_segments=g)
    out = jnp.stack([jnp.log10(1.0 + tot[:, 0]) / 10.0, jnp.log10(1.0 + tot[:, 1]) / 8.0,
                     jnp.log10(jnp.maximum(cnt, 1.0)) / 3.0], axis=-1)
    return jnp.where(valid[:, None], out, 0.0)


class MLP(nn.Module):
    hidden: int
    out: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.out)(nn.relu(nn.Dense(self.hidden)(x)))


class Predictor(nn.Module):
    """Encoder plus both heads. ``__call__`` returns ``(embedding (G, embed_dim), projection (G, proj_dim),
    prediction (G,))``; use ``method=`` :meth:`embed` / :meth:`project` / :meth:`predict` for one of them
    (all three are created at init)."""

    config: EncoderConfig

    def setup(self):
        self.encoder = GraphEncoder(self.config)
        self.proj_head = MLP(self.config.head_hidden, self.config.proj_dim)
        self.reg_head = MLP(self.config.head_hidden, 1)

    def _with_graph_features(self, e, graph):
        return jnp.concatenate([e, graph_cost_features(graph)], -1) if self.config.graph_features else e

    def __call__(self, graph, edge_weight=None, features=None):
        e = self.encoder(graph, edge_weight, features)
        h = self._with_graph_features(e, graph)
        return h, self.proj_head(e), self.reg_head(h)[:, 0]

    def embed(self, graph, edge_weight=None, features=None):
        """What the regression head reads: ``(G, config.embed_dim)``."""
        return self._with_graph_features(self.encoder(graph, edge_weight, features), graph)

    def project(self, graph, edge_weight=None, features=None):
        """Contrastive projection of the readout (graph features are not contrasted)."""
        return self.proj_head(self.encoder(graph, edge_weight, features))

    def predict(self, graph):
        return self.reg_head(self.embed(graph))[:, 0]

    def head(self, embedding):
        """Regression head on precomputed embeddings ``(G, embed_dim)`` -> ``(G,)``."""
        return self.reg_head(embedding)[:, 0]
