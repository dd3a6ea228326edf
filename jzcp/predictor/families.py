"""Architecture families as computation-graph datasets, built from the benchmark data directory.

A *family* is a search space whose networks exist in :mod:`jzcp.networks`; its architectures are traced into
computation graphs (:func:`jzcp.graph.graph_of_module`, no per-space converter) and cached as ``.npz``
(:class:`jzcp.graph.GraphDataset`, rebuilt when the architectures or the graph format change).

==========  ===========================================================  ==========================================
family      architectures                                                targets (percent)
==========  ===========================================================  ==========================================
``nb101``   the 500 NAS-Bench-Suite-Zero cells (``load_naslib_zc``)     108-epoch validation accuracy (one seed)
``nb201``   all 15,625 cells (``load_nb201``), a seeded random subset   CIFAR-10 ``c10valid_val`` (seed mean)
``nb301``   the 1,218 NAS-Bench-Suite-Zero DARTS cells                  NB301 surrogate accuracy
``macro``   NAS-Bench-Macro, uniformly sampled (6,561 in the space)     none (unlabeled)
``mbv3``    OFA MobileNetV3 sub-networks, uniformly sampled, 224 px     none (unlabeled)
==========  ===========================================================  ==========================================

A family *spec* is ``name`` or ``name:N`` (at most ``N`` architectures: a seeded random subset of a labelled
family, ``N`` samples of an unlabeled one; ``name:all`` for every labelled architecture); several are joined
with commas, e.g. ``"nb101,nb201:2000,macro:500"``. Defaults: all of NB101 / NB301, 2,000 NB201 cells, 500
samples of Macro, 300 of MobileNetV3 (tracing on one core of a busy 2-core CPU: ~0.1-0.2 s per NB201 / Macro
graph, ~0.4 s per MobileNetV3 graph; all 15,625 NB201 cells are 9,445 traces, 29 min).

The graph functions are module-level so that ``workers > 1`` (spawned processes) can pickle them.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

FAMILIES: tuple[str, ...] = ("nb101", "nb201", "nb301", "macro", "mbv3")
LABELLED: tuple[str, ...] = ("nb101", "nb201", "nb301")
DEFAULT_LIMIT: dict[str, int | None] = {"nb101": None, "nb201": 2000, "nb301": None, "macro": 500, "mbv3": 300}
DEFAULT_CACHE = Path("results") / "graphs"


@dataclass
class Family:
    """One family's graphs: item ``i`` is architecture ``archs[i]`` (its string form) with graph
    ``dataset[i]`` and target ``targets[i]`` (``None`` for an unlabeled family)."""

    name: str
    dataset: "object"  # jzcp.graph.GraphDataset (imported lazily)
    targets: np.ndarray | None
    archs: list[str]
    description: str
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labelled(self) -> bool:
        return self.targets is not None

    def graphs(self, distinct: bool = False) -> list:
        """The items' graphs (``distinct``: each stored graph once -- for contrastive pre-training)."""
        from jzcp.predictor.train import graphs_of

        return graphs_of(self.dataset, distinct=distinct)

    def summary(self) -> dict:
        ds = self.dataset
        out = {"family": self.name, "items": len(ds), "distinct_graphs": ds.num_graphs,
               "mean_nodes": round(float(ds.num_nodes.mean()), 1), "max_nodes": int(ds.num_nodes.max()),
               "labelled": self.labelled, "description": self.description}
        if self.labelled:
            out["target_mean"] = round(float(np.mean(self.targets)), 3)
            out["target_std"] = round(float(np.std(self.targets)), 3)
        return out


def parse_spec(spec: str) -> list[tuple[str, int | None]]:
    """``"nb101,nb201:2000"`` -> ``[("nb101", None), ("nb201", 2000)]`` (``None``: the family's default,
    ``-1``: all). ``ValueError`` for an unknown family or a bad count."""
    out = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        name, _, count = part.partition(":")
        name = name.strip().lower()
        if name not in FAMILIES:
            raise ValueError(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}")
        if not count:
            out.append((name, None))
        elif count.strip().lower() == "all":
            if name not in LABELLED:
                raise ValueError(f"{name}: 'all' is only for labelled families; give a sample size")
            out.append((name, -1))
        else:
            try:
                n = int(count)
            except ValueError:
                raise ValueError(f"family spec {part!r}: expected {name}:N with an integer N") from None
            if n < 1:
                raise ValueError(f"family spec {part!r}: N must be >= 1")
            out.append((name, n))
    if not out:
        raise ValueError("empty family spec")
    if len({n for n, _ in out}) != len(out):
        raise ValueError(f"family spec {spec!r} names a family twice")
    return out


# --- graph functions (module level: picklable) -------------------------------------------------------------


def _abstract(tree):
    import jax

    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), tree)


@functools.lru_cache(maxsize=1)
def _nb101_setup():
    import jax
    import jax.numpy as jnp

    from jzcp.networks import nb101

    cfg = nb101.NB101Config()
    return nb101.NB101Network(cfg), _abstract(nb101._param_shapes(cfg, (32, 32, 3))), \
        jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)


def nb101_graph(naslib_tuple):
    """Graph of an NB101 cell given as a NASLib flat tuple (``n*n`` adjacency + ``n`` NASLib op ids)."""
    import jzcp.graph as G
    from jzcp.networks import nb101
    from jzcp.spaces import nb101 as space

    module, params, x = _nb101_setup()
    arch = nb101.encode(space.parse_naslib(tuple(int(v) for v in naslib_tuple)))
    return G.graph_of_module(module, params, x, np.asarray(arch, np.int32))


def _pad_nb101(archs) -> np.ndarray:
    """NASLib tuples of varying cell size -> one int array (row = length, tuple, -1 padding)."""
    w = max(len(a) for a in archs)
    out = np.full((len(archs), w + 1), -1, np.int32)
    for i, a in enumerate(archs):
        out[i, 0] = len(a)
        out[i, 1:len(a) + 1] = a
    return out


def nb101_graph_padded(row):
    """:func:`nb101_graph` of a row of :func:`_pad_nb101`."""
    return nb101_graph(row[1:row[0] + 1])


@functools.lru_cache(maxsize=1)
def _nb301_setup():
    import jax
    import jax.numpy as jnp

    from jzcp.networks import darts

    cfg = darts.DartsConfig.nb301()
    return darts.DartsNetwork(cfg), _abstract(darts._param_shapes(cfg, (32, 32, 3))), \
        jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)


def nb301_graph(arch):
    """Graph of an NB301 (DARTS) genotype ``(2, 8, 2)`` in NASLib's compact form."""
    import jzcp.graph as G

    module, params, x = _nb301_setup()
    return G.graph_of_module(module, params, x, np.asarray(arch, np.int32).reshape(2, 8, 2))


@functools.lru_cache(maxsize=1)
def _macro_setup():
    import jax
    import jax.numpy as jnp

    from jzcp.networks import macro

    cfg = macro.MacroConfig()
    return macro.MacroNetwork(cfg), _abstract(macro._param_shapes(cfg, (32, 32, 3))), \
        jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)


def macro_graph(arch):
    """Graph of a NAS-Bench-Macro architecture ``(8,)`` op ids (CIFAR-10 network)."""
    import jzcp.graph as G

    module, params, x = _macro_setup()
    return G.graph_of_module(module, params, x, np.asarray(arch, np.int32).reshape(8))


@functools.lru_cache(maxsize=1)
def _mbv3_setup():
    import jax
    import jax.numpy as jnp

    from jzcp.networks import mobilenetv3 as net

    cfg = net.MobileNetV3NetConfig()
    return net.MobileNetV3Network(cfg), _abstract(net._param_shapes(cfg)), \
        jax.ShapeDtypeStruct((2, *cfg.image_shape), jnp.float32)


def mbv3_graph(flat):
    """Graph of an OFA MobileNetV3 sub-network given flat ``(45,)`` (``ks``, ``e``, ``d``), 224 px input."""
    import jzcp.graph as G
    from jzcp.spaces import mobilenetv3 as space

    module, params, x = _mbv3_setup()
    arch = space.Arch(*(np.asarray(a) for a in space.unflatten(np.asarray(flat, np.int32))))
    return G.graph_of_module(module, params, x, arch)


# --- loading ------------------------------------------------------------------------------------------------


def _subset(n_total: int, limit: int | None, seed: int) -> np.ndarray | None:
    """Sorted seeded random subset of ``range(n_total)`` of size ``limit`` (``None`` = all)."""
    if limit is None or limit < 0 or limit >= n_total:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_total, limit, replace=False))


def _cache_path(cache_dir, name: str) -> Path | None:
    return None if cache_dir is None else Path(cache_dir) / name


def load_family(name: str, limit: int | None = None, *, seed: int = 0,
                cache_dir: str | Path | None = DEFAULT_CACHE, data_dir=None, workers: int = 1,
                progress: bool | Callable = False) -> Family:
    """Trace (or load from ``cache_dir``) the graphs of one family; see the module docstring.

    ``limit``: ``None`` the family default (:data:`DEFAULT_LIMIT`), ``-1`` all (labelled families), else at
    most ``limit`` architectures. ``seed`` picks the subset / the samples. ``progress``: print a line per
    traced chunk, or a callable ``(done, total)``. Raises ``DataError`` when the benchmark file is missing."""
    import jax

    import jzcp.graph as G
    from jzcp import data

    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}")
    if limit is None:
        limit = DEFAULT_LIMIT[name]
    kw = dict(workers=workers, progress=progress)
    if name == "nb201":
        from jzcp.spaces import nb201 as space

        gt = data.load_nb201(data_dir)
        sub = _subset(len(gt), limit, seed)
        items = np.arange(len(gt)) if sub is None else sub
        suffix = "" if sub is None else f"_sub{len(items)}_seed{seed}"
        ds = G.nb201_dataset(gt.op_idx[items], _cache_path(cache_dir, f"nb201_c10{suffix}.npz"), **kw)
        archs = [space.format(o) for o in np.asarray(gt.op_idx[items])]
        return Family(name, ds, np.asarray(gt.target("c10valid_val")[items], np.float64), archs,
                      f"NB201 CIFAR-10 c10valid_val, {len(items)} of {len(gt)} cells (seed {seed})",
                      {"items": items.tolist() if sub is not None else "all"})
    if name in ("nb101", "nb301"):
        zc = data.load_naslib_zc(name, "cifar10", data_dir=data_dir)
        sub = _subset(len(zc), limit, seed)
        items = np.arange(len(zc)) if sub is None else sub
        full = f"naslib{len(zc)}"
        fname = f"{name}_{full}" + ("" if sub is None else f"_sub{len(items)}_seed{seed}") + ".npz"
        if name == "nb101":
            arrs = _pad_nb101([tuple(zc.archs[i]) for i in items])
            ds = G.GraphDataset.cached(_cache_path(cache_dir, fname), arrs, nb101_graph_padded,
                                       key=f"nb101|{full}|NB101Config()", **kw)
            archs = [json.dumps(list(int(v) for v in zc.archs[i])) for i in items]
            desc = f"NB101 {len(items)} NAS-Bench-Suite-Zero cells, 108-epoch val accuracy"
        else:
            arrs = np.stack([np.asarray(zc.archs[i], np.int32) for i in items])
            ds = G.GraphDataset.cached(_cache_path(cache_dir, fname), arrs, nb301_graph,
                                       key=f"nb301|{full}|DartsConfig.nb301()", **kw)
            archs = [json.dumps(np.asarray(zc.archs[i]).tolist()) for i in items]
            desc = f"NB301 {len(items)} NAS-Bench-Suite-Zero DARTS cells, surrogate accuracy"
        return Family(name, ds, np.asarray(zc.val_accuracy, np.float64)[items], archs, desc,
                      {"items": items.tolist() if sub is not None else "all"})
    # unlabeled families: uniform samples of the space
    if limit is None or limit < 1:
        raise ValueError(f"{name} is unlabeled: give a sample size ({name}:N)")
    key = jax.random.fold_in(jax.random.key(seed), FAMILIES.index(name))
    if name == "macro":
        from jzcp.spaces import macro as space

        arrs = np.unique(np.asarray(space.sample(key, limit)), axis=0)  # distinct archs, sorted
        ds = G.GraphDataset.cached(_cache_path(cache_dir, f"macro_sample{limit}_seed{seed}.npz"), arrs, macro_graph,
                                   key="macro|MacroConfig()", **kw)
        archs = [space.format(a) for a in arrs]
        return Family(name, ds, None, archs, f"NAS-Bench-Macro, {len(arrs)} distinct uniform samples (seed {seed})")
    from jzcp.spaces import mobilenetv3 as space

    arrs = np.asarray(space.flatten(space.canonicalize(space.sample(key, limit))))
    arrs = np.unique(arrs, axis=0)
    ds = G.GraphDataset.cached(_cache_path(cache_dir, f"mbv3_sample{limit}_seed{seed}.npz"), arrs, mbv3_graph,
                               key="mbv3|MobileNetV3NetConfig()", **kw)
    archs = [space.to_string(space.unflatten(a)) for a in arrs]
    return Family(name, ds, None, archs, f"OFA MobileNetV3 (224 px), {len(arrs)} distinct uniform samples (seed {seed})")


def load_families(spec: str, **kw) -> dict[str, Family]:
    """:func:`load_family` for every entry of a spec string (``"nb101,nb201:500"``), in order."""
    return {name: load_family(name, limit, **kw) for name, limit in parse_spec(spec)}


def standardise_per_family(families: dict[str, Family] | list[Family]) -> tuple[list, np.ndarray, np.ndarray]:
    """Graphs and targets of labelled families with each family's targets z-scored separately (families
    differ in accuracy scale: NB101 73-95 %, NB301 91-95 %); returns ``(graphs, targets, groups)`` with
    ``groups`` the family index of each graph (for ``FitConfig(adapt=True)``)."""
    fams = list(families.values()) if isinstance(families, dict) else list(families)
    graphs, ys, gs = [], [], []
    for k, f in enumerate(fams):
        if not f.labelled:
            raise ValueError(f"family {f.name} has no targets")
        y = np.asarray(f.targets, np.float64)
        graphs.extend(f.graphs())
        ys.append((y - y.mean()) / (y.std() or 1.0))
        gs.append(np.full(len(y), k, np.int32))
    return graphs, np.concatenate(ys), np.concatenate(gs)
