"""The DARTS cell-space network (NAS-Bench-301 and NDS DARTS) in Flax, with the two cells passed as data.

Macro skeleton (DARTS ``NetworkCIFAR``; NASLib ``NasBench301SearchSpace``; pycls ``nas.NetworkCIFAR``):
stem conv3x3 (3 -> ``stem_multiplier * C``) + BN; ``layers`` cells, the cells ``layers // 3`` and
``2 * layers // 3`` being reduction cells (channels doubled, spatial size halved); global average pool; linear
head. No auxiliary head (scoring never uses it). A cell reads the outputs of the two previous cells, each
preprocessed to ``C`` channels -- ReLU-conv1x1-BN, or FactorizedReduce when the previous cell reduced -- then
computes four nodes, each the sum of two edges ``op(state[input])`` (states 0, 1 = the preprocessed inputs,
2..5 the nodes), and concatenates nodes 2..5 (``4 C`` channels). In a reduction cell the edges that read
states 0 / 1 have stride 2 (skip becomes FactorizedReduce). Edge ops (op ids of :mod:`jzcp.spaces.darts`):
max / avg pool 3x3, skip, sep conv 3x3 / 5x5 (ReLU, depthwise k x k, pointwise, BN, twice), dil conv 3x3 /
5x5 (ReLU, depthwise k x k dilation 2, pointwise, BN), and ``none`` (zeros; NDS only).

Two variants (:attr:`DartsConfig.variant`), each the network its reference data were measured on:

* ``"nb301"``: NASLib's NAS-Bench-301 network, on which NAS-Bench-Suite-Zero computed its NB301 proxies,
  ``params`` and ``flops``: C = 32, 8 cells (:meth:`DartsConfig.nb301`). Cell ops have **non-affine**
  BatchNorms (``affine=False``: no parameters) and each pool is followed by a non-affine BN; the
  preprocessing and stem BNs are affine. :func:`param_count` and :func:`flops` equal the ``params`` /
  ``flops`` columns of ``jzcp.data.load_naslib_zc("nb301")`` exactly for all 1,218 cells.
* ``"nds"``: pycls's DARTS network of the NDS sweeps (the DARTS evaluation network): affine BNs everywhere,
  no BN after pools, ``none`` allowed. Width / depth from the NDS record (:meth:`DartsConfig.nds`). Its
  parameter count matches DARTS's published 3,349,342 for DARTS-V2 at C = 36, 20 cells (test); NDS's own
  ``flops`` (pycls's count) is not reproduced: :func:`flops` counts as tensorwatch does.

Architecture as data: ``arch`` is the ``(2, 8, 2)`` int32 array of :mod:`jzcp.spaces.darts` ([normal /
reduce][edge][input state, op]). Every edge holds the parameters of every op; each op runs and
``jnp.select`` keeps the chosen one (no ``lax.cond`` around convolutions), except that the 3x3 and 5x5 variants
of the sep conv (and of the dil conv) run as one 5x5 op whose kernels are the chosen variant's, the 3x3 ones
zero-padded (same outputs, half the sep / dil convolutions and their activations). An edge's input is gathered by
index from the stacked states. In a reduction cell an edge reading a node runs at stride 1 and one reading
state 0 / 1 at stride 2 on a 2x larger input, so edges 2..7 there run both (same weights) and keep one with a
``where`` on the input index. With a *concrete* architecture (NumPy / Python ints) only the chosen ops run:
the plain network, used for graph extraction.

Shape classes: one per (variant, C, layers, num_classes, input shape). Every architecture of a class has the
same parameter tree and the same computation graph, so one XLA compilation serves all of them: NB301 is one
class (C = 32, 8 cells, 32x32x3); NDS DARTS has one class per distinct (width, depth) of its records.

Capture contract of :mod:`jzcp.networks.layers`: every conv / linear weight is a ``kernel``; every ReLU,
conv, BN and pool records its taps with its liveness (an op is live iff the edge selects it and, in a
reduction cell, the stride branch that the input index selects); one ConvTap / BNTap per layer (a layer
that runs on two stride branches records the live branch's statistics and FLOPs); the preprocessing
ReLU-conv-BN blocks are :class:`~jzcp.networks.layers.ReLUConvBN` (EZNAS block inputs, as the reference
hooks its ``ReLUConvBN`` modules only); ``batch_norm=False`` makes every BN the identity.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jzcp.networks import layers
from jzcp.networks.layers import BatchNorm, Dense, Params, ReLUConvBN, conv, init_scheme
from jzcp.spaces import darts as space

VARIANTS = ("nb301", "nds")
MAX_POOL, AVG_POOL, SKIP, SEP3, SEP5, DIL3, DIL5, NONE = range(8)
# Module name of each op's parameters inside an edge (none has no module).
OP_MODULES = ("max_pool", "avg_pool", "skip", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
_KERNEL = {SEP3: 3, SEP5: 5, DIL3: 3, DIL5: 5}


@dataclass(frozen=True)
class DartsConfig:
    """Network hyper-parameters; the defaults are NAS-Bench-301's network as NASLib builds it.

    ``channels``: C of the first cells (NDS ``width``). ``layers``: number of cells (NDS ``depth``).
    ``variant``: ``"nb301"`` or ``"nds"`` (see the module docstring). ``init``: ``"pytorch"`` or
    ``"kaiming_fan_out"``. ``batch_norm=False`` turns every BN into the identity (same parameters);
    ``bn_batch_stats=False`` is eval-mode BN at initialisation.
    """

    channels: int = 32
    layers: int = 8
    num_classes: int = 10
    variant: str = "nb301"
    stem_multiplier: int = 3
    init: str = "pytorch"
    batch_norm: bool = True
    bn_batch_stats: bool = True

    def __post_init__(self):
        init_scheme(self.init)
        if self.variant not in VARIANTS:
            raise ValueError(f"DARTS variant must be one of {VARIANTS}, got {self.variant!r}")
        for name in ("channels", "layers", "num_classes", "stem_multiplier"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"DartsConfig.{name} must be a positive integer, got {v!r}")
        if self.channels % 2:
            raise ValueError(f"DartsConfig.channels must be even (FactorizedReduce halves it), got {self.channels}")

    @classmethod
    def nb301(cls, **kw) -> "DartsConfig":
        """NASLib's NAS-Bench-301 network (C = 32, 8 cells, 10 classes)."""
        return cls(**{"channels": 32, "layers": 8, "variant": "nb301", **kw})

    @classmethod
    def nds(cls, width: int, depth: int, **kw) -> "DartsConfig":
        """pycls's DARTS network of an NDS record (``net.width``, ``net.depth``)."""
        return cls(**{"channels": int(width), "layers": int(depth), "variant": "nds", **kw})

    @property
    def allow_none(self) -> bool:
        return self.variant == "nds"

    @property
    def num_ops(self) -> int:
        return space.NUM_OPS + (1 if self.allow_none else 0)

    @property
    def affine_cell_bn(self) -> bool:
        """NASLib's NB301 cell ops use ``BatchNorm2d(affine=False)``; pycls / DARTS affine ones."""
        return self.variant == "nds"

    @property
    def pool_bn(self) -> bool:
        """NASLib's pools are ``Sequential(pool, BatchNorm2d(affine=False))``; DARTS's are bare."""
        return self.variant == "nb301"

    def reductions(self) -> tuple[int, ...]:
        return tuple(sorted({self.layers // 3, 2 * self.layers // 3}))


# --- primitive layers that may run on several stride branches ----------------------------------------------
# A "branch" is one input the layer runs on, with its stride and liveness. Layers on two branches share their
# weights and perturbation and record one ConvTap / BNTap, so proxies see one layer.


def _any(lives) -> jax.Array:
    out = jnp.asarray(lives[0], jnp.bool_)
    for v in lives[1:]:
        out = out | jnp.asarray(v, jnp.bool_)
    return out


def _live_pick(values, lives):
    """The value of the live branch (lives are mutually exclusive); the first one's if none is live."""
    out = values[0]
    for v, live in zip(values[1:], lives[1:]):
        out = jnp.where(jnp.asarray(live, jnp.bool_), v, out)
    return out


def _f32(v) -> jax.Array:
    return jnp.asarray(v, jnp.float32)


def _numel(x) -> int:
    return int(np.prod(x.shape[1:]))


def _out_size(h: int, stride: int) -> int:
    """Spatial size after a stride-``stride`` op with PyTorch padding ``k // 2`` (every op here)."""
    return (h - 1) // stride + 1


def conv_general(x, kernel, stride: int = 1, dilation: int = 1, groups: int = 1):
    """NHWC x HWIO convolution, symmetric padding ``dilation * (k - 1) // 2`` (PyTorch's for these ops)."""
    pad = dilation * (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), ((pad, pad), (pad, pad)), rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def max_pool_3x3(x, stride: int = 1):
    """``nn.MaxPool2d(3, stride, padding=1)`` (padding never wins the max)."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                                 ((0, 0), (1, 1), (1, 1), (0, 0)))


class BranchConv(nn.Module):
    """Bias-free conv (``kernel`` (k, k, C_in / groups, features)) applied to each branch.

    ``depthwise``: groups = C_in (features must equal C_in). Taps: one ConvTap (fan-in ``C_in / groups * k * k``,
    live if any branch is), one FlopsTap (tensorwatch: fan-in x output elements of the live branch), a
    FeatureTap per branch; one ``(B, C)`` output perturbation shared by the branches.
    """

    features: int
    kernel: int
    dilation: int = 1
    depthwise: bool = False
    weight_init: str = "pytorch"

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array], strides: Sequence[int], lives, feature_weight=1.0, *,
                 weight=None, size=None):
        """``weight``: a kernel to use instead of declaring one (a merged op, :class:`Edge`), zero-padded to
        ``self.kernel``; ``size``: its real (possibly traced) kernel size, for fan-in and FLOPs."""
        cin = xs[0].shape[-1]
        groups = cin if self.depthwise else 1
        k = self.kernel
        if weight is None:
            weight = self.param("kernel", init_scheme(self.weight_init).conv, (k, k, cin // groups, self.features))
        ys = [conv_general(x, weight, s, self.dilation, groups) for x, s in zip(xs, strides)]
        p = layers.channel_perturbation(self, ys[0])
        ys = [layers.apply_channel_perturbation(y, p) for y in ys]
        size = k if size is None else size
        fan_in = size * size * (cin // groups)
        flops = sum(_f32(live) * _f32(fan_in) * float(_numel(y)) for y, live in zip(ys, lives))
        layers.tap(self, layers.CONV_OUTPUT, layers.ConvTap(_f32(fan_in), _any(lives)), layers.FlopsTap(flops),
                   *[layers.FeatureTap(y, _f32(live) * feature_weight) for y, live in zip(ys, lives)])
        return ys


class BranchBN(nn.Module):
    """Train-mode BatchNorm on each branch; ``affine=False`` has no parameters (PyTorch ``affine=False``).

    tensorwatch counts ``2 * numel`` FLOPs for an affine BN and ``numel`` for a non-affine one.
    """

    affine: bool = True
    enabled: bool = True
    batch_stats: bool = True

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array], lives, feature_weight=1.0, *, affine_params=None):
        """``affine_params``: ``(scale, bias)`` to use instead of declaring them (a merged op)."""
        c = xs[0].shape[-1]
        if self.affine and affine_params is not None:
            scale, bias = affine_params
        elif self.affine:
            scale = self.param("scale", nn.initializers.ones, (c,))
            bias = self.param("bias", nn.initializers.zeros, (c,))
        else:
            scale, bias = jnp.ones((c,), xs[0].dtype), jnp.zeros((c,), xs[0].dtype)
        if not self.enabled:
            return list(xs)
        ys = [layers.batch_norm(x, scale, bias, True, self.batch_stats) for x in xs]
        var = _live_pick([layers._moments(x)[1] for x in xs], lives)
        count = _live_pick([_f32(np.prod(x.shape[:-1])) for x in xs], lives)
        per = 2.0 if self.affine else 1.0
        flops = sum(_f32(live) * per * _numel(x) for x, live in zip(xs, lives))
        layers.tap(self, "bn", layers.BNTap(var, count, _any(lives)), layers.FlopsTap(flops),
                   *[layers.FeatureTap(y, _f32(live) * feature_weight) for y, live in zip(ys, lives)])
        return ys


def _relus(mdl, xs, lives, name):
    return [layers.relu(mdl, x, live, name=name) for x, live in zip(xs, lives)]


class _Given:
    """Read access to an optional given parameter tree (``None``: every layer declares its own)."""

    def __init__(self, tree):
        self.tree = tree

    def kernel(self, layer):
        return None if self.tree is None else self.tree[layer]["kernel"]

    def affine(self, layer):
        if self.tree is None or layer not in self.tree:
            return None
        return self.tree[layer]["scale"], self.tree[layer]["bias"]


def op_layout(op: int, channels: int, affine: bool) -> tuple:
    """The parameter tree of a sep / dil conv op on ``channels`` channels, as its module declares it:
    ``((layer, ((name, shape, kind, fan_in), ...)), ...)`` (:class:`~jzcp.networks.layers.Params` entries);
    non-affine BNs have no parameters."""
    k = _KERNEL[op]
    bn = (("scale", (channels,), "bn_scale", 0), ("bias", (channels,), "bn_bias", 0))
    dw = (("kernel", (k, k, 1, channels), "conv", k * k),)
    pw = (("kernel", (1, 1, channels, channels), "conv", channels),)
    if op in (SEP3, SEP5):
        layout = (("dw1", dw), ("pw1", pw), ("bn1", bn), ("dw2", dw), ("pw2", pw), ("bn2", bn))
    else:
        layout = (("dw", dw), ("pw", pw), ("bn", bn))
    return tuple((layer, params) for layer, params in layout if affine or not layer.startswith("bn"))


class _Declare(nn.Module):
    """Declares an op's parameters (:func:`op_layout`) without computing anything; returns them as a tree."""

    layout: tuple
    weight_init: str

    @nn.compact
    def __call__(self):
        return {layer: Params(params, self.weight_init, name=layer)() for layer, params in self.layout}


def _merge(small, large, use_small):
    """One parameter tree of the larger op: the smaller op's kernels centred in zeros (a k x k kernel inside a
    K x K one with padding (K - 1) / 2 computes the same convolution), picked where ``use_small``."""

    def pick(a, b):
        if a.shape != b.shape:
            p = (b.shape[0] - a.shape[0]) // 2
            a = jnp.pad(a, ((p, p), (p, p), (0, 0), (0, 0)))
        return jnp.where(use_small, a, b)

    return jax.tree.map(pick, small, large)


class SepConv(nn.Module):
    """DARTS ``SepConv``: (ReLU, depthwise k x k [stride], pointwise, BN, ReLU, depthwise k x k, pointwise, BN)."""

    channels: int
    kernel: int
    cfg: DartsConfig

    @nn.compact
    def __call__(self, xs, strides, lives, weights=None, size=None):
        """``weights``: the op's parameters (:func:`op_layout` tree) to use instead of declaring them, depthwise
        kernels zero-padded to ``self.kernel`` (a merged op, :class:`Edge`); ``size``: their real kernel size."""
        c, k, cfg = self.channels, self.kernel, self.cfg
        w = _Given(weights)
        bn = functools.partial(BranchBN, cfg.affine_cell_bn, cfg.batch_norm, cfg.bn_batch_stats)
        xs = _relus(self, xs, lives, "relu1")
        xs = BranchConv(c, k, 1, True, cfg.init, name="dw1")(xs, strides, lives, weight=w.kernel("dw1"), size=size)
        xs = BranchConv(c, 1, weight_init=cfg.init, name="pw1")(xs, [1] * len(xs), lives, weight=w.kernel("pw1"))
        xs = bn(name="bn1")(xs, lives, affine_params=w.affine("bn1"))
        xs = _relus(self, xs, lives, "relu2")
        xs = BranchConv(c, k, 1, True, cfg.init, name="dw2")(xs, [1] * len(xs), lives, weight=w.kernel("dw2"),
                                                             size=size)
        xs = BranchConv(c, 1, weight_init=cfg.init, name="pw2")(xs, [1] * len(xs), lives, weight=w.kernel("pw2"))
        # Output emitted by BatchNorm2d, the op's Sequential and the op module: MeCo weight 3.
        return bn(name="bn2")(xs, lives, feature_weight=3.0, affine_params=w.affine("bn2"))


class DilConv(nn.Module):
    """DARTS ``DilConv``: ReLU, depthwise k x k dilation 2 [stride], pointwise, BN."""

    channels: int
    kernel: int
    cfg: DartsConfig

    @nn.compact
    def __call__(self, xs, strides, lives, weights=None, size=None):
        """``weights`` / ``size``: as for :class:`SepConv`."""
        c, k, cfg = self.channels, self.kernel, self.cfg
        w = _Given(weights)
        xs = _relus(self, xs, lives, "relu")
        xs = BranchConv(c, k, 2, True, cfg.init, name="dw")(xs, strides, lives, weight=w.kernel("dw"), size=size)
        xs = BranchConv(c, 1, weight_init=cfg.init, name="pw")(xs, [1] * len(xs), lives, weight=w.kernel("pw"))
        return BranchBN(cfg.affine_cell_bn, cfg.batch_norm, cfg.bn_batch_stats, name="bn")(
            xs, lives, feature_weight=3.0, affine_params=w.affine("bn"))


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convs to ``channels / 2`` on ``x`` and on ``x`` shifted by one pixel, concat, BN.

    pycls pads the shifted input at the bottom / right so both halves have ``ceil(H / 2)`` rows; NASLib does
    not pad -- identical for even sizes (every size of these networks at 32x32 inputs).
    """

    channels: int
    affine: bool
    cfg: DartsConfig

    @nn.compact
    def __call__(self, xs, lives, feature_weight=2.0):
        cfg, half = self.cfg, self.channels // 2
        xs = _relus(self, xs, lives, "relu")
        shifted = [jnp.pad(x[:, 1:, 1:, :], ((0, 0), (0, 1), (0, 1), (0, 0))) for x in xs]
        a = BranchConv(half, 1, weight_init=cfg.init, name="conv_1")(xs, [2] * len(xs), lives)
        b = BranchConv(half, 1, weight_init=cfg.init, name="conv_2")(shifted, [2] * len(xs), lives)
        ys = [jnp.concatenate([u, v], axis=-1) for u, v in zip(a, b)]
        return BranchBN(self.affine, cfg.batch_norm, cfg.bn_batch_stats, name="bn")(ys, lives, feature_weight)


class Pool(nn.Module):
    """3x3 max / avg pool (padding 1; avg excludes padding), then a non-affine BN in the NB301 variant."""

    kind: str  # "max" | "avg"
    cfg: DartsConfig

    @nn.compact
    def __call__(self, xs, strides, lives):
        cfg = self.cfg
        fw = 1.0
        ys = []
        for x, s, live in zip(xs, strides, lives):
            if self.kind == "avg":
                ys.append(layers.avg_pool(self, x, 3, s, live, fw, name="pool"))
            else:
                y = max_pool_3x3(x, s)
                layers.tap(self, "pool", layers.FlopsTap(_f32(live) * 9.0 * _numel(y)), layers.FeatureTap(y, _f32(live) * fw))
                ys.append(y)
        if cfg.pool_bn:
            ys = BranchBN(False, cfg.batch_norm, cfg.bn_batch_stats, name="bn")(ys, lives, feature_weight=3.0)
        return ys


class Edge(nn.Module):
    """One cell edge: all ops on the given branches; returns per branch the output of op ``op``.

    ``branches``: list of ``(x, stride, live)``. ``op``: traced int scalar (every op runs -- the two sizes of a
    sep / dil conv as one merged op --, ``jnp.select`` keeps one; an out-of-range id gives zeros) or a Python
    int (only that op runs).
    """

    channels: int
    reduction: bool
    cfg: DartsConfig

    @nn.compact
    def __call__(self, branches, op):
        cfg = self.cfg
        xs = [b[0] for b in branches]
        strides = [b[1] for b in branches]
        blive = [b[2] for b in branches]
        concrete = not isinstance(op, jax.core.Tracer)
        ops = range(cfg.num_ops) if not concrete else [int(op)]
        outs = {}
        if concrete:
            outs[int(op)] = self._op(int(op), xs, strides, blive)
        else:
            for k in ops:
                if k in (SEP3, DIL3):  # with its 5x5 twin, as one op
                    outs[k] = outs[k + 1] = self._merged_op(k, k + 1, op, xs, strides, blive)
                elif k not in (SEP5, DIL5):
                    outs[k] = self._op(k, xs, strides, [jnp.asarray(op == k) & jnp.asarray(lv) for lv in blive])
        ys = []
        for i, (x, s) in enumerate(zip(xs, strides)):
            if concrete:
                y = outs[int(op)][i]
            else:
                y = jnp.select([op == k for k in ops], [outs[k][i] for k in ops],
                               jnp.zeros_like(outs[SEP3][i]))
                y = jnp.asarray(y)
            ys.append(y)
        return ys

    def _merged_op(self, small, large, op, xs, strides, blive):
        """The 3x3 and 5x5 variants of a sep / dil conv as one op of the larger size whose weights are the
        chosen variant's (:func:`_merge`): the parameters stay where each variant declares them, the
        computation, taps and perturbations are the merged op's (``sep_conv`` / ``dil_conv``), live when the
        edge selects either. Half the convolutions and activations of running both."""
        c, cfg = self.channels, self.cfg
        use_small = op == small
        lives = [(use_small | (op == large)) & jnp.asarray(lv) for lv in blive]
        small_w, large_w = (_Declare(op_layout(k, c, cfg.affine_cell_bn), cfg.init, name=OP_MODULES[k])()
                            for k in (small, large))
        size = jnp.where(use_small, _KERNEL[small], _KERNEL[large])
        cls, name = (SepConv, "sep_conv") if small == SEP3 else (DilConv, "dil_conv")
        return cls(c, _KERNEL[large], cfg, name=name)(xs, strides, lives, _merge(small_w, large_w, use_small), size)

    def _op(self, k, xs, strides, lives):
        c, cfg = self.channels, self.cfg
        if k in (MAX_POOL, AVG_POOL):
            return Pool("max" if k == MAX_POOL else "avg", cfg, name=OP_MODULES[k])(xs, strides, lives)
        if k in (SEP3, SEP5):
            return SepConv(c, _KERNEL[k], cfg, name=OP_MODULES[k])(xs, strides, lives)
        if k in (DIL3, DIL5):
            return DilConv(c, _KERNEL[k], cfg, name=OP_MODULES[k])(xs, strides, lives)
        if k == NONE:
            return [jnp.zeros((x.shape[0], _out_size(x.shape[1], s), _out_size(x.shape[2], s), c), x.dtype)
                    for x, s in zip(xs, strides)]
        # skip: identity at stride 1, FactorizedReduce at stride 2 (one module, called on the stride-2 branches).
        out = list(xs)
        red = [i for i, s in enumerate(strides) if s == 2]
        if red:
            ys = FactorizedReduce(c, cfg.affine_cell_bn, cfg, name=OP_MODULES[SKIP])(
                [xs[i] for i in red], [lives[i] for i in red])
            for i, y in zip(red, ys):
                out[i] = y
        for i, s in enumerate(strides):
            if s == 1:
                layers.feature(self, xs[i], _f32(lives[i]), name="identity")
        return out


class Cell(nn.Module):
    """A DARTS cell: preprocessing, 4 nodes of 2 edges each, concat of nodes 2..5 (4 C channels).

    ``cell``: ``(8, 2)`` [input state, op] (traced array or NumPy).
    """

    channels: int
    reduction: bool
    reduction_prev: bool
    cfg: DartsConfig

    @nn.compact
    def __call__(self, s0, s1, cell):
        c, cfg = self.channels, self.cfg
        args = (cfg.init, cfg.batch_norm, cfg.bn_batch_stats)
        if self.reduction_prev:
            s0 = FactorizedReduce(c, True, cfg, name="preprocess0")([s0], [True])[0]
        else:
            s0 = ReLUConvBN(c, 1, 1, *args, name="preprocess0")(s0)
        s1 = ReLUConvBN(c, 1, 1, *args, name="preprocess1")(s1)
        concrete = not isinstance(cell, jax.core.Tracer)
        states = [s0, s1]
        for node in range(space.NUM_NODES):
            total = None
            for e in (2 * node, 2 * node + 1):
                edge = Edge(c, self.reduction, cfg, name=f"edge{e}")
                src, op = cell[e, 0], cell[e, 1]
                if concrete:
                    src = int(src)
                    stride = 2 if self.reduction and src < 2 else 1
                    y = edge([(states[src], stride, True)], int(op))[0]
                elif not self.reduction:
                    x = _gather(states, src)
                    y = edge([(x, 1, True)], op)[0]
                elif e < 2:  # reads state 0 or 1 only
                    y = edge([(jnp.where(src == 0, states[0], states[1]), 2, True)], op)[0]
                else:  # stride-2 branch on the inputs, stride-1 branch on the nodes; the index picks one
                    from_input = src < 2
                    x_in = jnp.where(src == 0, states[0], states[1])
                    x_node = _gather(states[2:], src - 2)
                    y_in, y_node = edge([(x_in, 2, from_input), (x_node, 1, ~from_input)], op)
                    y = jnp.where(from_input, y_in, y_node)
                total = y if total is None else total + y
            states.append(total)
        out = jnp.concatenate(states[2:], axis=-1)
        layers.feature(self, out, 1.0, name="out")
        return out


def _gather(states, index):
    """``states[index]`` for a traced index (clipped to range), as one dynamic slice of the stacked states."""
    if len(states) == 1:
        return states[0]
    stacked = jnp.stack(states)
    index = jnp.clip(index, 0, len(states) - 1)
    return jax.lax.dynamic_index_in_dim(stacked, index, axis=0, keepdims=False)


class DartsNetwork(nn.Module):
    """``__call__(x, arch)``: images (B, H, W, 3) float, arch (2, 8, 2) int -> logits (B, num_classes)."""

    config: DartsConfig = DartsConfig()

    @nn.compact
    def __call__(self, x: jax.Array, arch) -> jax.Array:
        cfg = self.config
        if not isinstance(arch, jax.core.Tracer):
            arch = space.parse_compact(np.asarray(arch), allow_none=cfg.allow_none)
        elif arch.shape != (space.NUM_CELLS, space.NUM_EDGES, 2):
            raise ValueError(f"DARTS arch must have shape (2, 8, 2), got {arch.shape}")
        scheme = init_scheme(cfg.init)
        cs = cfg.stem_multiplier * cfg.channels
        x = conv(cs, 3, 1, scheme, name="stem_conv")(x)
        # Stem output emitted by BatchNorm2d, the stem Sequential and (NASLib) the Stem primitive.
        x = BatchNorm(cfg.batch_norm, cfg.bn_batch_stats, name="stem_bn")(x, feature_weight=3.0 if cfg.variant == "nb301" else 2.0)
        s0 = s1 = x
        c, red_prev = cfg.channels, False
        reductions = cfg.reductions()
        for i in range(cfg.layers):
            red = i in reductions
            if red:
                c *= 2
            cell = arch[1] if red else arch[0]
            s0, s1 = s1, Cell(c, red, red_prev, cfg, name=f"cell{i}")(s0, s1, cell)
            red_prev = red
        h = layers.global_avg_pool(self, s1)
        return Dense(cfg.num_classes, kernel_init=scheme.dense_kernel, bias_init=scheme.dense_bias(h.shape[-1]),
                     name="head")(h)


# --- functional API ----------------------------------------------------------------------------------------


def init(key: jax.Array, config: DartsConfig = DartsConfig(), image_shape=(32, 32, 3)):
    """Parameters of the super-network (every op of every edge); any architecture's weights are a subset.

    The tree comes from an abstract trace of ``DartsNetwork.init``; each leaf is then drawn by its own
    initialiser (conv / linear kernels by the config's scheme, linear bias by the scheme's fan-in rule, BN
    scale 1 and bias 0) from ``fold_in(k, leaf index)``, ``k`` an ``rbg`` key drawn from ``key``. A jitted
    ``Module.init`` of this network compiles for minutes on CPU (threefry unrolled for ~400 leaves plus the
    whole super-network forward); this takes seconds. Deterministic in ``key``.
    """
    scheme = init_scheme(config.init)
    tree = _param_shapes(config, tuple(int(s) for s in image_shape))
    key = _rbg_key(key)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    head_fan_in = None
    for path, leaf in leaves:
        names = [getattr(k, "key", str(k)) for k in path]
        if names[0] == "head" and names[-1] == "kernel":
            head_fan_in = leaf.shape[0]
    out = []
    for i, (path, leaf) in enumerate(leaves):
        names = [getattr(k, "key", str(k)) for k in path]
        k = _fold_in(key, i)
        if names[0] == "head":
            fn = scheme.dense_kernel if names[-1] == "kernel" else scheme.dense_bias(head_fan_in)
        elif names[-1] == "kernel":
            fn = scheme.conv
        elif names[-1] == "scale":
            fn = nn.initializers.ones
        else:
            fn = nn.initializers.zeros
        out.append(_jitted(fn)(k, tuple(leaf.shape), leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


@functools.lru_cache(maxsize=None)
def _jitted(fn):
    """An initialiser jitted whole: one small compilation per shape (eager dispatch compiles each of its
    primitives separately)."""
    return jax.jit(fn, static_argnums=(1, 2))


_fold_in = jax.jit(jax.random.fold_in)


@jax.jit
def _rbg_key(key: jax.Array) -> jax.Array:
    """An ``rbg`` key drawn from ``key``: per-leaf initialisers compile ~8x faster with it on CPU than with
    threefry keys (XLA's RngBitGenerator instead of an unrolled threefry per shape)."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # a raw uint32 key
    return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")


@functools.lru_cache(maxsize=None)
def _param_shapes(config: DartsConfig, image_shape: tuple):
    x = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
    arch = jax.ShapeDtypeStruct((space.NUM_CELLS, space.NUM_EDGES, 2), jnp.int32)
    return jax.eval_shape(DartsNetwork(config).init, jax.random.key(0), x, arch)["params"]


@functools.lru_cache(maxsize=None)
def apply_fn(config: DartsConfig = DartsConfig()):
    """The ``apply(params, x, arch) -> logits`` of a config (jit it; one compilation per input shape)."""
    module = DartsNetwork(config)

    def apply(params, x: jax.Array, arch: jax.Array) -> jax.Array:
        return module.apply({"params": params}, x, jnp.asarray(arch, jnp.int32))

    return apply


def _owner(path) -> tuple[int, int, int] | None:
    """(cell index, edge, op id) owning the parameter at ``path``, or None for parameters every arch uses."""
    names = [getattr(k, "key", str(k)) for k in path]
    for a, b, c in zip(names, names[1:], names[2:]):
        if a.startswith("cell") and b.startswith("edge") and c in OP_MODULES:
            return int(a[4:]), int(b[4:]), OP_MODULES.index(c)
    return None


def param_mask(params, arch: jax.Array):
    """Pytree like ``params`` of scalar bools: does the network of ``arch`` (2, 8, 2) have this parameter?

    An op's parameters belong to the network iff its edge selects it; the FactorizedReduce of a reduction
    cell's skip only when the edge reads state 0 / 1 (otherwise skip is the identity). Jittable.
    """
    arch = jnp.asarray(arch)

    def used(path, leaf):
        owner = _owner(path)
        if owner is None:
            return jnp.bool_(True)
        cell, e, op = owner
        row = _cell_row(params, cell)
        sel = arch[row, e, 1] == op
        if op == SKIP:
            sel = sel & (arch[row, e, 0] < 2)
        return sel

    return jax.tree_util.tree_map_with_path(used, params)


def _cell_row(params, cell: int) -> int:
    """0 (normal) or 1 (reduction) for cell ``cell`` of a parameter tree: a reduction cell's edges hold a
    FactorizedReduce skip module (a normal cell's skip is the identity, without parameters)."""
    edge0 = params[f"cell{cell}"]["edge0"]
    return 1 if OP_MODULES[SKIP] in edge0 else 0


# --- exact counts (NumPy) ----------------------------------------------------------------------------------


def _cell_plan(config: DartsConfig, image_shape):
    """Per cell: (reduction, reduction_prev, C_prev_prev, C_prev, C, input size H, W)."""
    h, w = image_shape[0], image_shape[1]
    cs = config.stem_multiplier * config.channels
    cpp, cp, c, red_prev = cs, cs, config.channels, False
    hpp, wpp = h, w  # size of s0 (differs from s1 after a reduction)
    plan = []
    for i in range(config.layers):
        red = i in config.reductions()
        if red:
            c *= 2
        plan.append((red, red_prev, cpp, cp, c, hpp, wpp, h, w))
        hpp, wpp = h, w
        if red:
            h, w = _out_size(h, 2), _out_size(w, 2)
        cpp, cp, red_prev = cp, 4 * c, red
    return plan, cp, h, w


def _op_cost(op: int, c: int, h: int, w: int, stride: int, cfg: DartsConfig) -> tuple[int, int]:
    """(parameters, tensorwatch FLOPs) of op ``op`` on a (h, w, c) input at ``stride``."""
    ho, wo = _out_size(h, stride), _out_size(w, stride)
    n_in, n_out = c * h * w, c * ho * wo
    bn_p = 2 * c if cfg.affine_cell_bn else 0
    bn_f = (2 if cfg.affine_cell_bn else 1) * n_out
    if op in (MAX_POOL, AVG_POOL):
        return 0, 9 * n_out + (n_out if cfg.pool_bn else 0)  # the pool BN is non-affine
    if op == SKIP:
        if stride == 1:
            return 0, 0
        return c * c + bn_p, n_in + c * c * ho * wo + bn_f  # 2 convs C -> C/2: C * C/2 * 2
    if op in (SEP3, SEP5):
        k = _KERNEL[op]
        p = 2 * (k * k * c + c * c) + 2 * bn_p
        f = n_in + k * k * n_out + c * n_out + bn_f + n_out + k * k * n_out + c * n_out + bn_f
        return p, f
    if op in (DIL3, DIL5):
        k = _KERNEL[op]
        return k * k * c + c * c + bn_p, n_in + k * k * n_out + c * n_out + bn_f
    return 0, 0  # none


@functools.lru_cache(maxsize=None)
def _cost_tables(config: DartsConfig, image_shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``(base, table)``: ``base`` (2,) params / FLOPs every architecture has; ``table`` (2 cells, 2 input
    kinds [node, cell input], num_ops, 2) the params / FLOPs an op adds, summed over the cells of that type."""
    plan, c_last, h, w = _cell_plan(config, image_shape)
    cs = config.stem_multiplier * config.channels
    H, W, cin = image_shape
    base = np.zeros(2, np.int64)
    base += (cin * cs * 9 + 2 * cs, 9 * cin * cs * H * W + 2 * cs * H * W)  # stem conv + affine BN
    table = np.zeros((2, 2, config.num_ops, 2), np.int64)
    for red, red_prev, cpp, cp, c, hpp, wpp, hc, wc in plan:
        # preprocess0: ReLU-conv1x1-BN, or FactorizedReduce (affine) of the larger s0
        if red_prev:
            base += (cpp * c + 2 * c, cpp * hpp * wpp + cpp * c * hc * wc + 2 * c * hc * wc)
        else:
            base += (cpp * c + 2 * c, cpp * hc * wc + cpp * c * hc * wc + 2 * c * hc * wc)
        base += (cp * c + 2 * c, cp * hc * wc + cp * c * hc * wc + 2 * c * hc * wc)
        ho, wo = (_out_size(hc, 2), _out_size(wc, 2)) if red else (hc, wc)
        for op in range(config.num_ops):
            # kind 1: the edge reads state 0 / 1 (stride 2 in a reduction cell); kind 0: reads a node.
            table[int(red), 1, op] += _op_cost(op, c, hc, wc, 2 if red else 1, config)
            table[int(red), 0, op] += _op_cost(op, c, ho, wo, 1, config)
    base += (c_last * config.num_classes + config.num_classes,
             c_last * (h + 1) * (w + 1) + c_last * config.num_classes)  # tensorwatch: adaptive pool, linear
    return base, table


def _costs(arch, config: DartsConfig, image_shape) -> np.ndarray:
    a = np.asarray(arch)
    if a.ndim < 3:
        raise ValueError(f"DARTS arch must have shape (..., 2, 8, 2), got {a.shape}")
    flat = a.reshape(-1, *a.shape[-3:])
    for one in flat:
        space.parse_compact(one, allow_none=config.allow_none)  # ValueError naming the problem
    base, table = _cost_tables(config, tuple(int(s) for s in image_shape))
    src, op = flat[..., 0], flat[..., 1]  # (N, 2, 8)
    kind = (src < 2).astype(np.int64)
    cells = np.arange(2)[None, :, None]
    total = base + table[cells, kind, op].sum(axis=(1, 2))
    return total.reshape(*a.shape[:-3], 2)


def param_count(arch, config: DartsConfig = DartsConfig(), image_shape=(32, 32, 3)) -> np.ndarray:
    """Parameters of the network of ``arch`` (..., 2, 8, 2), as int64 units (tensorwatch / ``torch``
    count of the built network, no auxiliary head). NB301: equals NAS-Bench-Suite-Zero's ``params`` x 1e6."""
    return _costs(arch, config, image_shape)[..., 0]


def flops(arch, config: DartsConfig = DartsConfig(), image_shape=(32, 32, 3)) -> np.ndarray:
    """FLOPs of one ``image_shape`` sample as tensorwatch counts them (conv: fan-in x outputs; ReLU: inputs; BN:
    2 x (affine) or 1 x inputs; pool: 9 x outputs; global pool: C (H + 1)(W + 1); linear: in x out), int64.
    NB301: equals NAS-Bench-Suite-Zero's ``flops`` x 1e6 (MFLOPs)."""
    return _costs(arch, config, image_shape)[..., 1]
