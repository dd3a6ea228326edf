"""Computation graphs (CGs) of JAX/Flax networks, for transferable performance predictors.

Any network function is traced (``jax.make_jaxpr``) and its primitive operators are grouped into the ops of
a fixed vocabulary (conv, depthwise, batch-norm, activations, pools, add, ...) -- no per-space converter: the
NB201 graph is the trace of ``NB201Network.apply`` for one concrete cell. The format follows GENNAPE's CGs
(Mills et al., AAAI 2023), the representation of the transferable predictor of Han et al. (SDM 2023).

* :func:`trace` / :func:`graph_of_module` -- a function / Flax module -> :class:`CompGraph` (canonical
  node order: equal architectures give equal arrays).
* :func:`node_features` -- attributes -> float GNN features (layout in its docstring).
* :func:`batch_graphs`, :func:`padding_masks` -- padded ``jraph.GraphsTuple`` batches with bucketed sizes.
* :class:`GraphDataset`, :func:`nb201_dataset` -- a benchmark's graphs, cached to ``.npz``.
"""
from jzcp.graph._batch import batch_graphs, bucket_size, graph_ids, pad, padding_masks
from jzcp.graph._canonical import canonical_order, canonicalize
from jzcp.graph._dataset import (
    FORMAT_VERSION,
    GraphDataset,
    extract,
    nb201_dataset,
    nb201_graph,
    nb201_prune,
)
from jzcp.graph._trace import ModuleMemo, from_jaxpr, graph_of_module, shape_hwc, skip_flax_param_checks, trace
from jzcp.graph._types import (
    ATTRS,
    NUM_ATTRS,
    NUM_BASE_FEATURES,
    NUM_FEATURES,
    NUM_OPS,
    OP_INDEX,
    OPS,
    CompGraph,
    node_costs,
    node_features,
)

__all__ = [
    "ATTRS", "FORMAT_VERSION", "NUM_ATTRS", "NUM_BASE_FEATURES", "NUM_FEATURES", "NUM_OPS", "OPS", "OP_INDEX", "CompGraph",
    "GraphDataset", "ModuleMemo", "batch_graphs", "bucket_size", "canonical_order", "canonicalize", "extract",
    "from_jaxpr", "graph_ids", "graph_of_module", "nb201_dataset", "nb201_graph", "nb201_prune", "node_costs", "node_features",
    "pad", "padding_masks", "shape_hwc", "skip_flax_param_checks", "trace",
]
