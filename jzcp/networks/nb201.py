"""The NAS-Bench-201 topology network in Flax, with the cell passed as data.

Macro skeleton (Dong & Yang, ICLR 2020, ``TinyNetwork``): stem conv3x3 (C=16) + BN; three stages of N=5
cells at C = 16/32/64 with a residual reduction block (ResNet basic block, stride 2) between stages;
final BN, ReLU, global average pool, linear head (10/100/120 classes).

Every edge of every cell holds the parameters of both of its convolutions; the cell's ``(6,)`` op array
selects the op of each edge (see :class:`Edge`), so one compiled function runs any of the 15,625 cells. The
parameters of ops a cell does not use are simply never read; :func:`param_mask` tells which are used, and
:func:`param_count` counts them the way NB201 counts a network's parameters.

The network follows the capture contract of :mod:`jzcp.networks.layers` (taps with liveness, perturbations,
``kernel``-named weights, BN-free copy via ``batch_norm=False``), so every zero-cost proxy runs on it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jzcp.networks import layers
from jzcp.networks.layers import (
    BatchNorm,
    Dense,
    ReLUConvBN,
    avg_pool_3x3,
    batch_norm,
    branch_conv2d,
    conv,
    conv2d,
    init_scheme,
)
from jzcp.spaces import nb201 as space


@dataclass(frozen=True)
class NB201Config:
    """Network hyper-parameters. The defaults are NAS-Bench-201's CIFAR-10 network.

    ``init``: ``"pytorch"`` (torch defaults, the ICLR'21 proxy protocol) or ``"kaiming_fan_out"`` (EZNAS).
    ``batch_norm``: False turns every BatchNorm into the identity (same parameters), as the BN-free
    network copies of some proxies need. ``bn_batch_stats``: True (default) normalises with the batch's
    statistics (PyTorch train mode, what every reference scores with); False is eval mode at init
    (running mean 0, running variance 1).
    ``edge_dispatch`` (traced cells): ``"cond"`` (default) runs only each edge's own op, under ``lax.switch``,
    a conv at its own kernel size through :func:`~jzcp.networks.layers.branch_conv2d` (whose derivatives stay
    on XLA's fast CPU path inside a branch; no forward-mode autodiff through it); ``"select"`` runs every
    candidate (the conv as a 3x3 conv with a zero kernel when the op is not a conv, and the pool) and selects
    the op's output -- for ``vmap`` over architectures, which turns a switch into a select of all its branches
    anyway, and for forward-mode autodiff. Same values either way (float32 rounding); the 13 NAS-Bench-Suite-Zero
    proxies cost ~2.9 s per cell on average with ``"cond"`` (3.5-6.4 s on conv-heavy cells), ~7 s with
    ``"select"`` (2-core CPU, batch 64; README, throughput section).
    """

    channels: int = 16
    cells_per_stage: int = 5
    num_classes: int = 10
    init: str = "pytorch"
    batch_norm: bool = True
    bn_batch_stats: bool = True
    edge_dispatch: str = "cond"

    def __post_init__(self):
        init_scheme(self.init)  # fail early on an unknown scheme
        if self.edge_dispatch not in ("select", "cond"):
            raise ValueError(f"NB201Config.edge_dispatch must be 'select' or 'cond', got {self.edge_dispatch!r}")
        if self.channels < 1 or self.cells_per_stage < 1 or self.num_classes < 1:
            raise ValueError(f"invalid NB201Config {self}")


class ConvBNParams(nn.Module):
    """Parameters of one ReLU-Conv-BN op of an edge: conv ``kernel`` (k, k, C, C), BN ``scale``, ``bias`` (C,)."""

    features: int
    kernel: int
    weight_init: str

    @nn.compact
    def __call__(self, in_features: int):
        k = self.kernel
        kernel = self.param("kernel", init_scheme(self.weight_init).conv, (k, k, in_features, self.features))
        scale = self.param("scale", nn.initializers.ones, (self.features,))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return kernel, scale, bias


# MeCo multiplicity of an edge's output per op (none, skip, conv1x1, conv3x3, pool): how many modules of the
# reference PyTorch cell emit it (Identity; BatchNorm + Sequential + ReLUConvBN; AvgPool2d + POOLING).
_OUTPUT_MODULES = np.array([0.0, 1.0, 3.0, 3.0, 2.0], np.float32)


class Edge(nn.Module):
    """One cell edge: op ``op`` (int scalar) applied to ``x`` (B, H, W, C).

    With a traced ``op``, ``dispatch`` says how the op is chosen (see :class:`NB201Config`): ``"cond"`` runs
    only the chosen op (``lax.switch``); ``"select"`` computes every candidate's output and selects one, the
    two convs sharing one conv call (conv1x1 is conv3x3 with its kernel zero-padded). With a concrete
    (Python/NumPy) ``op`` only the chosen op is built, which gives the plain network of one cell (used to
    extract computation graphs).

    Capture taps (see :mod:`jzcp.networks.layers`) are recorded outside the conv computation, each with its
    liveness: the ReLU, conv and BN of the conv ops are live only when ``op`` is a conv, the pool only when it
    is the pool.
    """

    channels: int
    weight_init: str
    batch_norm: bool
    bn_batch_stats: bool = True
    dispatch: str = "cond"

    @nn.compact
    def __call__(self, x: jax.Array, op) -> jax.Array:
        c = x.shape[-1]
        if c != self.channels:
            raise ValueError(f"NB201 edge: input has {c} channels, expected {self.channels}")
        k1, s1, b1 = ConvBNParams(self.channels, 1, self.weight_init, name="conv1x1")(c)
        k3, s3, b3 = ConvBNParams(self.channels, 3, self.weight_init, name="conv3x3")(c)
        if not isinstance(op, jax.core.Tracer):  # one concrete cell: build only its op
            return self._concrete(x, int(op), (k1, s1, b1), (k3, s3, b3))
        bn_on, stats = self.batch_norm, self.bn_batch_stats
        is1, is3 = op == space.CONV1X1, op == space.CONV3X3
        is_conv = is1 | is3
        x_rcb = layers.rcb_input(self, x, live=is_conv)
        p_out = layers.channel_perturbation(self, x)  # C_out == C_in in a cell
        p_z = layers.rcb_conv_output(self, jnp.zeros_like(x))  # the EZNAS conv-output perturbation itself

        def conv_op(xr, p, pz, kernel, scale, bias, conv_fn=conv2d):
            z = layers.apply_channel_perturbation(conv_fn(nn.relu(xr), kernel), p) + pz
            var = layers._moments(z)[1] if bn_on else jnp.zeros((c,), z.dtype)
            return batch_norm(z, scale, bias, bn_on, stats), z, var

        if self.dispatch == "cond":  # only the edge's own op runs, a conv at its own kernel size
            p_y = layers.rcb_output(self, jnp.zeros_like(x))  # the block-output perturbation itself
            zero = (jnp.zeros_like(x), jnp.zeros((c,), x.dtype))  # (z, var) of an op that is not a conv

            def conv_branch(which):
                def run(x, xr, p, pz, py, k1, s1, b1, k3, s3, b3):
                    y, z, var = conv_op(xr, p, pz, *((k1, s1, b1) if which == 1 else (k3, s3, b3)), branch_conv2d)
                    return y + py, z, var
                return run

            branches = [None] * space.NUM_OPS
            branches[space.NONE] = lambda x, *_: (jnp.zeros_like(x), *zero)
            branches[space.SKIP] = lambda x, *_: (x, *zero)
            branches[space.CONV1X1] = conv_branch(1)
            branches[space.CONV3X3] = conv_branch(3)
            branches[space.AVGPOOL] = lambda x, *_: (avg_pool_3x3(x), *zero)
            y, z, var = jax.lax.switch(jnp.clip(op, 0, space.NUM_OPS - 1), branches,
                                       x, x_rcb, p_out, p_z, p_y, k1, s1, b1, k3, s3, b3)
            y_conv = y  # what the block records read; they are live only when the op is a conv
        else:  # conv1x1 is conv3x3 with its kernel zero-padded (the same sums): one conv, a zero kernel
            # when the op is not a conv (the conv runs, its output is not selected)
            kernel = jnp.where(is3, k3, jnp.pad(k1, ((1, 1), (1, 1), (0, 0), (0, 0))))
            y_conv, z, var = conv_op(x_rcb, p_out, p_z, jnp.where(is_conv, kernel, 0.0), jnp.where(is3, s3, s1),
                                     jnp.where(is3, b3, b1))
            y_conv = layers.rcb_output(self, y_conv)
            choices = (jnp.zeros_like(x), x, y_conv, y_conv, avg_pool_3x3(x))
            y = jnp.select([op == i for i in range(space.NUM_OPS)], choices)
        # EZNAS block records: one per candidate conv, each with its own kernel size and liveness
        layers.rcb_block(self, x, k1, y_conv, live=is1)
        layers.rcb_block(self, x, k3, y_conv, live=is3)

        is_pool = op == space.AVGPOOL
        live = is_conv.astype(jnp.float32)
        hwc = float(np.prod(x.shape[1:]))
        fan_in = jnp.where(op == space.CONV3X3, 9, 1) * c
        layers.tap(self, "relu", layers.ReluTap(x, is_conv), layers.FlopsTap(live * hwc),
                   layers.FeatureTap(nn.relu(x), live))
        layers.conv_taps(self, z, fan_in, live=is_conv)
        if bn_on:
            layers.tap(self, "bn", layers.BNTap(var, jnp.float32(np.prod(x.shape[:-1])), is_conv),
                       layers.FlopsTap(live * 2 * hwc))
        layers.tap(self, "op", layers.FlopsTap(is_pool.astype(jnp.float32) * 9 * hwc),
                   layers.FeatureTap(y, jnp.asarray(_OUTPUT_MODULES)[jnp.clip(op, 0, space.NUM_OPS - 1)]))
        return y

    def _concrete(self, x, op, p1, p3):
        """The plain op of one cell, built with the tapped layer functions (every record live)."""
        if op == space.NONE:
            return jnp.zeros_like(x)
        if op == space.SKIP:
            layers.feature(self, x, 1.0, name="op")
            return x
        if op == space.AVGPOOL:
            return layers.avg_pool(self, x, 3, 1, feature_weight=2.0, name="op")
        kernel, scale, bias = p1 if op == space.CONV1X1 else p3
        inp = x
        x = layers.rcb_input(self, x)
        z = conv2d(layers.relu(self, x), kernel)
        z = layers.apply_channel_perturbation(z, layers.channel_perturbation(self, z))
        z = layers.rcb_conv_output(self, z)
        layers.conv_taps(self, z, int(np.prod(kernel.shape[:3])))
        y = layers.bn(self, z, scale, bias, self.batch_norm, self.bn_batch_stats, feature_weight=3.0)
        y = layers.rcb_output(self, y)
        layers.rcb_block(self, inp, kernel, y)
        return y


class Cell(nn.Module):
    """NB201 cell: node j = sum over i < j of edge (i, j) applied to node i; output = node 3.

    ``output_modules``: MeCo multiplicity of the cell output (2 for the last cell of a stage, which the
    reference's stage ``nn.Sequential`` emits too).
    """

    channels: int
    weight_init: str
    batch_norm: bool
    bn_batch_stats: bool = True
    output_modules: float = 1.0
    dispatch: str = "cond"

    @nn.compact
    def __call__(self, x: jax.Array, ops: jax.Array) -> jax.Array:
        nodes = [x]
        for j in range(1, space.NUM_NODES):
            inputs = [
                Edge(self.channels, self.weight_init, self.batch_norm, self.bn_batch_stats, self.dispatch,
                     name=f"edge{e}")(
                    nodes[i], ops[e]
                )
                for e, (i, jj) in enumerate(space.EDGES)
                if jj == j
            ]
            nodes.append(sum(inputs[1:], inputs[0]))
        layers.feature(self, nodes[-1], self.output_modules, name="out")
        return nodes[-1]


class ResidualReduction(nn.Module):
    """ResNet basic block with stride 2 between stages (no ReLU after the sum, as in NB201)."""

    channels: int
    weight_init: str
    batch_norm: bool
    bn_batch_stats: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        args = (self.weight_init, self.batch_norm, self.bn_batch_stats)
        branch = ReLUConvBN(self.channels, 3, 2, *args, name="conv_a")(x)
        branch = ReLUConvBN(self.channels, 3, 1, *args, name="conv_b")(branch)
        shortcut = layers.avg_pool(self, x, window=2, stride=2, name="pool")
        # The reference's shortcut is nn.Sequential(AvgPool2d, Conv2d): the conv output is emitted twice.
        shortcut = conv(self.channels, 1, 1, init_scheme(self.weight_init), name="downsample")(
            shortcut, feature_weight=2.0
        )
        out = shortcut + branch
        layers.feature(self, out, 1.0, name="out")
        return out


class NB201Network(nn.Module):
    """``__call__(x, ops)``: images (B, H, W, 3) float, ops (6,) int -> logits (B, num_classes).

    Follows the capture contract of :mod:`jzcp.networks.layers`. MeCo multiplicities follow the reference
    PyTorch modules (stem ``Sequential(Conv, BN)`` inside a module: BN output x3; final ``Sequential(BN,
    ReLU)``: ReLU output x2).
    """

    config: NB201Config = NB201Config()

    @nn.compact
    def __call__(self, x: jax.Array, ops) -> jax.Array:
        cfg = self.config
        scheme = init_scheme(cfg.init)
        args = (cfg.init, cfg.batch_norm, cfg.bn_batch_stats)
        x = conv(cfg.channels, 3, 1, scheme, name="stem_conv")(x)
        x = BatchNorm(cfg.batch_norm, cfg.bn_batch_stats, name="stem_bn")(x, feature_weight=3.0)
        for stage in range(3):
            c = cfg.channels * 2**stage
            if stage:
                x = ResidualReduction(c, *args, name=f"reduce{stage}")(x)
            for i in range(cfg.cells_per_stage):
                last = i == cfg.cells_per_stage - 1
                x = Cell(c, *args, output_modules=2.0 if last else 1.0, dispatch=cfg.edge_dispatch,
                         name=f"stage{stage}_cell{i}")(x, ops)
        x = BatchNorm(cfg.batch_norm, cfg.bn_batch_stats, name="final_bn")(x)
        x = layers.relu(self, x, feature_weight=2.0, name="final_relu")
        x = layers.global_avg_pool(self, x)
        return Dense(cfg.num_classes, kernel_init=scheme.dense_kernel, bias_init=scheme.dense_bias(x.shape[-1]),
                     name="head")(x)


# --- functional API ----------------------------------------------------------------------------------------


def init(key: jax.Array, config: NB201Config = NB201Config(), image_shape=(32, 32, 3)):
    """Parameters of the super-network: every edge's conv1x1 and conv3x3 (any cell's weights are a subset)."""
    x = jnp.zeros((2, *image_shape), jnp.float32)
    return _init_fn(config)(key, x, jnp.zeros(space.NUM_EDGES, jnp.int32))["params"]


@functools.lru_cache(maxsize=None)
def _init_fn(config: NB201Config):
    # Only "params" is mutable: the capture taps and perturbations are not created (half the compile time).
    return jax.jit(functools.partial(NB201Network(config).init, mutable=["params"]))


@functools.lru_cache(maxsize=None)
def apply_fn(config: NB201Config = NB201Config()):
    """The jitted ``apply(params, x, ops) -> logits`` of a config: one compilation per input shape.

    Cached per config, so every caller shares the same compiled function.
    """
    module = NB201Network(config)

    def apply(params, x: jax.Array, ops: jax.Array) -> jax.Array:
        return module.apply({"params": params}, x, jnp.asarray(ops, jnp.int32))

    return apply


def _edge_op_of_path(path) -> tuple[int, int] | None:
    """(edge, op id) the parameter at ``path`` belongs to, or None for parameters every cell uses."""
    names = [getattr(k, "key", str(k)) for k in path]
    for a, b in zip(names, names[1:]):
        if a.startswith("edge") and b in ("conv1x1", "conv3x3"):
            return int(a[4:]), space.CONV1X1 if b == "conv1x1" else space.CONV3X3
    return None


def param_mask(params, ops: jax.Array):
    """Pytree like ``params`` of scalar bools: does the cell ``ops`` (6,) use this parameter?

    Parameters of ops the cell does not contain are unused. Ops on unreachable branches *are* used
    (they exist in the NB201 network, as in the reference PyTorch models). Jittable.
    """
    ops = jnp.asarray(ops)

    def used(path, leaf):
        owner = _edge_op_of_path(path)
        return jnp.bool_(True) if owner is None else ops[owner[0]] == owner[1]

    return jax.tree_util.tree_map_with_path(used, params)


@functools.lru_cache(maxsize=None)
def _count_table(config: NB201Config):
    """(base count shared by all cells, (6, 5) count added by op o on edge e)."""
    shapes = jax.eval_shape(lambda k: init(k, config), jax.random.key(0))
    base, per_op = 0, np.zeros((space.NUM_EDGES, space.NUM_OPS), np.int64)
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        owner = _edge_op_of_path(path)
        n = int(np.prod(leaf.shape))
        if owner is None:
            base += n
        else:
            per_op[owner] += n
    return base, per_op


def param_count(ops, config: NB201Config = NB201Config()) -> np.ndarray:
    """Parameters of the network of cell(s) ``ops`` (..., 6), counting only the ops the cell uses.

    Equals NAS-Bench-201's ``params`` (in units, not millions) for every cell.
    """
    base, per_op = _count_table(config)
    ops = np.asarray(ops)
    return base + per_op[np.arange(space.NUM_EDGES), ops].sum(-1)
