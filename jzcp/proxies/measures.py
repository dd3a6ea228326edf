"""The zero-cost proxies: NAS-Bench-Suite-Zero's 13 (NASLib ``predictors/utils/pruners/measures``) plus
ZiCo, MeCo and EZNAS-A in three variants (``eznas_a`` code-faithful, ``eznas_a_t3gn`` paper text,
``eznas_a_thirdparty``), each with its reference semantics.

Conventions shared with the references (NASLib, SamsungLabs/zero-cost-nas):

* Weight-based proxies sum over **conv and linear weights only** (never BatchNorm or biases), over the
  layers the architecture's network has (ops on unreachable branches included: they exist in the reference
  networks, their gradients are zero).
* BatchNorm in **train mode** (batch statistics); the loss is the **mean cross-entropy** (``F.cross_entropy``)
  except where noted (jacov / epe_nas / synflow: the sum of the logits; nwot / zen / meco: no backward).
* A proxy returns one float scalar; NaN / Inf are mapped to NaN by the suite.

Disconnected NB201 cells (no input->output path, constant logits) are scored as the references score them:
the network runs as built, the gradient proxies are exactly 0 (grad_norm, snip, grasp, fisher, plain; synflow
0 as NASLib returns 0 for a zero sum), and the correlation / determinant proxies (jacov, epe_nas, nwot, zen)
are undefined -> NaN (NASLib stores its failure sentinel -1e8 there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jzcp.networks import layers
from jzcp.networks.layers import taps_of
from jzcp import linalg
from jzcp.proxies.context import (
    STREAM_MECO,
    STREAM_ZEN,
    Context,
    flat_paths,
    cross_entropy,
    is_weight_path,
    leaf_name,
)

EPS_CORR = 1e-5  # the k of jacov / epe_nas


# --- gradient of the cross-entropy --------------------------------------------------------------------------


def _grad_norm(ctx: Context):
    """Sum over layers of the L2 norm of the CE gradient of the weight (NASLib ``grad_norm``)."""
    return ctx.weight_terms(lambda w, g: jnp.sqrt(jnp.sum(jnp.square(g))), ctx.ce().grads)


def _snip(ctx: Context):
    """sum |w * dL/dw| (SNIP's connection sensitivity |dL/dmask| at mask 1)."""
    return ctx.weight_terms(lambda w, g: jnp.sum(jnp.abs(w * g)), ctx.ce().grads)


def _plain(ctx: Context):
    """sum w * dL/dw (signed)."""
    return ctx.weight_terms(lambda w, g: jnp.sum(w * g), ctx.ce().grads)


def _fisher(ctx: Context):
    """NASLib ``fisher`` (mode "channel"): per conv / linear layer and output channel k,
    ``0.5 * mean_n (sum_hw act * dL/dact)^2`` with ``act`` the layer output; every channel value is then
    broadcast over the weight's ``C_in * k_h * k_w`` entries and summed (``reshape_elements`` + ``sum_arr``).
    """
    ce = ctx.ce()
    pert_grads = flat_paths(ce.pert_grads)
    total = jnp.float32(0.0)
    for path, tap in _records_by_path(ce.taps, layers.ConvTap).items():
        g = pert_grads[path]
        per_channel = 0.5 * jnp.mean(jnp.square(g), axis=0)  # g is (B, C): sum_hw act * grad already
        total = total + jnp.where(tap.live, jnp.sum(jnp.abs(per_channel)) * tap.fan_in, 0.0)
    return total


def _grasp(ctx: Context):
    """NASLib ``grasp``: ``-sum w * (H g)``, H the Hessian of the CE w.r.t. the conv / linear weights and g
    their CE gradient (a forward-over-reverse Hessian-vector product, linearised with the CE pass)."""
    tangent = jax.tree_util.tree_map_with_path(
        lambda path, g: g if is_weight_path(path) else jnp.zeros_like(g), ctx.ce().grads)
    return ctx.weight_terms(lambda w, h: -jnp.sum(w * h), ctx.hvp(tangent))


# --- input gradient of sum(logits) ----------------------------------------------------------------------------


def _jacobian_rows(ctx: Context) -> jax.Array:
    j = ctx.input_grad()
    return j.reshape(j.shape[0], -1)


def jacov_score(rows: jax.Array) -> jax.Array:
    """``-sum_i log(v_i + k) + 1 / (v_i + k)``, v the eigenvalues of ``corrcoef(rows)``, rows (B, D)."""
    v = linalg.eigvalsh(linalg.corrcoef(rows))
    return -jnp.sum(jnp.log(v + EPS_CORR) + 1.0 / (v + EPS_CORR))


def epe_nas_score(rows: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """EPE-NAS of per-sample input gradients ``rows`` (B, D) with integer ``labels`` (B,); see :func:`_epe_nas`.

    A class's correlation matrix is its block of the batch's (correlations are pairwise), so one (B, B)
    matrix serves every class."""
    logabs = jnp.log(jnp.abs(linalg.corrcoef(rows)) + EPS_CORR)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # (B, K)
    n = jnp.sum(onehot, axis=0)
    s = jnp.einsum("ic,ij,jc->c", onehot, logabs, onehot)
    if num_classes <= 100:
        return jnp.sum(jnp.where(n > 0, jnp.abs(s), 0.0))
    valid = n >= 2
    s = jnp.where(valid, s / jnp.maximum(n, 1.0), 0.0)
    pair = valid[:, None] & valid[None, :]
    count = jnp.sum(valid)
    total = jnp.sum(jnp.where(pair, jnp.abs(s[:, None] - s[None, :]), 0.0))
    return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def _jacov(ctx: Context):
    """Jacobian covariance (NASWOT v1, NASLib ``jacov``): ``-sum_i log(v_i + k) + 1 / (v_i + k)`` over the
    eigenvalues v of the correlation matrix of the per-sample input gradients of sum(logits), k = 1e-5."""
    return jacov_score(_jacobian_rows(ctx))


def _epe_nas(ctx: Context):
    """EPE-NAS (NASLib ``epe_nas``): per class c, ``s_c = sum log(|corr| + k)`` over the correlation matrix of
    that class's input-gradient rows; score ``sum_c |s_c|`` for <= 100 classes. For > 100 classes s_c is
    divided by the class size and the score is ``sum_{c,c'} |s_c - s_c'| / #classes`` -- a class with one
    sample is skipped there (the reference's ``len()`` of a 0-d array raises and ``continue``s), while with
    <= 100 classes it contributes ``log(1 + k)`` (``np.corrcoef`` of one row is 1.0).

    The classes are those of the labels, the class count that of the logits (as the reference)."""
    return epe_nas_score(_jacobian_rows(ctx), ctx.y, ctx.net.spec.num_classes)


# --- forward statistics ---------------------------------------------------------------------------------------


def _nwot(ctx: Context):
    """NASWOT (ICML'21, NASLib ``nwot``): ``log |det K|``, ``K = sum over ReLUs of c c^T + (1-c)(1-c)^T`` with
    ``c`` the binary code (input > 0) of each sample at that ReLU (its input, flattened)."""
    taps = ctx.ce().taps
    b = ctx.x.shape[0]
    kmat = jnp.zeros((b, b), jnp.float32)
    for t in taps_of(taps, layers.ReluTap):
        a = (t.pre.reshape(b, -1) > 0).astype(jnp.float32) * 2.0 - 1.0  # +-1 codes: a a^T = agree - disagree
        d = a.shape[1]
        kmat = kmat + jnp.where(t.live, 0.5 * (d + a @ a.T), 0.0)
    return linalg.logdet_psd(kmat)


def zen_params(params, key: jax.Array):
    """Zen-NAS's re-initialisation of ``params``: conv / linear weights N(0, 1), BN scale 1, every bias 0."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    sizes = [w.size if is_weight_path(p) else 0 for p, w in leaves]
    # One draw for all weights (a threefry per leaf would dominate the compile time).
    draw = jax.random.normal(key, (sum(sizes),), jnp.float32)
    offsets = np.cumsum([0] + sizes)

    def leaf(i, path, w):
        if is_weight_path(path):
            return draw[offsets[i]:offsets[i + 1]].reshape(w.shape)
        return jnp.ones_like(w) if leaf_name(path) == "scale" else jnp.zeros_like(w)

    return jax.tree_util.tree_unflatten(treedef, [leaf(i, p, w) for i, (p, w) in enumerate(leaves)])


def zen_inputs(key: jax.Array, shape, gamma: float):
    """Zen's two inputs: x1 ~ N(0, 1) and x1 + gamma * N(0, 1)."""
    k1, k2 = jax.random.split(key)
    x1 = jax.random.normal(k1, shape, jnp.float32)
    return x1, x1 + gamma * jax.random.normal(k2, shape, jnp.float32)


def _zen(ctx: Context):
    """Zen-NAS (NASLib ``zen``): weights re-drawn N(0, 1) (conv / linear; BN scale 1, biases 0), two
    standard-Gaussian inputs x1, x2; ``log mean_b sum |f(x1) - f(x1 + 0.01 x2)|`` over the pre-GAP features f,
    plus for every BatchNorm ``log sqrt(mean running_var)``. The running variance is PyTorch's after the two
    train-mode forwards from 1 with momentum 0.1 and the unbiased batch variance:
    ``0.81 + 0.09 u1 + 0.1 u2`` (1 in eval mode, where running statistics are not updated)."""
    cfg = ctx.config
    k_w, k_x = jax.random.split(ctx.stream(STREAM_ZEN))
    params = zen_params(ctx.params, k_w)
    x1, x2 = zen_inputs(k_x, ctx.x_data.shape, cfg.zen_mixup_gamma)
    _, taps1 = ctx.net.apply(params, x1, taps=True)
    _, taps2 = ctx.net.apply(params, x2, taps=True)
    (f1,), (f2,) = [[t.x for t in taps_of(t, layers.PoolTap)] for t in (taps1, taps2)]
    score = jnp.log(jnp.mean(jnp.sum(jnp.abs(f1 - f2), axis=tuple(range(1, f1.ndim)))))
    for a, b in zip(taps_of(taps1, layers.BNTap), taps_of(taps2, layers.BNTap)):
        if cfg.bn_mode == "train":
            unbias = a.count / (a.count - 1.0)
            running = 0.81 + 0.09 * a.var * unbias + 0.1 * b.var * unbias
        else:
            running = jnp.ones_like(a.var)
        score = score + jnp.where(a.live, 0.5 * jnp.log(jnp.mean(running)), 0.0)
    return score


def _meco(ctx: Context):
    """MeCo (NeurIPS'23, ``meco``): one standard-Gaussian image (64 x 64 by default, as its code); for every
    module output (conv, BN, ReLU, pool, op, cell, block; each counted as often as the reference PyTorch
    model's modules emit it) the smallest eigenvalue of the channel correlation matrix (NaN / Inf entries
    set to 0); the score is their sum."""
    h, w = ctx.config.meco_input_hw
    x = jax.random.normal(ctx.stream(STREAM_MECO), (1, h, w, ctx.x_data.shape[-1]), jnp.float32)
    _, taps = ctx.net.apply(ctx.params, x, taps=True)
    groups: dict = {}
    for t in taps_of(taps, layers.FeatureTap):
        if t.x.ndim >= 3:  # (1, C) outputs (pool, head) give the reference a 1-observation corrcoef: term 0
            groups.setdefault(t.x.shape, []).append(t)
    total = jnp.float32(0.0)
    for group in groups.values():  # one batched eigendecomposition per feature shape
        feats = jnp.stack([t.x[0] for t in group])
        weights = jnp.stack([t.weight for t in group])
        lam = jax.vmap(linalg.min_eig_corr_zeroed)(feats)
        total = total + jnp.sum(jnp.where((weights > 0) & ~jnp.isnan(lam), weights * lam, 0.0))
    return total


# --- parameters only ------------------------------------------------------------------------------------------


def _l2_norm(ctx: Context):
    """Sum over layers of the L2 norm of the conv / linear weight (NASLib ``l2_norm``)."""
    return ctx.weight_terms(lambda w: jnp.sqrt(jnp.sum(jnp.square(w))))


def _params(ctx: Context):
    """Parameters of the architecture's network, in millions (NAS-Bench-Suite-Zero ``params``)."""
    sizes = jax.tree.map(lambda w: jnp.float32(w.size), ctx.params)
    return sum(jax.tree.leaves(jax.tree.map(jnp.multiply, sizes, ctx.mask()))) / 1e6


def _flops(ctx: Context):
    """Per-sample MFLOPs as tensorwatch counts them (NAS-Bench-Suite-Zero ``flops``): conv k*k*C_in*C_out*H*W,
    BN 2*numel, ReLU numel, pool k*k*numel_out, global pool C(H+1)(W+1), linear in*out."""
    return sum(t.flops for t in taps_of(ctx.flops_taps(), layers.FlopsTap)) / 1e6


def _synflow(ctx: Context):
    """SynFlow (NASLib ``synflow``): on the BN-free network with |parameters|, input one image of ones,
    ``S = sum |w * d sum(logits) / dw|`` over conv / linear weights, in float64 when enabled (the suite then
    runs under ``jax.enable_x64``; without it float64 silently means float32). Returned as NASLib stores it:
    ``log S`` (0 when S == 0)."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64 if ctx.config.synflow_float64 else jnp.float32)
    params = jax.tree.map(lambda w: jnp.abs(w).astype(dtype), ctx.params)
    x = jnp.ones((1, *ctx.x_data.shape[1:]), dtype)
    grads = jax.grad(lambda p: jnp.sum(ctx.net.apply(p, x, bn=False)[0]))(params)
    masks = jax.tree.leaves(ctx.mask())
    s = jnp.zeros((), dtype)  # accumulated in ``dtype``: the sum overflows float32 before its log
    for i, ((path, w), g) in enumerate(zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(grads))):
        if is_weight_path(path):
            s = s + masks[i].astype(dtype) * jnp.sum(jnp.abs(w * g))
    return jnp.where(s > 0, jnp.log(jnp.where(s > 0, s, 1.0)), 0.0).astype(jnp.float32)


def zico_layer(g: jax.Array) -> jax.Array:
    """ZiCo's term of one layer from its gradients ``g`` (S, ...) over S minibatches: over the entries with
    non-zero std across minibatches, ``log sum mean|g| / std(g)`` (0 -- layer skipped -- when the sum is 0)."""
    std = jnp.std(g, axis=0)
    nonzero = std != 0  # as np.nonzero: a NaN std counts (and makes the score NaN, as in the reference)
    ratio = jnp.where(nonzero, jnp.mean(jnp.abs(g), axis=0) / jnp.where(nonzero, std, 1.0), 0.0)
    tot = jnp.sum(ratio)
    return jnp.where(tot != 0, jnp.log(jnp.where(tot != 0, tot, 1.0)), 0.0)


def _zico(ctx: Context):
    """ZiCo (ICLR'23): the batch split into ``zico_splits`` minibatches, each a separate train-mode forward +
    CE backward; per conv / linear weight, over its entries whose gradient std across minibatches is non-zero,
    ``log sum mean|g| / std(g)`` (layers with a zero sum skipped); the score is the sum over layers."""
    s = ctx.config.zico_splits
    x, y = ctx.x, ctx.y
    b = x.shape[0]
    if b % s:
        raise ValueError(f"zico: batch size {b} is not divisible by zico_splits={s}")
    xs, ys = x.reshape(s, b // s, *x.shape[1:]), y.reshape(s, b // s)
    grads = jax.vmap(lambda xi, yi: jax.grad(lambda p: cross_entropy(ctx.net.apply(p, xi)[0], yi))(ctx.params))(
        xs, ys)
    return ctx.weight_terms(lambda w, g: zico_layer(g), grads)


# --- EZNAS-A (Akhauri et al., NeurIPS 2022): frobenius_norm(sigmoid(logdet(sign(X)))) per block, mean -------


def _eznas_a_term(x: jax.Array, logdet: str = "eznas") -> jax.Array:
    """``frobenius_norm(sigmoid(logdet(sign(x))))`` of one block's tensor ``x`` in torch layout (the determinant
    over its last two dims). ``logdet="eznas"``: the EZNAS primitive (det < 0 -> NaN -> 0, det == 0 -> -inf kept,
    :mod:`jzcp.programs`); ``"abs"``: ``log |det|`` (``torch.linalg.slogdet``'s second output, the third-party
    version). The ops are :func:`jzcp.programs.apply_primitive`'s, so a program scores identically."""
    from jzcp import programs as pg

    a = pg.apply_primitive("sign", x)
    if logdet == "eznas":
        d = pg.apply_primitive("logdet", a)
    else:
        d = linalg.slogdet(a)[1]
    return pg.apply_primitive("frobenius_norm", pg.apply_primitive("sigmoid", d))


def _mean_live(terms) -> jax.Array:
    """Mean of the ``(value, live)`` pairs whose ``live`` is True (NaN if none is)."""
    total, count = jnp.float32(0.0), jnp.float32(0.0)
    for v, live in terms:
        total = total + jnp.where(live, v, 0.0)
        count = count + jnp.asarray(live, jnp.float32)
    return total / count


def _eznas_a(ctx: Context):
    """EZNAS-A as the official code computes it (the published re-run numbers): for every live ReLU-Conv-BN block
    (stem excluded) the gradient of ``sum(logits)`` w.r.t. the block input (BN as configured, train mode in
    EZNAS), as ``(B, C, H, W)``; ``frobenius_norm(sigmoid(logdet(sign(g))))`` with the log-determinant over
    H x W (det < 0 -> 0, singular -> -inf -> sigmoid 0) and the norm over the B x C matrix of log-determinants;
    the score is the mean over blocks. Program form: ``frobenius_norm(sigmoid(logdet(sign(inpactgrad_D))))``."""
    return _mean_live((_eznas_a_term(jnp.transpose(g, (0, 3, 1, 2))), live)
                      for _, g, live in ctx.block_input_grads())


def _eznas_a_t3gn(ctx: Context):
    """EZNAS-A as the paper's text describes it: X = the conv-weight gradient of ``sum(logits)`` of every live
    ReLU-Conv-BN block on the N pass (standard Gaussian input of the batch's shape, drawn exactly as the
    statistics' N pass of :mod:`jzcp.statistics` with key ``fold_in(key, STREAM_EZNAS)``), as
    ``(C_out, C_in, k, k)``; log-determinant over the k x k kernel; mean over blocks. Program form:
    ``frobenius_norm(sigmoid(logdet(sign(wtgrad_N))))``."""
    from jzcp import statistics as st

    noise = st.pass_inputs(ctx.x_data, ctx.stream(st.STREAM_EZNAS))[1]
    blocks = st.block_tensors(ctx.net, ctx.params, noise)
    return _mean_live((_eznas_a_term(jnp.transpose(b["wtgrad"], (3, 2, 0, 1))), b["live"]) for b in blocks)


def _eznas_a_thirdparty(ctx: Context):
    """A third-party EZNAS-A (``compute_eznas_a`` of the AutoZC / PiCO-NAS code): uniform U[0, 1) noise input of the
    batch's shape, mean cross-entropy with the batch labels, the weight gradient of **every** convolution the
    architecture has (stem and shortcut convs included, linear layers not), ``(C_out, C_in, k, k)``;
    ``frobenius_norm(sigmoid(log|det(sign(g))|))`` (the determinant's sign dropped: ``slogdet``'s log-abs); mean
    over the convolutions."""
    from jzcp import statistics as st

    x = jax.random.uniform(jax.random.fold_in(ctx.stream(st.STREAM_EZNAS), 3), ctx.x_data.shape, jnp.float32)
    grads = jax.grad(lambda p: cross_entropy(ctx.net.apply(p, x)[0], ctx.y))(ctx.params)
    leaves = jax.tree_util.tree_flatten_with_path(ctx.params)[0]
    masks = jax.tree.leaves(ctx.mask())
    terms = []
    for (path, w), g, m in zip(leaves, jax.tree.leaves(grads), masks):
        if is_weight_path(path) and w.ndim == 4:
            terms.append((_eznas_a_term(jnp.transpose(g, (3, 2, 0, 1)), logdet="abs"), m > 0))
    return _mean_live(terms)


# --- helpers --------------------------------------------------------------------------------------------------


def _records_by_path(taps, kind) -> dict:
    """{module path + name: the record of type ``kind`` sown under that name}."""
    return {path: r for path, recs in flat_paths(taps).items() for r in recs if isinstance(r, kind)}


# --- registry -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyInfo:
    """A registered proxy.

    ``impl(ctx) -> scalar``; ``needs_labels``: reads the labels; ``needs_bn_free``: runs the BN-free copy;
    ``reads_batch``: reads the minibatch (so ``ProxyConfig.input`` applies); ``higher_is_better``: the sign
    the proxy is designed with (NAS-Bench-Suite-Zero's ``plain`` correlates *negatively* with accuracy on
    NB201); ``reference``: where the semantics come from.
    """

    name: str
    impl: Callable[[Context], jax.Array]
    needs_labels: bool
    needs_bn_free: bool
    reads_batch: bool
    higher_is_better: bool
    reference: str

    @property
    def description(self) -> str:
        return (self.impl.__doc__ or "").strip()


_NASLIB = "NAS-Bench-Suite-Zero / NASLib predictors/utils/pruners/measures"
_EZNAS = "IntelLabs Hardware-Aware-Automated-Machine-Learning EZNAS/ (Akhauri et al., NeurIPS 2022)"
PROXIES: dict[str, ProxyInfo] = {
    p.name: p
    for p in [
        ProxyInfo("epe_nas", _epe_nas, True, False, True, True, _NASLIB + "/epe_nas.py (EPE-NAS, Lopes et al. 2021)"),
        ProxyInfo("fisher", _fisher, True, False, True, True, _NASLIB + "/fisher.py (Turner et al. 2020)"),
        ProxyInfo("flops", _flops, False, False, False, True, _NASLIB + "/model_stats.py (tensorwatch ModelStats)"),
        ProxyInfo("grad_norm", _grad_norm, True, False, True, True, _NASLIB + "/grad_norm.py"),
        ProxyInfo("grasp", _grasp, True, False, True, True, _NASLIB + "/grasp.py (Wang et al. 2020)"),
        ProxyInfo("jacov", _jacov, False, False, True, True, _NASLIB + "/jacov.py (Mellor et al. 2020, v1)"),
        ProxyInfo("l2_norm", _l2_norm, False, False, False, True, _NASLIB + "/l2_norm.py"),
        ProxyInfo("nwot", _nwot, False, False, True, True, _NASLIB + "/nwot.py (Mellor et al., ICML 2021)"),
        ProxyInfo("params", _params, False, False, False, True, _NASLIB + "/model_stats.py"),
        ProxyInfo("plain", _plain, True, False, True, True, _NASLIB + "/plain.py"),
        ProxyInfo("snip", _snip, True, False, True, True, _NASLIB + "/snip.py (Lee et al. 2019)"),
        ProxyInfo("synflow", _synflow, False, True, False, True, _NASLIB + "/synflow.py + predictors/zerocost.py (log)"),
        ProxyInfo("zen", _zen, False, False, False, True, _NASLIB + "/zen.py (Lin et al., ICCV 2021)"),
        ProxyInfo("zico", _zico, True, False, True, True, "SLDGroup/ZiCo ZeroShotProxy/compute_zico.py (Li et al., ICLR 2023)"),
        ProxyInfo("meco", _meco, False, False, False, True, "HamsterMimi/MeCo correlation/foresight/pruners/measures/meco.py (Jiang et al., NeurIPS 2023)"),
        ProxyInfo("eznas_a", _eznas_a, False, False, True, True,
                  _EZNAS + " (code-faithful: inpactgrad_D, logdet over H x W)"),
        ProxyInfo("eznas_a_t3gn", _eznas_a_t3gn, False, False, False, True,
                  _EZNAS + " (paper text: wtgrad_N, logdet over k x k)"),
        ProxyInfo("eznas_a_thirdparty", _eznas_a_thirdparty, True, False, False, True,
                  "AutoZC / PiCO-NAS compute_eznas_a (uniform input, CE, every conv weight gradient, log|det|)"),
    ]
}
NBSZ_PROXIES = ("epe_nas", "fisher", "flops", "grad_norm", "grasp", "jacov", "l2_norm", "nwot", "params", "plain",
                "snip", "synflow", "zen")


def proxy_info(name: str) -> ProxyInfo:
    try:
        return PROXIES[name]
    except KeyError:
        raise ValueError(f"unknown proxy {name!r}; available: {', '.join(PROXIES)}") from None


def _public(info: ProxyInfo):
    def fn(net, params, x, y, key):
        return info.impl(Context(net, params, x, y, key, hvp=info.name == "grasp"))

    fn.__name__ = info.name
    fn.__qualname__ = info.name
    fn.__doc__ = f"``(net, params, x (B,H,W,C), y (B,), key) -> scalar``. {info.description}"
    return fn


epe_nas, fisher, flops, grad_norm, grasp, jacov, l2_norm, nwot, params, plain, snip, synflow, zen, zico, meco = (
    _public(PROXIES[n]) for n in ("epe_nas", "fisher", "flops", "grad_norm", "grasp", "jacov", "l2_norm", "nwot",
                                  "params", "plain", "snip", "synflow", "zen", "zico", "meco"))
eznas_a, eznas_a_t3gn, eznas_a_thirdparty = (
    _public(PROXIES[n]) for n in ("eznas_a", "eznas_a_t3gn", "eznas_a_thirdparty"))
