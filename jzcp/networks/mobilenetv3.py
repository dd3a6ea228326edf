"""The Once-for-All MobileNetV3 space (mit-han-lab/once-for-all ``OFAMobileNetV3``) as a Flax network, with
the sub-network passed as data.

Skeleton (see :mod:`jzcp.spaces.mobilenetv3` for the widths table): first conv 3x3 stride 2 + BN + h-swish;
first block MBConv k3 e1 (depthwise 3x3 + BN + ReLU, pointwise + BN, identity shortcut); 5 stages of up to
4 MBConv layers (expand 1x1 + BN + act, depthwise k x k [stage stride on the first layer] + BN + act, SE
where MobileNetV3 has it, pointwise + BN; identity shortcut except on a stage's first layer); final expand
conv 1x1 + BN + h-swish; global average pool; feature-mix conv 1x1 (no BN, no bias) + h-swish; linear
classifier (OFA's dropout 0.1 is inactive at scoring). ``h_swish(x) = x relu6(x + 3) / 6``, SE gate
``h_sigmoid``.

Weights of a sub-network. Every (layer, expand ratio) has its own expand conv, BNs, SE and pointwise conv,
and every (layer, kernel, expand ratio) its own depthwise kernel, each initialised with *its own* fan-in:
the weights a freshly built, random-init network of that sub-network has. (OFA instead shares one 7x7 kernel
and one max-width conv among all sub-networks, cropping the centre / the first channels, with a learned
transform of the cropped kernels; that is what a *trained* super-network needs. For scoring at random
initialisation a network must look like a fresh network of that architecture, and a crop of a wider / larger
random weight has the wrong scale: U(+-1/7) instead of U(+-1/3) for a 3x3 crop of a 7x7 kernel.)

Architecture as data: an :class:`~jzcp.spaces.mobilenetv3.Arch` of ``ks (20,)``, ``e (20,)``, ``d (5,)``.
Traced, each layer runs once at the widest expand ratio (``mid_max`` channels) with its weights selected by
``jnp.select`` among the zero-padded candidates: a 3x3 / 5x5 kernel padded to 7x7 and a narrower expand
padded with zero channels give exactly the narrower network's values (padded channels stay exactly 0
through BN, activations, SE and the pointwise conv). A layer beyond its stage's depth is skipped with a
``where`` (its output is its input). Concrete (NumPy / Python values), only the chosen layers and widths
are built: the plain network.

Shape classes: one per (width_mult, resolution, num_classes): every sub-network shares the parameter tree and
the computation, so one compilation per resolution serves all 3^20 * 3^20 * 3^5 sub-networks.

Capture contract (:mod:`jzcp.networks.layers`): conv / linear weights are ``kernel``; ReLUs, convs, BNs
record their taps, live iff the layer runs; ``batch_norm=False`` makes BNs the identity. Deviation: taps
of the traced network are over ``mid_max`` channels, of which the ones beyond the chosen width are exactly
zero (their ReLU codes and BN variances are constants); per-channel statistics of those taps (nwot's
codes, zen's BN variances) therefore differ from the plain network's, while outputs, gradients, weights and
FLOPs are exact.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jzcp.networks import layers
from jzcp.networks.layers import BatchNorm, Dense, Params, init_scheme
from jzcp.spaces import mobilenetv3 as space
from jzcp.spaces.mobilenetv3 import Arch, make_divisible

KS = space.KERNEL_SIZES
ES = space.EXPAND_RATIOS


@dataclass(frozen=True)
class MobileNetV3NetConfig:
    """The fixed part of the network: width multiplier (OFA's zoo: 1.0, 1.2), input resolution (square,
    pixels), classes; init scheme, BN switch (False: identity, same parameters), BN mode."""

    width_mult: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    init: str = "pytorch"
    batch_norm: bool = True
    bn_batch_stats: bool = True

    def __post_init__(self):
        init_scheme(self.init)
        self.space_config()  # validates width / resolution / classes

    def space_config(self) -> space.MobileNetV3Config:
        return space.MobileNetV3Config(self.width_mult, self.resolution, self.num_classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.resolution, self.resolution, 3)


def mid_width(c_in: int, e: int) -> int:
    """OFA's expanded width: ``make_divisible(round(c_in * e), 8)``."""
    return make_divisible(round(c_in * e), space.CHANNEL_DIVISIBLE)


def se_width(mid: int) -> int:
    """OFA's SE bottleneck: ``make_divisible(mid // 4, 8)``."""
    return make_divisible(mid // space.SE_REDUCTION, space.CHANNEL_DIVISIBLE)


def _f32(v):
    return jnp.asarray(v, jnp.float32)


def _act(mdl, x, kind: str, live=True, name="act"):
    """ReLU (tapped as a ReLU) or h-swish (a separate module in OFA: references that hook ``nn.ReLU`` do not
    see it; tensorwatch counts it 0 FLOPs). ``live`` is the layer's liveness."""
    if kind == "relu":
        return layers.relu(mdl, x, live, name=name)
    y = x * jax.nn.relu6(x + 3.0) / 6.0
    layers.feature(mdl, y, _f32(live), name=name)
    return y


def _dwconv(x, kernel, stride):
    """Depthwise conv with PyTorch padding ``k // 2``; ``kernel`` (k, k, 1, C)."""
    pad = kernel.shape[0] // 2
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])


def _conv_out(mdl, y, fan_in, live, bias=False):
    """Output perturbation + taps of a conv whose output is ``y``."""
    y = layers.apply_channel_perturbation(y, layers.channel_perturbation(mdl, y))
    layers.conv_taps(mdl, y, fan_in, live, bias=bias)
    return y


def _mbconv_shapes(c_in: int, c_out: int, e: int, se: bool):
    """The parameters of one MBConv candidate with expand ratio ``e`` (the depthwise kernel excluded)."""
    mid = mid_width(c_in, e)
    s = [("expand_kernel", (1, 1, c_in, mid), "conv", c_in), ("expand_bn_scale", (mid,), "bn_scale", 0),
         ("expand_bn_bias", (mid,), "bn_bias", 0), ("dw_bn_scale", (mid,), "bn_scale", 0),
         ("dw_bn_bias", (mid,), "bn_bias", 0)]
    if se:
        r = se_width(mid)
        s += [("se_reduce_kernel", (1, 1, mid, r), "conv", mid), ("se_reduce_bias", (r,), "conv_bias", mid),
              ("se_expand_kernel", (1, 1, r, mid), "conv", r), ("se_expand_bias", (mid,), "conv_bias", r)]
    s += [("point_kernel", (1, 1, mid, c_out), "conv", mid)]
    return tuple(s)


def _pad_to(a, shape):
    return jnp.pad(a, [(0, t - s) for s, t in zip(a.shape, shape)])


def _pad_centre(k, size):
    p = (size - k.shape[0]) // 2
    return jnp.pad(k, ((p, p), (p, p), (0, 0), (0, 0)))


class _Tapped(nn.Module):
    """Scope of one conv computed by ``fn(x)``: output perturbation and taps (``fan_in`` may be traced)."""

    @nn.compact
    def __call__(self, x, fn, fan_in, live, bias=False):
        return _conv_out(self, fn(x), fan_in, live, bias=bias)


class MBConv(nn.Module):
    """One elastic MBConv layer (plus its identity shortcut when ``residual``).

    ``__call__(x, ks, e, live)``: kernel size and expand ratio (traced int scalars or Python ints) and the
    layer's liveness. Parameters: ``e{e}`` per expand ratio (expand conv, BNs, SE, pointwise conv),
    ``dw_k{k}_e{e}`` the depthwise kernel per (kernel, expand ratio), ``point_bn`` (every candidate's).
    """

    c_out: int
    stride: int
    se: bool
    act: str
    residual: bool
    cfg: MobileNetV3NetConfig

    @nn.compact
    def __call__(self, x, ks, e, live):
        cfg, c_in, kmax, emax = self.cfg, x.shape[-1], max(KS), max(ES)
        p = {ev: Params(_mbconv_shapes(c_in, self.c_out, ev, self.se), cfg.init, name=f"e{ev}")() for ev in ES}
        dw = {(k, ev): Params((("kernel", (k, k, 1, mid_width(c_in, ev)), "conv", k * k),), cfg.init,
                              name=f"dw_k{k}_e{ev}")()["kernel"] for k in KS for ev in ES}
        concrete = not isinstance(ks, jax.core.Tracer) and not isinstance(e, jax.core.Tracer)
        if concrete:  # the plain layer
            k_i, e_i = int(ks), int(e)
            w, kern = p[e_i], dw[(k_i, e_i)]
            mid, r, dw_fan = mid_width(c_in, e_i), (se_width(mid_width(c_in, e_i)) if self.se else 0), k_i * k_i
        else:  # widest layer, weights of the chosen candidate zero-padded to its shapes
            e_is = [e == ev for ev in ES]
            w = {name: jnp.select(e_is, [_pad_to(p[ev][name], shape) for ev in ES])
                 for name, shape, _, _ in _mbconv_shapes(c_in, self.c_out, emax, self.se)}
            kern = jnp.select([(ks == k) & (e == ev) for k in KS for ev in ES],
                              [_pad_to(_pad_centre(dw[(k, ev)], kmax), (kmax, kmax, 1, mid_width(c_in, emax)))
                               for k in KS for ev in ES])
            mid = jnp.select(e_is, [mid_width(c_in, ev) for ev in ES])
            r = jnp.select(e_is, [se_width(mid_width(c_in, ev)) for ev in ES]) if self.se else 0
            dw_fan = ks * ks
        bn_on, stats = cfg.batch_norm, cfg.bn_batch_stats
        if concrete:  # EZNAS block records (see jzcp.statistics): the layer's own kernels...
            cands = {"expand": [(w["expand_kernel"], c_in, live)], "dw": [(kern, mid, live)],
                     "point": [(w["point_kernel"], mid, live)]}
        else:  # ...or one candidate per real width of the padded tensors
            cands = {"expand": [(p[ev]["expand_kernel"], c_in, live & (e == ev)) for ev in ES],
                     "dw": [(dw[(k, ev)], mid_width(c_in, ev), live & (ks == k) & (e == ev)) for k in KS for ev in ES],
                     "point": [(p[ev]["point_kernel"], mid_width(c_in, ev), live & (e == ev)) for ev in ES]}
        blk = layers.RCBScope(name="expand_rcb")
        pre = blk.input(x)
        h = blk.conv_output(_Tapped(name="expand")(pre, lambda y: layers.conv2d(y, w["expand_kernel"]), c_in, live))
        h = blk.output(layers.bn(self, h, w["expand_bn_scale"], w["expand_bn_bias"], bn_on, stats, live,
                                 name="expand_bn"))
        blk.candidates(x, pre, h, cands["expand"])
        blk = layers.RCBScope(name="dw_rcb")
        inp, h = h, blk.input(h)
        pre = _act(self, h, self.act, live, name="expand_act")
        h = blk.conv_output(_Tapped(name="dw")(pre, lambda y: _dwconv(y, kern, self.stride), dw_fan, live))
        h = blk.output(layers.bn(self, h, w["dw_bn_scale"], w["dw_bn_bias"], bn_on, stats, live, name="dw_bn"))
        blk.candidates(inp, pre, h, cands["dw"])
        h = _act(self, h, self.act, live, name="dw_act")
        if self.se:
            g = jnp.mean(h, axis=(1, 2), keepdims=True)
            g = _Tapped(name="se_reduce")(g, lambda y: layers.conv2d(y, w["se_reduce_kernel"]) + w["se_reduce_bias"],
                                          mid, live, bias=True)
            g = layers.relu(self, g, live, name="se_relu")
            g = _Tapped(name="se_expand")(g, lambda y: layers.conv2d(y, w["se_expand_kernel"]) + w["se_expand_bias"],
                                          r, live, bias=True)
            h = h * (jax.nn.relu6(g + 3.0) / 6.0)
        blk = layers.RCBScope(name="point_rcb")
        inp, pre = h, blk.input(h)  # the conv reads the (gated) activation itself
        h = blk.conv_output(_Tapped(name="point")(pre, lambda y: layers.conv2d(y, w["point_kernel"]), mid, live))
        h = blk.output(BatchNorm(bn_on, stats, name="point_bn")(h, live=live))
        blk.candidates(inp, pre, h, cands["point"])
        return x + h if self.residual else h


class MobileNetV3Network(nn.Module):
    """``__call__(x, arch)``: images (B, R, R, 3), :class:`Arch` (or its flat ``(45,)`` form) -> logits (B, num_classes)."""

    config: MobileNetV3NetConfig = MobileNetV3NetConfig()

    @nn.compact
    def __call__(self, x: jax.Array, arch: Arch) -> jax.Array:
        cfg = self.config
        scfg = cfg.space_config()
        scheme = init_scheme(cfg.init)
        if not isinstance(arch, Arch):  # the flat (45,) form of space.flatten
            arch = space.unflatten(arch)
        concrete = not any(isinstance(a, jax.core.Tracer) for a in arch)
        if concrete:
            arch = space.parse(space.format(Arch(*(np.asarray(a) for a in arch))))
            ks, es, d = (np.asarray(a).tolist() for a in arch)
            active = [(i % space.MAX_DEPTH) < d[i // space.MAX_DEPTH] for i in range(space.NUM_LAYERS)]
        else:
            ks, es = jnp.asarray(arch.ks), jnp.asarray(arch.e)
            if ks.shape != (space.NUM_LAYERS,) or es.shape != (space.NUM_LAYERS,) or jnp.shape(arch.d) != (space.NUM_STAGES,):
                raise ValueError(f"OFA MobileNetV3 arch arrays must have shapes (20,), (20,), (5,); got "
                                 f"{ks.shape}, {es.shape}, {jnp.shape(arch.d)}")
            active = space.depth_mask(arch)
        w = scfg.widths()
        bn_on, stats = cfg.batch_norm, cfg.bn_batch_stats
        x = layers.conv(w[0], 3, 2, scheme, name="first_conv")(x)
        x = BatchNorm(bn_on, stats, name="first_bn")(x)
        x = _act(self, x, "h_swish", name="first_act")
        x = _FirstBlock(w[1], cfg, name="first_block")(x)
        for s, stage in enumerate(scfg.stages()[1:]):
            for i in range(space.MAX_DEPTH):
                li = s * space.MAX_DEPTH + i
                live = active[li]
                layer = MBConv(stage.width, stage.stride if i == 0 else 1, stage.se, stage.act, i > 0, cfg,
                               name=f"stage{s + 1}_layer{i}")
                if concrete:
                    if live:
                        x = layer(x, ks[li], es[li], True)
                elif i < min(space.DEPTHS):  # always runs
                    x = layer(x, ks[li], es[li], True)
                else:
                    x = jnp.where(live, layer(x, ks[li], es[li], live), x)
        blk = layers.RCBScope(name="final_expand_rcb")
        inp, pre = x, blk.input(x)
        x = blk.conv_output(layers.conv(w[7], 1, 1, scheme, name="final_expand")(pre))
        x = blk.output(BatchNorm(bn_on, stats, name="final_expand_bn")(x))
        blk.record(inp, self.variables["params"]["final_expand"]["kernel"], x, pre=pre)
        x = _act(self, x, "h_swish", name="final_expand_act")
        x = layers.global_avg_pool(self, x)[:, None, None, :]
        x = layers.conv(w[8], 1, 1, scheme, name="feature_mix")(x)
        x = _act(self, x, "h_swish", name="feature_mix_act")[:, 0, 0, :]
        return Dense(cfg.num_classes, kernel_init=scheme.dense_kernel, bias_init=scheme.dense_bias(w[8]),
                     name="classifier")(x)


class _FirstBlock(nn.Module):
    """OFA's first block: depthwise 3x3 + BN + ReLU, pointwise + BN, plus the identity shortcut."""

    c_out: int
    cfg: MobileNetV3NetConfig

    @nn.compact
    def __call__(self, x):
        cfg, c = self.cfg, x.shape[-1]
        scheme = init_scheme(cfg.init)
        kernel = self.param("dw_kernel", scheme.conv, (3, 3, 1, c))
        blk = layers.RCBScope(name="dw_rcb")  # EZNAS blocks (see jzcp.statistics); the dw conv reads x itself
        pre = blk.input(x)
        h = blk.conv_output(_Tapped(name="dw")(pre, lambda y: _dwconv(y, kernel, 1), 9, True))
        h = blk.output(BatchNorm(cfg.batch_norm, cfg.bn_batch_stats, name="dw_bn")(h))
        blk.record(x, kernel, h, pre=pre)
        blk = layers.RCBScope(name="point_rcb")
        inp, h = h, blk.input(h)
        pre = layers.relu(self, h, name="dw_act")
        h = blk.conv_output(layers.conv(self.c_out, 1, 1, scheme, name="point")(pre))
        h = blk.output(BatchNorm(cfg.batch_norm, cfg.bn_batch_stats, name="point_bn")(h))
        blk.record(inp, self.variables["params"]["point"]["kernel"], h, pre=pre)
        return x + h if self.c_out == c else h


# --- functional API ----------------------------------------------------------------------------------------


def _arch_template():
    return Arch(jnp.full(space.NUM_LAYERS, 3, jnp.int32), jnp.full(space.NUM_LAYERS, 3, jnp.int32),
                jnp.full(space.NUM_STAGES, 2, jnp.int32))


@functools.lru_cache(maxsize=None)
def _param_shapes(config: MobileNetV3NetConfig):
    x = jax.ShapeDtypeStruct((2, *config.image_shape), jnp.float32)
    arch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _arch_template())
    return jax.eval_shape(MobileNetV3Network(config).init, jax.random.key(0), x, arch)["params"]


def init(key: jax.Array, config: MobileNetV3NetConfig = MobileNetV3NetConfig()):
    """Parameters of every candidate of every layer (any sub-network's weights are a subset).

    As :func:`jzcp.networks.darts.init`: the tree from an abstract trace, each leaf drawn by its initialiser
    (:func:`_leaf_init`) from an ``rbg`` key (a jitted ``Module.init`` compiles for minutes on CPU).
    Deterministic in ``key``. ~50 s the first time per config on a 2-core CPU (one compilation), then fast."""
    return _init_all(config)(key)


@functools.lru_cache(maxsize=None)
def _init_all(config: MobileNetV3NetConfig):
    """One jitted function drawing every leaf (one compilation per config; ~300 distinct leaf shapes make
    per-leaf compilations cost over a minute)."""
    from jzcp.networks.darts import _rbg_key

    shapes = _param_shapes(config)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    scheme = init_scheme(config.init)
    fns = [_leaf_init(scheme, _names(path), shapes) for path, _ in leaves]

    @jax.jit
    def draw(key):
        keys = jax.random.split(_rbg_key(key), len(leaves))
        out = [fn(keys[i], tuple(leaf.shape), leaf.dtype) for i, (fn, (_, leaf)) in enumerate(zip(fns, leaves))]
        return jax.tree_util.tree_unflatten(treedef, out)

    return draw


def _names(path) -> tuple[str, ...]:
    return tuple(getattr(k, "key", str(k)) for k in path)


def _leaf_init(scheme, names: tuple[str, ...], shapes):
    """The initialiser the module declares for the leaf at ``names``: conv kernels the scheme's conv init,
    the classifier the scheme's linear init, conv / linear biases the scheme's bias rule at the layer's
    fan-in (torch: ``U(+-1/sqrt(fan_in))``), BN scale ones and bias zeros."""
    last = names[-1]
    if names[0] == "classifier":
        return scheme.dense_kernel if last == "kernel" else scheme.dense_bias(shapes["classifier"]["kernel"].shape[0])
    if last.endswith("kernel"):
        return scheme.conv
    if last.startswith("se_") and last.endswith("_bias"):
        parent = functools.reduce(lambda t, n: t[n], names[:-1], shapes)
        return scheme.dense_bias(parent[last.replace("_bias", "_kernel")].shape[2])
    return nn.initializers.ones if last.endswith("scale") else nn.initializers.zeros


@functools.lru_cache(maxsize=None)
def apply_fn(config: MobileNetV3NetConfig = MobileNetV3NetConfig()):
    """``apply(params, x, arch) -> logits`` (jit it: one compilation per input shape)."""
    module = MobileNetV3Network(config)

    def apply(params, x, arch: Arch):
        return module.apply({"params": params}, x, Arch(*(jnp.asarray(a, jnp.int32) for a in arch)))

    return apply


def _owner(path):
    """(layer index, kernel or None, expand) owning a parameter, or None for parameters every sub-network has."""
    names = [getattr(k, "key", str(k)) for k in path]
    for a, b in zip(names, names[1:]):
        if a.startswith("stage") and "_layer" in a:
            s, i = a[5:].split("_layer")
            li = (int(s) - 1) * space.MAX_DEPTH + int(i)
            if b.startswith("dw_k"):
                k, ev = b[4:].split("_e")
                return li, int(k), int(ev)
            if b.startswith("e") and b[1:].isdigit():
                return li, None, int(b[1:])
            return li, None, None  # point_bn: used iff the layer runs
    return None


def param_mask(params, arch: Arch):
    """Pytree like ``params`` of scalar bools: does sub-network ``arch`` have this parameter? Jittable."""
    if not isinstance(arch, Arch):
        arch = space.unflatten(arch)
    ks, es = jnp.asarray(arch.ks), jnp.asarray(arch.e)
    active = space.depth_mask(arch)

    def used(path, leaf):
        owner = _owner(path)
        if owner is None:
            return jnp.bool_(True)
        li, k, ev = owner
        m = active[li]
        if ev is not None:
            m = m & (es[li] == ev)
        if k is not None:
            m = m & (ks[li] == k)
        return m

    return jax.tree_util.tree_map_with_path(used, params)


# --- exact counts (NumPy) ----------------------------------------------------------------------------------


def _layer_costs(c_in, c_out, k, e, stride, se, h):
    """(params, MACs) of one MBConv on an (h, h, c_in) input."""
    mid = mid_width(c_in, e)
    ho = (h - 1) // stride + 1
    p = c_in * mid + 2 * mid + k * k * mid + 2 * mid + mid * c_out + 2 * c_out
    f = c_in * mid * h * h + k * k * mid * ho * ho + mid * c_out * ho * ho
    if se:
        r = se_width(mid)
        p += mid * r + r + r * mid + mid
        f += 2 * mid * r
    return p, f, ho


def _costs(arch: Arch, config: MobileNetV3NetConfig):
    ks, es, d = (np.asarray(a) for a in arch)
    if ks.ndim != 1:
        lead = ks.shape[:-1]
        flat = [_costs(Arch(*(np.asarray(a).reshape(-1, a.shape[-1])[j] for a in arch)), config)
                for j in range(int(np.prod(lead)))]
        return np.asarray(flat, np.int64).reshape(*lead, 2)
    space.format(Arch(ks, es, d))  # ValueError naming the problem
    scfg = config.space_config()
    w = scfg.widths()
    h = (config.resolution - 1) // 2 + 1
    p = 27 * w[0] + 2 * w[0]
    f = 27 * w[0] * h * h
    p += 9 * w[0] + 2 * w[0] + w[0] * w[1] + 2 * w[1]
    f += 9 * w[0] * h * h + w[0] * w[1] * h * h
    c = w[1]
    active = np.asarray(space.depth_mask(Arch(ks, es, d)))
    for s, stage in enumerate(scfg.stages()[1:]):
        for i in range(space.MAX_DEPTH):
            li = s * space.MAX_DEPTH + i
            if not active[li]:
                continue
            lp, lf, h = _layer_costs(c, stage.width, int(ks[li]), int(es[li]), stage.stride if i == 0 else 1, stage.se, h)
            p, f, c = p + lp, f + lf, stage.width
    p += c * w[7] + 2 * w[7] + w[7] * w[8] + w[8] * config.num_classes + config.num_classes
    f += c * w[7] * h * h + w[7] * w[8] + w[8] * config.num_classes
    return np.asarray([p, f], np.int64)


def param_count(arch: Arch, config: MobileNetV3NetConfig = MobileNetV3NetConfig()) -> np.ndarray:
    """Parameters of sub-network(s) ``arch`` (leading batch axes allowed), int64 units (``torch`` count of
    the built sub-network, BN affine included)."""
    return _costs(arch, config)[..., 0]


def flops(arch: Arch, config: MobileNetV3NetConfig = MobileNetV3NetConfig()) -> np.ndarray:
    """Multiply-accumulates of one image as OFA's ``count_net_flops`` reports them ("FLOPs" in the OFA
    paper): convolutions (``C_in / groups * k * k`` per output element, bias excluded) and the classifier
    (``in * out``); BN, activations, SE gating, pooling and residual adds count 0. int64."""
    return _costs(arch, config)[..., 1]
