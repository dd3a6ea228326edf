"""The NAS-Bench-Macro network (Su et al., CVPR 2021; xiusu/NAS-Bench-Macro ``train/model.py``) in Flax, with
the architecture passed as data.

Stem conv3x3 (3 -> 32, padding 1) - BN - ReLU; 8 searchable layers in stages of 2 / 3 / 3, the first layer of
each stage with stride 2 and twice the channels (64 / 128 / 256); conv1x1 to 1280 - BN - ReLU; global average
pool; linear classifier. Layer ops (``jzcp.spaces.macro``):

* ``Identity``: the input, or conv1x1 (stride s, no bias) - BN when the layer changes shape (a stage's first);
* ``MB3_K3`` / ``MB6_K5``: MobileNetV2 inverted residual, expansion t, kernel k: conv1x1 to ``round(C_in * t)``
  - BN - ReLU - depthwise conv k x k (stride s, padding k // 2) - BN - ReLU - conv1x1 to C_out - BN, plus the
  input when stride 1 and C_in == C_out. The activation is ``nn.ReLU`` (the reference's default: its
  ``InvertedResidual`` takes ``activation=nn.ReLU`` and the network never passes ReLU6).

Shape classes: ONE per config and image shape, for all 6,561 architectures -- every layer has fixed input /
output shapes whatever its op, so each layer holds the parameters of its three candidates, computes all of them
and selects the architecture's with ``jnp.select`` (no conditionals around convolutions). :func:`param_mask`
marks the chosen op's parameters; :func:`param_count` / :func:`flops` are vectorised NumPy count tables equal
to the benchmark's ``params`` / ``flops`` for all 6,561 architectures (the FLOPs convention of its
``count_FLOPs``: convolutions ``C_in * C_out * H_out * W_out / groups * k * k`` and linear ``in * out`` only).
The FLOP taps recorded for the proxies follow tensorwatch instead (see :mod:`jzcp.networks.layers`).

With a concrete architecture (NumPy / Python ints) only the chosen ops are built (the plain network).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jzcp.networks import layers
from jzcp.networks.layers import BatchNorm, Dense, conv, init_scheme
from jzcp.networks.nb101 import init_from_shapes
from jzcp.spaces import macro as space

OP_NAMES: tuple[str, ...] = ("identity", "mb3_k3", "mb6_k5")  # parameter-scope names, by op id


@dataclass(frozen=True)
class MacroConfig:
    """Network hyper-parameters; defaults are NAS-Bench-Macro's CIFAR-10 network.

    ``stem_channels`` (32; stage channels double from it), ``head_channels`` (1280), ``num_classes``;
    ``init``: ``"pytorch"`` (torch defaults, the reference's: it does not re-initialise) or ``"kaiming_fan_out"``;
    ``batch_norm=False``: every BatchNorm is the identity (same parameters); ``bn_batch_stats``: train-mode
    batch statistics (default) or eval mode at init.
    """

    stem_channels: int = space.STEM_CHANNELS
    head_channels: int = space.HEAD_CHANNELS
    num_classes: int = 10
    init: str = "pytorch"
    batch_norm: bool = True
    bn_batch_stats: bool = True

    def __post_init__(self):
        init_scheme(self.init)
        if self.stem_channels < 1 or self.head_channels < 1 or self.num_classes < 1:
            raise ValueError(f"invalid MacroConfig {self}")

    def layer_shapes(self) -> list[tuple[int, int, int]]:
        """``(C_in, C_out, stride)`` of each of the 8 searchable layers."""
        out, c = [], self.stem_channels
        for stage in space.STAGES:
            for i in range(stage):
                out.append((c, 2 * c, 2) if i == 0 else (c, c, 1))
                c = 2 * c if i == 0 else c
        return out


def check_arch(arch) -> np.ndarray:
    """Host-side check of one architecture (``(8,)`` ints or the benchmark's 8-character string); returns it
    as int32 or raises ``ValueError`` naming the problem."""
    if isinstance(arch, str):
        return space.parse(arch)
    space.format(arch)  # validates shape and op ids
    return np.asarray(arch).astype(np.int32)


class DepthwiseConv(nn.Module):
    """Depthwise k x k conv (``groups = C``, no bias), parameter ``kernel`` (k, k, 1, C), PyTorch's symmetric
    padding ``k // 2``; with the capture taps of :class:`jzcp.networks.layers.Conv` (fan-in ``k * k``)."""

    kernel_size: int
    stride: int = 1
    kernel_init: layers.Initializer = layers.INIT_SCHEMES["pytorch"].conv

    @nn.compact
    def __call__(self, x, live=True, feature_weight=1.0):
        k, c = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (k, k, 1, c))
        p = (k - 1) // 2
        y = jax.lax.conv_general_dilated(x, kernel, (self.stride, self.stride), ((p, p), (p, p)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
        y = layers.apply_channel_perturbation(y, layers.channel_perturbation(self, y))
        layers.conv_taps(self, y, k * k, live, feature_weight)
        return y


def _conv_bn_block(mdl: nn.Module, name: str, x, act, conv_module, bn_module, live, feature_weight=1.0):
    """``bn(conv(act(x)))`` as an EZNAS block (scope ``{name}_rcb``, see :mod:`jzcp.statistics`): ``act`` the
    activation before the conv (None: the conv reads ``x`` itself)."""
    blk = layers.RCBScope(name=f"{name}_rcb")
    pre = blk.input(x)
    if act is not None:
        pre = act(pre)
    z = blk.conv_output(conv_module(pre, live))
    y = blk.output(bn_module(z, live, feature_weight=feature_weight))
    blk.record(x, mdl.variables["params"][name]["kernel"], y, live, pre=pre)
    return y


class InvertedResidual(nn.Module):
    """MobileNetV2 block (see the module docstring). MeCo multiplicities as the reference's modules: the last
    BN's output is also the ``nn.Sequential``'s (and the block's, without shortcut)."""

    features: int
    expansion: int
    kernel_size: int
    stride: int
    cfg: MacroConfig

    @nn.compact
    def __call__(self, x, live=True):
        cfg, cin = self.cfg, x.shape[-1]
        scheme = init_scheme(cfg.init)
        hidden = round(cin * self.expansion)
        shortcut = self.stride == 1 and cin == self.features
        bn = functools.partial(BatchNorm, cfg.batch_norm, cfg.bn_batch_stats)
        h = _conv_bn_block(self, "pw", x, None, conv(hidden, 1, 1, scheme, name="pw"), bn(name="pw_bn"), live)
        h = _conv_bn_block(self, "dw", h, lambda t: layers.relu(self, t, live, name="pw_relu"),
                           DepthwiseConv(self.kernel_size, self.stride, scheme.conv, name="dw"), bn(name="dw_bn"),
                           live)
        h = _conv_bn_block(self, "pwl", h, lambda t: layers.relu(self, t, live, name="dw_relu"),
                           conv(self.features, 1, 1, scheme, name="pwl"), bn(name="pwl_bn"), live,
                           feature_weight=2.0 if shortcut else 3.0)
        if shortcut:
            h = h + x
            layers.feature(self, h, jnp.asarray(live, jnp.float32), name="out")
        return h


class Downsample(nn.Module):
    """The Identity op of a shape-changing layer: conv1x1 (stride s) - BN; output emitted by BN, Sequential
    and Identity."""

    features: int
    stride: int
    cfg: MacroConfig

    @nn.compact
    def __call__(self, x, live=True):
        return _conv_bn_block(self, "conv", x, None, conv(self.features, 1, self.stride, init_scheme(self.cfg.init),
                                                           name="conv"),
                              BatchNorm(self.cfg.batch_norm, self.cfg.bn_batch_stats, name="bn"), live,
                              feature_weight=3.0)


class Layer(nn.Module):
    """One searchable layer: ``__call__(x, op)`` with ``op`` an int (traced: all three candidates computed,
    the chosen one selected; concrete: only the chosen one built)."""

    features: int
    stride: int
    cfg: MacroConfig

    def _candidate(self, op: int, x, live):
        cin = x.shape[-1]
        if op == space.IDENTITY:
            if self.stride == 1 and cin == self.features:
                layers.feature(self, x, jnp.asarray(live, jnp.float32), name="identity")
                return x
            return Downsample(self.features, self.stride, self.cfg, name=OP_NAMES[op])(x, live)
        return InvertedResidual(self.features, space.EXPANSION[op], space.KERNEL[op], self.stride, self.cfg,
                                name=OP_NAMES[op])(x, live)

    @nn.compact
    def __call__(self, x, op):
        if not isinstance(op, jax.core.Tracer):
            return self._candidate(int(op), x, True)
        outs = [self._candidate(o, x, op == o) for o in range(space.NUM_OPS)]
        return jnp.select([op == o for o in range(space.NUM_OPS)], outs)


class MacroNetwork(nn.Module):
    """``__call__(x, arch)``: images (B, H, W, 3) float, arch ``(8,)`` int op ids -> logits (B, num_classes).

    Follows the capture contract of :mod:`jzcp.networks.layers`. A concrete arch (NumPy array, tuple of ints or
    the benchmark's string) builds only that network and is validated (``ValueError``)."""

    config: MacroConfig = MacroConfig()

    @nn.compact
    def __call__(self, x, arch):
        cfg = self.config
        scheme = init_scheme(cfg.init)
        if not isinstance(arch, jax.core.Tracer):
            arch = check_arch(arch)
        x = conv(cfg.stem_channels, 3, 1, scheme, name="stem_conv")(x)
        x = BatchNorm(cfg.batch_norm, cfg.bn_batch_stats, name="stem_bn")(x)
        x = layers.relu(self, x, feature_weight=2.0, name="stem_relu")  # ReLU + stem Sequential
        for i, (_, cout, stride) in enumerate(cfg.layer_shapes()):
            x = Layer(cout, stride, cfg, name=f"layer{i}")(x, arch[i])
        layers.feature(self, x, 1.0, name="features")  # the features Sequential's output
        x = _conv_bn_block(self, "head_conv", x, None, conv(cfg.head_channels, 1, 1, scheme, name="head_conv"),
                           BatchNorm(cfg.batch_norm, cfg.bn_batch_stats, name="head_bn"), True)
        x = layers.relu(self, x, name="head_relu")
        x = layers.global_avg_pool(self, x)
        return Dense(cfg.num_classes, kernel_init=scheme.dense_kernel, bias_init=scheme.dense_bias(x.shape[-1]),
                     name="classifier")(x)


# --- functional API ------------------------------------------------------------------------------------------


def init(key: jax.Array, config: MacroConfig = MacroConfig(), image_shape=(32, 32, 3)):
    """Parameters of the super-network (all three candidates of every layer), drawn on the host by
    :func:`jzcp.networks.nb101.init_from_shapes`; deterministic in ``key``."""
    return init_from_shapes(key, _param_shapes(config, tuple(image_shape)), init_scheme(config.init))


@functools.lru_cache(maxsize=None)
def _param_shapes(config: MacroConfig, image_shape: tuple[int, int, int]):
    x = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
    arch = jax.ShapeDtypeStruct((space.NUM_LAYERS,), jnp.int32)
    return jax.eval_shape(MacroNetwork(config).init, jax.random.key(0), x, arch)["params"]


@functools.lru_cache(maxsize=None)
def apply_fn(config: MacroConfig = MacroConfig()):
    """The ``apply(params, x, arch) -> logits`` of a config (jit it; one compilation per input shape)."""
    module = MacroNetwork(config)

    def apply(params, x: jax.Array, arch: jax.Array) -> jax.Array:
        return module.apply({"params": params}, x, jnp.asarray(arch, jnp.int32))

    return apply


def _owner(path) -> tuple[int, int] | None:
    """(layer, op id) a parameter belongs to, or None for parameters every architecture uses."""
    names = [getattr(k, "key", str(k)) for k in path]
    if names[0].startswith("layer") and len(names) > 1 and names[1] in OP_NAMES:
        return int(names[0][len("layer"):]), OP_NAMES.index(names[1])
    return None


def param_mask(params, arch):
    """Pytree like ``params`` of scalar bools: does ``arch`` (8,) use this parameter? Jittable."""
    arch = jnp.asarray(arch)

    def used(path, leaf):
        owner = _owner(path)
        return jnp.bool_(True) if owner is None else arch[owner[0]] == owner[1]

    return jax.tree_util.tree_map_with_path(used, params)


@functools.lru_cache(maxsize=None)
def _param_table(config: MacroConfig):
    """(count every architecture has, (8, 3) count added by op o at layer l), from the parameter tree."""
    shapes = _param_shapes(config, (32, 32, 3))
    base, per_op = 0, np.zeros((space.NUM_LAYERS, space.NUM_OPS), np.int64)
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        owner, n = _owner(path), int(np.prod(leaf.shape))
        if owner is None:
            base += n
        else:
            per_op[owner] += n
    return base, per_op


def _conv_flops(cin, cout, hw_out, k=1, groups=1) -> int:
    """The reference ``count_FLOPs`` term of one conv: ``C_in * C_out * H * W // groups * k * k``."""
    return cin * cout * hw_out // groups * k * k


@functools.lru_cache(maxsize=None)
def _flops_table(config: MacroConfig, image_shape=(32, 32, 3)):
    """(FLOPs every architecture has, (8, 3) FLOPs of op o at layer l) in the benchmark's convention."""
    h, w, cimg = image_shape
    out_hw = lambda n, k, s: (n + 2 * (k // 2) - k) // s + 1  # noqa: E731 - the reference's output size
    base = _conv_flops(cimg, config.stem_channels, h * w, 3)
    per_op = np.zeros((space.NUM_LAYERS, space.NUM_OPS), np.int64)
    for i, (cin, cout, s) in enumerate(config.layer_shapes()):
        if s != 1 or cin != cout:
            per_op[i, space.IDENTITY] = _conv_flops(cin, cout, ((h - 1) // s + 1) * ((w - 1) // s + 1))
        for op in (space.MB3_K3, space.MB6_K5):
            k, hid = space.KERNEL[op], round(cin * space.EXPANSION[op])
            ho, wo = out_hw(h, k, s), out_hw(w, k, s)
            per_op[i, op] = (_conv_flops(cin, hid, h * w) + _conv_flops(hid, hid, ho * wo, k, hid)
                             + _conv_flops(hid, cout, ho * wo))
        h, w = (h - 1) // s + 1, (w - 1) // s + 1
    c_last = config.layer_shapes()[-1][1]
    base += _conv_flops(c_last, config.head_channels, h * w) + config.head_channels * config.num_classes
    return base, per_op


def _ops(arch) -> np.ndarray:
    if isinstance(arch, str):
        return space.parse(arch)
    if isinstance(arch, (list, tuple)) and arch and isinstance(arch[0], str):
        return np.stack([space.parse(a) for a in arch])
    a = np.asarray(arch)
    if a.shape[-1:] != (space.NUM_LAYERS,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"NAS-Bench-Macro archs must be integer arrays (..., {space.NUM_LAYERS}), got {a.shape} {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= space.NUM_OPS):
        raise ValueError(f"NAS-Bench-Macro op ids must be in [0, {space.NUM_OPS}), got {np.unique(a).tolist()}")
    return a


def param_count(arch, config: MacroConfig = MacroConfig()) -> np.ndarray:
    """Parameters of the network(s) of ``arch`` (..., 8) (or benchmark strings): the benchmark's ``params``."""
    a = _ops(arch)
    base, per_op = _param_table(config)
    return base + per_op[np.arange(space.NUM_LAYERS), a].sum(-1)


def flops(arch, config: MacroConfig = MacroConfig(), image_shape=(32, 32, 3)) -> np.ndarray:
    """FLOPs of the network(s) of ``arch`` (..., 8) in the benchmark's ``count_FLOPs`` convention: its ``flops``."""
    a = _ops(arch)
    base, per_op = _flops_table(config, tuple(image_shape))
    return base + per_op[np.arange(space.NUM_LAYERS), a].sum(-1)
