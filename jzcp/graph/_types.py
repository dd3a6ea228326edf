"""The computation-graph (CG) container, its fixed op vocabulary and its node features.

A :class:`CompGraph` is a DAG of primitive operators: one row of integer attributes per node (:data:`ATTRS`)
and one ``(sender, receiver)`` pair per data-flow edge. It holds integers only, so two graphs compare (and
hash) exactly; :func:`node_features` turns the attributes into the float features a GNN consumes.

The vocabulary follows the CG format of GENNAPE (Mills et al., AAAI 2023; GitHub Ascend-Research/GENNAPE):
the same 26 op labels in the same order after an out-of-vocabulary slot, with four of its five reserved
slots filled by ops JAX networks use (hard-swish, hard-sigmoid, layer/group norm, softmax).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

OPS: tuple[str, ...] = (
    "OOV",  # any primitive not listed (exp, log, gather with data indices, control flow, ...)
    "Input",
    "Output",
    "Conv",
    "Depthwise",  # grouped conv with groups == input channels
    "BatchNorm",  # normalisation with statistics over the batch axis
    "ReLU",  # also leaky ReLU
    "ReLU6",
    "MatMul",  # dense layers and data x data products (dot_general)
    "Add",  # n-ary: chains of adds are one node; sub is an Add too
    "Mul",  # data x data product (SE gating, ...); a product with a constant is folded
    "Concat",
    "MaxPool",
    "AvgPool",
    "Sigmoid",
    "Tanh",
    "Swish",  # x * sigmoid(x), silu
    "GeLU",  # tanh or erf form
    "Paddings",  # unused: padding is folded into the op that consumes it
    "Mean",  # reduce-sum / reduce-mean over any axes (global average pooling)
    "SpaceToBatch",  # unused, kept for GENNAPE index compatibility
    "BatchToSpace",
    "SpaceToDepth",
    "DepthToSpace",
    "Global",  # reduce-max over any axes (global max pooling)
    "Identity",  # unused: identities are removed
    "Zero",  # the network output does not depend on its input (stands alone between Input and Output)
    "HSwish",  # x * relu6(x + 3) / 6
    "HSigmoid",  # relu6(x + 3) / 6
    "LayerNorm",  # normalisation with statistics over non-batch axes (layer / group / instance norm)
    "Softmax",
    "Reserved",
)
NUM_OPS = len(OPS)
OP_INDEX: dict[str, int] = {name: i for i, name in enumerate(OPS)}

# Integer attributes of a node, one column each. Shapes are those of the tensors the node reads and
# writes (see ``shape_hwc`` in ``_trace``); kernel/stride/dilation/groups are 0 for ops that have none.
ATTRS: tuple[str, ...] = (
    "op",
    "h_in",
    "w_in",
    "c_in",
    "h_out",
    "w_out",
    "c_out",
    "kernel_h",
    "kernel_w",
    "stride",
    "dilation",
    "groups",
    "bias",  # 1 if a parameter was added to the op's output (folded bias), else 0
)
NUM_ATTRS = len(ATTRS)
A = {name: i for i, name in enumerate(ATTRS)}

# GENNAPE normalises resolutions and channels by fixed maxima; we use the same constants.
H_SCALE = 256.0
C_SCALE = 512.0
KERNEL_BUCKETS = (1, 2, 3, 5, 7)  # one-hot of max(kernel_h, kernel_w); a 6th slot for any other size
NUM_BASE_FEATURES = NUM_OPS + 6 + len(KERNEL_BUCKETS) + 1 + 4  # GENNAPE-style columns
NUM_FEATURES = NUM_BASE_FEATURES + 3  # plus the cost columns (log MACs, log params, log output size)
_WEIGHTED = ("Conv", "Depthwise")


def node_costs(attrs: np.ndarray) -> np.ndarray:
    """``(N, 3)`` float64 per-node costs from attribute rows: multiply-accumulates, parameters and output
    elements (``h_out * w_out * c_out``) of one example.

    Conv / Depthwise: ``h_out w_out c_out k_h k_w c_in / groups`` MACs and ``k_h k_w c_in c_out / groups``
    weights; MatMul: ``c_in c_out`` per output position (``h_out w_out``), ``c_in c_out`` weights; BatchNorm /
    LayerNorm: ``2 c_out`` parameters (scale, shift); a folded bias adds ``c_out`` parameters. Other ops: none.
    """
    a = np.asarray(attrs, np.int64).reshape(-1, NUM_ATTRS).astype(np.float64)
    op = a[:, A["op"]].astype(np.int64)
    hw_out = a[:, A["h_out"]] * a[:, A["w_out"]]
    c_in, c_out = a[:, A["c_in"]], a[:, A["c_out"]]
    groups = np.maximum(a[:, A["groups"]], 1)
    conv = np.isin(op, [OP_INDEX[o] for o in _WEIGHTED])
    mm = op == OP_INDEX["MatMul"]
    norm = np.isin(op, [OP_INDEX["BatchNorm"], OP_INDEX["LayerNorm"]])
    w_conv = a[:, A["kernel_h"]] * a[:, A["kernel_w"]] * c_in * c_out / groups
    weights = np.where(conv, w_conv, 0.0) + np.where(mm, c_in * c_out, 0.0)
    macs = np.where(conv | mm, weights * np.maximum(hw_out, 1), 0.0)
    params = weights + np.where(norm, 2 * c_out, 0.0) + np.where(a[:, A["bias"]] > 0, c_out, 0.0)
    return np.stack([macs, params, hw_out * c_out], axis=1)


def node_features(attrs: np.ndarray) -> np.ndarray:
    """Float features ``(N, NUM_FEATURES)`` of node attribute rows ``(N, NUM_ATTRS)``.

    Columns: one-hot op (``NUM_OPS``); ``h_in, h_out, w_in, w_out`` / 256 and ``c_in, c_out`` / 512 (GENNAPE's
    order and scales); one-hot of ``max(kernel_h, kernel_w)`` over (1, 2, 3, 5, 7, other), all zero for
    ops without a window; ``log2(stride)``; ``log2(dilation)``; the group fraction
    ``log(groups) / log(c_in)`` (0 dense, 1 depthwise); the bias flag -- these first ``NUM_BASE_FEATURES``
    columns follow GENNAPE. Then the costs of :func:`node_costs`, log-scaled: ``log10(1 + MACs) / 10``,
    ``log10(1 + params) / 8``, ``log10(1 + output elements) / 8`` (all about in [0, 1] for CIFAR / ImageNet
    networks).
    """
    a = np.asarray(attrs, np.int64).reshape(-1, NUM_ATTRS)
    n = a.shape[0]
    out = np.zeros((n, NUM_FEATURES), np.float32)
    out[np.arange(n), a[:, A["op"]]] = 1.0
    col = NUM_OPS
    for name, scale in (("h_in", H_SCALE), ("h_out", H_SCALE), ("w_in", H_SCALE), ("w_out", H_SCALE),
                        ("c_in", C_SCALE), ("c_out", C_SCALE)):
        out[:, col] = a[:, A[name]] / scale
        col += 1
    k = np.maximum(a[:, A["kernel_h"]], a[:, A["kernel_w"]])
    for b in KERNEL_BUCKETS:
        out[:, col] = k == b
        col += 1
    out[:, col] = (k > 0) & ~np.isin(k, KERNEL_BUCKETS)
    col += 1
    out[:, col] = np.log2(np.maximum(a[:, A["stride"]], 1))
    out[:, col + 1] = np.log2(np.maximum(a[:, A["dilation"]], 1))
    groups, c_in = np.maximum(a[:, A["groups"]], 1), a[:, A["c_in"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(c_in > 1, np.log(groups) / np.log(np.maximum(c_in, 2)), 0.0)
    out[:, col + 2] = np.clip(frac, 0.0, 1.0)
    out[:, col + 3] = a[:, A["bias"]] > 0
    cost = np.log10(1.0 + node_costs(a))
    out[:, NUM_BASE_FEATURES:] = cost / np.asarray([10.0, 8.0, 8.0])
    return out


@dataclass(frozen=True, eq=False)
class CompGraph:
    """A computation graph: ``nodes`` ``(N, NUM_ATTRS)`` int32 attribute rows (:data:`ATTRS`), edges
    ``senders``/``receivers`` ``(E,)`` int32 (data flows sender -> receiver).

    Graphs made by :func:`jzcp.graph.trace` are canonical: node 0 is the Input, the last node the Output,
    nodes are in a topological order that depends only on the graph up to isomorphism, and edges are sorted
    by (receiver, sender) without duplicates. ``==`` compares the arrays; ``names`` (the JAX name stack
    and primitives each node came from) is debugging information and takes no part in equality.
    """

    nodes: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    names: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self):
        nodes = np.ascontiguousarray(np.asarray(self.nodes, np.int32).reshape(-1, NUM_ATTRS))
        senders = np.ascontiguousarray(np.asarray(self.senders, np.int32).reshape(-1))
        receivers = np.ascontiguousarray(np.asarray(self.receivers, np.int32).reshape(-1))
        if senders.shape != receivers.shape:
            raise ValueError(f"senders {senders.shape} and receivers {receivers.shape} differ in length")
        n = nodes.shape[0]
        if senders.size and (min(senders.min(), receivers.min()) < 0 or max(senders.max(), receivers.max()) >= n):
            raise ValueError(f"edge endpoints must be node indices in [0, {n})")
        if n and (nodes[:, 0].min() < 0 or nodes[:, 0].max() >= NUM_OPS):
            raise ValueError(f"op ids must lie in [0, {NUM_OPS})")
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "senders", senders)
        object.__setattr__(self, "receivers", receivers)

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.senders.shape[0])

    @property
    def ops(self) -> tuple[str, ...]:
        """Op label of every node."""
        return tuple(OPS[i] for i in self.nodes[:, 0])

    def op_counts(self) -> dict[str, int]:
        """``{label: number of nodes}`` for the labels present."""
        ids, counts = np.unique(self.nodes[:, 0], return_counts=True)
        return {OPS[i]: int(c) for i, c in zip(ids, counts)}

    def features(self) -> np.ndarray:
        """``(N, NUM_FEATURES)`` float32 node features (:func:`node_features`)."""
        return node_features(self.nodes)

    def __eq__(self, other) -> bool:
        if not isinstance(other, CompGraph):
            return NotImplemented
        return (
            np.array_equal(self.nodes, other.nodes)
            and np.array_equal(self.senders, other.senders)
            and np.array_equal(self.receivers, other.receivers)
        )

    def __hash__(self) -> int:
        return hash(self.key())

    def key(self) -> bytes:
        """Bytes identifying the graph exactly (equal graphs, equal keys)."""
        head = np.asarray([self.num_nodes, self.num_edges], np.int32).tobytes()
        return head + self.nodes.tobytes() + self.senders.tobytes() + self.receivers.tobytes()

    # --- debugging form ------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain-Python form (JSON-serialisable): ``{"nodes": [{"op": ..., attrs...}], "edges": [[s, r], ...]}``."""
        nodes = []
        for i, row in enumerate(self.nodes.tolist()):
            d = {"id": i, "op": OPS[row[0]]}
            d.update({name: v for name, v in zip(ATTRS[1:], row[1:])})
            if i < len(self.names) and self.names[i]:
                d["name"] = self.names[i]
            nodes.append(d)
        return {"nodes": nodes, "edges": [[s, r] for s, r in zip(self.senders.tolist(), self.receivers.tolist())]}

    @classmethod
    def from_dict(cls, d: dict) -> "CompGraph":
        """Inverse of :meth:`to_dict`. Raises ``ValueError`` for an unknown op label or a missing attribute."""
        rows, names = [], []
        for node in d["nodes"]:
            if node.get("op") not in OP_INDEX:
                raise ValueError(f"unknown op label {node.get('op')!r}; the vocabulary is {OPS}")
            try:
                rows.append([OP_INDEX[node["op"]]] + [int(node[name]) for name in ATTRS[1:]])
            except KeyError as e:
                raise ValueError(f"node {node} lacks attribute {e}") from None
            names.append(node.get("name", ""))
        edges = np.asarray(d.get("edges", []), np.int32).reshape(-1, 2)
        return cls(np.asarray(rows, np.int32).reshape(-1, NUM_ATTRS), edges[:, 0], edges[:, 1], tuple(names))

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        """One line per node: ``id op in->out [k s d g b] <- inputs``; for reading a graph in a terminal."""
        preds: list[list[int]] = [[] for _ in range(self.num_nodes)]
        for s, r in zip(self.senders.tolist(), self.receivers.tolist()):
            preds[r].append(s)
        lines = []
        for i, row in enumerate(self.nodes.tolist()):
            op, hi, wi, ci, ho, wo, co, kh, kw, st, dl, gr, b = row
            extra = f" k{kh}x{kw} s{st}" + (f" d{dl}" if dl > 1 else "") + (f" g{gr}" if gr > 1 else "") if kh else ""
            extra += " +b" if b else ""
            lines.append(f"{i:4d} {OPS[op]:<10s} {hi}x{wi}x{ci} -> {ho}x{wo}x{co}{extra}  <- {preds[i]}")
        return "\n".join(lines)
