"""Contrastive pre-training of the CG encoder, regression fitting, prediction.

Design choices (the paper, Han et al. SDM 2023, publishes no code; see ``reference/predictor.md``):

* **Objective**: NT-Xent (SimCLR; the loss ``optax.losses.ntxent`` implements) over two augmented views of
  every graph in a batch: each view's positive is the other view of the same graph, the ``2B - 2`` views of
  the other graphs are negatives. Written here with a validity mask (padding graphs are neither anchors nor
  negatives); equal to ``optax.losses.ntxent`` on a batch without padding (tested). Batches hold distinct
  graphs (datasets store each distinct graph once), so no negative is a copy of the anchor.
* **Augmentations** (:class:`AugmentConfig`), all applied inside jit to the padded batch so that augmented
  batches keep their shapes (one compilation per size bucket):

  - *op swap within a semantic class*: with probability ``p_op_swap`` a node's op is replaced by a random
    op of its class (:data:`OP_CLASSES`: activations; gates; pools; normalisations) -- the one-hot changes,
    shapes stay;
  - *kernel swap*: with probability ``p_kernel_swap`` a Conv / Depthwise / pool node's kernel one-hot moves
    to another size of (1, 3, 5, 7);
  - *feature masking*: with probability ``p_feature_mask`` all non-op features of a node (shapes, kernel,
    stride, dilation, groups, bias) are zeroed;
  - *edge drop that keeps the graph valid*: each edge is dropped with probability ``p_edge_drop``, except
    that every node keeps at least one in-edge and one out-edge (the edge with the largest random draw per
    receiver and per sender is always kept), so every node stays reachable from the Input and reaches the
    Output. Dropped edges get message weight 0.

* **Fitting**: a fresh MLP head (seeded per fit) on the pre-trained encoder, either ``frozen`` (embeddings
  computed once, only the head trained -- fast) or fine-tuned end to end. Targets (``FitConfig.targets``)
  are the labels standardised with their mean and std (``"zscore"``), or their normal scores (``"rank"``:
  ``Phi^-1((rank - 1/2) / n)`` within each family, van der Waerden's): the predictor is judged by rank
  correlation, and NB201's accuracies have a long low tail (2 % of the cells at chance, the 5th percentile
  at 71 %, the median at 87 %) that dominates a squared error on raw accuracy (K=50 ridge probe on NB201:
  0.851 -> 0.883 Spearman; README, predictor section).
  Either way predictions come back as ``z * std + mean`` of the training labels, monotone in ``z``.
  Losses: ``mse``, ``rank`` (pairwise logistic loss over all ordered pairs in a batch, as in RankNet) or
  ``mse+rank``.
* **Per-family standardisation** (``FitConfig.adapt``): the head reads embeddings z-scored within each
  family -- each source family separately when fitting, the predicted set when predicting (transductive,
  label-free, as AdaBN). Families differ in width and resolution, so their embeddings occupy different
  regions (measured effect on multi-family transfer: README, predictor section). In ``finetune`` mode the statistics are those of each batch's families.
* **Ridge probe** (``FitConfig(head="ridge", adapt=True)``): a closed-form linear head on the frozen,
  standardised embeddings, the penalty chosen by exact leave-one-out Spearman (:func:`ridge_loo`). The
  K-shot choice: with 50 labels an MLP overfits, a linear probe does not.
* **Kernel probe** (``FitConfig(head="kernel", adapt=True)``): Gaussian-kernel ridge regression on the same
  standardised embeddings (:func:`kernel_ridge_loo`), kernel width and penalty both chosen by exact
  leave-one-out Spearman; it stores its training embeddings. Contrastive pre-training arranges which graphs lie
  close together, and a kernel probe reads that local geometry where a linear probe reads only directions:
  K=50 on NB101 0.871 vs the linear probe's 0.831, NB301 0.817 vs 0.801, NB201 equal (README, predictor
  section). For few labels (<= :data:`KERNEL_MAX_ITEMS`).
* **Training loop** (both stages): optax ``adamw`` with warm-up + cosine schedule and global-norm clipping;
  a dev split for early stopping (dev NT-Xent with fixed augmentation keys; dev MSE or negative Spearman
  when fitting); an atomic checkpoint (``tmp`` + ``os.replace``) after every epoch from which a run resumes
  bit-identically: the data order of epoch ``e`` and the PRNG key of step ``s`` are pure functions of
  ``(seed, e, s)``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jzcp import graph as G
from jzcp.graph._types import KERNEL_BUCKETS, NUM_OPS, OP_INDEX
from jzcp.predictor.model import EncoderConfig, Predictor

# --- configs ---------------------------------------------------------------------------------------------------

OP_CLASSES: tuple[tuple[str, ...], ...] = (
    ("ReLU", "ReLU6", "Swish", "GeLU", "HSwish", "Tanh"),  # activations
    ("Sigmoid", "HSigmoid"),  # gates (SE blocks)
    ("MaxPool", "AvgPool"),
    ("BatchNorm", "LayerNorm"),
)
_KERNEL_COL = NUM_OPS + 6  # first kernel one-hot column of node_features
_SWAP_KERNELS = (1, 3, 5, 7)
_WINDOW_OPS = ("Conv", "Depthwise", "MaxPool", "AvgPool")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities of the augmentations (module docstring); all per node / per edge."""

    p_op_swap: float = 0.15
    p_kernel_swap: float = 0.1
    p_feature_mask: float = 0.1
    p_edge_drop: float = 0.1

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{f.name} must be a probability in [0, 1], got {v}")


@dataclass(frozen=True)
class PretrainConfig:
    encoder: EncoderConfig = EncoderConfig()
    augment: AugmentConfig = AugmentConfig()
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-4
    clip: float = 5.0
    temperature: float = 0.1
    dev_fraction: float = 0.05
    patience: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch_size >= 2 (contrastive batches need negatives)")
        if self.temperature <= 0 or not 0.0 <= self.dev_fraction < 1.0:
            raise ValueError("temperature must be > 0 and dev_fraction in [0, 1)")

    @classmethod
    def tiny(cls, **kw) -> "PretrainConfig":
        """Small and fast, for tests."""
        base = dict(encoder=EncoderConfig(hidden=16, num_layers=2, proj_dim=8, head_hidden=16), epochs=3,
                    batch_size=8, lr=3e-3, warmup_epochs=0.0, dev_fraction=0.0, patience=100)
        return cls(**{**base, **kw})


LOSSES = ("mse", "rank", "mse+rank")
HEADS = ("mlp", "ridge", "kernel")
KERNEL_MAX_ITEMS = 4096  # the kernel probe stores its training embeddings and solves an n x n system
TARGETS = ("zscore", "rank")


@dataclass(frozen=True)
class FitConfig:
    mode: str = "frozen"  # "frozen" encoder (head only) or "finetune" (all parameters)
    loss: str = "mse+rank"
    rank_weight: float = 1.0
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    encoder_lr_scale: float = 0.1  # fine-tuning: encoder lr = lr * scale
    warmup_epochs: float = 0.0
    weight_decay: float = 1e-4
    clip: float = 5.0
    dev_fraction: float = 0.2
    patience: int = 20
    seed: int = 0
    adapt: bool = False  # z-score head inputs per family (fit: per group; predict: over the predicted set)
    head: str = "mlp"  # "mlp" (trained by optax); "ridge" / "kernel" (closed form, frozen mode, need adapt)
    ridge_lambdas: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
    # kernel probe: Gaussian kernel widths (squared length scale in units of the embedding dimension) and penalties
    kernel_bandwidths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    kernel_lambdas: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    targets: str = "zscore"  # regression targets: "zscore" labels or their per-family normal scores ("rank")

    def __post_init__(self):
        for name in ("ridge_lambdas", "kernel_bandwidths", "kernel_lambdas"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.mode not in ("frozen", "finetune"):
            raise ValueError(f"mode must be 'frozen' or 'finetune', got {self.mode!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.head in ("ridge", "kernel") and (self.mode != "frozen" or not self.adapt):
            raise ValueError(f"head={self.head!r} needs mode='frozen' and adapt=True "
                             "(it reads standardised embeddings)")
        for name in ("ridge_lambdas", "kernel_bandwidths", "kernel_lambdas"):
            if not getattr(self, name) or min(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.epochs < 1 or self.batch_size < 2 or not 0.0 <= self.dev_fraction < 1.0:
            raise ValueError("epochs >= 1, batch_size >= 2 and dev_fraction in [0, 1) required")

    @classmethod
    def tiny(cls, **kw) -> "FitConfig":
        return cls(**{**dict(epochs=30, batch_size=16, lr=3e-3, dev_fraction=0.0, patience=1000), **kw})


# --- data --------------------------------------------------------------------------------------------------------


def graphs_of(ds: G.GraphDataset, items=None, distinct: bool = False) -> list[G.CompGraph]:
    """The graphs of ``items`` (default all) of a dataset; ``distinct``: each stored graph once instead."""
    if distinct:
        return [ds.stored_graph(u) for u in range(ds.num_graphs)]
    items = range(len(ds)) if items is None else np.asarray(items).reshape(-1)
    return [ds[int(i)] for i in items]


def make_batch(graphs: Sequence[G.CompGraph], idx, batch_size: int, targets=None):
    """Padded batch of ``graphs[idx]`` (at most ``batch_size``) holding ``batch_size + 1`` graph slots."""
    idx = np.asarray(idx).reshape(-1)
    t = None if targets is None else np.asarray(targets, np.float32)[idx]
    return G.batch_graphs([graphs[i] for i in idx], t, num_graphs=batch_size, index=idx)


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(np.random.SeedSequence([seed, 7])).permutation(n)
    k = int(round(n * fraction))
    if fraction > 0 and n >= 4:
        k = max(k, 2)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _epoch_order(idx: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(np.random.SeedSequence([seed, 11, epoch])).permutation(idx)


# --- augmentation ---------------------------------------------------------------------------------------------


def _class_tables():
    cls_of = np.full(NUM_OPS, -1, np.int32)
    width = max(len(c) for c in OP_CLASSES)
    members = np.zeros((len(OP_CLASSES), width), np.int32)
    counts = np.zeros(len(OP_CLASSES), np.int32)
    for k, names in enumerate(OP_CLASSES):
        for j, name in enumerate(names):
            cls_of[OP_INDEX[name]] = k
            members[k, j] = OP_INDEX[name]
        counts[k] = len(names)
    window = np.zeros(NUM_OPS, bool)
    window[[OP_INDEX[o] for o in _WINDOW_OPS]] = True
    return cls_of, members, counts, window


_CLS_OF, _MEMBERS, _COUNTS, _WINDOW = _class_tables()


def augment(key: jax.Array, graph, cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
    """One random view of a padded batch: ``(features (N, F), edge_weight (E,))``; jittable, shapes kept."""
    x = graph.nodes["features"]
    n, e = x.shape[0], graph.senders.shape[0]
    k_swap, k_pick, k_kern, k_kpick, k_mask, k_edge = jax.random.split(key, 6)
    op = jnp.argmax(x[:, :NUM_OPS], axis=1)  # op of the features (an earlier augmentation may have changed it)
    is_real = x[:, :NUM_OPS].sum(1) > 0  # padding nodes have all-zero features

    # op swap within a class
    cls = jnp.asarray(_CLS_OF)[op]
    swap = (cls >= 0) & is_real & (jax.random.uniform(k_swap, (n,)) < cfg.p_op_swap)
    cnt = jnp.asarray(_COUNTS)[jnp.maximum(cls, 0)]
    pick = jnp.floor(jax.random.uniform(k_pick, (n,)) * cnt).astype(jnp.int32)
    new_op = jnp.where(swap, jnp.asarray(_MEMBERS)[jnp.maximum(cls, 0), pick], op)
    x = x.at[:, :NUM_OPS].set(jnp.where(is_real[:, None], jax.nn.one_hot(new_op, NUM_OPS, dtype=x.dtype), 0.0))

    # kernel swap on windowed ops
    nk = len(KERNEL_BUCKETS) + 1
    kern = jnp.asarray(_WINDOW)[new_op] & is_real & (jax.random.uniform(k_kern, (n,)) < cfg.p_kernel_swap)
    choice = jnp.asarray([KERNEL_BUCKETS.index(k) for k in _SWAP_KERNELS])[
        jax.random.randint(k_kpick, (n,), 0, len(_SWAP_KERNELS))]
    x = x.at[:, _KERNEL_COL:_KERNEL_COL + nk].set(
        jnp.where(kern[:, None], jax.nn.one_hot(choice, nk, dtype=x.dtype), x[:, _KERNEL_COL:_KERNEL_COL + nk]))

    # feature masking (everything but the op one-hot)
    mask = jax.random.uniform(k_mask, (n,)) < cfg.p_feature_mask
    x = x.at[:, NUM_OPS:].set(jnp.where(mask[:, None], 0.0, x[:, NUM_OPS:]))

    # edge drop keeping >= 1 in-edge and >= 1 out-edge per node
    r = jax.random.uniform(k_edge, (e,))
    best_in = jax.ops.segment_max(r, graph.receivers, num_segments=n)[graph.receivers]
    best_out = jax.ops.segment_max(r, graph.senders, num_segments=n)[graph.senders]
    keep = (r >= cfg.p_edge_drop) | (r >= best_in) | (r >= best_out)
    return x, keep.astype(x.dtype)


# --- losses ----------------------------------------------------------------------------------------------------


def ntxent(z1: jax.Array, z2: jax.Array, valid: jax.Array, temperature: float) -> jax.Array:
    """Masked NT-Xent: ``z1``, ``z2`` ``(G, D)`` projections of two views, ``valid`` ``(G,)`` bool; mean over
    the ``2 * valid.sum()`` anchors of ``-log softmax`` of the positive among all other valid views."""
    g = z1.shape[0]
    z = jnp.concatenate([z1, z2], 0)
    # rsqrt(|z|^2 + eps), not z / |z|: the norm's gradient is NaN at the all-zero rows of padding graphs.
    z = z * jax.lax.rsqrt(jnp.sum(z * z, axis=1, keepdims=True) + 1e-12)
    v = jnp.concatenate([valid, valid], 0)
    sim = (z @ z.T) / temperature
    eye = jnp.eye(2 * g, dtype=bool)
    logits = jnp.where(eye | ~v[None, :], -jnp.inf, sim)
    pos = jnp.concatenate([jnp.arange(g, 2 * g), jnp.arange(g)])
    per = jax.nn.logsumexp(logits, axis=1) - sim[jnp.arange(2 * g), pos]
    per = jnp.where(v, per, 0.0)
    return per.sum() / jnp.maximum(v.sum(), 1)


def pairwise_rank_loss(pred: jax.Array, target: jax.Array, valid: jax.Array) -> jax.Array:
    """RankNet loss: mean over valid ordered pairs with ``target_i > target_j`` of
    ``softplus(-(pred_i - pred_j))``."""
    better = (target[:, None] > target[None, :]) & valid[:, None] & valid[None, :]
    l = jax.nn.softplus(-(pred[:, None] - pred[None, :]))
    return jnp.sum(jnp.where(better, l, 0.0)) / jnp.maximum(better.sum(), 1)


def _reg_loss(pred, target, valid, cfg: FitConfig):
    vf = valid.astype(pred.dtype)
    mse = jnp.sum(vf * (pred - target) ** 2) / jnp.maximum(vf.sum(), 1.0)
    if cfg.loss == "mse":
        return mse
    rank = pairwise_rank_loss(pred, target, valid)
    return rank if cfg.loss == "rank" else mse + cfg.rank_weight * rank


# --- optimiser, checkpoints ------------------------------------------------------------------------------------


def _optimizer(lr, steps_per_epoch, epochs, warmup_epochs, weight_decay, clip, mask=None):
    total = max(steps_per_epoch * epochs, 1)
    warm = int(round(steps_per_epoch * warmup_epochs))
    sched = optax.warmup_cosine_decay_schedule(0.0 if warm else lr, lr, max(warm, 0), max(total, warm + 1), lr * 0.01)
    return optax.chain(optax.clip_by_global_norm(clip), optax.adamw(sched, weight_decay=weight_decay, mask=mask))


def _config_json(cfg) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def save_checkpoint(path: str | os.PathLike, state: dict, config_json: str) -> None:
    """Write ``state`` (a pytree of arrays / scalars) atomically: a temporary file, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = flax.serialization.msgpack_serialize({"config": config_json,
                                                 "state": flax.serialization.to_state_dict(state)})
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, template: dict, config_json: str) -> dict:
    """Restore a state saved by :func:`save_checkpoint` into the structure of ``template``; ``ValueError``
    if it was written under another config."""
    with open(path, "rb") as f:
        raw = flax.serialization.msgpack_restore(f.read())
    if raw.get("config") != config_json:
        raise ValueError(f"checkpoint {path} was written with another config; delete it or use its config")
    return flax.serialization.from_state_dict(template, raw["state"])


# --- generic epoch loop ----------------------------------------------------------------------------------------


def _loop(state: dict, *, epochs: int, patience: int, run_epoch: Callable[[dict, int], tuple[dict, float]],
          dev_score: Callable[[dict], float] | None, checkpoint: str | os.PathLike | None, config_json: str,
          log: Callable[[str], None] | None, stop_after: int | None = None) -> dict:
    """Epochs with early stopping on ``dev_score(params)`` (lower is better) and per-epoch checkpoints.

    ``state`` holds ``params``, ``opt_state``; the loop adds ``epoch``, ``best_params``, ``best``, ``bad``,
    ``history`` (per epoch ``[train_loss, dev_score]``), ``done``."""
    state = dict(state, epoch=0, best_params=state["params"], best=np.float64(np.inf), bad=0,
                 history=np.zeros((0, 2), np.float64), done=False)
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, state, config_json)
        state["epoch"], state["bad"], state["done"] = int(state["epoch"]), int(state["bad"]), bool(state["done"])
        state["history"] = np.asarray(state["history"], np.float64).reshape(-1, 2)
    ran = 0
    while state["epoch"] < epochs and not state["done"] and (stop_after is None or ran < stop_after):
        ran += 1
        e = state["epoch"]
        state, train_loss = run_epoch(state, e)
        score = float(dev_score(state["params"])) if dev_score is not None else float(train_loss)
        if score < state["best"]:
            state["best"], state["best_params"], state["bad"] = np.float64(score), state["params"], 0
        else:
            state["bad"] += 1
        state["history"] = np.concatenate([state["history"], [[train_loss, score]]])
        state["epoch"] = e + 1
        state["done"] = state["bad"] >= patience
        if log:
            log(f"epoch {e}: train {train_loss:.4f} dev {score:.4f}")
        if checkpoint is not None:
            save_checkpoint(checkpoint, state, config_json)
    return state


# --- pre-training --------------------------------------------------------------------------------------------------

TRACE_COUNTS: dict[str, int] = {}  # name -> times traced (a Python side effect at trace time; tests read it)


def _count(name: str) -> None:
    TRACE_COUNTS[name] = TRACE_COUNTS.get(name, 0) + 1


@functools.lru_cache(maxsize=8)
def _pretrain_fns(cfg: PretrainConfig, steps: int):
    """Optimiser and jitted step / dev loss, cached per (config, steps per epoch): repeated runs with one
    config (seeds aside, which are not traced) reuse the compiled functions."""
    model = Predictor(cfg.encoder)
    tx = _optimizer(cfg.lr, steps, cfg.epochs, cfg.warmup_epochs, cfg.weight_decay, cfg.clip)

    def loss_fn(p, batch, key):
        k1, k2 = jax.random.split(key)
        x1, w1 = augment(k1, batch, cfg.augment)
        x2, w2 = augment(k2, batch, cfg.augment)
        z1 = model.apply({"params": p}, batch, w1, x1, method=Predictor.project)
        z2 = model.apply({"params": p}, batch, w2, x2, method=Predictor.project)
        return ntxent(z1, z2, batch.globals["valid"], cfg.temperature)

    @jax.jit
    def step(p, opt_state, batch, key):
        _count("pretrain_step")
        loss, grads = jax.value_and_grad(loss_fn)(p, batch, key)
        upd, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, upd), opt_state, loss

    return tx, step, jax.jit(loss_fn)


@dataclass
class PretrainResult:
    params: dict
    config: PretrainConfig
    history: np.ndarray  # (epochs_run, 2): train NT-Xent, dev score
    wall_s: float
    num_graphs: int


def init_params(config: EncoderConfig, seed: int, example) -> dict:
    return Predictor(config).init(jax.random.key(seed), example)["params"]


def random_encoder(config: EncoderConfig, seed: int = 0) -> PretrainResult:
    """An untrained encoder packaged like a pre-trained one: the no-pre-training ablation of a frozen /
    ridge head (random graph features), with the same config and fitting code as the real one."""
    from jzcp.graph._types import NUM_ATTRS

    nodes = np.zeros((2, NUM_ATTRS), np.int32)
    nodes[:, 0] = [OP_INDEX["Input"], OP_INDEX["Output"]]
    tiny = G.CompGraph(nodes, [0], [1])
    params = init_params(config, seed, make_batch([tiny, tiny], [0, 1], 2))
    return PretrainResult(params, PretrainConfig(encoder=config, seed=seed), np.zeros((0, 2)), 0.0, 0)


def pretrain(graphs: Sequence[G.CompGraph], config: PretrainConfig = PretrainConfig(), *,
             checkpoint: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
             stop_after: int | None = None) -> PretrainResult:
    """Contrastive pre-training of the encoder on unlabeled ``graphs`` (any families, ideally distinct).

    ``checkpoint``: a file written atomically after every epoch; if it exists (same config and graph count),
    training resumes from it and ends with the same parameters as an uninterrupted run. Returns the
    parameters of the epoch with the best dev NT-Xent (train NT-Xent without a dev split)."""
    if len(graphs) < 2:
        raise ValueError("pretrain needs at least 2 graphs")
    t0 = time.perf_counter()
    cfg = config
    train_idx, dev_idx = _split(len(graphs), cfg.dev_fraction, cfg.seed)
    bs = min(cfg.batch_size, len(train_idx))
    steps = -(-len(train_idx) // bs)
    tx, step, dev_loss = _pretrain_fns(dataclasses.replace(cfg, seed=0), steps)
    params = init_params(cfg.encoder, cfg.seed, make_batch(graphs, train_idx[:2], bs))
    root = jax.random.key(cfg.seed)

    def run_epoch(state, e):
        p, o = state["params"], state["opt_state"]
        order = _epoch_order(train_idx, cfg.seed, e)
        losses = []
        for s in range(steps):
            idx = order[s * bs:(s + 1) * bs]
            if len(idx) < 2:
                continue
            key = jax.random.fold_in(jax.random.fold_in(root, e), s)
            p, o, loss = step(p, o, make_batch(graphs, idx, bs), key)
            losses.append(loss)
        return dict(state, params=p, opt_state=o), float(np.mean(jax.device_get(losses)))

    def dev_score(p):
        dkey = jax.random.fold_in(root, 10**6)  # fixed views: the dev loss only changes with the params
        vals = [dev_loss(p, make_batch(graphs, dev_idx[s:s + bs], bs), jax.random.fold_in(dkey, s))
                for s in range(0, len(dev_idx), bs) if len(dev_idx[s:s + bs]) >= 2]
        return float(np.mean(jax.device_get(vals)))

    state = _loop({"params": params, "opt_state": tx.init(params)}, epochs=cfg.epochs, patience=cfg.patience,
                  run_epoch=run_epoch, dev_score=dev_score if len(dev_idx) >= 2 else None,
                  checkpoint=checkpoint, config_json=_config_json(cfg) + f"|n={len(graphs)}", log=log,
                  stop_after=stop_after)
    return PretrainResult(state["best_params"], cfg, state["history"], time.perf_counter() - t0, len(graphs))


# --- fitting, prediction ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _head_fns(enc: EncoderConfig, cfg: FitConfig, steps: int):
    """Frozen-encoder fitting: optimiser, jitted head step on embeddings, jitted head prediction."""
    model = Predictor(enc)
    tx = _optimizer(cfg.lr, steps, cfg.epochs, cfg.warmup_epochs, cfg.weight_decay, cfg.clip)

    def head_pred(h, e):
        return model.apply({"params": {"reg_head": h}}, e, method=Predictor.head)

    @jax.jit
    def step(h, o, e, t, v):
        _count("fit_head_step")
        loss, g = jax.value_and_grad(lambda hh: _reg_loss(head_pred(hh, e), t, v, cfg))(h)
        u, o = tx.update(g, o, h)
        return optax.apply_updates(h, u), o, loss

    return tx, step, jax.jit(head_pred)


@functools.lru_cache(maxsize=16)
def _finetune_fns(enc: EncoderConfig, cfg: FitConfig, steps: int, pretrained: bool):
    """End-to-end fitting: head at ``lr``, encoder at ``lr * encoder_lr_scale`` when pre-trained."""
    model = Predictor(enc)
    tx_head = _optimizer(cfg.lr, steps, cfg.epochs, cfg.warmup_epochs, cfg.weight_decay, cfg.clip)
    lr_enc = cfg.lr * (cfg.encoder_lr_scale if pretrained else 1.0)
    tx_enc = _optimizer(lr_enc, steps, cfg.epochs, cfg.warmup_epochs, cfg.weight_decay, cfg.clip)
    tx = optax.multi_transform({"head": tx_head, "enc": tx_enc},
                               lambda p: {k: ("head" if k == "reg_head" else "enc") for k in p})

    def loss_fn(p, batch, gid):
        if cfg.adapt:  # per-family statistics of this batch (like batch norm with one statistic per family)
            e = model.apply({"params": p}, batch, method=Predictor.embed)
            e = _standardise_jnp(e, gid, batch.globals["valid"], MAX_GROUPS)
            pred = model.apply({"params": p}, e, method=Predictor.head)
        else:
            pred = model.apply({"params": p}, batch, method=Predictor.predict)
        return _reg_loss(pred, batch.globals["target"], batch.globals["valid"], cfg)

    @jax.jit
    def step(p, o, batch, gid):
        _count("fit_step")
        loss, g = jax.value_and_grad(loss_fn)(p, batch, gid)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    return tx, step


@dataclass
class FitResult:
    """A fitted predictor: ``params`` of :class:`Predictor`, target standardisation ``mean``/``std``."""

    params: dict
    encoder: EncoderConfig
    config: FitConfig
    mean: float
    std: float
    history: np.ndarray
    wall_s: float


def embed(params: dict, encoder: EncoderConfig, graphs: Sequence[G.CompGraph], batch_size: int = 128) -> np.ndarray:
    """``(len(graphs), encoder.embed_dim)`` graph embeddings."""
    model = Predictor(encoder)
    fn = _jitted_embed(model)
    out = []
    for s in range(0, len(graphs), batch_size):
        idx = np.arange(s, min(s + batch_size, len(graphs)))
        out.append(np.asarray(fn(params, make_batch(graphs, idx, batch_size)))[:len(idx)])
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim), np.float32)


_EMBED_CACHE: dict = {}


def _jitted_embed(model):
    if model.config not in _EMBED_CACHE:
        def f(p, batch):
            _count("embed")
            return model.apply({"params": p}, batch, method=Predictor.embed)
        _EMBED_CACHE[model.config] = jax.jit(f)
    return _EMBED_CACHE[model.config]


MAX_GROUPS = 8  # families a single fit may standardise separately


def _groups(groups, n: int) -> np.ndarray:
    if groups is None:
        return np.zeros(n, np.int32)
    g = np.asarray(groups).reshape(-1)
    if len(g) != n:
        raise ValueError(f"{n} graphs but {len(g)} group ids")
    _, g = np.unique(g, return_inverse=True)  # any labels -> 0..k-1
    if g.max(initial=0) >= MAX_GROUPS:
        raise ValueError(f"at most {MAX_GROUPS} groups (families) per fit")
    return g.astype(np.int32)


def standardise(e: np.ndarray, groups=None) -> np.ndarray:
    """Z-score the rows of ``e`` ``(n, D)`` within each group (constant columns become 0). The ``adapt``
    option's per-family standardisation: every family's embeddings get zero mean and unit variance, so a
    head fitted on source families reads a target family on the same scale (transductive: it needs the
    target's graphs, not their labels; as AdaBN, Li et al. 2018)."""
    e = np.asarray(e, np.float64)
    g = _groups(groups, len(e))
    out = np.zeros_like(e)
    for v in np.unique(g):
        m = g == v
        mu, sd = e[m].mean(0), e[m].std(0)
        out[m] = np.where(sd > 1e-6, (e[m] - mu) / np.maximum(sd, 1e-6), 0.0)
    return out.astype(np.float32)


def _standardise_jnp(e, gid, valid, num_groups: int):
    """Jittable per-group z-score of ``e`` (G, D) over the valid rows (padding rows take no part)."""
    w = valid.astype(e.dtype)
    cnt = jnp.maximum(jax.ops.segment_sum(w, gid, num_segments=num_groups), 1.0)[:, None]
    mu = jax.ops.segment_sum(e * w[:, None], gid, num_segments=num_groups) / cnt
    var = jax.ops.segment_sum(((e - mu[gid]) ** 2) * w[:, None], gid, num_segments=num_groups) / cnt
    return (e - mu[gid]) * jax.lax.rsqrt(var[gid] + 1e-6)


def normal_scores(y: np.ndarray, groups=None) -> np.ndarray:
    """Van der Waerden normal scores ``Phi^-1((rank - 1/2) / n)`` of ``y`` ``(n,)`` within each group (ties
    share their mean rank): a rank-preserving target with a Gaussian's tails."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    y = np.asarray(y, np.float64)
    gid = _groups(groups, len(y))
    out = np.zeros(len(y))
    for g in np.unique(gid):
        m = gid == g
        out[m] = ndtri((rankdata(y[m]) - 0.5) / m.sum())
    return out


def ridge_loo(x: np.ndarray, y: np.ndarray, lambdas: Sequence[float]) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Ridge regression ``y ~ x w + b`` (intercept not penalised) with the penalty chosen by exact
    leave-one-out prediction: ``(w (D,), b, lambda, loo_spearman per lambda)``.

    Through the SVD of the centred ``x``: the hat matrix is ``U diag(s^2 / (s^2 + lambda)) U^T + 1/n``, the
    leave-one-out residual ``r_i / (1 - H_ii)`` (Allen 1974), so every penalty costs one small product. The
    penalty maximises the Spearman correlation of the leave-one-out predictions with ``y`` (the metric the
    predictor is judged by; the squared error is dominated by a few degenerate networks at chance accuracy);
    ties go to the larger penalty."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = len(y)
    mu, ym = x.mean(0), y.mean()
    u, sv, vt = np.linalg.svd(x - mu, full_matrices=False)
    uy = u.T @ (y - ym)
    loo = []
    for lam in lambdas:
        d = sv ** 2 / (sv ** 2 + lam)
        r = (y - ym) - u @ (d * uy)
        h = (u ** 2) @ d + 1.0 / n
        loo.append(_spearman_np(y - r / np.maximum(1.0 - h, 1e-9), y))
    loo = np.round(np.asarray(loo), 6)
    lam = float(lambdas[len(loo) - 1 - int(np.argmax(loo[::-1]))])
    w = vt.T @ (sv / (sv ** 2 + lam) * uy)
    return w, float(ym - mu @ w), lam, np.asarray(loo)


def _gaussian_kernel(a: np.ndarray, b: np.ndarray, bandwidth: float) -> np.ndarray:
    """``exp(-|a_i - b_j|^2 / (2 bandwidth D))`` for rows of ``a`` ``(n, D)`` and ``b`` ``(m, D)``: ``(n, m)``.
    The squared length scale is ``bandwidth * D``: on z-scored embeddings the mean squared distance of two
    rows is about ``2 D``, so ``bandwidth`` ~ 1 is the natural scale whatever the embedding width."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.exp(-np.maximum(sq, 0.0) / (2.0 * bandwidth * a.shape[1]))


def _center_kernel(col_mean: np.ndarray, all_mean: float, k: np.ndarray) -> np.ndarray:
    """Kernel values ``k`` ``(m, n)`` against the n training rows, centred in feature space with the training
    kernel's column means ``col_mean`` ``(n,)`` and overall mean (the intercept is then not penalised)."""
    return k - col_mean[None, :] - k.mean(1, keepdims=True) + all_mean


def kernel_ridge_loo(x: np.ndarray, y: np.ndarray, bandwidths: Sequence[float], lambdas: Sequence[float]) -> dict:
    """Gaussian-kernel ridge regression ``y ~ f(x) + b`` with the kernel width and penalty chosen by exact
    leave-one-out Spearman, as :func:`ridge_loo` does for the linear probe (same hat-matrix identity, on the
    feature-space-centred kernel, whose null space holds the constant vector: ``H = Kc (Kc + lambda)^-1 +
    1/n``). Returns ``{"alpha" (n,), "b", "bandwidth", "lambda", "col_mean" (n,), "all_mean", "loo"
    (len(bandwidths), len(lambdas))}``; predict with :func:`kernel_ridge_predict`.

    The K-shot reader of a contrastive embedding: NT-Xent shapes neighbourhoods (which graphs lie close),
    which a kernel probe reads and a linear one only partly (measured: README, predictor section)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = len(y)
    if n > KERNEL_MAX_ITEMS:
        raise ValueError(f"the kernel probe is for few labels (<= {KERNEL_MAX_ITEMS}); got {n}: use head='ridge' "
                         f"or 'mlp'")
    ym = y.mean()
    loo = np.zeros((len(bandwidths), len(lambdas)))
    for i, bw in enumerate(bandwidths):
        k = _gaussian_kernel(x, x, bw)
        cm = k.mean(0)
        ev, u = np.linalg.eigh(_center_kernel(cm, float(cm.mean()), k))
        ev = np.maximum(ev, 0.0)
        uy = u.T @ (y - ym)
        for j, lam in enumerate(lambdas):
            d = ev / (ev + lam)
            r = (y - ym) - u @ (d * uy)
            h = (u ** 2) @ d + 1.0 / n
            loo[i, j] = _spearman_np(y - r / np.maximum(1.0 - h, 1e-9), y)
    loo = np.round(loo, 6)
    # ties go to the later grid entry -- with ascending grids the wider kernel, then the larger penalty (smoother)
    flat = [(loo[i, j], i, j) for i in range(len(bandwidths)) for j in range(len(lambdas))]
    _, i, j = max(flat)
    bw, lam = float(bandwidths[i]), float(lambdas[j])
    k = _gaussian_kernel(x, x, bw)
    cm = k.mean(0)
    alpha = np.linalg.solve(_center_kernel(cm, float(cm.mean()), k) + lam * np.eye(n), y - ym)
    return {"alpha": alpha, "b": float(ym), "bandwidth": bw, "lambda": lam, "col_mean": cm,
            "all_mean": float(cm.mean()), "loo": loo}


def kernel_ridge_predict(model: dict, x_train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``(m,)`` predictions of a :func:`kernel_ridge_loo` fit on ``x_train`` ``(n, D)`` for rows ``x`` ``(m, D)``."""
    x_train = np.asarray(x_train, np.float64)
    out = []
    for s in range(0, len(x), 4096):  # bounded memory for a whole benchmark
        k = _gaussian_kernel(np.asarray(x[s:s + 4096], np.float64), x_train, float(model["bandwidth"]))
        out.append(_center_kernel(np.asarray(model["col_mean"], np.float64), float(model["all_mean"]), k)
                   @ np.asarray(model["alpha"], np.float64) + float(model["b"]))
    return np.concatenate(out) if out else np.zeros((0,))


def _spearman_np(a, b) -> float:
    from scipy.stats import spearmanr
    r = spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else 0.0


def fit(graphs: Sequence[G.CompGraph], targets, config: FitConfig = FitConfig(), *,
        pretrained: PretrainResult | FitResult | dict | None = None, encoder: EncoderConfig | None = None,
        checkpoint: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
        stop_after: int | None = None, groups=None) -> FitResult:
    """Fit a regression head on labelled ``graphs`` (targets ``(n,)``, e.g. accuracy in percent).

    ``groups`` ``(n,)``: the family of each graph, for ``config.adapt`` (per-family standardisation of the
    head inputs; default one family).

    ``pretrained``: the encoder to start from (a :class:`PretrainResult`, a previous :class:`FitResult` --
    fine-tuning a source-fitted predictor on target samples --, or a params dict with ``encoder`` given);
    ``None`` trains from a random encoder (the no-pre-training ablation; use ``mode="finetune"``). The
    regression head is re-initialised from ``config.seed`` unless ``pretrained`` is a :class:`FitResult`.
    Early stopping on dev-split negative Spearman.
    """
    t0 = time.perf_counter()
    cfg = config
    y = np.asarray(targets, np.float64).reshape(-1)
    if len(y) != len(graphs):
        raise ValueError(f"{len(graphs)} graphs but {len(y)} targets")
    if len(y) < 2 or not np.all(np.isfinite(y)):
        raise ValueError("fit needs at least 2 finite targets")
    gid = _groups(groups, len(y))
    if isinstance(pretrained, PretrainResult):
        enc, base = pretrained.config.encoder, pretrained.params
    elif isinstance(pretrained, FitResult):
        enc, base = pretrained.encoder, pretrained.params
    else:
        enc, base = encoder or EncoderConfig(), pretrained
    if encoder is not None and encoder != enc:
        raise ValueError("encoder config differs from the pre-trained one")
    train_idx, dev_idx = _split(len(y), cfg.dev_fraction, cfg.seed)
    # Always the labels' own standardisation: a target family has its own accuracy scale, and a monotone
    # affine change of the regression target leaves a source-fitted head's ranking intact.
    mean, std = float(y[train_idx].mean()), float(y[train_idx].std() or 1.0)
    yz = ((y - mean) / std if cfg.targets == "zscore" else normal_scores(y, gid)).astype(np.float32)
    bs = min(cfg.batch_size, len(train_idx))
    steps = -(-len(train_idx) // bs)
    fresh = init_params(enc, cfg.seed + 1000, make_batch(graphs, train_idx[:1], bs))
    if base is None:
        params = fresh
    elif isinstance(pretrained, FitResult):
        params = base
    else:
        params = {**base, "reg_head": fresh["reg_head"]}
    cj = _config_json(cfg) + f"|{_config_json(enc)}|n={len(y)}"

    if cfg.mode == "frozen" and cfg.head in ("ridge", "kernel"):  # closed-form probes on standardised embeddings
        if base is None:
            raise ValueError(f"head={cfg.head!r} needs a pre-trained encoder")
        emb = standardise(embed(params, enc, graphs), gid)
        if cfg.head == "ridge":
            w, b, lam, loo = ridge_loo(emb, yz, cfg.ridge_lambdas)
            final = {**params, "ridge": {"w": np.asarray(w, np.float32), "b": np.float32(b)}}
            hist = np.stack([np.asarray(cfg.ridge_lambdas), loo], 1)  # (lambda, leave-one-out Spearman) rows
            msg = f"ridge: lambda {lam:g}, leave-one-out Spearman {loo.max():.4f}"
        else:
            kr = kernel_ridge_loo(emb, yz, cfg.kernel_bandwidths, cfg.kernel_lambdas)
            final = {**params, "kernel": {"x": emb.astype(np.float32),
                                          **{k: np.asarray(kr[k], np.float32)
                                             for k in ("alpha", "b", "bandwidth", "lambda", "col_mean", "all_mean")}}}
            # (bandwidth, lambda, leave-one-out Spearman) rows
            bw, lm = np.meshgrid(cfg.kernel_bandwidths, cfg.kernel_lambdas, indexing="ij")
            hist = np.stack([bw.ravel(), lm.ravel(), kr["loo"].ravel()], 1)
            msg = (f"kernel: bandwidth {kr['bandwidth']:g}, lambda {kr['lambda']:g}, "
                   f"leave-one-out Spearman {kr['loo'].max():.4f}")
        if log:
            log(msg)
        return FitResult(final, enc, cfg, mean, std, hist, time.perf_counter() - t0)
    if cfg.mode == "frozen":
        if base is None:
            raise ValueError("mode='frozen' needs a pre-trained encoder; use mode='finetune' without one")
        emb = embed(params, enc, graphs)
        if cfg.adapt:
            emb = standardise(emb, gid)
        tx, step, pred_dev = _head_fns(enc, dataclasses.replace(cfg, seed=0), steps)
        head = params["reg_head"]

        def run_epoch(state, ep):
            h, o = state["params"], state["opt_state"]
            order = _epoch_order(train_idx, cfg.seed, ep)
            losses = []
            for s in range(steps):
                idx = order[s * bs:(s + 1) * bs]
                pad = bs - len(idx)
                full = np.concatenate([idx, np.zeros(pad, idx.dtype)])
                v = np.arange(bs) < len(idx)
                h, o, loss = step(h, o, emb[full], yz[full], v)
                losses.append(loss)
            return dict(state, params=h, opt_state=o), float(np.mean(jax.device_get(losses)))

        dev = (lambda h: -_spearman_np(np.asarray(pred_dev(h, emb[dev_idx])), yz[dev_idx])) if len(dev_idx) >= 3 else None
        state = _loop({"params": head, "opt_state": tx.init(head)}, epochs=cfg.epochs, patience=cfg.patience,
                      run_epoch=run_epoch, dev_score=dev, checkpoint=checkpoint, config_json=cj, log=log,
                      stop_after=stop_after)
        final = {**params, "reg_head": state["best_params"]}
    else:
        tx, step = _finetune_fns(enc, dataclasses.replace(cfg, seed=0), steps, base is not None)

        def run_epoch(state, ep):
            p, o = state["params"], state["opt_state"]
            order = _epoch_order(train_idx, cfg.seed, ep)
            losses = []
            for s in range(steps):
                idx = order[s * bs:(s + 1) * bs]
                g_pad = np.zeros(bs + 1, np.int32)
                g_pad[:len(idx)] = gid[idx]
                p, o, loss = step(p, o, make_batch(graphs, idx, bs, yz), g_pad)
                losses.append(loss)
            return dict(state, params=p, opt_state=o), float(np.mean(jax.device_get(losses)))

        def dev(p):
            pr = _predict_z(p, enc, [graphs[i] for i in dev_idx], adapt=cfg.adapt, groups=gid[dev_idx])
            return -_spearman_np(pr, yz[dev_idx])

        state = _loop({"params": params, "opt_state": tx.init(params)}, epochs=cfg.epochs, patience=cfg.patience,
                      run_epoch=run_epoch, dev_score=dev if len(dev_idx) >= 3 else None, checkpoint=checkpoint,
                      config_json=cj, log=log, stop_after=stop_after)
        final = state["best_params"]
    return FitResult(final, enc, cfg, mean, std, state["history"], time.perf_counter() - t0)


def _predict_z(params, encoder: EncoderConfig, graphs, batch_size: int = 128, adapt: bool = False,
               groups=None) -> np.ndarray:
    model = Predictor(encoder)
    emb = embed(params, encoder, graphs, batch_size)
    if adapt:
        emb = standardise(emb, groups)
    return np.asarray(_jitted_head(model)(params, emb))


_HEAD_CACHE: dict = {}


def _jitted_head(model):
    if model.config not in _HEAD_CACHE:
        _HEAD_CACHE[model.config] = jax.jit(lambda p, e: model.apply({"params": p}, e, method=Predictor.head))
    return _HEAD_CACHE[model.config]


def predict(model: FitResult, graphs: Sequence[G.CompGraph], batch_size: int = 128, groups=None) -> np.ndarray:
    """``(len(graphs),)`` predicted targets (in the units of the training targets).

    A model fitted with ``adapt`` standardises the embeddings over ``graphs`` (per ``groups``, default one
    family): predict a family's architectures together, at least a few dozen, not one at a time."""
    if not len(graphs):
        return np.zeros((0,), np.float32)
    if model.config.adapt and len(graphs) < 2:
        raise ValueError("a model fitted with adapt=True predicts sets of graphs (>= 2) of one family")
    if model.config.head in ("ridge", "kernel"):
        emb = standardise(embed(model.params, model.encoder, graphs, batch_size), groups)
        if model.config.head == "ridge":
            r = model.params["ridge"]
            z = emb @ np.asarray(r["w"], np.float32) + np.float32(r["b"])
        else:
            kp = model.params["kernel"]
            z = kernel_ridge_predict(kp, kp["x"], emb).astype(np.float32)
    else:
        z = _predict_z(model.params, model.encoder, graphs, batch_size, adapt=model.config.adapt, groups=groups)
    return z * model.std + model.mean


def evaluate(model: FitResult, graphs: Sequence[G.CompGraph], targets, k: int = 10) -> dict:
    """``{"spearman", "kendall", "ndcg@k", "n"}`` of the predictions against ``targets`` (jzcp.metrics)."""
    pred = predict(model, graphs)
    return rank_metrics(pred, targets, k)


def rank_metrics(pred, targets, k: int = 10) -> dict:
    """Spearman / Kendall (``jzcp.metrics.rank_correlations``) and NDCG@k of ``pred`` against ``targets``."""
    from jzcp import metrics

    t = np.asarray(targets, np.float64)
    rc = metrics.rank_correlations(np.asarray(pred, np.float64), {"t": t})["t"]
    # NDCG needs non-negative relevance: accuracies are; shift otherwise.
    rel = t - min(t.min(), 0.0)
    nd = float(metrics.ndcg_at_k(jnp.asarray(pred, jnp.float32), jnp.asarray(rel, jnp.float32), k))
    return {"spearman": rc["spearman"], "kendall": rc["kendall"], f"ndcg@{k}": nd, "n": rc["n"]}


# --- model files -------------------------------------------------------------------------------------------------

MODEL_FORMAT = 1


def _dataclass_from_dict(cls, d: dict):
    """Rebuild a (nested) config dataclass from ``dataclasses.asdict`` output; unknown keys are an error,
    missing ones take their defaults (files written before a field existed still load)."""
    kw = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in d.items():
        if k not in names:
            raise ValueError(f"{cls.__name__} has no field {k!r} (model file from another version?)")
        default = getattr(cls(), k) if k in names else None
        kw[k] = _dataclass_from_dict(type(default), v) if dataclasses.is_dataclass(default) else v
    return cls(**kw)


def save_model(path: str | os.PathLike, result: PretrainResult | FitResult) -> None:
    """Write a :class:`PretrainResult` (an encoder) or a :class:`FitResult` (a predictor) atomically to one
    msgpack file: parameters, configs (JSON), target standardisation, training history."""
    if isinstance(result, PretrainResult):
        meta = {"kind": "pretrain", "encoder": dataclasses.asdict(result.config.encoder),
                "config": dataclasses.asdict(result.config), "wall_s": result.wall_s,
                "num_graphs": result.num_graphs}
    elif isinstance(result, FitResult):
        meta = {"kind": "fit", "encoder": dataclasses.asdict(result.encoder),
                "config": dataclasses.asdict(result.config), "mean": result.mean, "std": result.std,
                "wall_s": result.wall_s}
    else:
        raise ValueError(f"cannot save a {type(result).__name__}; expected PretrainResult or FitResult")
    meta["format"] = MODEL_FORMAT
    state = {"params": flax.serialization.to_state_dict(result.params),
             "history": np.asarray(result.history, np.float64)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = flax.serialization.msgpack_serialize({"meta": json.dumps(meta), "state": state})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def load_model(path: str | os.PathLike) -> PretrainResult | FitResult:
    """Read a file written by :func:`save_model`; ``ValueError`` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist")
    try:
        raw = flax.serialization.msgpack_restore(path.read_bytes())
        meta = json.loads(raw["meta"])
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a model file"
        raise ValueError(f"{path} is not a jzcp predictor model file ({type(e).__name__}: {e})") from None
    if meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: model format {meta.get('format')} != {MODEL_FORMAT}")
    params = jax.tree.map(jnp.asarray, raw["state"]["params"])
    history = np.asarray(raw["state"]["history"], np.float64)
    history = history if history.ndim == 2 else history.reshape(-1, 2)  # kernel heads: 3 columns
    enc = _dataclass_from_dict(EncoderConfig, meta["encoder"])
    if meta["kind"] == "pretrain":
        return PretrainResult(params, _dataclass_from_dict(PretrainConfig, meta["config"]), history,
                              float(meta["wall_s"]), int(meta["num_graphs"]))
    return FitResult(params, enc, _dataclass_from_dict(FitConfig, meta["config"]), float(meta["mean"]),
                     float(meta["std"]), history, float(meta["wall_s"]))
