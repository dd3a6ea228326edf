"""The transferable predictor: encoder padding invariance, augmentation validity, NT-Xent, one compile per
size bucket, contrastive loss going down, bit-identical checkpoint resume, fitting a toy target.

Synthetic random DAG computation graphs keep this file fast (no network tracing); real NB201 graphs are
exercised by ``bench/predictor_transfer.py``."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import graph as G
from jzcp import predictor as P
from jzcp.graph._types import NUM_OPS, OP_INDEX
from jzcp.predictor import train as T

BODY_OPS = ("Conv", "Depthwise", "BatchNorm", "ReLU", "ReLU6", "Swish", "Add", "MaxPool", "AvgPool", "Concat")


def random_graph(rng: np.random.Generator, n: int) -> G.CompGraph:
    """A random DAG: Input, ``n - 2`` body ops each fed by 1-2 earlier nodes, Output fed by every sink."""
    ops = [OP_INDEX["Input"]] + [OP_INDEX[o] for o in rng.choice(BODY_OPS, n - 2)] + [OP_INDEX["Output"]]
    nodes = np.zeros((n, G.NUM_ATTRS), np.int32)
    nodes[:, 0] = ops
    hw, c = rng.choice([8, 16, 32], n), rng.choice([16, 32, 64], n)
    nodes[:, 1], nodes[:, 2], nodes[:, 3] = hw, hw, c
    nodes[:, 4], nodes[:, 5], nodes[:, 6] = hw, hw, c
    win = np.isin(nodes[:, 0], [OP_INDEX[o] for o in ("Conv", "Depthwise", "MaxPool", "AvgPool")])
    k = rng.choice([1, 3, 5], n)
    nodes[win, 7], nodes[win, 8], nodes[win, 9] = k[win], k[win], 1
    edges = set()
    for v in range(1, n - 1):
        for u in rng.choice(v, size=min(v, rng.integers(1, 3)), replace=False):
            edges.add((int(u), v))
    has_succ = {u for u, _ in edges}
    for v in range(1, n - 1):
        if v not in has_succ:
            edges.add((v, n - 1))
    e = np.asarray(sorted(edges, key=lambda t: (t[1], t[0])), np.int32)
    return G.CompGraph(nodes, e[:, 0], e[:, 1])


@pytest.fixture(scope="module")
def graphs():
    rng = np.random.default_rng(0)
    return [random_graph(rng, int(n)) for n in rng.integers(6, 40, 32)]


ENC = P.EncoderConfig(hidden=16, num_layers=2, proj_dim=8, head_hidden=16)


@pytest.mark.parametrize("layer", ["graphconv", "gin", "gat"])
def test_padding_invariance(graphs, layer):
    enc = dataclasses.replace(ENC, layer=layer)
    params = T.init_params(enc, 0, P.make_batch(graphs, [0, 1], 2))
    model = P.Predictor(enc)
    fn = jax.jit(lambda p, b: model.apply({"params": p}, b, method=P.Predictor.embed))
    tight = G.batch_graphs(graphs[:3])  # 3 graphs + 1 padding graph, smallest bucket
    loose = G.batch_graphs(graphs[:3], num_graphs=9, node_buckets=[512], edge_buckets=[1024])
    a, b = np.asarray(fn(params, tight)), np.asarray(fn(params, loose))
    assert a.shape == (4, enc.hidden) and b.shape == (10, enc.hidden)
    np.testing.assert_allclose(a[:3], b[:3], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(b[3:], 0.0)  # padding graphs read out as zero
    # and a graph's embedding does not depend on its batch mates
    alone = np.asarray(fn(params, G.batch_graphs(graphs[1:2], num_graphs=9, node_buckets=[512],
                                                 edge_buckets=[1024])))
    np.testing.assert_allclose(alone[0], b[1], rtol=1e-5, atol=1e-5)
    assert np.std(a[:3], axis=0).max() > 1e-4  # different graphs, different embeddings


def test_augment_keeps_graph_valid(graphs):
    batch = P.make_batch(graphs, np.arange(8), 8)
    cfg = P.AugmentConfig(p_op_swap=0.5, p_kernel_swap=0.5, p_feature_mask=0.3, p_edge_drop=0.7)
    x, w = jax.jit(P.augment, static_argnums=2)(jax.random.key(1), batch, cfg)
    x, w = np.asarray(x), np.asarray(w)
    x0 = batch.nodes["features"]
    assert x.shape == x0.shape and w.shape == batch.senders.shape
    assert set(np.unique(w)) <= {0.0, 1.0} and 0 < w.sum() < len(w)  # some, not all, edges dropped
    real_e = np.arange(len(w)) < batch.n_edge[:-1].sum()
    s, r = batch.senders[real_e], batch.receivers[real_e]
    for node in np.unique(r):  # every node keeps an in-edge and an out-edge
        assert w[real_e][r == node].max() == 1.0
    for node in np.unique(s):
        assert w[real_e][s == node].max() == 1.0
    op0, op1 = x0[:, :NUM_OPS].argmax(1), x[:, :NUM_OPS].argmax(1)
    changed = op0 != op1
    assert changed.any()
    cls = T._CLS_OF
    assert np.all(cls[op0[changed]] == cls[op1[changed]]) and np.all(cls[op0[changed]] >= 0)
    assert np.all(x[:, :NUM_OPS].sum(1) == x0[:, :NUM_OPS].sum(1))  # still one-hot (padding rows zero)


def test_ntxent_matches_reference():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    valid = np.array([1, 1, 1, 0, 1], bool)
    got = float(P.ntxent(jnp.asarray(z1), jnp.asarray(z2), jnp.asarray(valid), 0.5))
    # reference: drop the invalid row, plain SimCLR loss in numpy
    a, b = z1[valid], z2[valid]
    z = np.concatenate([a, b])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / 0.5
    m = len(a)
    losses = []
    for i in range(2 * m):
        j = (i + m) % (2 * m)
        others = np.delete(sim[i], i)
        losses.append(np.log(np.exp(others).sum()) - sim[i, j])
    np.testing.assert_allclose(got, np.mean(losses), rtol=1e-5)
    # and it equals optax's NT-Xent on a batch without padding
    import optax

    emb = jnp.concatenate([jnp.asarray(a), jnp.asarray(b)])
    labels = jnp.concatenate([jnp.arange(m), jnp.arange(m)])
    ref = float(optax.losses.ntxent(emb, labels, 0.5))
    mine = float(P.ntxent(jnp.asarray(a), jnp.asarray(b), jnp.ones(m, bool), 0.5))
    np.testing.assert_allclose(mine, ref, rtol=1e-5)


def test_pretrain_loss_decreases_and_compiles_once_per_bucket(graphs):
    cfg = P.PretrainConfig.tiny(epochs=8, batch_size=8, temperature=0.2, lr=1e-2)
    before = T.TRACE_COUNTS.get("pretrain_step", 0)
    res = P.pretrain(graphs, cfg)
    traces = T.TRACE_COUNTS.get("pretrain_step", 0) - before
    shapes = set()
    for e in range(cfg.epochs):
        order = T._epoch_order(np.arange(len(graphs)), cfg.seed, e)
        for s in range(0, len(order), cfg.batch_size):
            b = P.make_batch(graphs, order[s:s + cfg.batch_size], cfg.batch_size)
            shapes.add((b.nodes["features"].shape, b.senders.shape))
    assert 1 <= traces <= len(shapes), (traces, shapes)
    h = res.history[:, 0]
    assert np.all(np.isfinite(h)) and h[-2:].mean() < h[:2].mean() - 0.05, h


def test_checkpoint_resume_is_bit_identical(graphs, tmp_path):
    cfg = P.PretrainConfig.tiny(epochs=3, batch_size=8, seed=3)
    full = P.pretrain(graphs[:16], cfg, checkpoint=tmp_path / "a.ckpt")
    part = P.pretrain(graphs[:16], cfg, checkpoint=tmp_path / "b.ckpt", stop_after=1)
    assert len(part.history) == 1
    resumed = P.pretrain(graphs[:16], cfg, checkpoint=tmp_path / "b.ckpt")
    assert len(resumed.history) == 3
    np.testing.assert_array_equal(resumed.history, full.history)
    for x, y in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary file
    with pytest.raises(ValueError, match="another config"):
        P.pretrain(graphs[:16], dataclasses.replace(cfg, lr=0.5), checkpoint=tmp_path / "b.ckpt")


def test_fit_learns_toy_target(graphs):
    pre = P.pretrain(graphs, P.PretrainConfig.tiny(epochs=2, batch_size=8))
    # toy target: the fraction of Conv nodes (a mean-readout-friendly graph property)
    y = np.array([np.mean(g.nodes[:, 0] == OP_INDEX["Conv"]) for g in graphs]) * 100
    frozen = P.fit(graphs, y, P.FitConfig.tiny(epochs=150, lr=1e-2, loss="mse"), pretrained=pre)
    res = P.evaluate(frozen, graphs, y)
    assert res["spearman"] > 0.8 and res["n"] == len(graphs), res
    pred = P.predict(frozen, graphs)
    assert pred.shape == (len(graphs),) and abs(pred.mean() - y.mean()) < y.std()
    tuned = P.fit(graphs, y, P.FitConfig.tiny(mode="finetune", epochs=40, lr=1e-2, loss="mse+rank"),
                  pretrained=pre)
    assert P.evaluate(tuned, graphs, y)["spearman"] > 0.8


def test_fit_rejects_bad_input(graphs):
    with pytest.raises(ValueError, match="targets"):
        P.fit(graphs[:4], [1.0, 2.0], P.FitConfig.tiny())
    with pytest.raises(ValueError, match="frozen"):
        P.fit(graphs[:4], [1.0, 2.0, 3.0, 4.0], P.FitConfig.tiny(), encoder=ENC)
    with pytest.raises(ValueError, match="mode"):
        P.FitConfig(mode="bogus")
    with pytest.raises(ValueError, match="probability"):
        P.AugmentConfig(p_edge_drop=1.5)


def test_normal_scores_per_group_and_ties():
    y = np.array([3.0, 1.0, 2.0, 2.0, 50.0, 10.0, 20.0])
    z = P.normal_scores(y, groups=[0, 0, 0, 0, 1, 1, 1])
    from scipy.stats import norm
    np.testing.assert_allclose(z[:4], norm.ppf((np.array([4, 1, 2.5, 2.5]) - 0.5) / 4))  # ties share a rank
    np.testing.assert_allclose(z[4:], norm.ppf((np.array([3, 1, 2]) - 0.5) / 3))  # ranked within its group
    np.testing.assert_allclose(P.normal_scores(np.exp(y)), P.normal_scores(y))  # any monotone map: same scores


def test_rank_targets_ignore_the_label_scale(graphs):
    """With ``targets="rank"`` a fit sees only the labels' order: a monotone distortion of the labels (a tail
    squashed towards chance, as NB201's degenerate cells) leaves the ridge probe's ranking unchanged."""
    pre = P.random_encoder(ENC, 0)
    y = np.linspace(0.0, 1.0, len(graphs)) + np.random.default_rng(1).normal(0, 0.1, len(graphs))
    warped = np.where(y < 0.3, 0.3 + (y - 0.3) * 20.0, y)  # order kept, scale of the low tail blown up
    cfg = P.FitConfig(mode="frozen", head="ridge", adapt=True, targets="rank")
    a, b = (P.predict(P.fit(graphs, t, cfg, pretrained=pre), graphs) for t in (y, warped))
    np.testing.assert_allclose(np.argsort(a), np.argsort(b))
    plain = dataclasses.replace(cfg, targets="zscore")
    c, d = (P.predict(P.fit(graphs, t, plain, pretrained=pre), graphs) for t in (y, warped))
    assert not np.array_equal(np.argsort(c), np.argsort(d))  # z-scored labels do feel the distortion
    with pytest.raises(ValueError, match="targets"):
        P.FitConfig(targets="ranks")


def test_kernel_ridge_loo_is_exact_leave_one_out():
    """The leave-one-out Spearman that picks the kernel width and penalty equals refitting without each item."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 + 0.3 * rng.normal(size=30)
    for bw, lam in [(0.5, 0.03), (4.0, 1.0)]:
        kr = P.kernel_ridge_loo(x, y, [bw], [lam])
        loo = [P.kernel_ridge_predict(P.kernel_ridge_loo(np.delete(x, i, 0), np.delete(y, i), [bw], [lam]),
                                      np.delete(x, i, 0), x[i:i + 1])[0] for i in range(len(y))]
        assert kr["loo"][0, 0] == pytest.approx(spearmanr(loo, y).statistic, abs=2e-6)
        assert kr["loo"][0, 0] < 0.999  # not trivially perfect: the check has something to match
    grid = P.kernel_ridge_loo(x, y, [0.25, 1.0, 16.0], [0.01, 1.0])
    assert grid["loo"].shape == (3, 2) and grid["loo"].max() == pytest.approx(
        grid["loo"][[0.25, 1.0, 16.0].index(grid["bandwidth"]), [0.01, 1.0].index(grid["lambda"])])
    # in-sample predictions of the chosen fit follow the targets
    fitted = P.kernel_ridge_predict(grid, x, x)
    assert spearmanr(fitted, y).statistic > 0.9
    with pytest.raises(ValueError, match="few labels"):
        P.kernel_ridge_loo(np.zeros((T.KERNEL_MAX_ITEMS + 1, 1)), np.zeros(T.KERNEL_MAX_ITEMS + 1), [1.0], [1.0])


def test_kernel_head_fits_saves_and_reloads(graphs, tmp_path):
    pre = P.random_encoder(ENC, 0)
    y = np.array([np.mean(g.nodes[:, 0] == OP_INDEX["Conv"]) for g in graphs]) * 100
    cfg = P.FitConfig(mode="frozen", head="kernel", adapt=True, targets="rank")
    model = P.fit(graphs, y, cfg, pretrained=pre)
    assert model.history.shape == (len(cfg.kernel_bandwidths) * len(cfg.kernel_lambdas), 3)
    assert float(model.params["kernel"]["bandwidth"]) in cfg.kernel_bandwidths
    pred = P.predict(model, graphs)
    assert pred.shape == (len(graphs),) and P.rank_metrics(pred, y)["spearman"] > 0.8
    P.save_model(tmp_path / "m.msgpack", model)
    back = P.load_model(tmp_path / "m.msgpack")
    assert back.config == cfg and back.history.shape == model.history.shape
    np.testing.assert_allclose(P.predict(back, graphs[5:]), P.predict(model, graphs[5:]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="adapt"):
        P.FitConfig(head="kernel")
    with pytest.raises(ValueError, match="kernel_bandwidths"):
        P.FitConfig(head="kernel", adapt=True, kernel_bandwidths=(0.0,))
