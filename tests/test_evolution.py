"""GP over EZNAS programs: tree surgery, ask/tell semantics, fitness helpers, a synthetic search where a known
formula is optimal, determinism and bit-identical checkpoint/resume."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jzcp import evolution as ev
from jzcp import programs as pg


# the activation statistics with D / N / P passes
KINDS = ("inpact", "inpactgrad", "preact", "preactgrad", "act", "actgrad")


def synthetic_task(seed, n=20, nblocks=4, B=1, C=4, H=6):
    """Networks whose quality q is the correlation between each D-pass activation and its N-pass counterpart
    (marginals do not depend on q): single-terminal programs see nothing, mul/hamming/cosine of a D/N pair see q."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.05, 0.95, n)
    nets = []
    for i in range(n):
        g = {"wt": rng.normal(0, 0.5, (nblocks, C, C, 3, 3))}
        for x in "DNP":
            g[f"wtgrad_{x}"] = rng.normal(0, 0.01, (nblocks, C, C, 3, 3))
        for kind in KINDS:
            d, e = rng.normal(0, 1, (2, nblocks, B, C, H, H))
            g[f"{kind}_D"] = d
            g[f"{kind}_N"] = q[i] * d + np.sqrt(1 - q[i] ** 2) * e
            g[f"{kind}_P"] = rng.normal(0, 0.1, (nblocks, B, C, H, H))
        nets.append({k: v.astype(np.float32) for k, v in g.items()})
    return nets, q


@pytest.fixture(scope="module")
def task():
    nets, q = synthetic_task(0)
    stats = pg.batch_networks(nets)
    fitness = ev.make_fitness_fn(stats, np.zeros(len(nets), int), q)
    screen = ev.make_screen_fn(stats, require_finite=False)  # shape checks only: no second compilation
    return stats, q, fitness, screen


CFG = ev.Config(generations=20)


def test_config_validation():
    with pytest.raises(ValueError, match="num_candidates"):
        ev.Config(num_candidates=10)
    with pytest.raises(ValueError, match="capacity"):
        ev.Config(capacity=64)  # a full binary tree of depth 6 has 127 nodes
    with pytest.raises(ValueError, match="crossover_prob"):
        ev.Config(crossover_prob=0.7, mutation_prob=0.5)
    with pytest.raises(ValueError, match="elitism"):
        ev.Config(elitism=11)
    assert ev.Config().pool_size == 50 and ev.Config(population_size=10, elitism=5).pool_size == 30


def _py_subtrees(syms):
    ends = {}

    def rec(i):
        j = i + 1
        for _ in range(int(pg.ARITY[syms[i]])):
            j = rec(j)
        ends[i] = j
        return j

    rec(0)
    return ends


def test_crossover_and_mutation_are_subtree_surgery():
    pop = pg.generate(jax.random.key(0), 60, 1, 4)
    nodes, length = np.asarray(pop.nodes), np.asarray(pop.length)
    cx = jax.jit(jax.vmap(ev.crossover))
    mu = jax.jit(jax.vmap(lambda k, n, l: ev.mutate(k, n, l, 0, 2)))
    keys = jax.random.split(jax.random.key(1), 30)
    cn, cl, cfit = cx(keys, pop.nodes[:30], pop.length[:30], pop.nodes[30:], pop.length[30:])
    mn, ml, mfit = mu(keys, pop.nodes[:30], pop.length[:30])
    assert np.all(np.asarray(cfit)) and np.all(np.asarray(mfit))
    for k in range(30):
        a = nodes[k, : length[k]].tolist()
        b = nodes[30 + k, : length[30 + k]].tolist()
        child = np.asarray(cn[k])[: int(cl[k])].tolist()
        assert np.all(np.asarray(cn[k])[int(cl[k]):] == pg.PAD)
        ea, eb = _py_subtrees(a), _py_subtrees(b)
        if len(a) < 2 or len(b) < 2:
            assert child == a
        else:  # the subtree at a non-root node of a replaced by a subtree at a non-root node of b
            assert any(child == a[:i] + b[j:eb[j]] + a[ea[i]:] for i in range(1, len(a)) for j in range(1, len(b)))
        mchild = np.asarray(mn[k])[: int(ml[k])].tolist()
        _py_subtrees(mchild)  # well formed (raises IndexError otherwise)
        ok = False
        for i in range(len(a)):
            head, tail = a[:i], a[ea[i]:]
            if mchild[:i] == head and (not tail or mchild[-len(tail):] == tail):
                sub = mchild[i: len(mchild) - len(tail)]
                ok |= bool(sub) and _py_subtrees(sub)[0] == len(sub) and max(
                    np.asarray(pg.node_depths(jnp.asarray(sub + [pg.PAD] * (64 - len(sub))), len(sub)))) <= 2
        assert ok, (a, mchild)


def test_ask_respects_limits_and_tell_selects(task):
    stats, q, fitness, screen = task
    state = ev.init(jax.random.key(3), CFG)
    assert int(state.num_parents) == 50 and np.all(np.isnan(np.asarray(state.parent_fitness)))
    cand = ev.ask(jax.random.key(4), state)
    assert cand.nodes.shape == (CFG.num_candidates, CFG.capacity)
    wf = jax.vmap(pg.well_formed)(cand.nodes, cand.length)
    assert np.all(np.asarray(wf)) and int(jnp.max(pg.heights(cand))) <= CFG.height_limit
    fit = np.full(CFG.num_candidates, np.nan, np.float32)
    rng = np.random.default_rng(0)
    fit[::2] = np.round(rng.uniform(0, 1, CFG.num_candidates // 2), 1)  # many ties -> duplicates to remove
    fit[1::4] = -1.0  # evaluated, invalid
    new = ev.tell(state, cand, jnp.asarray(fit))
    n = int(new.num_parents)
    pf = np.asarray(new.parent_fitness)[:n]
    offspring_fit = fit[::2][: CFG.num_offspring]  # the first 50 valid candidates, in order
    assert 1 <= n <= CFG.num_parents and len(set(pf.tolist())) == n
    assert set(pf.tolist()) <= set(offspring_fit.tolist())
    assert pf.max() == offspring_fit.max()  # the best wins every tournament it enters (P(never drawn) ~ 1e-44)
    hof = np.asarray(new.hof_fitness)
    assert hof[0] == offspring_fit.max() and np.all(np.diff(hof[np.isfinite(hof)]) < 0)
    assert int(new.generation) == 1 and int(new.num_evaluated) == CFG.num_offspring
    with pytest.raises(ValueError, match="fitness must have shape"):
        ev.tell(state, cand, jnp.zeros(3))


def test_fitness_direction_says_which_way_a_program_ranks(task):
    stats, q, fitness, _ = task
    progs = pg.parse_many(["mean(mul(act_D, act_N))", "mul(act_D, act_N)", "matmul(wt, act_D)"])
    fit, direction = (np.asarray(a) for a in fitness.with_direction(progs))
    assert fit[0] > 0.5 and direction[0] == 1  # mean of D x N estimates q: ranks as q does
    assert direction[1] == 1 and fit[1] == pytest.approx(fit[0])  # the block mean is the same score
    reverse = ev.make_fitness_fn(stats, np.zeros(len(q), int), -q)  # same networks, reversed target
    rfit, rdirection = (np.asarray(a) for a in reverse.with_direction(progs))
    assert rfit[:2] == pytest.approx(fit[:2]) and rdirection[:2].tolist() == [-1, -1]
    np.testing.assert_array_equal(np.asarray(fitness(progs)), fit)
    assert fit[2] == -1 and direction[2] == 0  # (3, 3) @ (6, 6) is shape-invalid: no direction


def test_fitness_helpers_match_scipy():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(5, 12)).astype(np.float32)
    target = rng.normal(size=12).astype(np.float32)
    valid = np.ones((5, 12), bool)
    valid[2, 3] = False
    scores[3] = 1.0  # constant -> undefined tau -> -1
    got = np.asarray(ev.task_fitness(jnp.asarray(scores), jnp.asarray(valid), jnp.asarray(target)))
    for p in (0, 1, 4):
        assert got[p] == pytest.approx(abs(scipy.stats.kendalltau(scores[p], target).statistic), abs=1e-6)
    assert got[2] == -1 and got[3] == -1
    rho = np.asarray(ev.task_fitness(jnp.asarray(scores), jnp.asarray(valid), jnp.asarray(target), "spearman"))
    assert rho[0] == pytest.approx(abs(scipy.stats.spearmanr(scores[0], target).statistic), abs=1e-6)
    per = jnp.asarray([[0.5, 0.2], [0.9, -1.0]])
    assert np.asarray(ev.combine_tasks(per)).tolist() == pytest.approx([0.2, -1.0])
    assert np.asarray(ev.combine_tasks(per, "mean")).tolist() == pytest.approx([0.35, -1.0])
    with pytest.raises(ValueError):
        ev.combine_tasks(per, "max")


def test_search_finds_the_known_signal(task):
    """GP finds a D/N-pair formula that random programs miss. One seed's outcome depends on the random stream (it
    changed between environments: seed 0 found it by generation 20 in one, by 30 in another), so the claim is
    statistical: most of 4 seeds of 40 generations reach |tau| 0.75; random initial populations stay below."""
    stats, q, fitness, screen = task
    known = float(fitness(pg.parse_many(["mean(mul(act_D, act_N))"] * CFG.num_offspring))[0])
    assert known > 0.85  # the formula that reads the latent quality
    cfg = dataclasses.replace(CFG, generations=40)
    found = 0
    for seed in range(4):
        state, hist = ev.run(jax.random.key(seed), cfg, fitness, screen_fn=screen)
        best = [h["best"] for h in hist]
        print(f"\nseed {seed}: best |tau| per generation:", " ".join(f"{b:.2f}" for b in best))
        assert len(hist) == cfg.generations and int(state.generation) == cfg.generations
        assert best[0] < 0.75  # the initial population does not already hold the answer
        progs, fits = ev.select_final(state)
        assert 1 <= len(fits) <= 3 and fits.max() == pytest.approx(float(state.hof_fitness[0]))
        if float(state.hof_fitness[0]) >= 0.75:
            found += 1
            winner = pg.to_formula(progs[int(np.argmax(fits))])
            assert any(f"{k}_D" in winner and f"{k}_N" in winner for k in KINDS), winner
    assert found >= 3, f"GP found the signal with only {found} of 4 seeds"


def _same_state(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return a.config == b.config and all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
                                        for x, y in zip(la, lb))


def test_determinism_and_checkpoint_resume(task, tmp_path):
    stats, q, fitness, screen = task
    cfg = dataclasses.replace(CFG, generations=4)
    s1, h1 = ev.run(jax.random.key(11), cfg, fitness, screen_fn=screen)
    s2, _ = ev.run(jax.random.key(11), cfg, fitness, screen_fn=screen)
    assert _same_state(s1, s2)
    s3, _ = ev.run(jax.random.key(12), cfg, fitness, screen_fn=screen)
    assert not _same_state(s1, s3)
    # stop after 2 generations, save, load (bit-identical), resume to 4
    path = str(tmp_path / "gp.npz")
    half, _ = ev.run(jax.random.key(11), cfg, fitness, screen_fn=screen, num_generations=2, checkpoint_path=path)
    loaded = ev.load_state(path)
    assert _same_state(half, loaded)
    resumed, h2 = ev.run(jax.random.key(11), cfg, fitness, screen_fn=screen, state=loaded)
    assert _same_state(resumed, s1) and len(h2) == 2
    with pytest.raises(ValueError, match="different Config"):
        ev.run(jax.random.key(11), dataclasses.replace(cfg, tournament_size=3), fitness, state=loaded)


def test_capacity_rarely_binds():
    """Offspring within the height limit but over the 128-node capacity (treated like DEAP's staticLimit)."""
    cfg = ev.Config()
    state = ev.init(jax.random.key(5), cfg)
    over = total = 0
    cx = jax.jit(jax.vmap(ev.crossover))
    for k in range(4):  # trees grow under crossover: breed from the children again
        n = 2000
        keys = jax.random.split(jax.random.key(20 + k), n)
        ia = np.random.default_rng(k).integers(0, int(state.num_parents), (2, n))
        a, b = state.parents[ia[0]], state.parents[ia[1]]
        nodes, length, fits = cx(keys, a.nodes, a.length, b.nodes, b.length)
        h = np.asarray(pg.heights(pg.Programs(nodes, length)))
        over += int(np.sum(~np.asarray(fits)))
        total += n
        keep = np.asarray(fits) & (h <= cfg.height_limit)
        idx = np.flatnonzero(keep)[: cfg.pool_size]
        state = state.replace(parents=pg.Programs(nodes[idx], length[idx]), num_parents=jnp.int32(len(idx)))
    print(f"\ncrossover children over capacity {cfg.capacity}: {over}/{total}")
    assert over / total < 0.01
