"""Building blocks shared by the networks: initialisers, batch-statistics BatchNorm, ReLU-Conv-BN, and the
*capture taps* through which zero-cost proxies see inside any network.

Layout is NHWC; conv kernels are HWIO. Padding is always explicit and symmetric, as in PyTorch (Flax's
``"SAME"`` pads stride-2 convolutions asymmetrically, which would change every reduction block).

Capture contract (what every network of jzcp follows so that :mod:`jzcp.proxies` works on it unchanged)
--------------------------------------------------------------------------------------------------------
A network is a Flax module ``__call__(x, arch) -> logits`` built from the pieces below.

1. **Parameters.** Every convolution / linear *weight* is a parameter named ``"kernel"`` and nothing else is
   (weight-based proxies -- grad_norm, snip, grasp, synflow, l2_norm, plain, zico -- read exactly these
   leaves, as the references read ``nn.Conv2d`` / ``nn.Linear`` weights and never BN or bias). BatchNorm
   affine parameters are ``"scale"`` / ``"bias"``, linear biases ``"bias"``.
2. **Parameter mask.** The network module's Python module provides ``param_mask(params, arch)``: a pytree
   like ``params`` of scalar bools, True where the architecture's own network has that parameter (a
   parameter of an op the architecture does not contain is False). Jittable.
3. **Taps.** Every ReLU, convolution, linear layer, BatchNorm and pooling goes through the functions /
   modules below, which record what proxies need with :meth:`flax.linen.Module.sow` into the collection
   :data:`TAPS` (only when the caller makes it mutable: otherwise nothing is recorded and nothing costs).
   Each record carries a **liveness** flag or weight: with the architecture as *data* a network computes
   ops its architecture does not contain (a select or ``lax.switch`` over candidate ops), and their records
   must say ``live=False`` so they count as absent. Ops that the architecture *does* contain but whose output
   cannot reach the logits (unreachable branches) are live: the reference PyTorch networks build and run
   them too; gradients through them are simply zero.
4. **Perturbations.** Convolution / linear outputs and ReLU-Conv-BN block inputs call
   :meth:`~flax.linen.Module.perturb` (collection :data:`PERTURBATIONS`), so a proxy can take the gradient
   with respect to a layer's output (fisher) or a block's input (EZNAS) without hooks. Gradients are zero for
   ops that do not exist, so perturbations need no liveness flag.
5. **Networks add** :class:`FeatureTap` records for op / cell / block outputs with :func:`feature` where a
   proxy reads them (MeCo), and call :func:`global_avg_pool` for the global pooling (zen reads its input).
6. **BN-free copy.** The network config has a ``batch_norm: bool`` field; False turns every BatchNorm into
   the identity with the same parameter tree (synflow).

Records (all fields are JAX arrays; every record is a NamedTuple, so ``jax.tree.leaves(taps,
is_leaf=is_tap)`` lists them; several records may share one name, sow appends them to a tuple):

* :class:`ReluTap` ``(pre, live)``: ReLU input (nwot's binary codes).
* :class:`BNTap` ``(var, count, live)``: biased batch variance per channel and the number of values
  averaged (zen's running-variance update uses the unbiased one).
* :class:`ConvTap` ``(fan_in, live)``: ``C_in * k_h * k_w`` of a conv / linear layer, recorded under the
  same name as its output perturbation (fisher broadcasts per-channel values over a weight's fan-in).
* :class:`FlopsTap` ``(flops,)``: per-sample FLOPs of the layer as tensorwatch counts them (NAS-Bench-Suite-
  Zero's ``flops``), zero when not live.
* :class:`FeatureTap` ``(x, weight)``: a layer / op output and how many PyTorch modules of the reference
  model emit that same tensor (MeCo sums one term per module call); weight 0 when not live.
* :class:`PoolTap` ``(x,)``: the input of the global average pool (zen's ``forward_before_global_avg_pool``).
* :class:`RCBTap` ``(inp, live)``: input of a ReLU-Conv-BN block; its gradient is the gradient of the
  perturbation :data:`RCB_INPUT` recorded by the same block.
* :class:`RCBBlockTap` ``(inp, kernel, out, live)``: one ReLU-Conv-BN block as a whole (EZNAS statistics):
  its input, its own conv kernel (HWIO, the block's real kernel size) and its output (after BN). The same
  scope holds the perturbations :data:`RCB_INPUT` (block input), :data:`RCB_CONV` (conv output, before BN)
  and :data:`RCB_OUTPUT` (block output), whose gradients give every EZNAS gradient statistic. A scope may
  sow several records (NB201 edges: one per candidate conv, sharing input and output, with their own
  liveness); they share the scope's perturbations. The conv follows :func:`conv2d` (symmetric padding
  ``(k - 1) // 2``, no dilation); its stride is ``H_in / H_out``.

  *Conv-BN networks* (NB101, NAS-Bench-Macro, MobileNetV3) have no ReLU -> Conv -> BN blocks; their blocks are
  every conv followed by a BN (stem excluded) with whatever precedes the conv as the "ReLU": the record's ``pre``
  field is the conv input itself -- ``relu(inp)`` for a ReLU (Macro's depthwise / linear convs), the h-swish of
  ``inp`` (MobileNetV3), or ``inp`` when the conv reads a sum, a concatenation or a gated tensor (NB101's convs,
  whose inputs are sums of ReLU outputs, so ``pre == relu(inp)`` there too). Networks that hold a block on
  *channel-padded* tensors (NB101 vertices, elastic MobileNetV3 layers) record one candidate per real width
  (:func:`rcb_candidates`): the record's tensors are the first channels of the padded ones, and consumers slice
  the scope's perturbation gradients to the record's channels.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jax.Array]

BN_EPS = 1e-5  # PyTorch's default

TAPS = "taps"
PERTURBATIONS = "perturbations"
CONV_OUTPUT = "out"  # name of a conv / linear module's output perturbation and ConvTap
RCB_INPUT = "rcb_in"  # name of a ReLU-Conv-BN block's input perturbation and RCBTap
RCB_CONV = "rcb_conv"  # perturbation of a ReLU-Conv-BN block's conv output (additive, full size)
RCB_OUTPUT = "rcb_out"  # perturbation of a ReLU-Conv-BN block's output (additive, full size)
RCB_BLOCK = "rcb_block"  # name of the RCBBlockTap records


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


class Params(nn.Module):
    """Declares parameters without computing anything (a candidate op whose weights another module uses). ``shapes``: ``((name, shape, kind, fan_in),
    ...)`` with kind ``conv`` (the scheme's conv initialiser), ``conv_bias`` (torch's ``U(+-1/sqrt(fan_in))``
    / the scheme's bias rule), ``bn_scale`` (ones) or ``bn_bias`` (zeros)."""

    shapes: tuple
    weight_init: str

    @nn.compact
    def __call__(self):
        scheme = init_scheme(self.weight_init)
        inits = {"conv": lambda fan: scheme.conv, "conv_bias": scheme.dense_bias,
                 "bn_scale": lambda fan: nn.initializers.ones, "bn_bias": lambda fan: nn.initializers.zeros}
        return {name: self.param(name, inits[kind](fan), tuple(shape)) for name, shape, kind, fan in self.shapes}


# --- tap records ---------------------------------------------------------------------------------------------


class ReluTap(NamedTuple):
    pre: jax.Array  # (B, ...) ReLU input
    live: jax.Array  # () bool


class BNTap(NamedTuple):
    var: jax.Array  # (C,) biased batch variance
    count: jax.Array  # () float, values per channel the variance averages (B*H*W)
    live: jax.Array  # () bool


class ConvTap(NamedTuple):
    fan_in: jax.Array  # () float, C_in * k_h * k_w of the layer actually computed
    live: jax.Array  # () bool


class FlopsTap(NamedTuple):
    flops: jax.Array  # () float, per-sample FLOPs (tensorwatch's count), 0 when not live


class FeatureTap(NamedTuple):
    x: jax.Array  # (B, ..., C) an output tensor
    weight: jax.Array  # () float, multiplicity in the reference model, 0 when not live


class PoolTap(NamedTuple):
    x: jax.Array  # (B, H, W, C) input of the global average pool


class RCBTap(NamedTuple):
    inp: jax.Array  # (B, H, W, C) input of a ReLU-Conv-BN block
    live: jax.Array  # () bool


class RCBBlockTap(NamedTuple):
    inp: jax.Array  # (B, H, W, C_in) block input (before the ReLU)
    kernel: jax.Array  # (k, k, C_in / groups, C_out) the block's own conv kernel
    out: jax.Array  # (B, H', W', C_out) block output (after BN)
    live: jax.Array  # () bool
    pre: jax.Array | None = None  # (B, H, W, C_in) the conv input when it is not relu(inp); None: relu(inp)


TAP_TYPES = (ReluTap, BNTap, ConvTap, FlopsTap, FeatureTap, PoolTap, RCBTap, RCBBlockTap)


def is_tap(v) -> bool:
    """``is_leaf`` for ``jax.tree.leaves(taps, is_leaf=is_tap)``."""
    return isinstance(v, TAP_TYPES)


def taps_of(taps, kind) -> list:
    """All records of type ``kind`` in a sown :data:`TAPS` collection, in a fixed (path-sorted) order."""
    return [t for t in jax.tree.leaves(taps, is_leaf=is_tap) if isinstance(t, kind)]


def _f32(v) -> jax.Array:
    return jnp.asarray(v, jnp.float32)


def _bool(v) -> jax.Array:
    return jnp.asarray(v, jnp.bool_)


def tap(mdl: nn.Module, name: str, *records) -> None:
    """Record ``records`` under ``name`` in ``mdl``'s scope (a no-op unless :data:`TAPS` is mutable)."""
    for r in records:
        mdl.sow(TAPS, name, r)


def feature(mdl: nn.Module, x: jax.Array, weight=1.0, name: str = "feature") -> None:
    """Record an op / block output for MeCo: ``weight`` = how many modules of the reference model emit it."""
    tap(mdl, name, FeatureTap(x, _f32(weight)))


def _per_sample(x: jax.Array) -> int:
    return int(np.prod(x.shape[1:]))


# --- pure functions --------------------------------------------------------------------------------------------


def _moments(x: jax.Array):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.mean(jnp.square(x - mean), axes)
    return mean, var


def batch_norm(
    x: jax.Array, scale: jax.Array, bias: jax.Array, enabled: bool = True, batch_stats: bool = True
) -> jax.Array:
    """Train-mode BatchNorm of ``x`` (..., C) with batch mean and biased variance over all but the last axis.

    ``batch_stats=False`` is eval mode at initialisation (running mean 0, running variance 1).
    """
    if not enabled:
        return x
    if not batch_stats:
        return x * (1.0 / np.sqrt(1.0 + BN_EPS)) * scale + bias
    mean, var = _moments(x)
    return (x - mean) * jax.lax.rsqrt(var + BN_EPS) * scale + bias


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, dilation: int = 1, groups: int = 1) -> jax.Array:
    """NHWC x HWIO convolution with PyTorch's symmetric "same" padding ``dilation * (k - 1) // 2``.

    ``kernel`` is (k, k, C_in / groups, C_out); ``groups = C_in`` is a depthwise convolution."""
    pad = dilation * (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), ((pad, pad), (pad, pad)), rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
    )


# --- a convolution for conditional branches -----------------------------------------------------------------
#
# XLA's CPU backend runs a convolution on its fast (Eigen) path only when its dimension numbers are canonical
# (NHWC x HWIO -> NHWC), and rewrites the others into canonical ones only in the entry computation, not inside
# the branches of a ``lax.cond`` / ``lax.switch``. JAX's own derivatives of a convolution are non-canonical
# (the weight gradient contracts the batch), so inside a branch they ran 30-70x slower. ``branch_conv2d``'s
# derivatives of every order are canonical convolutions: its VJP uses ``branch_conv2d`` and
# ``_branch_weight_grad``, whose VJP uses ``branch_conv2d`` again. Custom VJPs admit no forward mode, so a
# network built with it takes Hessian-vector products reverse-over-reverse (``ProxyNet.forward_mode``).


def _flip_transpose(kernel: jax.Array) -> jax.Array:
    """The kernel of the input gradient: spatially flipped, input and output channels swapped. (The barrier
    keeps XLA from folding the transpose back into the convolution's dimension numbers.)"""
    return jax.lax.optimization_barrier(jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))


@jax.custom_vjp
def branch_conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 :func:`conv2d` of ``x`` (B, H, W, C_in) with an odd square ``kernel`` (k, k, C_in, C_out) ->
    (B, H, W, C_out), padding ``(k - 1) // 2``; same values, but every derivative stays a canonical
    convolution, so it is fast inside ``lax.cond`` / ``lax.switch`` branches on CPU (see above)."""
    return conv2d(x, kernel)


def _branch_conv2d_fwd(x, kernel):
    return branch_conv2d(x, kernel), (x, kernel)  # through itself, so a second derivative uses these rules too


def _branch_conv2d_bwd(res, g):
    x, kernel = res
    return branch_conv2d(g, _flip_transpose(kernel)), _branch_weight_grad(x, g, kernel.shape[0])


branch_conv2d.defvjp(_branch_conv2d_fwd, _branch_conv2d_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _branch_weight_grad(x: jax.Array, g: jax.Array, k: int) -> jax.Array:
    """``d <branch_conv2d(x, W), g> / d W`` (k, k, C_in, C_out) as one canonical convolution: channels of ``x``
    as its batch, the batch as the contracted features, ``g`` as a (H, W) kernel."""
    pad = (k - 1) // 2
    barrier = jax.lax.optimization_barrier  # the transposes must stay copies (see _flip_transpose)
    lhs, rhs = barrier((x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3)))
    w = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), ((pad, pad), (pad, pad)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return barrier(w).transpose(1, 2, 0, 3)


def _branch_weight_grad_fwd(x, g, k):
    return _branch_weight_grad(x, g, k), (x, g)


def _branch_weight_grad_bwd(k, res, w_bar):
    # <W(x, g), w_bar> = <branch_conv2d(x, w_bar), g>: bilinear in x and g.
    x, g = res
    return branch_conv2d(g, _flip_transpose(w_bar)), branch_conv2d(x, w_bar)


_branch_weight_grad.defvjp(_branch_weight_grad_fwd, _branch_weight_grad_bwd)


def avg_pool_3x3(x: jax.Array, stride: int = 1) -> jax.Array:
    """3x3 average pool of ``x`` (B, H, W, C), padding 1, padded zeros excluded from the mean
    (PyTorch's ``count_include_pad=False``).

    One ``reduce_window`` sum times a constant inverse-count map. (Nine shifted slices fuse across chains of
    pools -- NB201 cells chain them through skip connections -- into fusions whose size, and XLA's compile
    time, grow exponentially with the chain: 20 chained pools took 200 s to compile with their gradient.)
    """
    h, w = x.shape[-3], x.shape[-2]
    window = (1,) * (x.ndim - 3) + (3, 3, 1)
    pads = ((0, 0),) * (x.ndim - 3) + ((1, 1), (1, 1), (0, 0))
    strides = (1,) * (x.ndim - 3) + (stride, stride, 1)
    total = jax.lax.reduce_window(x, np.zeros((), x.dtype), jax.lax.add, window, strides, pads)  # strided sum
    counts = np.outer(_window_counts(h), _window_counts(w))[::stride, ::stride, None]
    return total * (1.0 / counts).astype(x.dtype)


def _window_counts(n: int) -> np.ndarray:
    """How many of the 3 taps centred at each of n positions fall inside [0, n)."""
    c = np.full(n, 3.0)
    c[0] -= 1
    c[-1] -= 1
    return np.maximum(c, 1.0)


def param_count(tree) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(leaf.size for leaf in jax.tree.leaves(tree)))


# --- tapped operations (call inside an ``@nn.compact`` method, passing the module as ``mdl``) -------------------


def activation(mdl: nn.Module, x: jax.Array, fn: Callable[[jax.Array], jax.Array], live=True, *,
               relu_family: bool = False, feature_weight=1.0, name: str = "act") -> jax.Array:
    """Activation ``fn`` with its records. ``relu_family``: a module the references treat as a ReLU (nn.ReLU,
    ReLU6, LeakyReLU: nwot hooks every module whose type name contains "ReLU", tensorwatch counts numel FLOPs);
    other activations (hardswish, sigmoid, ...) only record their output (MeCo)."""
    y = fn(x)
    records = [FeatureTap(y, _f32(live) * feature_weight)]
    if relu_family:
        records += [ReluTap(x, _bool(live)), FlopsTap(_f32(live) * _per_sample(x))]
    tap(mdl, name, *records)
    return y


def relu(mdl: nn.Module, x: jax.Array, live=True, feature_weight=1.0, name: str = "relu") -> jax.Array:
    """ReLU recording its input (nwot), its output (MeCo) and its FLOPs."""
    return activation(mdl, x, nn.relu, live, relu_family=True, feature_weight=feature_weight, name=name)


def channel_perturbation(mdl: nn.Module, y: jax.Array, name: str = CONV_OUTPUT) -> jax.Array:
    """The (B, C) multiplicative perturbation ``p`` of a layer output ``y`` (B, ..., C): zeros, or the one
    passed in the :data:`PERTURBATIONS` collection.

    The output becomes ``y * (1 + p)``, so ``dL/dp[n, c] = sum_hw y * dL/dy`` -- exactly the per-sample,
    per-channel quantity of fisher -- at a fraction of the memory of an additive full-size perturbation.
    """
    return mdl.perturb(name, jnp.zeros((y.shape[0], y.shape[-1]), y.dtype))


def apply_channel_perturbation(y: jax.Array, p: jax.Array) -> jax.Array:
    return y * (1.0 + p.reshape(p.shape[0], *([1] * (y.ndim - 2)), p.shape[-1]))


def conv_taps(mdl: nn.Module, y: jax.Array, fan_in, live=True, feature_weight=1.0, bias: bool = False,
              name: str = CONV_OUTPUT) -> None:
    """Records of a conv / linear layer with output ``y`` (B, ..., C_out) and ``fan_in`` = C_in * k_h * k_w."""
    per_position = fan_in + (1 if bias else 0)
    flops = _f32(live) * _f32(per_position) * (_per_sample(y))
    tap(mdl, name, ConvTap(_f32(fan_in), _bool(live)), FlopsTap(flops), FeatureTap(y, _f32(live) * feature_weight))


def bn_taps(mdl: nn.Module, x: jax.Array, y: jax.Array, var: jax.Array, live=True, feature_weight=1.0,
            name: str = "bn") -> None:
    """Records of a BatchNorm with input ``x``, output ``y`` and biased batch variance ``var`` (C,)."""
    count = float(np.prod(x.shape[:-1]))
    tap(mdl, name, BNTap(var, _f32(count), _bool(live)), FlopsTap(_f32(live) * 2 * _per_sample(x)),
        FeatureTap(y, _f32(live) * feature_weight))


def bn(mdl: nn.Module, x: jax.Array, scale: jax.Array, bias: jax.Array, enabled: bool = True,
       batch_stats: bool = True, live=True, feature_weight=1.0, name: str = "bn") -> jax.Array:
    """:func:`batch_norm` with its records (none when BN is disabled: the layer does not exist)."""
    if not enabled:
        return x
    _, var = _moments(x)
    y = batch_norm(x, scale, bias, True, batch_stats)
    bn_taps(mdl, x, y, var, live, feature_weight, name)
    return y


def avg_pool(mdl: nn.Module, x: jax.Array, window: int = 3, stride: int = 1, live=True, feature_weight=1.0,
             name: str = "pool") -> jax.Array:
    """Average pool, ``window`` 3 (padding 1, padding excluded) or 2 (no padding), with its records."""
    if window == 3:
        y = avg_pool_3x3(x, stride)
    elif window == 2:
        y = nn.avg_pool(x, (2, 2), strides=(stride, stride))
    else:
        raise ValueError(f"avg_pool window must be 2 or 3, got {window}")
    tap(mdl, name, FlopsTap(_f32(live) * window * window * _per_sample(y)), FeatureTap(y, _f32(live) * feature_weight))
    return y


def global_avg_pool(mdl: nn.Module, x: jax.Array, name: str = "gap") -> jax.Array:
    """Mean over H, W of ``x`` (B, H, W, C) -> (B, C); records its input (zen) and tensorwatch's FLOPs of
    ``AdaptiveAvgPool2d(1)``: ``C (H + 1) (W + 1)`` (its window count has a ``+1``)."""
    h, w, c = x.shape[1:]
    tap(mdl, name, PoolTap(x), FlopsTap(_f32(c * (h + 1) * (w + 1))))
    return jnp.mean(x, axis=(1, 2))


# --- tapped modules ----------------------------------------------------------------------------------------------


class BatchNorm(nn.Module):
    """BatchNorm in train mode: normalise with the batch's own mean and (biased) variance.

    Scoring at initialisation never uses running statistics, so none are kept: the module has only its
    affine ``scale``/``bias`` parameters and no mutable state. ``enabled=False`` makes it the identity
    (the BN-free copies some proxies use, e.g. synflow) while keeping the same parameter tree.
    ``batch_stats=False`` is eval mode at initialisation (running mean 0, variance 1).
    """

    enabled: bool = True
    batch_stats: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, live=True, feature_weight=1.0) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return bn(self, x, scale, bias, self.enabled, self.batch_stats, live, feature_weight, name="bn")


class Conv(nn.Module):
    """Bias-free 2-D convolution (parameter ``kernel`` (k, k, C_in / groups, C_out)) with PyTorch's symmetric
    padding, a fisher perturbation on its output and its records. Same parameters as
    ``nn.Conv(use_bias=False, feature_group_count=groups)``."""

    features: int
    kernel_size: int
    stride: int = 1
    kernel_init: Initializer = INIT_SCHEMES["pytorch"].conv
    dilation: int = 1
    groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, live=True, feature_weight=1.0) -> jax.Array:
        k, cin = self.kernel_size, x.shape[-1]
        if cin % self.groups or self.features % self.groups:
            raise ValueError(f"Conv: channels {cin} -> {self.features} not divisible by groups={self.groups}")
        kernel = self.param("kernel", self.kernel_init, (k, k, cin // self.groups, self.features))
        y = conv2d(x, kernel, self.stride, self.dilation, self.groups)
        y = apply_channel_perturbation(y, channel_perturbation(self, y))
        conv_taps(self, y, k * k * cin // self.groups, live, feature_weight)
        return y


class Dense(nn.Module):
    """Linear layer (``kernel`` (C_in, C_out), ``bias``) with a fisher perturbation and its records.

    Same parameters as ``nn.Dense``. MeCo records nothing: a (1, C) output gives it a zero term.
    """

    features: int
    kernel_init: Initializer = INIT_SCHEMES["pytorch"].dense_kernel
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (cin, self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        # The perturbation multiplies the biased output: fisher's activation is F.linear(x, W, b).
        y = x @ kernel + bias
        y = apply_channel_perturbation(y, channel_perturbation(self, y))
        # tensorwatch counts a Linear as in * out (no bias term) and its output is not a feature map.
        tap(self, CONV_OUTPUT, ConvTap(_f32(cin), _bool(True)), FlopsTap(_f32(cin * self.features)))
        return y


def conv(features: int, kernel: int, stride: int, scheme: InitScheme, name: str | None = None, *,
         dilation: int = 1, groups: int = 1) -> Conv:
    """Bias-free conv with PyTorch's symmetric padding ``dilation * (kernel - 1) // 2``."""
    return Conv(features, kernel, stride, kernel_init=scheme.conv, dilation=dilation, groups=groups, name=name)


def rcb_input(mdl: nn.Module, x: jax.Array, live=True) -> jax.Array:
    """Mark ``x`` as the input of a ReLU-Conv-BN block: records it and adds the block-input perturbation."""
    tap(mdl, RCB_INPUT, RCBTap(x, _bool(live)))
    return mdl.perturb(RCB_INPUT, x)


def rcb_conv_output(mdl: nn.Module, z: jax.Array) -> jax.Array:
    """Add the :data:`RCB_CONV` perturbation to a ReLU-Conv-BN block's conv output ``z`` (pass zeros to get the
    perturbation itself, e.g. to hand it into a ``lax.cond``)."""
    return mdl.perturb(RCB_CONV, z)


def rcb_output(mdl: nn.Module, y: jax.Array) -> jax.Array:
    """Add the :data:`RCB_OUTPUT` perturbation to a ReLU-Conv-BN block's output ``y``."""
    return mdl.perturb(RCB_OUTPUT, y)


def rcb_block(mdl: nn.Module, inp: jax.Array, kernel: jax.Array, out: jax.Array, live=True, pre=None) -> None:
    """Record a ReLU-Conv-BN block (:class:`RCBBlockTap`): input, own conv kernel, output, liveness (and the conv
    input ``pre`` when it is not ``relu(inp)``)."""
    tap(mdl, RCB_BLOCK, RCBBlockTap(inp, kernel, out, _bool(live), pre))


def rcb_candidates(mdl: nn.Module, inp: jax.Array, pre: jax.Array, out: jax.Array, candidates) -> None:
    """Records of a block computed on channel-padded tensors ``inp`` / ``pre`` (B, H, W, C_pad) -> ``out``
    (B, H', W', C'_pad): for each candidate ``(kernel, c_in, live)`` an :class:`RCBTap` and an
    :class:`RCBBlockTap` of the first ``c_in`` input and ``kernel.shape[-1]`` output channels (the candidate's
    real widths; the padded channels of a candidate are exactly zero). Call it in the scope that holds the
    block's perturbations (:func:`rcb_input`, :func:`rcb_conv_output`, :func:`rcb_output`)."""
    for kernel, c_in, live in candidates:
        c_out = kernel.shape[-1]
        tap(mdl, RCB_INPUT, RCBTap(inp[..., :c_in], _bool(live)))
        rcb_block(mdl, inp[..., :c_in], kernel, out[..., :c_out], live, pre[..., :c_in])


class RCBScope(nn.Module):
    """The scope of one block's perturbations and records, for blocks whose layers live in another module:
    ``blk = RCBScope(name=...)``, then ``blk.input(x)`` before the block's activation, ``blk.conv_output(z)``,
    ``blk.output(y)`` after its BN, and ``blk.record(...)`` / ``blk.candidates(...)``."""

    def input(self, x: jax.Array) -> jax.Array:
        return self.perturb(RCB_INPUT, x)

    def conv_output(self, z: jax.Array) -> jax.Array:
        return rcb_conv_output(self, z)

    def output(self, y: jax.Array) -> jax.Array:
        return rcb_output(self, y)

    def record(self, inp: jax.Array, kernel: jax.Array, out: jax.Array, live=True, pre=None) -> None:
        tap(self, RCB_INPUT, RCBTap(inp, _bool(live)))
        rcb_block(self, inp, kernel, out, live, pre)

    def candidates(self, inp: jax.Array, pre: jax.Array, out: jax.Array, candidates) -> None:
        rcb_candidates(self, inp, pre, out, candidates)


class ReLUConvBN(nn.Module):
    """ReLU -> Conv (no bias) -> BatchNorm: the "RCB" block of NB201/DARTS-style cells.

    MeCo multiplicities follow the reference ``ReLUConvBN`` (an ``nn.Sequential`` inside a module): the BN
    output is emitted by three modules.
    """

    features: int
    kernel: int
    stride: int = 1
    weight_init: str = "pytorch"
    batch_norm: bool = True
    bn_batch_stats: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, live=True) -> jax.Array:
        inp = x
        x = rcb_input(self, x, live)
        x = relu(self, x, live)
        x = conv(self.features, self.kernel, self.stride, init_scheme(self.weight_init), name="conv")(x, live)
        x = rcb_conv_output(self, x)
        y = rcb_output(self, BatchNorm(self.batch_norm, self.bn_batch_stats, name="bn")(x, live, feature_weight=3.0))
        rcb_block(self, inp, self.variables["params"]["conv"]["kernel"], y, live)
        return y
