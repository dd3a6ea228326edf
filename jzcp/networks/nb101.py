"""The NAS-Bench-101 network in Flax, with the cell passed as data.

Macro skeleton (Ying et al., ICML 2019, ``nasbench/lib/model_builder.py``; the PyTorch port ``nasbench_pytorch``
that NASLib / NAS-Bench-Suite-Zero score): stem conv3x3-BN-ReLU (128 channels); 3 stacks of 3 cells, a 2x2
max-pool (stride 2) before stacks 2 and 3 and the cell channels doubled there (128 / 256 / 512); global average
pool (``torch.mean``, not a module); linear head.

The cell (``build_module``): the spec is pruned (vertices off every input -> output path dropped); the output's
``C`` channels are split among the interior vertices feeding it, earlier vertices taking the remainder's +1
(``compute_vertex_channels``); other interior vertices take the maximum of their successors. A vertex sums its
inputs: interior predecessors truncated to its channel count, and a 1x1 conv-BN-ReLU *projection* of the cell
input when the input feeds it; then applies its op (conv3x3-BN-ReLU, conv1x1-BN-ReLU, maxpool3x3). The output
concatenates its interior inputs in vertex order and adds a projection of the cell input to ``C`` channels when
the input feeds it directly (that projection alone when the cell is input -> output only).

Architecture as data: ``arch`` is the ``(56,)`` int32 array :func:`encode` makes of a :class:`jzcp.spaces.nb101.Cell`
(7x7 adjacency row-major, then the 7 op ids; padded / unpruned cells both fine: the network prunes).

Shape classes -- ONE per config and image shape, for all 423,624 cells. Vertex channel counts depend on the
cell, so every vertex tensor is held padded to the cell's ``C`` channels, the channels past its own count exactly
zero. The *parameters* are not padded: each vertex has one parameter set per possible channel count ``c`` (the
counts ``C // k`` and ``C // k + 1``, k = 1..5, are the only ones ``compute_vertex_channels`` can produce; 7 for
C = 128), with leaves of the exact reference shapes (``(3, 3, c, c)`` etc.). The cell selects (``jnp.select``) the
set its vertex has, zero-padded to ``C``; unselected sets are never read. So every parameter leaf is either wholly
used or unused by a cell, :func:`param_mask` stays a scalar per leaf as the capture contract requires, and the
masked count equals the reference network's exactly (:func:`param_count`, tested against all 500 NASLib cells).
The cost: the super-network holds ~1.6x the parameters of the largest cell per vertex, and each vertex's conv
runs at ``C`` channels.

Taps: records of vertex tensors (ReLU inputs, BN variances, features) are sown once per candidate channel count
as a static slice ``[..., :c]``, live only for the count the cell has, so proxies see exactly the reference's
units (no padded zero channels in nwot codes, zen's BN means or MeCo's correlations). Conv fan-ins and FLOPs
are traced. FLOPs follow tensorwatch as NAS-Bench-Suite-Zero counts them (:func:`flops`: exact on all 500 cells).

Differences from the reference that do not change the function: none known. ``init="kaiming_fan_out"`` is
``nasbench_pytorch``'s own initialisation (conv N(0, 2/(k*k*C_out)), linear N(0, 0.01), zero biases).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jzcp.networks import layers
from jzcp.networks.layers import BatchNorm, Dense, conv, conv2d, init_scheme
from jzcp.spaces import nb101 as space

V = space.NUM_VERTICES
OUT = V - 1
ARCH_LEN = V * V + V
MAX_OUT_DEGREE = V - 2  # interior vertices that can feed the output


@dataclass(frozen=True)
class NB101Config:
    """Network hyper-parameters; defaults are NAS-Bench-101's CIFAR-10 network.

    ``stem_channels`` (>= 5, so that every vertex gets a channel when five vertices split the output),
    ``num_stacks``, ``cells_per_stack``, ``num_classes``. ``init``: ``"pytorch"`` (torch defaults) or
    ``"kaiming_fan_out"`` (``nasbench_pytorch``'s own). ``batch_norm=False``: every BatchNorm is the identity
    (same parameters). ``bn_batch_stats``: train-mode batch statistics (default) or eval mode at init.
    """

    stem_channels: int = 128
    num_stacks: int = 3
    cells_per_stack: int = 3
    num_classes: int = 10
    init: str = "pytorch"
    batch_norm: bool = True
    bn_batch_stats: bool = True

    def __post_init__(self):
        init_scheme(self.init)
        if self.stem_channels < MAX_OUT_DEGREE:
            raise ValueError(f"NB101Config.stem_channels must be >= {MAX_OUT_DEGREE}, got {self.stem_channels}")
        if self.num_stacks < 1 or self.cells_per_stack < 1 or self.num_classes < 1:
            raise ValueError(f"invalid NB101Config {self}")

    def stack_channels(self, stack: int) -> int:
        return self.stem_channels * 2**stack


def channel_options(c: int) -> tuple[int, ...]:
    """Every channel count an interior vertex of a cell with ``c`` output channels can have, descending."""
    opts = {c // k + e for k in range(1, MAX_OUT_DEGREE + 1) for e in ((0, 1) if c % k else (0,))}
    return tuple(sorted(opts, reverse=True))


# --- architecture encoding -----------------------------------------------------------------------------------


def encode(cell: space.Cell) -> np.ndarray:
    """:class:`~jzcp.spaces.nb101.Cell` (or a batch) -> ``(..., 56)`` int32: adjacency row-major, then ops.

    Absent vertices (mask False) must have no edges, as :func:`jzcp.spaces.nb101.parse` makes them."""
    adj, ops = np.asarray(cell.adj, np.int32), np.asarray(cell.ops, np.int32)
    if adj.shape[-2:] != (V, V) or ops.shape[-1:] != (V,):
        raise ValueError(f"NB101 cell arrays must end in (7, 7) and (7,), got {adj.shape} and {ops.shape}")
    return np.concatenate([adj.reshape(*adj.shape[:-2], V * V), ops], axis=-1)


def encode_jnp(cell: space.Cell) -> jax.Array:
    """Jittable :func:`encode` of one cell: ``(56,)`` int32."""
    return jnp.concatenate([jnp.reshape(cell.adj, (V * V,)), jnp.asarray(cell.ops)]).astype(jnp.int32)


def decode(arch) -> space.Cell:
    """``(..., 56)`` -> Cell (mask all True: absent vertices have no edges, so pruning drops them). Jittable."""
    arch = jnp.asarray(arch, jnp.int32)
    adj = arch[..., : V * V].reshape(*arch.shape[:-1], V, V)
    return space.Cell(adj, arch[..., V * V:], jnp.ones(arch.shape[:-1] + (V,), bool))


def check_arch(arch) -> np.ndarray:
    """Host-side validation of a ``(56,)`` arch (or Cell); returns it as int32 or raises ``ValueError``
    naming the problem (shape, entries, disconnected cell, more than 9 edges, bad ops)."""
    if isinstance(arch, space.Cell):
        arch = encode(arch)
    a = np.asarray(arch)
    if a.shape != (ARCH_LEN,):
        raise ValueError(f"NB101 arch must have shape ({ARCH_LEN},) (7x7 adjacency + 7 ops), got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"NB101 arch must be integers, got dtype {a.dtype}")
    cell = space.Cell(a[: V * V].reshape(V, V), a[V * V:], np.ones(V, bool))
    space._check_cell(cell)  # 0/1 entries, upper triangular, op ids, input / output ops at the ends
    with jax.ensure_compile_time_eval():  # also when called while a network is being traced
        if not bool(space.is_valid(cell)):
            if not bool(space.is_connected(cell)):
                raise ValueError("NB101 arch is disconnected: no path from the input to the output")
            n = int(space.num_edges(cell))
            raise ValueError(f"NB101 arch has {n} edges after pruning; at most {space.MAX_EDGES}")
    return a.astype(np.int32)


_prune_jit = jax.jit(space.prune)


def vertex_channels(adj, c: int, xp=jnp):
    """Channels of each vertex of a *pruned* cell (``adj`` (..., 7, 7), output at 6) whose output has ``c``.

    ``compute_vertex_channels`` of nasbench on the padded layout: interior vertices feeding the output split
    ``c``, the first ``c % k`` of them one more; the others take the max over their interior successors (in
    descending vertex order). Entry 0 (the input) and absent vertices are 0; entry 6 is ``c``. ``xp``: ``jnp``
    (jittable) or ``np``.
    """
    a = xp.asarray(adj) != 0
    to_out = a[..., 1:OUT, OUT]  # (..., 5)
    k = xp.sum(to_out, axis=-1, keepdims=True)
    safe_k = xp.maximum(k, 1)
    rank = xp.cumsum(to_out, axis=-1) - 1
    vc = xp.where(to_out, c // safe_k + (rank < c % safe_k), 0)
    cols = [vc[..., i] for i in range(OUT - 1)]
    for v in range(OUT - 2, 0, -1):  # interior vertices 4 .. 1 (vertex 5 can only feed the output)
        succ = [xp.where(a[..., v, d], cols[d - 1], 0) for d in range(v + 1, OUT)]
        cols[v - 1] = xp.where(to_out[..., v - 1], cols[v - 1], functools.reduce(xp.maximum, succ))
    zero = xp.zeros_like(cols[0])
    return xp.stack([zero, *cols, zero + c], axis=-1)


# --- parameters ----------------------------------------------------------------------------------------------


class ConvBNParams(nn.Module):
    """Parameters of one conv-BN: ``kernel`` (k, k, in, out), BN ``scale`` / ``bias`` (out,)."""

    in_features: int
    features: int
    kernel: int
    weight_init: str

    @nn.compact
    def __call__(self):
        k = self.kernel
        w = self.param("kernel", init_scheme(self.weight_init).conv, (k, k, self.in_features, self.features))
        scale = self.param("scale", nn.initializers.ones, (self.features,))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return w, scale, bias


def _option_name(c: int) -> str:
    return f"c{c}"


def _select_padded(conds, candidates, shape):
    """``jnp.select`` of arrays zero-padded (at the end of every axis) to ``shape``."""
    padded = [jnp.pad(a, [(0, s - d) for s, d in zip(shape, a.shape)]) for a in candidates]
    return jnp.select(conds, padded)


def _centre(kernel, k: int = 3):
    """A 1x1 kernel zero-padded to k x k: the same sums as the 1x1 conv under symmetric padding."""
    p = (k - 1) // 2
    return jnp.pad(kernel, ((p, p), (p, p), (0, 0), (0, 0)))


# --- taps of padded vertex tensors ---------------------------------------------------------------------------


def _sliced_feature(mdl, name, y, vc, opts, weight):
    """FeatureTaps of ``y`` (B, H, W, C padded) once per option ``c``: ``y[..., :c]``, weight only if ``vc == c``."""
    for c in opts:
        layers.tap(mdl, name, layers.FeatureTap(y[..., :c], jnp.where(vc == c, weight, 0.0).astype(jnp.float32)))


def _conv_bn_relu_traced(mdl, x, kernel, scale, bias, vc, opts, live, fan_in, relu_weight, cfg, candidates):
    """Conv (padded kernel) -> BN -> ReLU on a padded tensor, with records as the reference's modules emit them.

    ``vc``: the real output channels (traced); ``live``: the op exists in the cell; ``candidates``: ``(kernel,
    c_in, live)`` per real parameter set, the EZNAS block records (the conv input is a sum of ReLU outputs, so
    the block's "ReLU" is the identity: ``pre = inp``)."""
    hw = float(np.prod(x.shape[1:3]))
    inp = x
    x = mdl.perturb(layers.RCB_INPUT, x)
    z = conv2d(x, kernel)
    z = layers.rcb_conv_output(mdl, layers.apply_channel_perturbation(z, layers.channel_perturbation(mdl, z)))
    livef = jnp.asarray(live, jnp.float32)
    vcf = vc.astype(jnp.float32)
    layers.tap(mdl, layers.CONV_OUTPUT, layers.ConvTap(jnp.asarray(fan_in, jnp.float32), jnp.asarray(live)),
               layers.FlopsTap(livef * fan_in * vcf * hw))
    _sliced_feature(mdl, layers.CONV_OUTPUT, z, vc, opts, livef)
    if cfg.batch_norm:
        var = layers._moments(z)[1]
        y = layers.batch_norm(z, scale, bias, True, cfg.bn_batch_stats)
        count = jnp.float32(np.prod(z.shape[:-1]))
        for c in opts:
            layers.tap(mdl, "bn", layers.BNTap(var[:c], count, jnp.asarray(live) & (vc == c)))
        layers.tap(mdl, "bn", layers.FlopsTap(livef * 2 * vcf * hw))
        _sliced_feature(mdl, "bn", y, vc, opts, livef)
    else:
        y = z
    y = layers.rcb_output(mdl, y)
    layers.rcb_candidates(mdl, inp, inp, y, candidates)
    for c in opts:
        layers.tap(mdl, "relu", layers.ReluTap(y[..., :c], jnp.asarray(live) & (vc == c)))
    out = nn.relu(y)
    layers.tap(mdl, "relu", layers.FlopsTap(livef * vcf * hw))
    _sliced_feature(mdl, "relu", out, vc, opts, livef * relu_weight)
    return out


def _conv_bn_relu_concrete(mdl, x, kernel, scale, bias, relu_weight, cfg):
    """The plain conv-BN-ReLU of one cell (every record live)."""
    inp = x
    z = conv2d(layers.rcb_input(mdl, x), kernel)
    z = layers.rcb_conv_output(mdl, layers.apply_channel_perturbation(z, layers.channel_perturbation(mdl, z)))
    layers.conv_taps(mdl, z, int(np.prod(kernel.shape[:3])))
    y = layers.rcb_output(mdl, layers.bn(mdl, z, scale, bias, cfg.batch_norm, cfg.bn_batch_stats))
    layers.rcb_block(mdl, inp, kernel, y, pre=inp)
    return layers.relu(mdl, y, feature_weight=relu_weight)


def _max_pool(x, window: int, stride: int, pad: int):
    # PyTorch's MaxPool2d pads with -inf; reduce_window's padding does the same with max's identity.
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


def _pool_flops(x, window: int, stride: int, pad: int) -> float:
    """tensorwatch's pool count: C * H_out * W_out * k * k, with its own output-size formula."""
    h, w, c = x.shape[1:]
    ho, wo = (h + 2 * pad - window) // stride + 1, (w + 2 * pad - window) // stride + 1
    return float(c * ho * wo * window * window)


# --- modules -------------------------------------------------------------------------------------------------

# MeCo multiplicities: how many modules of the nasbench_pytorch model emit the tensor. ReLU of an op:
# ReLU, Sequential, ConvBnRelu, Conv3x3BnRelu/Conv1x1BnRelu; of a projection / the stem: ReLU, Sequential,
# ConvBnRelu; an op's maxpool: MaxPool2d, MaxPool3x3.
_OP_RELU_MODULES = 4.0
_PROJ_RELU_MODULES = 3.0
_OP_POOL_MODULES = 2.0


class Projection(nn.Module):
    """1x1 conv-BN-ReLU of the cell input to a vertex: one parameter set per channel option."""

    in_features: int
    opts: tuple[int, ...]  # candidate output channels; one alone for the output projection
    cfg: "NB101Config"

    @nn.compact
    def __call__(self, x, vc, live, width: int, traced: bool):
        """``x`` (B, H, W, in); ``vc`` output channels; output padded to ``width`` when ``traced``, else the
        plain projection with ``vc`` (a Python int) channels."""
        banks = [ConvBNParams(self.in_features, c, 1, self.cfg.init, name=_option_name(c))() for c in self.opts]
        if not traced:
            w, s, b = banks[self.opts.index(int(vc))]
            return _conv_bn_relu_concrete(self, x, w, s, b, _PROJ_RELU_MODULES, self.cfg)
        vc = jnp.asarray(vc, jnp.int32)
        conds = [vc == c for c in self.opts]
        w = _select_padded(conds, [p[0] for p in banks], (1, 1, self.in_features, width))
        s = _select_padded(conds, [p[1] for p in banks], (width,))
        b = _select_padded(conds, [p[2] for p in banks], (width,))
        candidates = [(p[0], self.in_features, jnp.asarray(live) & cond) for p, cond in zip(banks, conds)]
        return _conv_bn_relu_traced(self, x, w, s, b, vc, self.opts, live, float(self.in_features),
                                    _PROJ_RELU_MODULES, self.cfg, candidates)


class VertexOp(nn.Module):
    """The op of an interior vertex: conv3x3 / conv1x1 parameter sets per channel option, and the max-pool."""

    opts: tuple[int, ...]
    cfg: "NB101Config"

    @nn.compact
    def __call__(self, x, op, vc, present):
        """``x`` (B, H, W, width) the vertex input (zero past ``vc``); ``op`` jzcp op id; ``present`` bool."""
        width = x.shape[-1]
        p3 = [ConvBNParams(c, c, 3, self.cfg.init, name=f"conv3x3_{_option_name(c)}")() for c in self.opts]
        p1 = [ConvBNParams(c, c, 1, self.cfg.init, name=f"conv1x1_{_option_name(c)}")() for c in self.opts]
        if not isinstance(op, jax.core.Tracer):
            return self._concrete(x, int(op), int(vc), p3, p1)
        is3, is1, ispool = op == space.CONV3X3, op == space.CONV1X1, op == space.MAXPOOL3X3
        conds = [is3 & (vc == c) for c in self.opts] + [is1 & (vc == c) for c in self.opts]
        kernels = [p[0] for p in p3] + [_centre(p[0]) for p in p1]
        w = _select_padded(conds, kernels, (3, 3, width, width))
        s = _select_padded(conds, [p[1] for p in p3 + p1], (width,))
        b = _select_padded(conds, [p[2] for p in p3 + p1], (width,))
        is_conv = present & (is3 | is1)
        fan_in = jnp.where(is3, 9, 1) * vc
        candidates = [(p[0], c, present & cond) for p, c, cond in zip(p3 + p1, self.opts * 2, conds)]
        y_conv = _conv_bn_relu_traced(self, x, w, s, b, vc, self.opts, is_conv, fan_in.astype(jnp.float32),
                                      _OP_RELU_MODULES, self.cfg, candidates)
        y_pool = _max_pool(x, 3, 1, 1)
        pool_live = (present & ispool).astype(jnp.float32)
        hw = float(np.prod(x.shape[1:3]))
        layers.tap(self, "pool", layers.FlopsTap(pool_live * 9.0 * vc.astype(jnp.float32) * hw))
        _sliced_feature(self, "pool", y_pool, vc, self.opts, pool_live * _OP_POOL_MODULES)
        return jnp.where(present, jnp.where(ispool, y_pool, y_conv), 0.0)

    def _concrete(self, x, op, vc, p3, p1):
        if op == space.MAXPOOL3X3:
            y = _max_pool(x, 3, 1, 1)
            layers.tap(self, "pool", layers.FlopsTap(jnp.float32(_pool_flops(x, 3, 1, 1))))
            layers.feature(self, y, _OP_POOL_MODULES, name="pool")
            return y
        w, s, b = (p3 if op == space.CONV3X3 else p1)[self.opts.index(vc)]
        return _conv_bn_relu_concrete(self, x, w, s, b, _OP_RELU_MODULES, self.cfg)


class Cell(nn.Module):
    """One NB101 cell with ``features`` output channels. ``__call__(x, adj, ops)`` on the *pruned* cell.

    Traced ``adj`` / ``ops``: every vertex is computed padded to ``features`` channels (see the module
    docstring). Concrete (NumPy) ``adj`` / ``ops``: only the cell's own vertices and ops are built.
    """

    features: int
    cfg: "NB101Config"

    @nn.compact
    def __call__(self, x, adj, ops):
        c, cin = self.features, x.shape[-1]
        opts = channel_options(c)
        projs = [Projection(cin, opts, self.cfg, name=f"proj{t}") for t in range(1, OUT)]
        vops = [VertexOp(opts, self.cfg, name=f"vertex{t}") for t in range(1, OUT)]
        out_proj = Projection(cin, (c,), self.cfg, name="out_proj")
        if not isinstance(adj, jax.core.Tracer):
            return self._concrete(x, np.asarray(adj), np.asarray(ops), projs, vops, out_proj)
        a = adj != 0
        vc = vertex_channels(a, c)
        present = jnp.any(a, axis=0) | jnp.any(a, axis=1)  # pruned: a vertex exists iff it has an edge
        chan = jnp.arange(c)
        tensors = [x]
        for t in range(1, OUT):
            keep = (chan < vc[t]).astype(x.dtype)  # truncation of wider predecessors
            s = sum(jnp.where(a[src, t], tensors[src], 0.0) for src in range(1, t)) if t > 1 else 0.0
            s = s * keep + jnp.where(a[0, t], projs[t - 1](x, vc[t], a[0, t] & present[t], c, True), 0.0)
            tensors.append(vops[t - 1](jnp.broadcast_to(s, x.shape[:-1] + (c,)), ops[t], vc[t], present[t]))
        # Concatenation in vertex order: vertex t's channels start after those of earlier output-feeding vertices.
        feeds = a[1:OUT, OUT]
        offsets = jnp.cumsum(jnp.where(feeds, vc[1:OUT], 0)) - jnp.where(feeds, vc[1:OUT], 0)
        out = sum(jnp.where(feeds[t - 1], jnp.roll(tensors[t], offsets[t - 1], axis=-1), 0.0) for t in range(1, OUT))
        out = out + jnp.where(a[0, OUT], out_proj(x, c, a[0, OUT], c, True), 0.0)
        layers.feature(self, out, 1.0, name="out")
        return out

    def _concrete(self, x, adj, ops, projs, vops, out_proj):
        c = self.features
        vc = np.asarray(vertex_channels(adj, c, np))
        tensors = [x]
        for t in range(1, OUT):
            if not (adj[t].any() or adj[:, t].any()):
                tensors.append(None)
                continue
            fan_in = [tensors[src][..., : vc[t]] for src in range(1, t) if adj[src, t]]
            if adj[0, t]:
                fan_in.append(projs[t - 1](x, int(vc[t]), True, int(vc[t]), False))
            tensors.append(vops[t - 1](sum(fan_in[1:], fan_in[0]), int(ops[t]), int(vc[t]), True))
        concat = [tensors[t] for t in range(1, OUT) if adj[t, OUT]]
        if not concat:
            out = out_proj(x, c, True, c, False)
        else:
            out = jnp.concatenate(concat, axis=-1)
            if adj[0, OUT]:
                out = out + out_proj(x, c, True, c, False)
        layers.feature(self, out, 1.0, name="out")
        return out


class NB101Network(nn.Module):
    """``__call__(x, arch)``: images (B, H, W, 3) float, arch ``(56,)`` int (see :func:`encode`; a
    :class:`jzcp.spaces.nb101.Cell` is accepted too) -> logits (B, num_classes).

    Traced ``arch``: one compiled function for every cell. Concrete ``arch`` (NumPy / Python ints): the plain
    network of that cell, checked by :func:`check_arch` (``ValueError`` for a malformed or invalid cell).
    """

    config: NB101Config = NB101Config()

    @nn.compact
    def __call__(self, x: jax.Array, arch) -> jax.Array:
        cfg = self.config
        scheme = init_scheme(cfg.init)
        if isinstance(arch, space.Cell) and not isinstance(arch.adj, jax.core.Tracer):
            arch = encode(arch)
        elif isinstance(arch, space.Cell):
            arch = encode_jnp(arch)
        if isinstance(arch, jax.core.Tracer):
            pruned = space.prune(decode(arch))
            adj, ops = pruned.adj, pruned.ops
        else:
            checked = check_arch(arch)
            with jax.ensure_compile_time_eval():
                pruned = space.prune(decode(checked))
            adj, ops = np.asarray(pruned.adj), np.asarray(pruned.ops)

        x = conv(cfg.stem_channels, 3, 1, scheme, name="stem_conv")(x)
        x = BatchNorm(cfg.batch_norm, cfg.bn_batch_stats, name="stem_bn")(x)
        x = layers.relu(self, x, feature_weight=_PROJ_RELU_MODULES, name="stem_relu")
        for stack in range(cfg.num_stacks):
            if stack:
                layers.tap(self, f"downsample{stack}", layers.FlopsTap(jnp.float32(_pool_flops(x, 2, 2, 0))))
                x = _max_pool(x, 2, 2, 0)
                layers.feature(self, x, 1.0, name=f"downsample{stack}")
            for i in range(cfg.cells_per_stack):
                x = Cell(cfg.stack_channels(stack), cfg, name=f"stack{stack}_cell{i}")(x, adj, ops)
        layers.tap(self, "gap", layers.PoolTap(x))  # torch.mean: no module, no FLOPs in tensorwatch
        x = jnp.mean(x, axis=(1, 2))
        return Dense(cfg.num_classes, kernel_init=scheme.dense_kernel, bias_init=scheme.dense_bias(x.shape[-1]),
                     name="head")(x)


# --- functional API ------------------------------------------------------------------------------------------

def init(key: jax.Array, config: NB101Config = NB101Config(), image_shape=(32, 32, 3)):
    """Parameters of the super-network: every vertex's parameter sets for every channel option.

    Drawn on the host (see :func:`init_from_shapes`), so no per-leaf compilation; deterministic in ``key``."""
    return init_from_shapes(key, _param_shapes(config, tuple(image_shape)), init_scheme(config.init))


@functools.lru_cache(maxsize=None)
def _param_shapes(config: NB101Config, image_shape: tuple[int, int, int]):
    x = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
    arch = jax.ShapeDtypeStruct((ARCH_LEN,), jnp.int32)
    return jax.eval_shape(NB101Network(config).init, jax.random.key(0), x, arch)["params"]


def _host_draw(scheme_name: str, kind: str, shape, rng: np.random.Generator, fan_in: int = 0):
    """NumPy draw of one leaf for the two schemes of :data:`jzcp.networks.layers.INIT_SCHEMES` (same laws:
    ``pytorch`` U(+-1/sqrt(fan_in)) for kernels and linear biases; ``kaiming_fan_out`` conv N(0, 2/fan_out),
    linear N(0, 0.01^2), zero biases). None for another scheme."""
    if scheme_name == "pytorch":
        fan = fan_in if kind == "dense_bias" else int(np.prod(shape[:-1]))
        bound = 1.0 / np.sqrt(max(fan, 1))
        return rng.uniform(-bound, bound, shape).astype(np.float32)
    if scheme_name == "kaiming_fan_out":
        if kind == "conv":
            return (rng.standard_normal(shape) * np.sqrt(2.0 / (np.prod(shape[:-2]) * shape[-1]))).astype(np.float32)
        if kind == "dense":
            return (rng.standard_normal(shape) * 0.01).astype(np.float32)
        return np.zeros(shape, np.float32)
    return None


def init_from_shapes(key: jax.Array, shapes, scheme: layers.InitScheme):
    """A parameter tree of the given shapes (leaves with ``.shape``), initialised by the capture contract's names.

    ``kernel`` of rank 4 -> ``scheme.conv`` (fan-in ``k*k*C_in``: ``k*k`` for a depthwise ``(k, k, 1, C)``);
    rank 2 -> ``scheme.dense_kernel`` and its sibling ``bias`` -> ``scheme.dense_bias(fan_in)``; BN ``scale`` 1,
    other ``bias`` 0. The two schemes of ``layers`` are drawn with NumPy (seeded by ``key``): the super-networks
    have hundreds to thousands of leaves, and a jitted per-leaf init compiles for minutes on CPU. Another
    scheme falls back to its JAX initialisers, leaf by leaf. Not jittable (``key`` must be concrete).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    names = [tuple(getattr(k, "key", str(k)) for k in path) for path, _ in flat]
    dense_fan_in = {n[:-1]: s.shape[0] for n, (_, s) in zip(names, flat) if n[-1] == "kernel" and len(s.shape) == 2}
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    out = []
    for i, (n, (_, s)) in enumerate(zip(names, flat)):
        shape, fan_in = tuple(s.shape), 0
        if n[-1] == "kernel":
            kind = "conv" if len(shape) == 4 else "dense"
        elif n[-1] == "bias" and n[:-1] in dense_fan_in:
            kind, fan_in = "dense_bias", dense_fan_in[n[:-1]]
        elif n[-1] in ("scale", "bias"):
            out.append(jnp.full(shape, 1.0 if n[-1] == "scale" else 0.0, s.dtype))
            continue
        else:
            raise ValueError(f"init_from_shapes: no initialiser for parameter {'/'.join(n)}")
        value = _host_draw(scheme.name, kind, shape, rng, fan_in)
        if value is None:
            fn = {"conv": scheme.conv, "dense": scheme.dense_kernel}.get(kind) or scheme.dense_bias(fan_in)
            value = fn(jax.random.fold_in(key, i), shape, s.dtype)
        out.append(jnp.asarray(value, s.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


@functools.lru_cache(maxsize=None)
def apply_fn(config: NB101Config = NB101Config()):
    """The ``apply(params, x, arch) -> logits`` of a config (jit it; one compilation per input shape)."""
    module = NB101Network(config)

    def apply(params, x: jax.Array, arch: jax.Array) -> jax.Array:
        return module.apply({"params": params}, x, jnp.asarray(arch, jnp.int32))

    return apply


def _owner(path):
    """``(stack, vertex, kind, channels)`` a parameter belongs to, or None for parameters every cell uses.

    kind: ``"proj"`` (vertex 6 = output projection), ``"conv3x3"``, ``"conv1x1"``."""
    names = [getattr(k, "key", str(k)) for k in path]
    if not names[0].startswith("stack"):
        return None
    stack = int(names[0][len("stack"):].split("_")[0])
    sub, bank = names[1], names[2]
    if sub == "out_proj":
        return stack, OUT, "proj", int(bank[1:])
    if sub.startswith("proj"):
        return stack, int(sub[4:]), "proj", int(bank[1:])
    kind, ch = bank.split("_")
    return stack, int(sub[len("vertex"):]), kind, int(ch[1:])


def _used(owner, adj, ops, vcs, xp):
    """Does the pruned cell (adj, ops) with per-stack vertex channels ``vcs`` use ``owner``'s parameters?"""
    stack, t, kind, ch = owner
    a = adj != 0
    if kind == "proj":
        return a[..., 0, t] & ((vcs[stack][..., t] == ch) | (t == OUT))
    op = space.CONV3X3 if kind == "conv3x3" else space.CONV1X1
    present = xp.any(a[..., t, :], axis=-1) | xp.any(a[..., :, t], axis=-1)
    return present & (ops[..., t] == op) & (vcs[stack][..., t] == ch)


def _stem_channels(params) -> int:
    return int(params["stem_conv"]["kernel"].shape[-1])


def param_mask(params, arch):
    """Pytree like ``params`` of scalar bools: does the cell ``arch`` (56,) use this parameter? Jittable.

    Every leaf is wholly used or unused (one parameter set per channel option), so the masked size is the
    reference network's parameter count exactly."""
    pruned = space.prune(decode(arch))
    stem = _stem_channels(params)
    stacks = {_owner(p)[0] for p, _ in jax.tree_util.tree_flatten_with_path(params)[0] if _owner(p)}
    vcs = {s: vertex_channels(pruned.adj, stem * 2**s) for s in stacks}

    memo: dict = {}  # kernel, scale and bias of one parameter set share one test

    def used(path, leaf):
        owner = _owner(path)
        if owner is None:
            return jnp.bool_(True)
        if owner not in memo:
            memo[owner] = _used(owner, pruned.adj, pruned.ops, vcs, jnp)
        return memo[owner]

    return jax.tree_util.tree_map_with_path(used, params)


@functools.lru_cache(maxsize=None)
def _count_table(config: NB101Config):
    """(count of parameters every cell uses, {owner: size})."""
    shapes = _param_shapes(config, (32, 32, 3))
    base, per_owner = 0, {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        owner, n = _owner(path), int(np.prod(leaf.shape))
        if owner is None:
            base += n
        else:
            per_owner[owner] = per_owner.get(owner, 0) + n
    return base, per_owner


def _pruned_batch(arch):
    """Host: ``(..., 56)`` (or a Cell) -> pruned (adj, ops) NumPy arrays; ``ValueError`` for an invalid arch."""
    a = encode(arch) if isinstance(arch, space.Cell) else np.asarray(arch)
    if a.ndim == 0 or a.shape[-1] != ARCH_LEN or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"NB101 archs must be integer arrays (..., {ARCH_LEN}), got shape {a.shape} dtype {a.dtype}")
    flat = a.reshape(-1, ARCH_LEN).astype(np.int32)
    valid, adj, ops = _prune_valid_jit(flat)
    bad = np.flatnonzero(~np.asarray(valid))
    if bad.size:
        check_arch(flat[bad[0]])  # raises with the reason
    for row in flat:  # entries / ops the jitted check does not see (e.g. a 2 in the adjacency)
        space._check_cell(space.Cell(row[: V * V].reshape(V, V), row[V * V:], np.ones(V, bool)))
    lead = a.shape[:-1]
    return np.asarray(adj).reshape(*lead, V, V), np.asarray(ops).reshape(*lead, V)


@jax.jit
def _prune_valid_jit(flat):
    cells = decode(flat)
    pruned = space.prune(cells)
    return space.is_valid(cells), pruned.adj, pruned.ops


def param_count(arch, config: NB101Config = NB101Config()) -> np.ndarray:
    """Parameters of the network of cell(s) ``arch`` (..., 56) (or a Cell): the reference network's count
    (NASLib's ``params`` x 1e6; channels split in vertex order, so isomorphic cells may differ slightly)."""
    adj, ops = _pruned_batch(arch)
    base, per_owner = _count_table(config)
    vcs = {s: vertex_channels(adj, config.stack_channels(s), np) for s in range(config.num_stacks)}
    total = np.full(adj.shape[:-2], base, np.int64)
    for owner, n in per_owner.items():
        total = total + n * _used(owner, adj, ops, vcs, np).astype(np.int64)
    return total


def flops(arch, config: NB101Config = NB101Config(), image_shape=(32, 32, 3)) -> np.ndarray:
    """Per-sample FLOPs of cell(s) ``arch`` (..., 56) as tensorwatch counts them (NAS-Bench-Suite-Zero's
    ``flops`` x 1e6): conv k*k*C_in*C_out*H*W, BN 2*numel, ReLU numel, max-pool k*k*numel_out, linear in*out;
    ``torch.mean`` (the global pool) counts nothing."""
    adj, ops = _pruned_batch(arch)
    a = adj != 0
    h, w, cin_img = image_shape
    c0 = config.stem_channels
    total = np.full(adj.shape[:-2], (9 * cin_img + 3) * c0 * h * w, np.int64)
    cin, c = c0, c0
    present = a.any(-1) | a.any(-2)
    for stack in range(config.num_stacks):
        if stack:
            total += cin * (h // 2) * (w // 2) * 4
            h, w, c = h // 2, w // 2, c * 2
        vc = vertex_channels(adj, c, np).astype(np.int64)
        for _ in range(config.cells_per_stack):
            hw = h * w
            for t in range(1, OUT):
                v = vc[..., t]
                total += np.where(a[..., 0, t], (cin * v + 3 * v) * hw, 0)
                op = np.where(present[..., t], ops[..., t], -1)
                total += np.where(op == space.CONV3X3, (9 * v * v + 3 * v) * hw, 0)
                total += np.where(op == space.CONV1X1, (v * v + 3 * v) * hw, 0)
                total += np.where(op == space.MAXPOOL3X3, 9 * v * hw, 0)
            total += np.where(a[..., 0, OUT], (cin * c + 3 * c) * hw, 0)
            cin = c
    return total + c * config.num_classes
