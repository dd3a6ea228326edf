"""Graph datasets: the computation graphs of a whole benchmark, extracted once, cached to ``.npz``.

A :class:`GraphDataset` stores each *distinct* graph once (architectures that compute the same graph -- NB201
cells equal up to unreachable branches or isomorphism -- share it) in flat arrays, plus the item -> graph map
and each item's architecture array. Extraction is Python-bound tracing; ``workers > 1`` spreads it over
processes (spawned, so each has its own JAX).
"""
from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jzcp.graph._batch import _assemble, pad
from jzcp.graph._trace import ModuleMemo, graph_of_module
from jzcp.graph._types import NUM_ATTRS, OPS, CompGraph

# Bump when extraction changes what a graph looks like: caches with another version are rebuilt.
FORMAT_VERSION = 1


@dataclass(eq=False)
class GraphDataset:
    """Distinct graphs in flat arrays and the item -> graph map.

    ``nodes`` (T, NUM_ATTRS) int32 and ``edges`` (TE, 2) int32 (graph-local node indices) concatenate the
    distinct graphs; graph ``u`` owns rows ``node_ptr[u]:node_ptr[u+1]`` and ``edge_ptr[u]:edge_ptr[u+1]``.
    ``graph_of`` (I,) maps item ``i`` to its graph; ``archs`` (I, ...) is the item's architecture (or an empty
    array). ``meta`` is JSON-serialisable provenance (format version, what produced the graphs).
    """

    nodes: np.ndarray
    edges: np.ndarray
    node_ptr: np.ndarray
    edge_ptr: np.ndarray
    graph_of: np.ndarray
    archs: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.nodes = np.asarray(self.nodes, np.int32).reshape(-1, NUM_ATTRS)
        self.edges = np.asarray(self.edges, np.int32).reshape(-1, 2)
        self.node_ptr = np.asarray(self.node_ptr, np.int64)
        self.edge_ptr = np.asarray(self.edge_ptr, np.int64)
        self.graph_of = np.asarray(self.graph_of, np.int64)
        u = len(self.node_ptr) - 1
        if len(self.edge_ptr) != u + 1 or self.node_ptr[-1] != len(self.nodes) or self.edge_ptr[-1] != len(self.edges):
            raise ValueError("GraphDataset pointers do not match the node/edge arrays")
        if self.graph_of.size and (self.graph_of.min() < 0 or self.graph_of.max() >= u):
            raise ValueError(f"graph_of must index the {u} stored graphs")
        if self.archs.size and len(self.archs) != len(self.graph_of):
            raise ValueError(f"{len(self.archs)} archs for {len(self.graph_of)} items")

    # --- construction ----------------------------------------------------------------------------------------

    @classmethod
    def from_graphs(cls, graphs: Sequence[CompGraph], archs=None, meta: dict | None = None) -> "GraphDataset":
        """One item per graph; equal graphs are stored once."""
        unique: dict[bytes, int] = {}
        kept: list[CompGraph] = []
        graph_of = np.empty(len(graphs), np.int64)
        for i, g in enumerate(graphs):
            k = g.key()
            if k not in unique:
                unique[k] = len(kept)
                kept.append(g)
            graph_of[i] = unique[k]
        n_node = np.asarray([g.num_nodes for g in kept], np.int64)
        n_edge = np.asarray([g.num_edges for g in kept], np.int64)
        nodes = np.concatenate([g.nodes for g in kept]) if kept else np.zeros((0, NUM_ATTRS), np.int32)
        edges = (np.concatenate([np.stack([g.senders, g.receivers], 1) for g in kept]) if kept
                 else np.zeros((0, 2), np.int32))
        archs = np.zeros((0,), np.int32) if archs is None else np.asarray(archs)
        return cls(nodes, edges, np.concatenate([[0], np.cumsum(n_node)]), np.concatenate([[0], np.cumsum(n_edge)]),
                   graph_of, archs, {"format_version": FORMAT_VERSION, "ops": list(OPS), **(meta or {})})

    @classmethod
    def build(cls, archs: Sequence, graph_fn: Callable, *, workers: int = 1, chunk: int = 32,
              meta: dict | None = None, progress: bool = False) -> "GraphDataset":
        """Graphs of ``graph_fn(arch)`` for every arch. With ``workers > 1``, ``graph_fn`` and the archs must
        be picklable (a module-level function or a ``functools.partial`` of one)."""
        graphs = extract(archs, graph_fn, workers=workers, chunk=chunk, progress=progress)
        return cls.from_graphs(graphs, np.asarray(archs), meta)

    # --- access ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.graph_of)

    @property
    def num_graphs(self) -> int:
        """Distinct graphs stored."""
        return len(self.node_ptr) - 1

    def stored_graph(self, u: int) -> CompGraph:
        a, b = self.node_ptr[u], self.node_ptr[u + 1]
        c, d = self.edge_ptr[u], self.edge_ptr[u + 1]
        return CompGraph(self.nodes[a:b], self.edges[c:d, 0], self.edges[c:d, 1])

    def __getitem__(self, i: int) -> CompGraph:
        return self.stored_graph(int(self.graph_of[i]))

    @property
    def num_nodes(self) -> np.ndarray:
        """(I,) nodes of each item's graph."""
        return np.diff(self.node_ptr)[self.graph_of]

    @property
    def num_edges(self) -> np.ndarray:
        """(I,) edges of each item's graph."""
        return np.diff(self.edge_ptr)[self.graph_of]

    # --- batching --------------------------------------------------------------------------------------------

    def batch(self, items, targets=None, *, num_graphs: int | None = None, node_buckets=None,
              edge_buckets=None) -> jraph.GraphsTuple:
        """Padded ``GraphsTuple`` of ``items`` (see :mod:`jzcp.graph._batch`); ``globals["index"]`` holds the
        item indices, ``globals["target"]`` the ``targets`` (len(items),)."""
        items = np.asarray(items, np.int64).reshape(-1)
        if not items.size:
            raise ValueError("batch needs at least one item")
        us = self.graph_of[items]
        n_node = np.diff(self.node_ptr)[us]
        n_edge = np.diff(self.edge_ptr)[us]
        node_rows = np.concatenate([np.arange(self.node_ptr[u], self.node_ptr[u + 1]) for u in us])
        edge_rows = np.concatenate([np.arange(self.edge_ptr[u], self.edge_ptr[u + 1]) for u in us])
        gt = _assemble(self.nodes[node_rows], self.edges[edge_rows], n_node, n_edge, targets, items)
        return pad(gt, num_graphs or len(items), node_buckets, edge_buckets)

    def batches(self, batch_size: int, targets=None, *, items=None, shuffle: bool = False, seed: int = 0,
                node_buckets=None, edge_buckets=None) -> Iterator[jraph.GraphsTuple]:
        """Padded batches of ``batch_size`` items (the last one smaller but padded to the same graph count).
        ``targets`` is indexed by item (len(self),); ``items`` restricts to a subset (default all)."""
        items = np.arange(len(self)) if items is None else np.asarray(items, np.int64)
        if shuffle:
            items = np.random.default_rng(seed).permutation(items)
        targets = None if targets is None else np.asarray(targets, np.float32)
        for s in range(0, len(items), batch_size):
            idx = items[s: s + batch_size]
            yield self.batch(idx, None if targets is None else targets[idx], num_graphs=batch_size,
                             node_buckets=node_buckets, edge_buckets=edge_buckets)

    # --- files -----------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write a compressed ``.npz`` (attributes as int16 when they fit: graphs compress ~10x)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        small = self.nodes.size == 0 or (self.nodes.min() >= -32768 and self.nodes.max() < 32768)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp, nodes=self.nodes.astype(np.int16 if small else np.int32), edges=self.edges,
            node_ptr=self.node_ptr, edge_ptr=self.edge_ptr, graph_of=self.graph_of, archs=self.archs,
            meta=np.asarray(json.dumps(self.meta)),
        )
        os.replace(tmp, path)  # never leave a half-written cache behind

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GraphDataset":
        """Read a dataset written by :meth:`save`. Raises ``ValueError`` for another format version."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"{path}: graph format version {meta.get('format_version')} != {FORMAT_VERSION}")
            return cls(z["nodes"], z["edges"], z["node_ptr"], z["edge_ptr"], z["graph_of"], z["archs"], meta)

    @classmethod
    def cached(cls, path: str | os.PathLike | None, archs, graph_fn: Callable, *, key: str, workers: int = 1,
               progress: bool = False) -> "GraphDataset":
        """Load ``path`` if it holds the graphs of exactly these ``archs`` made by the producer named ``key``
        with the current format version; otherwise build them and (if ``path``) save."""
        archs = np.asarray(archs)
        fingerprint = _fingerprint(key, archs)
        if path is not None and Path(path).is_file():
            try:
                ds = cls.load(path)
                if ds.meta.get("fingerprint") == fingerprint:
                    return ds
            except (ValueError, KeyError, OSError):
                pass  # stale or unreadable: rebuild
        t = time.perf_counter()
        graphs = _resumable_extract(path, fingerprint, archs, graph_fn, workers=workers, progress=progress)
        ds = cls.from_graphs(graphs, archs, {"key": key, "fingerprint": fingerprint})
        ds.meta["build_seconds"] = round(time.perf_counter() - t, 2)
        if path is not None:
            ds.save(path)
            _partial_path(path).unlink(missing_ok=True)
        return ds


def _partial_path(path: str | os.PathLike) -> Path:
    return Path(path).with_name(Path(path).name + ".partial.npz")


def _resumable_extract(path, fingerprint: str, archs, graph_fn: Callable, *, workers: int, progress,
                       every_s: float = 60.0) -> list[CompGraph]:
    """:func:`extract` that, with a ``path``, saves the graphs done so far to ``<path>.partial.npz`` about
    every ``every_s`` seconds and resumes from that file (same fingerprint) after an interruption."""
    done: list[CompGraph] = []
    if path is not None and _partial_path(path).is_file():
        try:
            part = GraphDataset.load(_partial_path(path))
            if part.meta.get("fingerprint") == fingerprint:
                done = [part[i] for i in range(len(part))]
        except (ValueError, KeyError, OSError):
            done = []
    if path is None:
        return extract(archs, graph_fn, workers=workers, progress=progress)
    archs = list(archs)
    last = [time.perf_counter()]

    def save(new: list) -> None:
        if time.perf_counter() - last[0] < every_s:
            return
        graphs = done + [CompGraph(*r) for r in new]
        GraphDataset.from_graphs(graphs, meta={"fingerprint": fingerprint, "partial": True}).save(_partial_path(path))
        last[0] = time.perf_counter()

    offset = len(done)
    t0 = time.perf_counter()

    def overall(d, t):  # report overall progress, not just this run's
        _report(d + offset, t + offset, t0, progress)
    prog = overall if progress and offset else progress
    return done + extract(archs[offset:], graph_fn, workers=workers, progress=prog, on_chunk=save)


def _fingerprint(key: str, archs: np.ndarray) -> str:
    h = hashlib.sha1(f"{FORMAT_VERSION}|{key}|{archs.dtype.str}|{archs.shape}".encode())
    h.update(np.ascontiguousarray(archs).tobytes())
    return h.hexdigest()


# --- extraction ------------------------------------------------------------------------------------------------


def _extract_chunk(graph_fn: Callable, archs) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for a in archs:
        g = graph_fn(a)
        out.append((g.nodes, g.senders, g.receivers))
    return out


def extract(archs: Sequence, graph_fn: Callable, *, workers: int = 1, chunk: int = 32,
            progress: bool | Callable = False, on_chunk: Callable | None = None) -> list[CompGraph]:
    """``[graph_fn(a) for a in archs]``, over ``workers`` spawned processes when ``workers > 1``.

    Spawned workers re-import the calling script, so a script using ``workers > 1`` needs the usual
    ``if __name__ == "__main__":`` guard. ``progress``: ``True`` prints a line per finished chunk; a callable
    is called as ``progress(done, total)`` instead (e.g. to drive a tqdm bar). ``on_chunk(results)`` is
    called after every chunk with the ``(nodes, senders, receivers)`` tuples done so far (checkpointing).
    """
    archs = list(archs)
    chunks = [archs[i: i + chunk] for i in range(0, len(archs), chunk)]
    results: list = []
    t0 = time.perf_counter()
    if workers <= 1 or len(chunks) <= 1:
        for c in chunks:
            results.extend(_extract_chunk(graph_fn, c))
            if on_chunk is not None:
                on_chunk(results)
            if progress:
                _report(len(results), len(archs), t0, progress)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for part in pool.map(functools.partial(_extract_chunk, graph_fn), chunks):
                results.extend(part)
                if on_chunk is not None:
                    on_chunk(results)
                if progress:
                    _report(len(results), len(archs), t0, progress)
    return [CompGraph(*r) for r in results]


def _report(done: int, total: int, t0: float, progress=True) -> None:
    if callable(progress):
        progress(done, total)
        return
    dt = time.perf_counter() - t0
    print(f"graphs {done}/{total}  {dt:.0f}s  {dt / max(done, 1):.3f}s/graph", flush=True)


# --- NAS-Bench-201 -----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _nb201_setup(config, image_shape: tuple[int, ...], batch: int):
    from jzcp.networks import nb201 as net

    params = jax.eval_shape(lambda k: net.init(k, config, image_shape), jax.random.key(0))
    x = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
    # Cells are traced once per stage and architecture; the skeleton's reduction blocks once for all.
    # ``output_modules`` only weights a proxy record (MeCo), not an op.
    blocks = tuple(getattr(net, name) for name in ("Cell", "ResidualReduction") if hasattr(net, name))
    memo = ModuleMemo(blocks, ignore_fields=("output_modules",), max_entries=64) if blocks else None
    return net.NB201Network(config), params, x, memo


def nb201_graph(ops, config=None, image_shape: tuple[int, ...] = (32, 32, 3), batch: int = 2,
                memo: bool = True) -> CompGraph:
    """Computation graph of the NB201 network of cell ``ops`` (6,) ints, traced from
    ``NB201Network(config).apply`` with the cell as Python ints (only the cell's own ops are built).

    ``memo`` (default): trace each distinct cell / reduction block once (:class:`ModuleMemo`, shared by all
    calls in this process); the graph is the same either way (tested)."""
    from jzcp.networks.nb201 import NB201Config

    cell = np.asarray(ops)
    if cell.shape != (6,) or not np.issubdtype(cell.dtype, np.integer) or cell.min() < 0 or cell.max() > 4:
        raise ValueError(f"NB201 cell must be 6 integer op ids in [0, 5), got {np.asarray(ops).tolist()}")
    cell = tuple(int(o) for o in cell)
    module, params, x, shared = _nb201_setup(config or NB201Config(), tuple(image_shape), int(batch))
    return graph_of_module(module, params, x, cell, memo=shared if memo else None)


def nb201_prune(ops) -> np.ndarray:
    """``(..., 6)`` cells with every edge that is not on an input -> output path set to ``none``.

    Such edges do not influence the output, so the pruned cell has the same graph (tested); extraction
    traces only the distinct pruned cells.
    """
    from jzcp.spaces import nb201 as space

    ops = np.asarray(ops, np.int32)
    return np.where(np.asarray(space.live_edges(ops)), ops, space.NONE).astype(np.int32)


def nb201_dataset(ops, path: str | os.PathLike | None = None, *, config=None,
                  image_shape: tuple[int, ...] = (32, 32, 3), workers: int = 1,
                  progress: bool = False) -> GraphDataset:
    """Graphs of NB201 cells ``ops`` (I, 6), item ``i`` = cell ``ops[i]``; cached at ``path`` (``.npz``).

    Only distinct pruned cells (:func:`nb201_prune`) are traced: 15,625 cells need ~9.4k traces.
    """
    from jzcp.networks.nb201 import NB201Config

    config = config or NB201Config()
    ops = np.asarray(ops, np.int32).reshape(-1, 6)
    key = f"nb201|{config}|{tuple(image_shape)}"
    fingerprint = _fingerprint(key, ops)
    if path is not None and Path(path).is_file():
        try:
            ds = GraphDataset.load(path)
            if ds.meta.get("fingerprint") == fingerprint:
                return ds
        except (ValueError, KeyError, OSError):
            pass
    pruned = nb201_prune(ops)
    reps, inverse = np.unique(pruned, axis=0, return_inverse=True)
    t = time.perf_counter()
    fn = functools.partial(nb201_graph, config=config, image_shape=tuple(image_shape))
    graphs = _resumable_extract(path, fingerprint, [tuple(r) for r in reps.tolist()], fn, workers=workers,
                                progress=progress)
    rep_ds = GraphDataset.from_graphs(graphs)
    ds = GraphDataset(rep_ds.nodes, rep_ds.edges, rep_ds.node_ptr, rep_ds.edge_ptr,
                      rep_ds.graph_of[inverse.reshape(-1)], ops,
                      {**rep_ds.meta, "key": key, "fingerprint": fingerprint, "traced": len(reps),
                       "build_seconds": round(time.perf_counter() - t, 2)})
    if path is not None:
        ds.save(path)
        _partial_path(path).unlink(missing_ok=True)
    return ds
