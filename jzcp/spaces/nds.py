"""NDS ("On Network Design Spaces for Visual Recognition", Radosavovic et al., ICCV 2019): cell-based families.

The NDS release (``data.zip`` of facebookresearch/nds, models trained with pycls) has one JSON file per sweep,
named ``<Family>[_<variant>][_in].json`` -- e.g. ``DARTS.json``, ``DARTS_fix-w-d.json``, ``ENAS_in.json``
(``_in``: ImageNet, otherwise CIFAR-10). A file holds a list of records, or ``{"top": [...], "mid": [...]}``
(read as top then mid). A record of a cell-based family looks like::

    {"net": {"genotype": {"normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5],
                          "reduce": [...], "reduce_concat": [...]},
             "width": 16, "depth": 20, "aux": false, "drop_prob": 0.0},
     "optim": {"max_ep": 100, ...}, "params": 512346, "flops": 83154624,
     "test_ep_top1": [error % per epoch], "train_ep_top1": [...], ...}

``width`` is the channel count C of the first cells, ``depth`` the number of cells (reductions at
``depth // 3`` and ``2 * depth // 3``), ``aux`` the auxiliary head. ``test_ep_top1`` is top-1 *error* in percent;
the accuracy NDS users report (EZNAS, NASWOT) is ``100 - test_ep_top1[-1]``.

Families and their op vocabularies (pycls ``pycls/models/nas/genotypes.py`` / ``operations.py``): DARTS (4
intermediate nodes, 8 edges per cell), Amoeba, ENAS, NASNet, PNAS (5 nodes, 10 edges). Op ids index
:data:`FAMILY_OPS` -- pycls's list order, except DARTS, which uses :data:`jzcp.spaces.darts.OPS_WITH_NONE`
(NASLib's order plus ``none`` = 7) so that an NDS DARTS genotype array is directly a
:mod:`jzcp.spaces.darts` array. Unlike DARTS, the other families concatenate only some states (the "loose
ends"), kept here as a mask.
"""
from __future__ import annotations

import gzip
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jzcp.data import DataError
from jzcp.spaces import darts

# pycls/models/nas/genotypes.py op lists, same order.
NASNET_OPS: tuple[str, ...] = (
    "skip_connect", "conv_3x1_1x3", "conv_7x1_1x7", "dil_conv_3x3", "avg_pool_3x3", "max_pool_3x3", "max_pool_5x5",
    "max_pool_7x7", "conv_1x1", "conv_3x3", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7",
)
ENAS_OPS: tuple[str, ...] = ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")
AMOEBA_OPS: tuple[str, ...] = (
    "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "avg_pool_3x3", "max_pool_3x3",
    "dil_sep_conv_3x3", "conv_7x1_1x7",
)
PNAS_OPS: tuple[str, ...] = (
    "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "conv_7x1_1x7", "skip_connect", "avg_pool_3x3", "max_pool_3x3",
    "dil_conv_3x3",
)
# pycls's DARTS_OPS order, for reference; jzcp's DARTS family uses darts.OPS_WITH_NONE (same set).
PYCLS_DARTS_OPS: tuple[str, ...] = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
    "dil_conv_5x5",
)

FAMILY_OPS: Mapping[str, tuple[str, ...]] = {
    "DARTS": darts.OPS_WITH_NONE,
    "Amoeba": AMOEBA_OPS,
    "ENAS": ENAS_OPS,
    "NASNet": NASNET_OPS,
    "PNAS": PNAS_OPS,
}
FAMILY_NODES: Mapping[str, int] = {"DARTS": 4, "Amoeba": 5, "ENAS": 5, "NASNet": 5, "PNAS": 5}
FAMILIES: tuple[str, ...] = tuple(FAMILY_OPS)
# NDS sweeps without cells (AnyNet: ResNet, ResNeXt-A/B, Vanilla) are not handled here.
_NON_CELL = ("ResNet", "ResNet-B", "ResNeXt-A", "ResNeXt-B", "Vanilla")


@dataclass(frozen=True, eq=False)
class NDSSpace:
    """The models of one NDS sweep file of a cell-based family (N records, in file order).

    Attributes:
        family: ``DARTS`` | ``Amoeba`` | ``ENAS`` | ``NASNet`` | ``PNAS``.
        dataset: ``cifar10`` or ``imagenet`` (file name ends in ``_in``).
        sweep: the file's stem, e.g. ``DARTS_fix-w-d``.
        ops: op vocabulary; op ids index it (see the module docstring).
        num_nodes: intermediate nodes per cell (4 for DARTS, 5 otherwise); states are 0, 1 (cell inputs
            ``c_{k-2}``, ``c_{k-1}``) and ``2 .. num_nodes + 1``.
        genotypes: ``(N, 2, 2 * num_nodes, 2)`` int32 = [normal / reduce][edge][input state, op id]; edges
            ``2k, 2k + 1`` feed state ``k + 2`` (the genotype list order).
        concat: ``(N, 2, num_nodes + 2)`` bool, the states concatenated into each cell's output.
        width: ``(N,)`` int32 channels C of the first cells.  depth: ``(N,)`` int32 number of cells.
        aux: ``(N,)`` bool auxiliary head.  drop_prob: ``(N,)`` float64 drop-path probability (NaN if absent).
        test_acc: ``(N,)`` float64 final top-1 test accuracy in percent, ``100 - test_ep_top1[-1]``.
        best_test_acc: ``(N,)`` float64 ``100 - min(test_ep_top1)``.
        test_acc_curve: ``(N, E)`` float64 per-epoch test accuracy, NaN-padded to the longest run.
        params: ``(N,)`` float64 parameter counts.  flops: ``(N,)`` float64 FLOP counts (pycls counts
            multiply-adds). NaN where a record has none.
        path: the file read.
    """

    family: str
    dataset: str
    sweep: str
    ops: tuple[str, ...]
    num_nodes: int
    genotypes: np.ndarray
    concat: np.ndarray
    width: np.ndarray
    depth: np.ndarray
    aux: np.ndarray
    drop_prob: np.ndarray
    test_acc: np.ndarray
    best_test_acc: np.ndarray
    test_acc_curve: np.ndarray
    params: np.ndarray
    flops: np.ndarray
    path: Path

    def __len__(self) -> int:
        return len(self.genotypes)

    def genotype(self, i: int) -> dict[str, Any]:
        """Record ``i``'s genotype in the file's JSON form (lists of ``[op, input]``, concat lists)."""
        return format_genotype(self.genotypes[i], self.concat[i], self.ops)


def parse_genotype(genotype: Any, family: str) -> tuple[np.ndarray, np.ndarray]:
    """A genotype of ``family`` (JSON dict, DARTS-style string or namedtuple) -> ``(edges, concat)``.

    ``edges`` is ``(2, 2 * num_nodes, 2)`` int32 [cell][edge][input state, op id], ``concat`` ``(2,
    num_nodes + 2)`` bool. ``ValueError`` names an unknown family or op, a wrong edge count, an input that
    reads a later state, or a concat index outside ``0 .. num_nodes + 1`` or repeated.
    """
    if family not in FAMILY_OPS:
        raise ValueError(f"unknown NDS cell family {family!r}; supported: {', '.join(FAMILIES)}")
    n = FAMILY_NODES[family]
    try:
        edges, concats = darts.genotype_cells(genotype, FAMILY_OPS[family], n)
    except ValueError as e:
        raise ValueError(f"NDS {family} {e}") from None
    mask = np.zeros((2, n + 2), bool)
    for c, (name, concat) in enumerate(zip(darts.CELL_NAMES, concats)):
        if not concat or len(set(concat)) != len(concat) or min(concat) < 0 or max(concat) > n + 1:
            raise ValueError(f"NDS {family} genotype {name}_concat {concat} must list distinct states in 0..{n + 1}")
        mask[c, concat] = True
    return edges, mask


def format_genotype(edges: Any, concat: Any, ops: Sequence[str]) -> dict[str, Any]:
    """``(2, E, 2)`` edges + ``(2, S)`` concat mask -> the NDS JSON genotype dict (lists, as in the files)."""
    edges, concat = np.asarray(edges), np.asarray(concat, bool)
    out: dict[str, Any] = {}
    for c, name in enumerate(darts.CELL_NAMES):
        out[name] = [[ops[int(o)], int(s)] for s, o in edges[c]]
        out[f"{name}_concat"] = np.flatnonzero(concat[c]).tolist()
    return out


def sweep_info(path: str | os.PathLike) -> tuple[str, str, str]:
    """``(family, dataset, sweep)`` from an NDS file name, e.g. ``PNAS_fix-w-d_in.json`` -> PNAS, imagenet."""
    name = Path(path).name
    for suffix in (".gz", ".json"):
        name = name.removesuffix(suffix)
    family = name.split("_")[0]
    if family in _NON_CELL:
        raise ValueError(f"NDS sweep {name!r} is an AnyNet family without cells; cell families: {', '.join(FAMILIES)}")
    if family not in FAMILY_OPS:
        raise ValueError(
            f"cannot tell the NDS family of {Path(path).name!r}: the name should start with one of "
            f"{', '.join(FAMILIES)} (or pass family=...)"
        )
    return family, ("imagenet" if name.endswith("_in") else "cifar10"), name


def _check_path(path: Path) -> None:
    if not path.exists():
        raise DataError(
            f"NDS file {path.name!r} not found at {path}; extract facebookresearch/nds data.zip and point to "
            "one of its json files"
        )
    if path.is_dir():
        raise DataError(f"NDS path {path} is a directory; pass one sweep file such as {path / 'DARTS.json'}")


def _read(path: Path) -> Any:
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"NDS file {path.name!r} at {path} is corrupt or not valid JSON: {type(e).__name__}: {e}") from e


def _records(obj: Any, path: Path) -> list:
    if isinstance(obj, dict) and "top" in obj and "mid" in obj:
        obj = list(obj["top"]) + list(obj["mid"])
    if not isinstance(obj, list) or not obj:
        raise DataError(f"NDS file {path.name!r} at {path} must hold a non-empty list of records (or {{'top', 'mid'}} lists)")
    return obj


def _number(rec: Mapping, key: str, default: float = math.nan) -> float:
    v = rec.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{key!r} must be a number, got {v!r}")
    return float(v)


def load_nds(path: str | os.PathLike, family: str | None = None, dataset: str | None = None) -> NDSSpace:
    """Read one NDS sweep file (``.json`` or ``.json.gz``) of a cell-based family into an :class:`NDSSpace`.

    ``family`` / ``dataset`` default to what the file name says (:func:`sweep_info`). A missing, unreadable
    or malformed file raises :class:`jzcp.data.DataError` naming the file, and the record and field at fault.
    """
    path = Path(path)
    _check_path(path)
    if family is None:
        try:
            family, ds, sweep = sweep_info(path)
        except ValueError as e:
            raise DataError(str(e)) from None
    else:
        if family not in FAMILY_OPS:
            raise ValueError(f"unknown NDS cell family {family!r}; supported: {', '.join(FAMILIES)}")
        sweep = path.name.removesuffix(".gz").removesuffix(".json")
        ds = "imagenet" if sweep.endswith("_in") else "cifar10"
    dataset = dataset or ds
    records = _records(_read(path), path)
    n_nodes = FAMILY_NODES[family]
    genos, concats, width, depth, aux, drop, curves, params, flops = ([] for _ in range(9))
    for i, rec in enumerate(records):
        try:
            if not isinstance(rec, dict) or not isinstance(rec.get("net"), dict):
                raise ValueError("has no 'net' object")
            net = rec["net"]
            if "genotype" not in net:
                raise ValueError("'net' has no 'genotype' (an AnyNet record in a cell-family file?)")
            g, c = parse_genotype(net["genotype"], family)
            for key in ("width", "depth"):
                if isinstance(net.get(key), bool) or not isinstance(net.get(key), int) or net[key] <= 0:
                    raise ValueError(f"net {key!r} must be a positive integer, got {net.get(key)!r}")
            if not isinstance(net.get("aux", False), bool):
                raise ValueError(f"net 'aux' must be true / false, got {net['aux']!r}")
            curve = rec.get("test_ep_top1")
            if not isinstance(curve, list) or not curve or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in curve
            ):
                raise ValueError("'test_ep_top1' must be a non-empty list of per-epoch top-1 errors (percent)")
            max_ep = rec.get("optim", {}).get("max_ep") if isinstance(rec.get("optim"), dict) else None
            if max_ep is not None and max_ep != len(curve):
                raise ValueError(f"'test_ep_top1' has {len(curve)} epochs but optim.max_ep is {max_ep}")
            genos.append(g)
            concats.append(c)
            width.append(net["width"])
            depth.append(net["depth"])
            aux.append(net.get("aux", False))
            drop.append(_number(net, "drop_prob"))
            curves.append(100.0 - np.asarray(curve, np.float64))
            params.append(_number(rec, "params"))
            flops.append(_number(rec, "flops"))
        except ValueError as e:
            raise DataError(f"NDS file {path.name!r} at {path}: record {i} {e}") from None
    longest = max(len(c) for c in curves)
    curve_arr = np.full((len(curves), longest), np.nan)
    for i, c in enumerate(curves):
        curve_arr[i, : len(c)] = c
    return NDSSpace(
        family=family,
        dataset=dataset,
        sweep=sweep,
        ops=FAMILY_OPS[family],
        num_nodes=n_nodes,
        genotypes=np.stack(genos).astype(np.int32),
        concat=np.stack(concats),
        width=np.asarray(width, np.int32),
        depth=np.asarray(depth, np.int32),
        aux=np.asarray(aux, bool),
        drop_prob=np.asarray(drop, np.float64),
        test_acc=np.array([c[-1] for c in curves]),
        best_test_acc=np.array([c.max() for c in curves]),
        test_acc_curve=curve_arr,
        params=np.asarray(params, np.float64),
        flops=np.asarray(flops, np.float64),
        path=path,
    )
