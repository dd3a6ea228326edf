"""EZNAS network statistics: the 22 tensors of every ReLU -> Conv -> BatchNorm block, from real networks.

EZNAS programs (:mod:`jzcp.programs`) read, for every ReLU-Conv-BN ("RCB") block of a network at initialisation,
the conv weight ``wt`` and seven tensors per pass X in {D, N, P}: ``inpact`` (block input, before the ReLU),
``inpactgrad`` (its gradient), ``preact`` (ReLU output = conv input), ``preactgrad``, ``act`` (BN output),
``actgrad`` and ``wtgrad`` (conv weight gradient). Gradients are of the **sum of the logits** (no labels, no loss),
BatchNorm as the network's protocol says (train mode for EZNAS).

Passes (one ``vmap`` over the three inputs, so one compiled network serves all of them):

* **D**: the image minibatch ``x``;
* **N**: standard Gaussian noise of the same shape (key ``fold_in(key, 1)``);
* **P**: ``x + 0.1 * noise`` (noise from ``fold_in(key, 2)``), stored as the **difference** (value under P) -
  (value under D) for every tensor, as the original.

Structure, not module order
---------------------------
Blocks are found from the capture contract of :mod:`jzcp.networks.layers`: every RCB block sows an
:class:`~jzcp.networks.layers.RCBBlockTap` ``(inp, kernel, out, live)`` in its own scope, next to three additive
perturbations in that same scope: :data:`~jzcp.networks.layers.RCB_INPUT` (block input),
:data:`~jzcp.networks.layers.RCB_CONV` (conv output) and :data:`~jzcp.networks.layers.RCB_OUTPUT` (block
output). One forward with zero perturbations and one backward of ``sum(logits)`` give, for each block,

* ``inpactgrad`` = d/d(input perturbation), ``actgrad`` = d/d(output perturbation);
* ``preact = relu(inp)`` and, from the gradient ``dz`` at the conv output, ``preactgrad`` and ``wtgrad`` by the
  conv's own VJP at ``(preact, kernel)`` (stride ``H_in / H_out``, padding ``(k - 1) // 2``, groups
  ``C_in / kernel.shape[2]``; checked against the shapes at trace time).

Conv-BN networks (NB101, NAS-Bench-Macro, MobileNetV3) have no ReLU -> Conv -> BN blocks; each of their convs
followed by a BN is a block whose "ReLU" is what precedes the conv (a ReLU, an h-swish, or nothing: ``preact`` is
the conv input the record carries, see :class:`~jzcp.networks.layers.RCBBlockTap`). Blocks held on channel-padded
tensors (NB101 vertices, elastic MobileNetV3 layers) record one candidate per real width, like NB201's candidate
convs, with the first channels of the padded tensors and of their perturbation gradients.

A block's record belongs to its scope, so no tensor can be assigned to the wrong block. NB201 edges record one
block per candidate conv (1x1 and 3x3, own kernel, own liveness); dead candidates are kept in the jitted output
(shapes are static: the architecture is data) with ``live = False`` and dropped on the host by
:func:`live_groups`. The stem (conv + BN, no ReLU) is not an RCB block.

Layout
------
The jitted function (:func:`make_collector`) returns one record per block: the 7 tensors of each pass stacked
``(3, ...)`` (D, N, P raw values), ``wt`` and ``live``. :func:`live_groups` turns them, on the host and for the
live blocks only, into the layout the interpreter consumes: blocks grouped by shape signature (input, kernel,
output shapes), each group a dict of the 22 :data:`jzcp.programs.TERMINALS` names with arrays ``(n, *shape)`` in
the **torch layout** the programs' shape rules assume (``logdet`` over H x W of an activation, over k x k of a
weight): activations ``(n, B, C, H, W)``, weights ``(n, C_out, C_in, k, k)``; P stored as P - D. That is the
per-network format of :func:`jzcp.programs.batch_networks`, which stacks the blocks of one shape from all networks
so the interpreter runs them vectorised.

Memory per network (float32; NB201 CIFAR-10 network, C = 16, 5 cells per stage)
-------------------------------------------------------------------------------
A block holds 18 activation-sized tensors (6 kinds x 3 passes, each ``B C H W``) and 4 weight-sized ones; at batch 1
a 3x3 cell block takes 1.16 / 0.84 / 0.70 MiB in stages 1 / 2 / 3, a 1x1 one 1.13 / 0.58 / 0.34 MiB, and the four
reduction blocks (always live) 3.3 MiB together. Every edge has a 1x1 and a 3x3 candidate (184 blocks in all), and
a uniformly random cell makes 20% of the candidates live (2 conv ops of 5). :func:`memory_bytes` gives the exact
figure of a network; measured by shape:

* jitted output (all 184 candidate blocks): 146 MiB at batch 1, 1.9 GiB at batch 16 (transient, per call);
* live blocks only (what :func:`live_groups` keeps, the cache stores and the interpreter reads): on average 32 MiB
  at batch 1 (3.3 MiB for a cell without convs, 84.5 MiB for six 3x3 convs) and 420 MiB at batch 16 (max ~1 GiB).
  The EZNAS setting (80 networks at batch 1) holds ~2.5 GiB (the original cached every tensor of every network,
  hundreds of GB).

The EZNAS-A proxies (:mod:`jzcp.proxies.measures`) never materialise this: they reduce the block tensors inside the
proxy's jitted call. :func:`make_program_scorer` does the same for any programs (statistics and interpreter in one
jitted call, only the scores leave it), to score a few programs on thousands of held-out architectures.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jzcp.networks import layers
from jzcp.programs import TERMINALS
from jzcp.proxies.config import ProxyConfig
from jzcp.proxies.context import flat_paths
from jzcp.proxies.net import Net, ProxyNet

__all__ = [
    "PASSES",
    "KINDS",
    "P_NOISE_SCALE",
    "STREAM_NOISE",
    "STREAM_PERTURB",
    "STREAM_EZNAS",
    "noise_key",
    "pass_inputs",
    "block_tensors",
    "statistics_fn",
    "make_collector",
    "live_groups",
    "network_statistics",
    "make_program_scorer",
    "memory_bytes",
    "StatisticsCache",
    "collect",
]

PASSES = ("D", "N", "P")
KINDS = ("inpact", "inpactgrad", "preact", "preactgrad", "act", "actgrad", "wtgrad")
P_NOISE_SCALE = 0.1  # P = data + 0.1 * Gaussian noise
STREAM_NOISE, STREAM_PERTURB = 1, 2  # fold_in ids of the N-pass noise and the P-pass perturbation
# Stream of the statistics' noise key under a protocol seed: key = fold_in(key(seed), STREAM_EZNAS), the same key
# the EZNAS-A proxies draw from (Context.stream(STREAM_EZNAS); Context's own streams are 1..3).
STREAM_EZNAS = 4
assert set(TERMINALS) == {"wt"} | {f"{k}_{x}" for k in KINDS for x in PASSES}


def noise_key(seed: int) -> jax.Array:
    """The N / P noise key of a protocol seed: ``fold_in(key(seed), STREAM_EZNAS)`` (what the proxies' suite key
    ``key(seed)`` gives through ``Context.stream(STREAM_EZNAS)``)."""
    return jax.random.fold_in(jax.random.key(seed), STREAM_EZNAS)


def pass_inputs(x: jax.Array, key: jax.Array) -> jax.Array:
    """``(3, B, H, W, C)``: the D (``x``), N (standard Gaussian) and P (``x + 0.1 noise``) inputs. Jittable."""
    noise = jax.random.normal(jax.random.fold_in(key, STREAM_NOISE), x.shape, jnp.float32)
    pert = jax.random.normal(jax.random.fold_in(key, STREAM_PERTURB), x.shape, jnp.float32)
    x = jnp.asarray(x, jnp.float32)
    return jnp.stack([x, noise, x + P_NOISE_SCALE * pert])


def _conv_config(inp_shape, kernel_shape, out_shape, where: str) -> tuple[int, int]:
    """(stride, groups) of an RCB block's conv from its static shapes; ValueError if they do not fit."""
    h_in, h_out = inp_shape[1], out_shape[1]
    k, cin_g, cout = kernel_shape[0], kernel_shape[2], kernel_shape[3]
    stride = max(1, h_in // max(h_out, 1))
    groups = inp_shape[-1] // cin_g if cin_g else 0
    ok = (kernel_shape[0] == kernel_shape[1] and k % 2 == 1 and -(-h_in // stride) == h_out
          and -(-inp_shape[2] // stride) == out_shape[2] and groups >= 1 and groups * cin_g == inp_shape[-1]
          and cout == out_shape[-1])
    if not ok:
        raise ValueError(f"{where}: RCB record does not describe a ReLU-Conv-BN block: input {inp_shape}, kernel "
                         f"{kernel_shape}, output {out_shape} (need an odd square kernel, symmetric padding, "
                         "integer stride)")
    return stride, groups


def _raw_blocks(net: Net, params, x: jax.Array) -> list[dict[str, Any]]:
    """One forward with zero perturbations and one backward of ``sum(logits)``: per RCB block record (path-sorted
    order) its input, kernel, output, liveness and the gradients at its three perturbations."""
    pert = net.zero_perturbations(params, x)

    def f(q):
        return net.apply(params, x, taps=True, perturbations=q)

    logits, vjp, taps = jax.vjp(f, pert, has_aux=True)
    (grads,) = vjp(jnp.ones_like(logits))
    g = flat_paths(grads)
    out = []
    for path, recs in flat_paths(taps).items():
        if path[-1] != layers.RCB_BLOCK:
            continue
        scope = path[:-1]
        names = {n: scope + (n,) for n in (layers.RCB_INPUT, layers.RCB_CONV, layers.RCB_OUTPUT)}
        missing = [n for n, p in names.items() if p not in g]
        if missing:
            raise ValueError(f"RCB block at {'/'.join(scope)} lacks the perturbation(s) {missing} "
                             "(see the capture contract in jzcp.networks.layers)")
        d_in, d_z, d_out = (g[names[n]] for n in (layers.RCB_INPUT, layers.RCB_CONV, layers.RCB_OUTPUT))
        for r in recs:
            if isinstance(r, layers.RCBBlockTap):
                # A candidate of a channel-padded block covers the first channels of the scope's tensors.
                c_in, c_out = r.inp.shape[-1], r.out.shape[-1]
                out.append({"inp": r.inp, "kernel": r.kernel, "out": r.out, "live": r.live, "pre": r.pre,
                            "d_in": d_in[..., :c_in], "d_z": d_z[..., :c_out], "d_out": d_out[..., :c_out]})
    if not out:
        raise ValueError(f"{net.spec.name}: the network records no ReLU-Conv-BN block (RCBBlockTap); EZNAS "
                         "statistics need RCB blocks")
    return out


def _finish_block(r: Mapping[str, Any]) -> dict[str, Any]:
    """The 7 per-pass tensors + ``wt`` + ``live`` of one raw block (NHWC / HWIO): ``preact`` = the recorded conv
    input, ``relu(inp)`` when none is recorded; ``preactgrad`` and ``wtgrad`` by the conv's VJP at
    ``(preact, kernel)`` with the conv-output gradient."""
    inp, kernel, d_z = r["inp"], r["kernel"], r["d_z"]
    stride, groups = _conv_config(inp.shape, kernel.shape, r["out"].shape, "RCB block")
    pre = jax.nn.relu(inp) if r.get("pre") is None else r["pre"]
    if pre.shape != inp.shape:
        raise ValueError(f"RCB block: conv input {pre.shape} and block input {inp.shape} differ in shape")
    z, conv_vjp = jax.vjp(lambda p, k: layers.conv2d(p, k, stride, 1, groups), pre, kernel)
    if z.shape != d_z.shape or r["out"].shape != r["d_out"].shape or inp.shape != r["d_in"].shape:
        raise ValueError(f"RCB block: perturbation shapes {r['d_in'].shape}, {d_z.shape}, {r['d_out'].shape} do "
                         f"not match the block ({inp.shape} -> {z.shape} -> {r['out'].shape})")
    d_pre, d_w = conv_vjp(d_z)
    return {"inpact": inp, "inpactgrad": r["d_in"], "preact": pre, "preactgrad": d_pre, "act": r["out"],
            "actgrad": r["d_out"], "wtgrad": d_w, "wt": kernel, "live": r["live"]}


def block_tensors(net: Net, params, x: jax.Array) -> list[dict[str, Any]]:
    """One pass (one input ``x`` (B, H, W, C)): per RCB block record (path-sorted order) a dict with
    ``inpact, inpactgrad, preact, preactgrad, act, actgrad`` (NHWC), ``wtgrad`` and ``wt`` (HWIO) and ``live``
    (bool). Gradients are of ``sum(logits)``.

    Raises ``ValueError`` (at trace time) if the network records no RCB block, a record's perturbations are
    missing, or a record's shapes do not describe a ReLU-Conv-BN block.
    """
    return [_finish_block(r) for r in _raw_blocks(net, params, x)]


def _nchw(a: np.ndarray) -> np.ndarray:
    """``(..., B, H, W, C)`` -> ``(..., B, C, H, W)`` (host copy)."""
    nd = a.ndim
    return np.ascontiguousarray(np.moveaxis(a, nd - 1, nd - 3))


def _oihw(w: np.ndarray) -> np.ndarray:
    """``(..., k, k, I, O)`` -> ``(..., O, I, k, k)`` (host copy)."""
    nd = w.ndim
    return np.ascontiguousarray(np.transpose(w, tuple(range(nd - 4)) + (nd - 1, nd - 2, nd - 4, nd - 3)))


def statistics_fn(spec: ProxyNet, config: ProxyConfig = ProxyConfig()) -> Callable:
    """The un-jitted statistics function ``(params, x (B,H,W,C), arch, key) -> tuple of block records``.

    A record is a dict: the 7 per-pass tensors (:data:`KINDS`), each ``(3, ...)`` over the passes D, N, P (raw
    values, NHWC activations / HWIO weight gradients), ``"wt"`` (HWIO) and ``"live"`` (bool). :func:`live_groups`
    turns the records into the torch-layout groups the interpreter takes (P as a difference). ``key`` draws the
    N / P noise (:func:`pass_inputs`). Use :func:`make_collector` for the jitted function.

    The grouping, layout change and P - D difference are done on the host, for the live blocks only: inside
    the jitted function they made XLA's compile ~6x longer (measured at 1 cell per stage: 47 s vs 8 s).
    """

    def run(params, x, arch, key):
        net = Net(jnp.asarray(arch, spec.arch_dtype), spec, config)
        # One vmap over the three passes: the network and every block's conv VJP run batched (on NB201 / CPU this
        # ran faster than a loop over the passes; a lax.map ran ~6x slower: XLA CPU runs convolutions inside
        # loops slowly).
        recs = jax.vmap(lambda xi: block_tensors(net, params, xi))(pass_inputs(x, key))  # leaves (3, ...)
        return tuple({**{k: r[k] for k in KINDS}, "wt": r["wt"][0], "live": r["live"][0]} for r in recs)

    return run


@functools.lru_cache(maxsize=None)
def make_collector(spec: ProxyNet, config: ProxyConfig = ProxyConfig()) -> Callable:
    """Jitted :func:`statistics_fn`: ``collect(params, x, arch, key) -> tuple of block records`` (device arrays).

    One compilation per (family, config, batch shape): the architecture is data. Cached per (spec, config).
    """
    return jax.jit(statistics_fn(spec, config))


def _signature(r: Mapping[str, Any]) -> tuple:
    return tuple(np.shape(r["inpact"])[1:]), tuple(np.shape(r["wt"])), tuple(np.shape(r["act"])[1:])


def live_groups(records: Sequence[Mapping[str, Any]], live_only: bool = True) -> list[dict[str, np.ndarray]]:
    """One network's statistics in the format of :func:`jzcp.programs.batch_networks`, from the records of the
    collector: blocks grouped by shape signature (order of first appearance), host numpy, torch layout
    (activations ``(n, B, C, H, W)``, weights ``(n, C_out, C_in, k, k)``), P stored as P - D.

    ``live_only`` (default) keeps the live blocks only (dead candidates are never copied off the device) and
    drops empty groups; otherwise every block is kept and each group has a ``"mask"`` ``(n,)`` bool.
    """
    buckets: dict[tuple, list[int]] = {}
    live = [bool(np.asarray(r["live"])) for r in records]
    for i, r in enumerate(records):
        if live[i] or not live_only:
            buckets.setdefault(_signature(r), []).append(i)
    groups = []
    for idx in buckets.values():
        g: dict[str, np.ndarray] = {}
        for kind in KINDS:
            conv = _oihw if kind == "wtgrad" else _nchw
            v = conv(np.stack([np.asarray(records[i][kind]) for i in idx], axis=1))  # (3, n, ...)
            g[f"{kind}_D"], g[f"{kind}_N"], g[f"{kind}_P"] = v[0], v[1], v[2] - v[0]
        g["wt"] = _oihw(np.stack([np.asarray(records[i]["wt"]) for i in idx]))
        if not live_only:
            g["mask"] = np.asarray([live[i] for i in idx], bool)
        groups.append(g)
    return groups


def network_statistics(records: Sequence[Mapping[str, Any]]):
    """Jittable: one network's records (all candidate blocks) as a :class:`jzcp.programs.Statistics` with
    ``mask = live`` (torch layout, P as P - D), so programs can be scored inside the jitted call that computes the
    statistics (:func:`make_program_scorer`) and nothing leaves the device but the scores."""
    from jzcp import programs as pg

    buckets: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        buckets.setdefault(_signature(r), []).append(i)
    groups = []
    for idx in buckets.values():
        terms = {}
        for kind in KINDS:
            v = jnp.stack([records[i][kind] for i in idx], axis=1)  # (3, n, ...)
            v = jnp.moveaxis(v, -1, -3) if kind != "wtgrad" else jnp.transpose(v, (0, 1, 5, 4, 2, 3))
            terms[f"{kind}_D"], terms[f"{kind}_N"], terms[f"{kind}_P"] = v[0], v[1], v[2] - v[0]
        terms["wt"] = jnp.transpose(jnp.stack([records[i]["wt"] for i in idx]), (0, 4, 3, 1, 2))
        shapes = tuple(tuple(terms[t].shape[1:]) for t in TERMINALS)
        spec = pg.group_spec(shapes)
        arrays = tuple(jnp.stack([terms[TERMINALS[t]] for t in range(len(TERMINALS)) if spec.term_array[t] == a])
                       for a in range(len(spec.array_shapes)))
        mask = jnp.stack([jnp.asarray(records[i]["live"], bool) for i in idx])
        groups.append(pg.StatGroup(arrays, mask, jnp.zeros(len(idx), jnp.int32), spec.terminal_shapes))
    return pg.Statistics(tuple(groups), 1)


def make_program_scorer(spec: ProxyNet, config: ProxyConfig = ProxyConfig(), chunk_bytes: int = 4 << 20) -> Callable:
    """Jitted ``score(params, x, arch, key, programs (P, capacity)) -> Evaluation (P, 1)``: statistics of one
    architecture and the programs' network scores in one call (nothing cached). One compilation per (family,
    config, batch shape, P); for scoring a few programs on thousands of held-out architectures. ``chunk_bytes``:
    the interpreter's stack memory per group (small: the stacks are re-initialised at every call)."""
    from jzcp import programs as pg

    stats_fn = statistics_fn(spec, config)

    def score(params, x, arch, key, programs):
        return pg._evaluate(programs, network_statistics(stats_fn(params, x, arch, key)), chunk_bytes=chunk_bytes)

    return jax.jit(score)


def memory_bytes(records: Sequence[Mapping[str, Any]], live_only: bool = False) -> int:
    """Bytes of one network's statistics as the interpreter holds them (float32; P as one tensor per kind):
    all candidate blocks, or only the live ones."""
    total = 0
    for r in records:
        if live_only and not bool(np.asarray(r["live"])):
            continue
        total += 4 * (sum(math.prod(np.shape(r[k])) for k in KINDS) + math.prod(np.shape(r["wt"])))
    return total


# ----------------------------------------------------------------------------------------------------------------
# collection over many architectures, with an on-disk cache
# ----------------------------------------------------------------------------------------------------------------


class StatisticsCache:
    """On-disk cache of live-block statistics: one ``.npz`` per (protocol, architecture).

    ``root / <protocol tag> / <arch key>.npz`` with keys ``g<i>/<terminal>``; the tag is a hash of the protocol
    dict (stored next to it as ``protocol.json``), so statistics of different protocols never mix. Files are
    written atomically (temporary file + rename), so an interrupted run leaves no partial entry.
    """

    def __init__(self, root: str | os.PathLike, protocol: Mapping[str, Any]):
        self.protocol = dict(protocol)
        text = json.dumps(self.protocol, sort_keys=True, default=str)
        self.tag = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.dir = Path(root) / self.tag
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "protocol.json"
        if not meta.exists():
            tmp = meta.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.protocol, indent=1, sort_keys=True, default=str))
            os.replace(tmp, meta)

    def path(self, arch_key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(arch_key))
        return self.dir / f"{safe}.npz"

    def load(self, arch_key: str) -> list[dict[str, np.ndarray]] | None:
        p = self.path(arch_key)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                n = int(z["__groups__"])
                return [{t: z[f"g{i}/{t}"] for t in TERMINALS} for i in range(n)]
        except (OSError, KeyError, ValueError):  # a corrupt entry is recomputed
            return None

    def save(self, arch_key: str, groups: Sequence[Mapping[str, np.ndarray]]) -> None:
        p = self.path(arch_key)
        arrays = {f"g{i}/{t}": np.asarray(g[t]) for i, g in enumerate(groups) for t in TERMINALS}
        arrays["__groups__"] = np.asarray(len(groups))
        tmp = p.with_name(p.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, p)


def collect(spec: ProxyNet, config: ProxyConfig, archs: Sequence, x: np.ndarray, *, keys: Sequence[str],
            cache: StatisticsCache | None = None, progress: bool = False, desc: str = "statistics",
            on_network: Callable[[int, list], None] | None = None,
            collector: Callable | None = None) -> tuple[list, dict]:
    """Live-block statistics of many architectures of one family, with the minibatch ``x`` (B, H, W, C).

    Every architecture gets fresh parameters keyed by ``(config.seed, arch)`` (:func:`jzcp.proxies.fresh_params`)
    and the N / P noise of :func:`noise_key` ``(config.seed)`` (as the EZNAS-A proxies of a suite keyed by the
    seed). ``keys[i]`` names architecture i in the cache. With ``on_network`` the statistics of network i are
    handed to ``on_network(i, groups)`` and not kept (``None`` entries are returned): use it to apply programs
    while the tensors are live instead of holding thousands of networks. ``collector``: a jitted
    :func:`statistics_fn` of ``(spec, config)`` to use instead of :func:`make_collector`'s.

    Returns ``(list of per-network live groups (or None), timing dict {computed, cached, seconds_compute,
    seconds_load, first_call_seconds})``; ``first_call_seconds`` is the first computed network, compilation
    included when the collector was not compiled yet (it is excluded from ``seconds_compute``).
    """
    import time

    from jzcp.proxies.net import fresh_params

    if len(keys) != len(archs):
        raise ValueError(f"need one cache key per architecture: {len(keys)} keys, {len(archs)} archs")
    fn = make_collector(spec, config) if collector is None else collector
    nkey = noise_key(config.seed)
    xj = jnp.asarray(x, jnp.float32)
    if xj.ndim != 4 or tuple(xj.shape[1:]) != tuple(spec.image_shape):
        raise ValueError(f"images must have shape (B, {', '.join(map(str, spec.image_shape))}), got {xj.shape}")
    stats = {"computed": 0, "cached": 0, "seconds_compute": 0.0, "seconds_load": 0.0, "first_call_seconds": 0.0}
    out: list = []
    it = range(len(archs))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(archs), desc=desc, unit="net", dynamic_ncols=True)
    for i in it:
        t0 = time.time()
        groups = cache.load(keys[i]) if cache is not None else None
        if groups is not None:
            stats["cached"] += 1
            stats["seconds_load"] += time.time() - t0
        else:
            arch = np.asarray(archs[i])
            if spec.check_arch is not None:
                spec.check_arch(arch)
            params = fresh_params(spec, config, arch)
            groups = live_groups(fn(params, xj, jnp.asarray(arch, spec.arch_dtype), nkey))
            dt = time.time() - t0
            if stats["computed"] == 0:
                stats["first_call_seconds"] = dt
            else:
                stats["seconds_compute"] += dt
            stats["computed"] += 1
            if cache is not None:
                cache.save(keys[i], groups)
        if on_network is not None:
            on_network(i, groups)
            out.append(None)
        else:
            out.append(groups)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out, stats
