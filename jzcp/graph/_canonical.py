"""Canonical node order of a computation graph.

Every node gets a structural digest: a hash of its attributes and of the sorted digests of its
predecessors (computed in topological order, so it summarises everything upstream), likewise downstream,
then one refinement round over both neighbourhoods. The digests depend only on the graph, not on how its
nodes were numbered; nodes are then listed by Kahn's algorithm, always taking the ready node with the
smallest (depth, digest), where depth is the longest path from a source.

Two nodes can share a digest only if their upstream and downstream unfoldings are equal; such ties are
broken by the incoming order. For the DAGs of networks these nodes are interchangeable (an automorphism
swaps them), so the order is canonical: isomorphic graphs give identical arrays. Hashes are blake2b, not
Python's salted ``hash``, so the order is the same in every process.
"""
from __future__ import annotations

import hashlib
import heapq

import numpy as np

from jzcp.graph._types import CompGraph


def _digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p)
    return h.digest()


def topological_order(num_nodes: int, preds: list[list[int]]) -> list[int]:
    """Any topological order (Kahn, smallest index first). Raises ``ValueError`` on a cycle."""
    succs: list[list[int]] = [[] for _ in range(num_nodes)]
    indeg = [0] * num_nodes
    for v, ps in enumerate(preds):
        for u in ps:
            succs[u].append(v)
            indeg[v] += 1
    ready = [v for v in range(num_nodes) if indeg[v] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        u = heapq.heappop(ready)
        order.append(u)
        for v in succs[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(ready, v)
    if len(order) != num_nodes:
        raise ValueError("computation graph has a cycle")
    return order


def canonical_order(rows: np.ndarray, preds: list[list[int]]) -> list[int]:
    """Permutation ``order`` (new position -> old index) of the nodes with attribute ``rows`` (N, A) and
    predecessor lists ``preds`` (duplicates ignored) into the canonical topological order described above."""
    n = len(preds)
    preds = [sorted(set(p)) for p in preds]
    succs: list[list[int]] = [[] for _ in range(n)]
    for v, ps in enumerate(preds):
        for u in ps:
            succs[u].append(v)
    topo = topological_order(n, preds)
    row_bytes = [r.tobytes() for r in np.asarray(rows, np.int64)]

    up: list[bytes] = [b""] * n
    depth = [0] * n
    for v in topo:
        up[v] = _digest(b"u", row_bytes[v], *sorted(up[u] for u in preds[v]))
        depth[v] = 1 + max((depth[u] for u in preds[v]), default=-1)
    down: list[bytes] = [b""] * n
    for v in reversed(topo):
        down[v] = _digest(b"d", row_bytes[v], *sorted(down[w] for w in succs[v]))
    both = [_digest(up[v], down[v]) for v in range(n)]
    key = [
        _digest(both[v], b"p", *sorted(both[u] for u in preds[v]), b"s", *sorted(both[w] for w in succs[v]))
        for v in range(n)
    ]

    indeg = [len(p) for p in preds]
    ready = [(depth[v], key[v], v) for v in range(n) if indeg[v] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, u = heapq.heappop(ready)
        order.append(u)
        for v in succs[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(ready, (depth[v], key[v], v))
    return order


def canonicalize(graph: CompGraph) -> CompGraph:
    """The same graph with nodes in canonical order and edges sorted by (receiver, sender), duplicates
    removed. Graphs from :func:`jzcp.graph.trace` are already canonical; use this for graphs built or
    edited by hand (e.g. augmentations), so that isomorphic graphs compare equal."""
    preds: list[list[int]] = [[] for _ in range(graph.num_nodes)]
    for s, r in zip(graph.senders.tolist(), graph.receivers.tolist()):
        preds[r].append(s)
    order = canonical_order(graph.nodes, preds)
    pos = np.empty(len(order), np.int64)
    pos[order] = np.arange(len(order))
    edges = sorted({(int(pos[s]), int(pos[r])) for s, r in zip(graph.senders.tolist(), graph.receivers.tolist())},
                   key=lambda e: (e[1], e[0]))
    edges = np.asarray(edges, np.int32).reshape(-1, 2)
    names = tuple(graph.names[v] for v in order) if len(graph.names) == graph.num_nodes else ()
    return CompGraph(graph.nodes[order], edges[:, 0], edges[:, 1], names)
