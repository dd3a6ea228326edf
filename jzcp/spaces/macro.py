"""NAS-Bench-Macro (Su et al., "Prioritized Architecture Sampling with Monte-Carlo Tree Search", CVPR 2021).

A MobileNetV2-style CIFAR-10 network with 8 searchable layers in three stages of 2, 3 and 3 layers
(xiusu/NAS-Bench-Macro ``train/model.py``): stem conv3x3 (32 channels) - BN - ReLU; the first layer of each
stage has stride 2 and doubles the channels (32 -> 64 -> 128 -> 256); then conv1x1 to 1280 - BN - ReLU,
global average pooling and a linear classifier. Each layer is one of

    0 Identity  (``id``; in a stage's first layer it is a conv1x1-BN downsample, since shape changes)
    1 MB3_K3    (``ir_3x3_t3``: inverted residual block, kernel 3, expansion 3)
    2 MB6_K5    (``ir_5x5_t6``: inverted residual block, kernel 5, expansion 6)

jzcp encodes an architecture as an int32 array ``(8,)`` of these ids; the benchmark's key is the 8-character
string of the same digits, layer 0 first (``'01202120'``). ``index`` = the base-3 number that string spells
(layer 0 most significant), so index order is the benchmark's enumeration order (``itertools.product``) and
the lexicographic order of the strings: ``0 .. 6560``.

The benchmark trained each architecture once per equivalence class (``get_real_arch`` in its scripts): inside
a stage, the layers after the first are reordered with non-identity layers first, order kept, identities last
-- those networks compute the same function. :func:`canonicalize` computes that representative (3,969 of
them); the published record of an architecture is the one of its representative.

Array functions take leading batch axes or vmap and are jittable; parse / format run on the host.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

OPS: tuple[str, ...] = ("Identity", "MB3_K3", "MB6_K5")
REFERENCE_OPS: tuple[str, ...] = ("id", "ir_3x3_t3", "ir_5x5_t6")  # names in the benchmark's model.py
IDENTITY, MB3_K3, MB6_K5 = range(len(OPS))
KERNEL = (0, 3, 5)  # per op id; Identity has none
EXPANSION = (0, 3, 6)
NUM_OPS = len(OPS)
NUM_LAYERS = 8
STAGES: tuple[int, ...] = (2, 3, 3)
NUM_ARCHS = NUM_OPS**NUM_LAYERS  # 6,561
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# Layer -> stride and output channels (the first layer of each stage reduces and doubles).
STAGE_START: tuple[int, ...] = tuple(int(s) for s in np.cumsum((0,) + STAGES[:-1]))
STRIDES: tuple[int, ...] = tuple(2 if i in STAGE_START else 1 for i in range(NUM_LAYERS))
OUT_CHANNELS: tuple[int, ...] = tuple(
    STEM_CHANNELS * 2 ** (int(np.searchsorted(STAGE_START, i, side="right"))) for i in range(NUM_LAYERS)
)

_POW = NUM_OPS ** np.arange(NUM_LAYERS - 1, -1, -1)  # layer 0 most significant


def parse(arch: str) -> np.ndarray:
    """8-character benchmark string (``'01202120'``) -> ``(8,)`` int32; ``ValueError`` naming the problem."""
    if not isinstance(arch, str):
        raise ValueError(f"NAS-Bench-Macro arch must be a string, got {type(arch).__name__}")
    if len(arch) != NUM_LAYERS:
        raise ValueError(f"NAS-Bench-Macro arch {arch!r} must have {NUM_LAYERS} characters, one per layer, got {len(arch)}")
    bad = [c for c in arch if c not in "012"]
    if bad:
        raise ValueError(
            f"NAS-Bench-Macro arch {arch!r}: character {bad[0]!r} is not an op id "
            f"(0 {OPS[0]}, 1 {OPS[1]}, 2 {OPS[2]})"
        )
    return np.array([int(c) for c in arch], np.int32)


def _check(arch) -> np.ndarray:
    a = np.asarray(arch)
    if a.shape != (NUM_LAYERS,):
        raise ValueError(f"NAS-Bench-Macro op array must have shape ({NUM_LAYERS},), got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= NUM_OPS:
        raise ValueError(f"NAS-Bench-Macro op ids must be integers in [0, {NUM_OPS}), got {a.tolist()}")
    return a.astype(np.int32)


def format(arch) -> str:  # noqa: A001 - mirrors parse
    """``(8,)`` op array -> the benchmark's 8-character string."""
    return "".join(str(int(o)) for o in _check(arch))


def encode(arch: jax.Array) -> jax.Array:
    """``(..., 8)`` op arrays -> ``(...,)`` indices in ``[0, 6561)`` (base 3, layer 0 most significant)."""
    return jnp.sum(jnp.asarray(arch, jnp.int32) * _POW, axis=-1)


def decode(index: jax.Array) -> jax.Array:
    """``(...,)`` indices -> ``(..., 8)`` int32 op arrays."""
    index = jnp.asarray(index, jnp.int32)
    return (index[..., None] // _POW) % NUM_OPS


def all_archs() -> jax.Array:
    """Every architecture, ``(6561, 8)`` int32, in index order."""
    return decode(jnp.arange(NUM_ARCHS))


def all_strings() -> list[str]:
    """Every benchmark key in index order (= ``itertools.product('012', repeat=8)`` order)."""
    return ["".join(p) for p in itertools.product("012", repeat=NUM_LAYERS)]


def canonicalize(arch: jax.Array) -> jax.Array:
    """``(..., 8)`` -> the representative the benchmark trained (its ``get_real_arch``): within each stage,
    keep the first layer and move the other identities to the stage's end, order of the rest kept."""
    a = jnp.asarray(arch, jnp.int32)
    out = []
    for start, size in zip(STAGE_START, STAGES):
        rest = a[..., start + 1: start + size]
        # Stable sort on "is identity" puts non-identity layers first, in order.
        order = jnp.argsort(rest == IDENTITY, axis=-1, stable=True)
        out += [a[..., start: start + 1], jnp.take_along_axis(rest, order, axis=-1)]
    return jnp.concatenate(out, axis=-1)


def is_canonical(arch: jax.Array) -> jax.Array:
    """``(...,)`` bool: the architecture is its own representative (one of the 3,969 trained networks)."""
    return jnp.all(canonicalize(arch) == jnp.asarray(arch), axis=-1)


def sample(key: jax.Array, num: int | None = None) -> jax.Array:
    """Uniform random architectures: ``(8,)`` if ``num`` is None else ``(num, 8)`` int32."""
    shape = (NUM_LAYERS,) if num is None else (num, NUM_LAYERS)
    return jax.random.randint(key, shape, 0, NUM_OPS, dtype=jnp.int32)


def mutate(key: jax.Array, arch: jax.Array) -> jax.Array:
    """Change one uniformly chosen layer to one of the two other ops (uniformly). ``(8,)`` in and out; vmap
    for a population."""
    k_layer, k_op = jax.random.split(key)
    layer = jax.random.randint(k_layer, (), 0, NUM_LAYERS)
    shift = jax.random.randint(k_op, (), 1, NUM_OPS)
    arch = jnp.asarray(arch, jnp.int32)
    return arch.at[layer].set((arch[layer] + shift) % NUM_OPS)
