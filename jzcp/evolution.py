"""Genetic programming over EZNAS proxy programs, in the ask/tell style (evosax-like).

EZNAS (Akhauri et al., NeurIPS 2022, arXiv 2209.07413) evolves expression trees (:mod:`jzcp.programs`) with DEAP.
This module reproduces its loop with stateless jitted functions over an explicit :class:`State` pytree:

* :func:`init` -- ``population_size`` random trees, DEAP ``genHalfAndHalf`` with depth ``init_min_depth..
  init_max_depth`` (unevaluated, as in the original: its first generation breeds from them directly);
* :func:`ask` -- ``num_candidates`` offspring by DEAP ``varOr`` from the current parents: with probability
  ``crossover_prob`` one-point subtree crossover of two distinct parents (DEAP ``cxOnePoint``: a uniform non-root node
  in each, the first child is kept), with ``mutation_prob`` uniform subtree mutation (``mutUniform``: a uniform node's
  subtree is replaced by a new half-and-half tree of depth ``mutation_min_depth..mutation_max_depth``), otherwise a
  copy of a random parent. Children over ``height_limit`` (DEAP ``staticLimit``) or over the capacity are replaced by
  a random one of their parents;
* :func:`tell` -- the first ``num_offspring`` candidates with a valid fitness become the offspring (the original
  draws ``varOr`` batches until 50 pass a cheap validity check), ``num_parents`` tournaments of ``tournament_size``
  pick the next parents, duplicates by fitness are removed (``toolz.unique`` on the fitness), optional elites from
  the hall of fame are added, and the hall of fame (best unique-fitness programs ever evaluated) is updated;
* :func:`run` -- the whole search with an optional cheap screening function, a callback and checkpoints.

The state is a flax ``struct`` pytree of arrays (the config is a static field): :func:`save_state` /
:func:`load_state` store it in an ``.npz`` and restore it bit-identically, so a run resumed from a checkpoint
reproduces an uninterrupted one (``run`` derives the key of generation g as ``fold_in(key, g + 1)``).

Fitness (:func:`task_fitness`, :func:`make_fitness_fn`): per task the absolute Kendall tau (or Spearman rho) between
network scores and accuracies; a program invalid on any network, or with an undefined correlation, gets -1; tasks
are combined by their minimum (EZNAS) or mean. Being sign-free, a fit program may rank networks in reverse; the
fitness function's ``with_direction`` says which way (the sign of its task correlations). The original maps a
correlation of exactly -1 to -1 (its invalid marker); here it counts as |tau| = 1.

Randomness: every draw comes from explicit JAX keys (``ask``'s argument, ``State.key`` for the tournaments), so a
seed fixes the whole run. The random streams are not DEAP's (Python ``random``), only the distributions are.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jzcp import metrics, programs as pg
from jzcp.programs import Programs

__all__ = [
    "Config",
    "State",
    "init",
    "ask",
    "tell",
    "run",
    "crossover",
    "mutate",
    "task_correlation",
    "task_fitness",
    "combine_tasks",
    "make_fitness_fn",
    "make_screen_fn",
    "select_final",
    "save_state",
    "load_state",
]


@dataclass(frozen=True)
class Config:
    """EZNAS search settings (defaults: the official ``evol_config.yaml`` and DEAP setup).

    ``population_size`` (POPSIZE) random trees start the search; each generation ``num_candidates`` offspring are
    proposed and the first ``num_offspring`` (lambda_) valid ones are kept; ``num_parents`` (MU) tournaments of
    ``tournament_size`` (TOURSIZE) select the parents of the next generation. ``generations`` is the paper's 15 (the
    config file says 10). ``elitism`` hall-of-fame programs are added to the parents (0 in EZNAS).
    """

    population_size: int = 50
    num_offspring: int = 50
    num_candidates: int = 200
    num_parents: int = 25
    tournament_size: int = 4
    crossover_prob: float = 0.4
    mutation_prob: float = 0.4
    init_min_depth: int = 2
    init_max_depth: int = 6
    mutation_min_depth: int = 0
    mutation_max_depth: int = 5
    height_limit: int = 10
    capacity: int = pg.DEFAULT_CAPACITY
    dedupe_by_fitness: bool = True
    elitism: int = 0
    hall_of_fame_size: int = 10
    generations: int = 15

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"Config: {msg}")

        need(self.population_size >= 2, f"population_size must be >= 2, got {self.population_size}")
        need(self.num_offspring >= 1, f"num_offspring must be >= 1, got {self.num_offspring}")
        need(self.num_candidates >= self.num_offspring,
             f"num_candidates ({self.num_candidates}) must be >= num_offspring ({self.num_offspring})")
        need(self.num_parents >= 1, f"num_parents must be >= 1, got {self.num_parents}")
        need(self.tournament_size >= 1, f"tournament_size must be >= 1, got {self.tournament_size}")
        need(0 <= self.crossover_prob and 0 <= self.mutation_prob and self.crossover_prob + self.mutation_prob <= 1,
             f"need crossover_prob, mutation_prob >= 0 with sum <= 1, got {self.crossover_prob}, {self.mutation_prob}")
        need(0 <= self.init_min_depth <= self.init_max_depth, "need 0 <= init_min_depth <= init_max_depth")
        need(0 <= self.mutation_min_depth <= self.mutation_max_depth,
             "need 0 <= mutation_min_depth <= mutation_max_depth")
        need(self.height_limit >= max(self.init_max_depth, self.mutation_max_depth),
             "height_limit must be >= the generation depths")
        deepest = max(self.init_max_depth, self.mutation_max_depth)
        need(self.capacity >= 2 ** (deepest + 1) - 1,
             f"capacity {self.capacity} cannot hold a full binary tree of depth {deepest} ({2 ** (deepest + 1) - 1})")
        need(0 <= self.elitism <= self.hall_of_fame_size, "need 0 <= elitism <= hall_of_fame_size")
        need(self.hall_of_fame_size >= 1, "hall_of_fame_size must be >= 1")
        need(self.generations >= 0, "generations must be >= 0")

    @property
    def pool_size(self) -> int:
        """Rows of the parent arrays (the initial population or the selected parents plus elites)."""
        return max(self.population_size, self.num_parents + self.elitism)


@struct.dataclass
class State:
    """Search state. Parents occupy rows ``[0, num_parents)`` of ``parents`` (the rest is stale);
    ``parent_fitness`` is NaN for the unevaluated initial population. The hall of fame is sorted by fitness
    (``-inf`` = empty slot). ``key`` (raw uint32 key data) drives the tournaments of :func:`tell`."""

    parents: Programs
    parent_fitness: jax.Array
    num_parents: jax.Array
    hof: Programs
    hof_fitness: jax.Array
    key: jax.Array
    generation: jax.Array
    num_evaluated: jax.Array
    config: Config = struct.field(pytree_node=False)


def _raw_key(key) -> jax.Array:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key.astype(jnp.uint32)


def _typed(key) -> jax.Array:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key.astype(jnp.uint32))


# ----------------------------------------------------------------------------------------------------------------
# tree surgery on prefix arrays (single programs; jittable, vmappable)
# ----------------------------------------------------------------------------------------------------------------


def _splice(dst_nodes, dst_len, i, j, src_nodes, s, e):
    """``dst[:i] + src[s:e] + dst[j:]`` in a fixed-capacity array -> (nodes, length, fits)."""
    cap = dst_nodes.shape[-1]
    n_mid = e - s
    new_len = dst_len - (j - i) + n_mid
    k = jnp.arange(cap, dtype=jnp.int32)
    from_src = (k >= i) & (k < i + n_mid)
    src_idx = jnp.clip(s + k - i, 0, cap - 1)
    tail_idx = jnp.clip(j + k - i - n_mid, 0, cap - 1)
    out = jnp.where(k < i, dst_nodes, jnp.where(from_src, src_nodes[src_idx], dst_nodes[tail_idx]))
    out = jnp.where(k < new_len, out, pg.PAD)
    return out.astype(jnp.int32), new_len.astype(jnp.int32), new_len <= cap


def _height(nodes, length):
    return jnp.max(pg.node_depths(nodes, length))


def crossover(key, nodes_a, len_a, nodes_b, len_b):
    """DEAP ``cxOnePoint`` (first child): the subtree at a uniform non-root node of A is replaced by the subtree at a
    uniform non-root node of B. Trees with fewer than 2 nodes are returned unchanged. -> (nodes, length, fits)."""
    k1, k2 = jax.random.split(key)
    ia = jax.random.randint(k1, (), 1, jnp.maximum(len_a, 2))
    ib = jax.random.randint(k2, (), 1, jnp.maximum(len_b, 2))
    ea = pg.subtree_ends(nodes_a, len_a)[ia]
    eb = pg.subtree_ends(nodes_b, len_b)[ib]
    nodes, length, fits = _splice(nodes_a, len_a, ia, ea, nodes_b, ib, eb)
    same = (len_a < 2) | (len_b < 2)
    return jnp.where(same, nodes_a, nodes), jnp.where(same, len_a, length), same | fits


def mutate(key, nodes, length, min_depth: int, max_depth: int):
    """DEAP ``mutUniform`` with a ``genHalfAndHalf(min_depth, max_depth)`` subtree at a uniform node."""
    k1, k2 = jax.random.split(key)
    i = jax.random.randint(k1, (), 0, jnp.maximum(length, 1))
    e = pg.subtree_ends(nodes, length)[i]
    sub = pg.generate(k2, 1, min_depth, max_depth, nodes.shape[-1])
    return _splice(nodes, length, i, e, sub.nodes[0], 0, sub.length[0])


def _child(key, parents: Programs, num_parents, config: Config):
    """One ``varOr`` offspring with DEAP's staticLimit on height (and our capacity)."""
    k_op, k_a, k_b, k_var, k_lim = jax.random.split(key, 5)
    u = jax.random.uniform(k_op)
    ia = jax.random.randint(k_a, (), 0, num_parents)
    ib = jax.random.randint(k_b, (), 0, jnp.maximum(num_parents - 1, 1))
    ib = jnp.where(num_parents > 1, ib + (ib >= ia), ia)  # random.sample(population, 2): two distinct parents
    na, la = parents.nodes[ia], parents.length[ia]
    nb, lb = parents.nodes[ib], parents.length[ib]

    cn, cl, cfit = crossover(k_var, na, la, nb, lb)
    c_ok = cfit & (_height(cn, cl) <= config.height_limit)
    back_b = jax.random.bernoulli(k_lim)  # staticLimit: random.choice of the (copied) parents
    cn = jnp.where(c_ok, cn, jnp.where(back_b, nb, na))
    cl = jnp.where(c_ok, cl, jnp.where(back_b, lb, la))

    mn, ml, mfit = mutate(k_var, na, la, config.mutation_min_depth, config.mutation_max_depth)
    m_ok = mfit & (_height(mn, ml) <= config.height_limit)
    mn, ml = jnp.where(m_ok, mn, na), jnp.where(m_ok, ml, la)

    is_cx = u < config.crossover_prob
    is_mut = (~is_cx) & (u < config.crossover_prob + config.mutation_prob)
    nodes = jnp.where(is_cx, cn, jnp.where(is_mut, mn, na))
    length = jnp.where(is_cx, cl, jnp.where(is_mut, ml, la))
    return nodes, length


# ----------------------------------------------------------------------------------------------------------------
# ask / tell
# ----------------------------------------------------------------------------------------------------------------


def _init(key, config: Config) -> State:
    key = _typed(_raw_key(key))
    k_pop, k_state = jax.random.split(key)
    pool = config.pool_size
    pop = pg.generate(k_pop, pool, config.init_min_depth, config.init_max_depth, config.capacity)
    hof_n = config.hall_of_fame_size
    return State(
        parents=pop,
        parent_fitness=jnp.full((pool,), jnp.nan, jnp.float32),
        num_parents=jnp.int32(config.population_size),
        hof=Programs(jnp.full((hof_n, config.capacity), pg.PAD, jnp.int32), jnp.zeros((hof_n,), jnp.int32)),
        hof_fitness=jnp.full((hof_n,), -jnp.inf, jnp.float32),
        key=jax.random.key_data(k_state),
        generation=jnp.int32(0),
        num_evaluated=jnp.int32(0),
        config=config,
    )


init = jax.jit(_init, static_argnums=1)
init.__doc__ = """``init(key, config) -> State``: ``population_size`` unevaluated half-and-half trees."""


@jax.jit
def ask(key, state: State) -> Programs:
    """``num_candidates`` offspring ``(M, capacity)`` of the current parents by DEAP ``varOr`` (see module doc)."""
    config = state.config
    keys = jax.random.split(_typed(_raw_key(key)), config.num_candidates)
    nodes, length = jax.vmap(lambda k: _child(k, state.parents, state.num_parents, config))(keys)
    return Programs(nodes, length)


def _first_unique(values):
    """Bool mask: True at the first occurrence of each value (exact equality), in order."""
    n = values.shape[0]
    eq = values[:, None] == values[None, :]
    earlier = jnp.tril(jnp.ones((n, n), bool), k=-1)
    return ~jnp.any(eq & earlier, axis=1)


def _compact(mask):
    """Stable permutation putting the True entries first, and their count."""
    return jnp.argsort(~mask, stable=True), jnp.sum(mask, dtype=jnp.int32)


@jax.jit
def tell(state: State, programs: Programs, fitness: jax.Array) -> State:
    """Update the state with the fitness ``(M,)`` of ``ask``'s candidates (NaN = not evaluated).

    Offspring = the first ``num_offspring`` candidates by (valid: fitness > -1 and finite) < (evaluated but invalid)
    < (not evaluated), order preserved within each class; unevaluated ones get fitness -1.
    """
    config = state.config
    lam = config.num_offspring
    m = programs.length.shape[0]
    if fitness.shape != (m,):
        raise ValueError(f"fitness must have shape ({m},) matching the programs, got {fitness.shape}")
    fitness = jnp.asarray(fitness, jnp.float32)
    cls = jnp.where(jnp.isnan(fitness), 2, jnp.where(jnp.isfinite(fitness) & (fitness > -1), 0, 1))
    order = jnp.argsort(cls, stable=True)[:lam]
    off = Programs(programs.nodes[order], programs.length[order])
    off_fit = fitness[order]
    off_fit = jnp.where(jnp.isfinite(off_fit), off_fit, -1.0)
    evaluated = jnp.sum(~jnp.isnan(fitness[order]), dtype=jnp.int32)

    # selTournament: num_parents tournaments of tournament_size aspirants drawn with replacement; the first
    # maximal aspirant wins (Python max)
    key, k_sel = jax.random.split(_typed(state.key))
    asp = jax.random.randint(k_sel, (config.num_parents, config.tournament_size), 0, lam)
    winner = asp[jnp.arange(config.num_parents), jnp.argmax(off_fit[asp], axis=1)]
    sel_fit = off_fit[winner]
    keep = _first_unique(sel_fit) if config.dedupe_by_fitness else jnp.ones_like(sel_fit, bool)
    perm, n_sel = _compact(keep)
    sel_idx = winner[perm]

    # hall of fame: best unique-fitness valid programs ever evaluated, sorted descending (old entries first on ties)
    all_nodes = jnp.concatenate([state.hof.nodes, off.nodes])
    all_len = jnp.concatenate([state.hof.length, off.length])
    all_fit = jnp.concatenate([state.hof_fitness, jnp.where(off_fit > -1, off_fit, -jnp.inf)])
    srt = jnp.argsort(-all_fit, stable=True)
    s_fit = all_fit[srt]
    uniq = _first_unique(s_fit) & jnp.isfinite(s_fit)
    perm_h, _ = _compact(uniq)
    top = srt[perm_h][: config.hall_of_fame_size]
    hof_fit = jnp.where(uniq[perm_h][: config.hall_of_fame_size], all_fit[top], -jnp.inf)
    hof = Programs(all_nodes[top], all_len[top])

    # next parents: selected (unique) offspring, then elites from the hall of fame
    pool = config.pool_size
    rows = jnp.arange(pool)
    src_sel = jnp.clip(rows, 0, config.num_parents - 1)
    p_nodes = off.nodes[sel_idx[src_sel]]
    p_len = off.length[sel_idx[src_sel]]
    p_fit = off_fit[sel_idx[src_sel]]
    n_par = n_sel
    if config.elitism:
        e = rows - n_sel
        is_elite = (e >= 0) & (e < config.elitism) & jnp.isfinite(hof_fit[jnp.clip(e, 0, config.hall_of_fame_size - 1)])
        ei = jnp.clip(e, 0, config.hall_of_fame_size - 1)
        p_nodes = jnp.where(is_elite[:, None], hof.nodes[ei], p_nodes)
        p_len = jnp.where(is_elite, hof.length[ei], p_len)
        p_fit = jnp.where(is_elite, hof_fit[ei], p_fit)
        n_par = n_sel + jnp.sum(is_elite, dtype=jnp.int32)
    p_fit = jnp.where(rows < n_par, p_fit, jnp.nan)
    return state.replace(
        parents=Programs(p_nodes, p_len),
        parent_fitness=p_fit,
        num_parents=n_par,
        hof=hof,
        hof_fitness=hof_fit,
        key=jax.random.key_data(key),
        generation=state.generation + 1,
        num_evaluated=state.num_evaluated + evaluated,
    )


def _take(programs: Programs, idx) -> Programs:
    idx = np.asarray(idx)
    return Programs(jnp.asarray(programs.nodes)[idx], jnp.asarray(programs.length)[idx])


def run(key, config: Config, fitness_fn: Callable[[Programs], jax.Array], *,
        screen_fn: Callable[[Programs], jax.Array] | None = None, state: State | None = None,
        num_generations: int | None = None, callback: Callable | None = None,
        checkpoint_path: str | None = None) -> tuple[State, list[dict]]:
    """Run the search until ``state.generation == num_generations`` (default ``config.generations``).

    Per generation: ``ask`` -> optional ``screen_fn(candidates) -> (M,) bool`` (cheap validity, e.g. shape checks
    and a 2-network evaluation, like the original's ``evaluate_mini``) -> ``fitness_fn`` on the first
    ``num_offspring`` screened candidates (always exactly ``num_offspring`` programs, so it compiles once) ->
    ``tell``. ``state`` resumes a previous run (e.g. from :func:`load_state`); generation g uses
    ``fold_in(key, g + 1)``, so resuming gives the same result as not stopping. ``callback(state, record)`` is called
    after every generation; with ``checkpoint_path`` the state is saved there after every generation.

    Returns the final state and one record per generation run here (best / median offspring fitness, number of valid
    offspring, screened fraction, hall-of-fame best, wall time).
    """
    import time

    if state is None:
        state = init(key, config)
    elif state.config != config:
        raise ValueError("the state to resume was made with a different Config")
    total = config.generations if num_generations is None else num_generations
    base = _typed(_raw_key(key))
    history = []
    lam = config.num_offspring
    while int(state.generation) < total:
        t0 = time.time()
        g = int(state.generation)
        cand = ask(jax.random.fold_in(base, g + 1), state)
        ok = np.ones(config.num_candidates, bool) if screen_fn is None else np.asarray(screen_fn(cand), bool)
        order = np.argsort(~ok, kind="stable")[:lam]
        fit_sel = np.asarray(fitness_fn(_take(cand, order)), np.float32)
        if fit_sel.shape != (lam,):
            raise ValueError(f"fitness_fn must return ({lam},), got {fit_sel.shape}")
        fit = np.full(config.num_candidates, np.nan, np.float32)
        fit[order] = fit_sel
        state = tell(state, cand, jnp.asarray(fit))
        valid = fit_sel[fit_sel > -1]
        rec = {
            "generation": g,
            "best": float(fit_sel.max()),
            "median_valid": float(np.median(valid)) if valid.size else float("nan"),
            "num_valid": int(valid.size),
            "screened": float(ok.mean()),
            "hof_best": float(state.hof_fitness[0]),
            "seconds": time.time() - t0,
        }
        history.append(rec)
        if checkpoint_path is not None:
            save_state(checkpoint_path, state)
        if callback is not None:
            callback(state, rec)
    return state, history


# ----------------------------------------------------------------------------------------------------------------
# fitness
# ----------------------------------------------------------------------------------------------------------------


def task_correlation(scores: jax.Array, valid: jax.Array, target: jax.Array, metric: str = "kendall") -> jax.Array:
    """``(P,)`` signed Kendall tau (or Spearman rho) of each program's network scores ``(P, N)`` against ``target``
    ``(N,)``; NaN if the program is invalid on any network or the correlation is undefined (constant scores)."""
    if metric not in ("kendall", "spearman"):
        raise ValueError(f"metric must be 'kendall' or 'spearman', got {metric!r}")
    f = metrics.kendall_tau if metric == "kendall" else metrics.spearman
    corr = jax.vmap(lambda s: f(s, target))(jnp.where(valid, scores, 0.0))
    ok = jnp.all(valid, axis=1) & jnp.isfinite(corr)
    return jnp.where(ok, corr, jnp.nan)


def _sign_free(corr: jax.Array) -> jax.Array:
    """Signed correlations (NaN = invalid) -> fitness: |corr|, -1 where invalid."""
    return jnp.where(jnp.isnan(corr), -1.0, jnp.abs(corr))


def task_fitness(scores: jax.Array, valid: jax.Array, target: jax.Array, metric: str = "kendall") -> jax.Array:
    """``(P,)`` |Kendall tau| (or |Spearman rho|) of each program's network scores ``(P, N)`` against ``target``
    ``(N,)``; -1 if the program is invalid on any network or the correlation is undefined (constant scores)."""
    return _sign_free(task_correlation(scores, valid, target, metric))


def combine_tasks(per_task: jax.Array, reduce: str = "min") -> jax.Array:
    """``(P, T)`` per-task fitness -> ``(P,)``: minimum (EZNAS) or mean; -1 if invalid on any task."""
    if reduce not in ("min", "mean"):
        raise ValueError(f"reduce must be 'min' or 'mean', got {reduce!r}")
    bad = jnp.any(per_task <= -1, axis=1)
    val = jnp.min(per_task, axis=1) if reduce == "min" else jnp.mean(per_task, axis=1)
    return jnp.where(bad, -1.0, val)


def make_fitness_fn(stats: pg.Statistics, task_of_network: Sequence[int], targets: Sequence[float], *,
                    metric: str = "kendall", reduce: str = "min", stack_depth: int = pg.DEFAULT_STACK_DEPTH,
                    chunk_bytes: int = pg.DEFAULT_CHUNK_BYTES) -> Callable[[Programs], jax.Array]:
    """Fitness over several tasks whose networks are all in ``stats`` (one :func:`programs.evaluate` call).

    ``task_of_network[n]`` is the task of network n (0..T-1), ``targets[n]`` its accuracy. Returns a function
    ``programs (P, capacity) -> (P,)`` fitness, jitted once per population size.

    The fitness is sign-free (|tau|, as EZNAS), so a fit program may rank networks in reverse. The returned
    function's ``with_direction`` attribute, ``programs -> ((P,) fitness, (P,) direction)``, also gives each
    program's direction: +1 / -1, the sign of its summed task correlations (with -1 the proxy to use is the negated
    score), 0 if invalid. Both share one compiled call (no new compilation for the same population size).
    """
    tasks = np.asarray(task_of_network)
    targets = np.asarray(targets, np.float32)
    if tasks.shape != (stats.num_networks,) or targets.shape != (stats.num_networks,):
        raise ValueError(f"task_of_network and targets need shape ({stats.num_networks},), got "
                         f"{tasks.shape} and {targets.shape}")
    cols = [np.flatnonzero(tasks == t) for t in np.unique(tasks)]
    if any(len(c) < 2 for c in cols):
        raise ValueError("every task needs at least 2 networks")

    @jax.jit
    def fitness_and_direction(programs: Programs, stats: pg.Statistics) -> tuple[jax.Array, jax.Array]:
        ev = pg.evaluate(programs, stats, stack_depth=stack_depth, chunk_bytes=chunk_bytes)
        corr = jnp.stack([task_correlation(ev.scores[:, c], ev.valid[:, c], jnp.asarray(targets[c]), metric)
                          for c in cols], axis=1)  # (P, T) signed, NaN = invalid
        fit = combine_tasks(_sign_free(corr), reduce)
        direction = jnp.where(fit > -1, jnp.where(jnp.sum(corr, axis=1) < 0, -1, 1), 0)
        return fit, direction

    def fitness(programs: Programs) -> jax.Array:
        return fitness_and_direction(programs, stats)[0]

    fitness.with_direction = lambda programs: fitness_and_direction(programs, stats)
    return fitness


def make_screen_fn(stats: pg.Statistics, *, require_finite: bool = True,
                   stack_depth: int = pg.DEFAULT_STACK_DEPTH) -> Callable[[Programs], jax.Array]:
    """Cheap validity screen ``programs -> (M,) bool``: shape-valid on every group of ``stats`` and (with
    ``require_finite``) finite with non-constant scores on its networks (the original's ``evaluate_mini``
    on 2 networks). Use a small ``stats`` (e.g. 2 networks per shape group)."""

    @jax.jit
    def screen(programs: Programs, stats: pg.Statistics) -> jax.Array:
        ok = jnp.all(pg.shape_check(programs, stats, stack_depth), axis=-1)
        if require_finite:
            ev = pg.evaluate(programs, stats, stack_depth=stack_depth)
            ok = ok & jnp.all(ev.valid, axis=1)
            if stats.num_networks > 1:
                ok = ok & (jnp.max(ev.scores, axis=1) > jnp.min(ev.scores, axis=1))
        return ok

    return lambda programs: screen(programs, stats)


def select_final(state: State) -> tuple[Programs, np.ndarray]:
    """The original's final picks: the fittest parent of the final population with height <= 9 and the two fittest
    hall-of-fame programs with height < 9 (unique fitness). Returns ``(programs (k,), fitness (k,))``, k <= 3."""
    n = int(state.num_parents)
    par_fit = np.asarray(state.parent_fitness)[:n]
    par_h = np.asarray(pg.heights(state.parents))[:n]
    picks, fits = [], []
    ok = np.flatnonzero((par_h <= 9) & np.isfinite(par_fit))
    if ok.size:
        best = ok[np.argmax(par_fit[ok])]
        picks.append(("parents", best))
        fits.append(par_fit[best])
    hof_fit = np.asarray(state.hof_fitness)
    hof_h = np.asarray(pg.heights(state.hof))
    for i in [i for i in range(len(hof_fit)) if np.isfinite(hof_fit[i]) and hof_h[i] < 9][:2]:
        picks.append(("hof", i))
        fits.append(hof_fit[i])
    if not picks:
        raise ValueError("no evaluated program to select")
    nodes = [np.asarray((state.parents if s == "parents" else state.hof).nodes)[i] for s, i in picks]
    lens = [np.asarray((state.parents if s == "parents" else state.hof).length)[i] for s, i in picks]
    return Programs(np.stack(nodes), np.asarray(lens)), np.asarray(fits, np.float32)


# ----------------------------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------------------------


def save_state(path: str, state: State) -> None:
    """Save a :class:`State` to ``path`` (``.npz``: every array leaf by key path, and the config as JSON)."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    arrays = {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}
    arrays["__config__"] = np.asarray(json.dumps(dataclasses.asdict(state.config)))
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    import os

    os.replace(tmp, path)


def load_state(path: str) -> State:
    """Load a :class:`State` saved by :func:`save_state` (bit-identical arrays)."""
    with np.load(path, allow_pickle=False) as z:
        config = Config(**json.loads(str(z["__config__"])))
        template = jax.eval_shape(lambda: _init(jax.random.key(0), config))
        paths, treedef = jax.tree_util.tree_flatten_with_path(template)
        leaves = []
        for p, spec in paths:
            name = jax.tree_util.keystr(p)
            if name not in z:
                raise ValueError(f"checkpoint {path} lacks {name}")
            a = z[name]
            if a.shape != spec.shape or a.dtype != spec.dtype:
                raise ValueError(f"checkpoint {path}: {name} has {a.dtype}{a.shape}, expected {spec.dtype}{spec.shape}")
            leaves.append(jnp.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, leaves)
