"""Once-for-All MobileNetV3 space (Cai et al., ICLR 2020; mit-han-lab/once-for-all ``OFAMobileNetV3``).

A sub-network is chosen per layer and per stage: 5 elastic stages of up to 4 inverted-residual (MBConv)
layers each, so at most 20 layers, each with kernel size 3 / 5 / 7 and expand ratio 3 / 4 / 6, and a depth of
2 / 3 / 4 per stage (a stage runs its first ``d`` layers). Before the stages come a fixed stem and a fixed first
block; after them a fixed head (see "Network" below).

jzcp encodes a sub-network as an :class:`Arch` of fixed-size int32 arrays, in OFA's own values and layout:
``ks (20,)`` kernel sizes, ``e (20,)`` expand ratios, ``d (5,)`` depths; layer ``4 s + i`` is layer ``i`` of
stage ``s``. :func:`depth_mask` gives the ``(20,)`` active-layer mask. Inactive layers keep their values, as
OFA's samplers do (OFA's ``feature2arch`` writes 0 there instead; both are accepted, and :func:`canonicalize`
zeroes them so that equal sub-networks have equal arrays). The dict form is OFA's
``{'ks': [20 ints], 'e': [20 ints], 'd': [5 ints]}``, optionally with the input resolution as ``'r': [224]``
(OFA tutorial) or ``'image_size': 224`` (``ofa.nas`` arch encoder); the string form is that dict as text
(JSON or a Python literal). The input resolution belongs to :class:`MobileNetV3Config`.

Network (``OFAMobileNetV3`` with ``base_stage_width = [16, 16, 24, 40, 80, 112, 160, 960, 1280]``; widths are
``make_divisible(base * width_mult, 8)``; BN momentum 0.1, eps 1e-5):

============================  ===============  ==============  ======  ======  ==========
block                         width_mult 1.0   width_mult 1.2  stride  SE      activation
============================  ===============  ==============  ======  ======  ==========
first conv 3x3 + BN           16               24              2       --      h_swish
first block MBConv k3 e1      16 (residual)    24 (residual)   1       no      relu
stage 1 (2-4 MBConv layers)   24               32              2       no      relu
stage 2                       40               48              2       yes     relu
stage 3                       80               96              2       no      h_swish
stage 4                       112              136             1       yes     h_swish
stage 5                       160              192             2       yes     h_swish
final expand conv 1x1 + BN    960              1152            1       --      h_swish
global average pool           --               --              --      --      --
feature mix conv 1x1 (no BN,  1280             1536            1       --      h_swish
no bias)
classifier (dropout 0.1)      n_classes        n_classes       --      --      --
============================  ===============  ==============  ======  ======  ==========

An MBConv layer with input width ``c_in``, expand ratio ``e`` and kernel ``k``: 1x1 conv to
``mid = make_divisible(round(c_in * e), 8)`` + BN + act (skipped when ``e == 1``); depthwise ``k x k`` conv with
the stage stride on the first layer (padding ``k // 2``) + BN + act; if SE, squeeze-excite on ``mid``
(global average, 1x1 conv with bias to ``make_divisible(mid // 4, 8)``, ReLU, 1x1 conv with bias back to
``mid``, h_sigmoid, multiply); 1x1 conv to the stage width + BN (no activation). A layer adds its input
(identity shortcut) when stride is 1 and widths match: every layer but the first of each stage, and the first
block. ``h_swish(x) = x * relu6(x + 3) / 6``, ``h_sigmoid(x) = relu6(x + 3) / 6``. Total stride 32.

Array functions are jittable and vmap over populations; parse / format run on the host.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

KERNEL_SIZES: tuple[int, ...] = (3, 5, 7)
EXPAND_RATIOS: tuple[int, ...] = (3, 4, 6)
DEPTHS: tuple[int, ...] = (2, 3, 4)
NUM_STAGES = 5
MAX_DEPTH = max(DEPTHS)
NUM_LAYERS = NUM_STAGES * MAX_DEPTH  # 20
# OFA's elastic resolutions: every multiple of 4 in [128, 224] during training (MyRandomResizedCrop); the
# tutorial searches 160..224 in steps of 16.
RESOLUTIONS: tuple[int, ...] = tuple(range(128, 225, 4))

BASE_STAGE_WIDTH: tuple[int, ...] = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
CHANNEL_DIVISIBLE = 8
STAGE_STRIDES: tuple[int, ...] = (2, 2, 2, 1, 2)  # the 5 elastic stages
STAGE_ACTS: tuple[str, ...] = ("relu", "relu", "h_swish", "h_swish", "h_swish")
STAGE_SE: tuple[bool, ...] = (False, True, False, True, True)
SE_REDUCTION = 4
BN_MOMENTUM, BN_EPS = 0.1, 1e-5
DROPOUT = 0.1

_STAGE_OF_LAYER = np.arange(NUM_LAYERS, dtype=np.int32) // MAX_DEPTH  # int32: same dtype with or without x64
_POS_IN_STAGE = np.arange(NUM_LAYERS, dtype=np.int32) % MAX_DEPTH


def make_divisible(v: float, divisor: int = CHANNEL_DIVISIBLE, min_val: int | None = None) -> int:
    """OFA's / TF-slim's channel rounding: nearest multiple of ``divisor``, at least ``min_val``, never more
    than 10 % below ``v``."""
    min_val = divisor if min_val is None else min_val
    new_v = max(min_val, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


@dataclass(frozen=True)
class StageSpec:
    """One block group of the network: output width, stride of its first layer, SE, activation, layers."""

    name: str
    width: int
    stride: int
    se: bool
    act: str
    max_layers: int


@dataclass(frozen=True)
class MobileNetV3Config:
    """The fixed part of an OFA MobileNetV3: width multiplier (1.0 or 1.2 in OFA's model zoo), input
    resolution (square images, pixels), classes. The searchable part is an :class:`Arch`."""

    width_mult: float = 1.0
    resolution: int = 224
    num_classes: int = 1000

    def __post_init__(self):
        if not self.width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {self.width_mult}")
        if not (isinstance(self.resolution, int) and self.resolution >= 32):
            raise ValueError(f"resolution must be an integer >= 32 (total stride is 32), got {self.resolution!r}")
        if not (isinstance(self.num_classes, int) and self.num_classes > 0):
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")

    def widths(self) -> tuple[int, ...]:
        """The 9 rounded widths: first conv, first block, 5 stages, final expand, feature mix."""
        return tuple(make_divisible(w * self.width_mult) for w in BASE_STAGE_WIDTH)

    def stages(self) -> tuple[StageSpec, ...]:
        """First block then the 5 elastic stages, as in the table of the module docstring."""
        w = self.widths()
        first = StageSpec("first_block", w[1], 1, False, "relu", 1)
        return (first,) + tuple(
            StageSpec(f"stage{s + 1}", w[s + 2], STAGE_STRIDES[s], STAGE_SE[s], STAGE_ACTS[s], MAX_DEPTH)
            for s in range(NUM_STAGES)
        )

    def feature_sizes(self) -> tuple[int, ...]:
        """Spatial size after the stem and after each stage (``ceil`` per stride-2 conv with ``k // 2`` padding)."""
        size = -(-self.resolution // 2)
        sizes = [size]
        for s in STAGE_STRIDES:
            size = -(-size // s)
            sizes.append(size)
        return tuple(sizes)


class Arch(NamedTuple):
    """An OFA MobileNetV3 sub-network: ``ks (..., 20)``, ``e (..., 20)``, ``d (..., 5)`` int32 (OFA's values).

    A NamedTuple, hence a pytree: jit / vmap / tree-map it like any array tuple.
    """

    ks: Any
    e: Any
    d: Any


# --- host-side parse / format ------------------------------------------------------------------------------


def _int_list(spec: Mapping, key: str, n: int) -> list[int]:
    v = spec[key]
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        # OFA's val2list: one value for every position.
        v = [int(v)] * n
    if not isinstance(v, (list, tuple, np.ndarray)) or len(v) != n:
        got = len(v) if hasattr(v, "__len__") else type(v).__name__
        raise ValueError(f"OFA MobileNetV3 {key!r} must list {n} integers, got {got}")
    if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v):
        raise ValueError(f"OFA MobileNetV3 {key!r} must hold integers, got {list(v)}")
    return [int(x) for x in v]


def _check_values(ks, e, d) -> None:
    ks, e, d = np.asarray(ks), np.asarray(e), np.asarray(d)
    bad = [i for i, x in enumerate(d.tolist()) if x not in DEPTHS]
    if bad:
        raise ValueError(f"OFA MobileNetV3 depth of stage {bad[0] + 1} is {int(d[bad[0]])}; depths are {DEPTHS}")
    active = _POS_IN_STAGE < d[_STAGE_OF_LAYER]
    for name, vals, choices in (("ks", ks, KERNEL_SIZES), ("e", e, EXPAND_RATIOS)):
        for i, x in enumerate(vals.tolist()):
            ok = x in choices or (not active[i] and x == 0)
            if not ok:
                where = "active" if active[i] else "inactive"
                raise ValueError(
                    f"OFA MobileNetV3 {name}[{i}] (stage {i // MAX_DEPTH + 1}, layer {i % MAX_DEPTH + 1}, {where}) is {x}; "
                    f"choices are {choices}" + ("" if active[i] else " or 0 for an inactive layer")
                )


def parse(spec: Mapping[str, Any] | str) -> Arch:
    """OFA dict (or its text, JSON or Python literal) -> :class:`Arch` of numpy int32 arrays.

    ``'ks'`` and ``'e'`` list 20 values (a single int means all 20, as OFA's ``val2list``), ``'d'`` 5. Extra
    keys OFA writes (``'r'``, ``'image_size'``, ``'wid'``) are allowed; :func:`parse_resolution` reads the
    resolution. Raises ``ValueError`` naming the key / position for missing keys, wrong lengths, or values
    outside the choices (0 is accepted for inactive layers).
    """
    if isinstance(spec, str):
        try:
            spec = ast.literal_eval(spec.strip())
        except (ValueError, SyntaxError):
            try:
                spec = json.loads(spec)
            except ValueError as e:
                raise ValueError(f"OFA MobileNetV3 text {spec[:60]!r} is neither a Python literal nor JSON: {e}") from None
    if not isinstance(spec, Mapping):
        raise ValueError(f"OFA MobileNetV3 arch must be a dict with keys 'ks', 'e', 'd', got {type(spec).__name__}")
    missing = [k for k in ("ks", "e", "d") if k not in spec]
    if missing:
        raise ValueError(f"OFA MobileNetV3 arch is missing key(s) {missing}; it needs 'ks', 'e', 'd'")
    extra = [k for k in spec if k not in ("ks", "e", "d", "r", "image_size", "wid")]
    if extra:
        raise ValueError(f"OFA MobileNetV3 arch has unknown key(s) {extra}")
    ks, e, d = _int_list(spec, "ks", NUM_LAYERS), _int_list(spec, "e", NUM_LAYERS), _int_list(spec, "d", NUM_STAGES)
    _check_values(ks, e, d)
    parse_resolution(spec)  # validates it when present
    return Arch(np.asarray(ks, np.int32), np.asarray(e, np.int32), np.asarray(d, np.int32))


def parse_resolution(spec: Mapping[str, Any]) -> int | None:
    """The input resolution an OFA dict carries (``'r': [224]`` or ``'image_size': 224``), else None."""
    r = spec.get("image_size", spec.get("r"))
    if r is None:
        return None
    if isinstance(r, (list, tuple)) and len(r) == 1:
        r = r[0]
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 32:
        raise ValueError(f"OFA MobileNetV3 resolution must be an integer >= 32 (or [int]), got {r!r}")
    return int(r)


def _check_arch(arch: Arch) -> tuple[list[int], list[int], list[int]]:
    ks, e, d = (np.asarray(x) for x in arch)
    if ks.shape != (NUM_LAYERS,) or e.shape != (NUM_LAYERS,) or d.shape != (NUM_STAGES,):
        raise ValueError(f"OFA MobileNetV3 arrays must have shapes (20,), (20,), (5,); got {ks.shape}, {e.shape}, {d.shape}")
    _check_values(ks, e, d)
    return ks.tolist(), e.tolist(), d.tolist()


def format(arch: Arch, resolution: int | None = None) -> dict[str, Any]:  # noqa: A001 - mirrors parse
    """:class:`Arch` -> OFA dict ``{'ks': [...], 'e': [...], 'd': [...]}`` of Python ints, plus
    ``'image_size': resolution`` when given. ``format(parse(x))`` returns ``x``'s three lists unchanged."""
    ks, e, d = _check_arch(arch)
    out: dict[str, Any] = {"ks": ks, "e": e, "d": d}
    if resolution is not None:
        out["image_size"] = parse_resolution({"image_size": resolution})
    return out


def to_string(arch: Arch, resolution: int | None = None) -> str:
    """:func:`format` as JSON text (readable back by :func:`parse`)."""
    return json.dumps(format(arch, resolution))


# --- jittable ----------------------------------------------------------------------------------------------


FLAT_LEN = 2 * NUM_LAYERS + NUM_STAGES  # 45


def flatten(arch: Arch) -> jax.Array:
    """:class:`Arch` -> ``(..., 45)`` int32: ``ks``, then ``e``, then ``d`` (one array, for code that wants the
    architecture as a single integer array, e.g. :class:`jzcp.proxies.ProxyNet`). Jittable."""
    return jnp.concatenate([jnp.asarray(a, jnp.int32) for a in arch], axis=-1)


def unflatten(flat) -> Arch:
    """Inverse of :func:`flatten`: ``(..., 45)`` -> :class:`Arch`. Jittable; works on NumPy arrays too."""
    xp = jnp if isinstance(flat, jax.Array) else np
    flat = xp.asarray(flat)
    if flat.shape[-1:] != (FLAT_LEN,):
        raise ValueError(f"a flat OFA MobileNetV3 arch has {FLAT_LEN} entries (20 ks, 20 e, 5 d), got shape {flat.shape}")
    n = NUM_LAYERS
    return Arch(flat[..., :n], flat[..., n:2 * n], flat[..., 2 * n:])



def depth_mask(arch: Arch) -> jax.Array:
    """``(..., 20)`` bool: layer ``4 s + i`` runs iff ``i < d[s]``."""
    d = jnp.asarray(arch.d)
    return _POS_IN_STAGE < jnp.take(d, _STAGE_OF_LAYER, axis=-1)


def kernel_index(arch: Arch) -> jax.Array:
    """``(..., 20)`` int32 index into :data:`KERNEL_SIZES` (0 for 3, 1 for 5, 2 for 7; -1 for anything else)."""
    return _index_of(jnp.asarray(arch.ks), KERNEL_SIZES)


def expand_index(arch: Arch) -> jax.Array:
    """``(..., 20)`` int32 index into :data:`EXPAND_RATIOS` (-1 for anything else, e.g. an inactive 0)."""
    return _index_of(jnp.asarray(arch.e), EXPAND_RATIOS)


def _index_of(values: jax.Array, choices: tuple[int, ...]) -> jax.Array:
    hit = values[..., None] == jnp.asarray(choices)
    return jnp.where(jnp.any(hit, -1), jnp.argmax(hit, -1), -1).astype(jnp.int32)


def is_valid(arch: Arch) -> jax.Array:
    """``(...,)`` bool: depths in {2, 3, 4}; active layers' kernel / expand in the choices, inactive ones
    in the choices or 0."""
    active = depth_mask(arch)
    ks_ok = (kernel_index(arch) >= 0) | (~active & (jnp.asarray(arch.ks) == 0))
    e_ok = (expand_index(arch) >= 0) | (~active & (jnp.asarray(arch.e) == 0))
    d_ok = jnp.any(jnp.asarray(arch.d)[..., None] == jnp.asarray(DEPTHS), -1)
    return jnp.all(ks_ok & e_ok, -1) & jnp.all(d_ok, -1)


def canonicalize(arch: Arch) -> Arch:
    """Zero the kernel / expand values of inactive layers (OFA's ``feature2arch`` form): equal sub-networks
    then have equal arrays."""
    active = depth_mask(arch)
    return Arch(
        jnp.where(active, jnp.asarray(arch.ks, jnp.int32), 0),
        jnp.where(active, jnp.asarray(arch.e, jnp.int32), 0),
        jnp.asarray(arch.d, jnp.int32),
    )


def _choice(key: jax.Array, choices: tuple[int, ...], shape) -> jax.Array:
    return jnp.asarray(choices, jnp.int32)[jax.random.randint(key, shape, 0, len(choices))]


def sample(key: jax.Array, num: int | None = None) -> Arch:
    """Uniform random sub-networks, as OFA's ``random_sample_arch``: every ks / e / d entry independently
    uniform over its choices (inactive layers too). One :class:`Arch` or a batch with leading axis ``num``."""
    lead = () if num is None else (num,)
    k_ks, k_e, k_d = jax.random.split(key, 3)
    return Arch(
        _choice(k_ks, KERNEL_SIZES, lead + (NUM_LAYERS,)),
        _choice(k_e, EXPAND_RATIOS, lead + (NUM_LAYERS,)),
        _choice(k_d, DEPTHS, lead + (NUM_STAGES,)),
    )


def mutate(key: jax.Array, arch: Arch, prob: float = 0.1) -> Arch:
    """OFA's ``mutate_arch``: with probability ``prob`` per layer, redraw its kernel size and expand ratio
    (uniformly, possibly the same values); with probability ``prob`` per stage, redraw its depth. The
    evolution search of OFA uses ``prob = 0.1``. One :class:`Arch` in and out; vmap for a population."""
    k_l, k_s, k_new = jax.random.split(key, 3)
    redraw_layer = jax.random.bernoulli(k_l, prob, (NUM_LAYERS,))
    redraw_stage = jax.random.bernoulli(k_s, prob, (NUM_STAGES,))
    new = sample(k_new)
    return Arch(
        jnp.where(redraw_layer, new.ks, jnp.asarray(arch.ks, jnp.int32)),
        jnp.where(redraw_layer, new.e, jnp.asarray(arch.e, jnp.int32)),
        jnp.where(redraw_stage, new.d, jnp.asarray(arch.d, jnp.int32)),
    )
