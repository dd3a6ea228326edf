"""Building blocks shared by the networks: initialisers, batch-statistics BatchNorm, ReLU-Conv-BN.

Layout is NHWC; conv kernels are HWIO. Padding is always explicit and symmetric, as in PyTorch (Flax's
``"SAME"`` pads stride-2 convolutions asymmetrically, which would change every reduction block).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jax.Array]

BN_EPS = 1e-5  # PyTorch's default


@dataclass(frozen=True)
class InitScheme:
    """How parameters are initialised. BatchNorm is always scale 1, bias 0."""

    name: str
    conv: Initializer
    dense_kernel: Initializer
    dense_bias: Callable[[int], Initializer]  # fan_in -> initialiser


def _torch_bias(fan_in: int) -> Initializer:
    bound = 1.0 / max(fan_in, 1) ** 0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


INIT_SCHEMES: dict[str, InitScheme] = {
    # torch.nn.Conv2d / Linear defaults: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    # This is what the ICLR'21 zero-cost proxies were measured with.
    "pytorch": InitScheme(
        "pytorch",
        conv=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        dense_kernel=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        dense_bias=_torch_bias,
    ),
    # EZNAS: kaiming_normal(mode="fan_out", nonlinearity="relu") for convs, N(0, 0.01) linear, zero biases.
    "kaiming_fan_out": InitScheme(
        "kaiming_fan_out",
        conv=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
        dense_kernel=nn.initializers.normal(0.01),
        dense_bias=lambda fan_in: nn.initializers.zeros,
    ),
}


def init_scheme(name: str) -> InitScheme:
    try:
        return INIT_SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown init scheme {name!r}; choose one of {sorted(INIT_SCHEMES)}") from None


def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, enabled: bool = True) -> jax.Array:
    """Train-mode BatchNorm of ``x`` (..., C) with batch mean and biased variance over all but the last axis."""
    if not enabled:
        return x
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.mean(jnp.square(x - mean), axes)
    return (x - mean) * jax.lax.rsqrt(var + BN_EPS) * scale + bias


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """NHWC x HWIO convolution with PyTorch's symmetric padding ``(k - 1) // 2``."""
    pad = (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


class BatchNorm(nn.Module):
    """BatchNorm in train mode: normalise with the batch's own mean and (biased) variance.

    Scoring at initialisation never uses running statistics, so none are kept: the module has only its
    affine ``scale``/``bias`` parameters and no mutable state. ``enabled=False`` makes it the identity
    (the BN-free copies some proxies use, e.g. synflow) while keeping the same parameter tree.
    """

    enabled: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return batch_norm(x, scale, bias, self.enabled)


def conv(features: int, kernel: int, stride: int, scheme: InitScheme, name: str | None = None) -> nn.Conv:
    """Bias-free conv with PyTorch's symmetric padding ``(kernel - 1) // 2``."""
    pad = (kernel - 1) // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=scheme.conv,
        name=name,
    )


class ReLUConvBN(nn.Module):
    """ReLU -> Conv (no bias) -> BatchNorm: the "RCB" block of NB201/DARTS-style cells."""

    features: int
    kernel: int
    stride: int = 1
    weight_init: str = "pytorch"
    batch_norm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(x)
        x = conv(self.features, self.kernel, self.stride, init_scheme(self.weight_init), name="conv")(x)
        return BatchNorm(self.batch_norm, name="bn")(x)


def avg_pool_3x3(x: jax.Array, stride: int = 1) -> jax.Array:
    """3x3 average pool of ``x`` (B, H, W, C), padding 1, padded zeros excluded from the mean
    (PyTorch's ``count_include_pad=False``).

    Uses XLA's ``reduce_window``. (Nine shifted adds run ~4x faster on CPU, but XLA then fuses them across the
    whole network and the gradient of the 15-cell NB201 network took over 10 minutes to compile.)
    """
    return nn.avg_pool(x, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)), count_include_pad=False)


def param_count(tree) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(leaf.size for leaf in jax.tree.leaves(tree)))
