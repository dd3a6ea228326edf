"""Zero-cost proxies: each against a slow, direct reference on the plain network of one cell, liveness of the
masked ops, one compilation for every cell, NaN without raising, and params / flops equal to
NAS-Bench-Suite-Zero's.

The suite under test runs the traced network (the cell as data: ops a cell lacks are computed and masked);
the references run the *concrete* network of the cell (only its own ops are built) and compute each proxy
leaf by leaf / layer by layer in numpy (float64), following the reference code (NASLib measures, ZiCo, MeCo).
Agreement on a cell with every op kind and an unreachable branch is the liveness test.
"""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import data
from jzcp import proxies as P
from jzcp.networks import layers
from jzcp.networks import nb201 as net
from jzcp.proxies import context, measures
from jzcp.spaces import nb201 as space

FAST = {"xla_backend_optimization_level": 0}  # ~3x faster XLA compiles on CPU; same numbers up to rounding
CFG = P.ProxyConfig(batch_size=8, seed=0)
SPEC = P.nb201_net(10, CFG, channels=4, cells_per_stage=1, image_shape=(8, 8, 3))
ALL = tuple(n for n in P.PROXIES if not n.startswith("eznas_a"))  # EZNAS-A variants: tests/test_statistics.py
# Every op kind; edge (2,3) is none, so the pool on (1,2) and the conv1x1 on (0,2) sit on an unreachable branch
# (they exist in the reference network; their gradients are zero).
MIXED = np.array([space.CONV3X3, space.CONV1X1, space.AVGPOOL, space.SKIP, space.CONV3X3, space.NONE])
LABELS = np.array([0, 0, 1, 1, 1, 2, 3, 4], np.int32)  # classes of 2 and 3 samples and singletons (epe_nas)


@pytest.fixture(scope="module")
def params():
    model = net.NB201Network(net.NB201Config(channels=4, cells_per_stage=1))
    init = jax.jit(functools.partial(model.init, mutable=["params"]), compiler_options=FAST)
    return init(jax.random.key(3), jnp.zeros((2, 8, 8, 3)), jnp.zeros(6, jnp.int32))["params"]


@pytest.fixture(scope="module")
def batch():
    x = jax.random.normal(jax.random.key(1), (8, 8, 8, 3), jnp.float32)
    return x, jnp.asarray(LABELS)


@pytest.fixture(scope="module")
def suite():
    """All 15 proxies, jitted once for the module: a second trace fails every test that uses it."""
    jitted = jax.jit(chex.assert_max_traces(P.suite_fn(SPEC, ALL, CFG), n=1), compiler_options=FAST)

    def run(params, x, y, arch, key=jax.random.key(7)):
        with jax.enable_x64(True):  # synflow in float64
            return {k: float(v) for k, v in jitted(params, x, y, jnp.asarray(arch, jnp.int32), key).items()}

    return run


# --- references on the concrete network ---------------------------------------------------------------------


def _path_names(path):
    return tuple(str(getattr(k, "key", k)) for k in path)


def _used(names, cell) -> bool:
    """Does the plain network of ``cell`` have this parameter? (Written out here, independent of param_mask.)"""
    for a, b in zip(names, names[1:]):
        if a.startswith("edge") and b in ("conv1x1", "conv3x3"):
            return int(cell[int(a[4:])]) == (space.CONV1X1 if b == "conv1x1" else space.CONV3X3)
    return True


def _used_kernels(tree, cell):
    """[(names, leaf)] of the conv / linear weights of the cell's plain network."""
    return [(_path_names(p), np.asarray(v, np.float64)) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
            if _path_names(p)[-1] == "kernel" and _used(_path_names(p), cell)]


def _tree_get(tree, names):
    for n in names:
        tree = tree[n]
    return tree


def _concrete(cell, bn=True):
    model = SPEC.model if bn else SPEC.model_nobn
    ops = tuple(int(o) for o in cell)
    return lambda variables, x, **kw: model.apply(variables, x, ops, **kw)


def _raw(params, x, y, key, cell):
    """Everything the references need from the concrete network of ``cell``, in one jitted call."""
    apply = _concrete(cell)
    ce = lambda p, xx, yy: context.cross_entropy(apply({"params": p}, xx), yy)
    g = jax.grad(ce)(params, x, y)
    pert = jax.eval_shape(lambda: apply({"params": params}, x, mutable=[layers.PERTURBATIONS])[1])
    pert = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), pert[layers.PERTURBATIONS])
    gp = jax.grad(lambda pt: context.cross_entropy(apply({"params": params, layers.PERTURBATIONS: pt}, x), y))(pert)

    # GraSP's Hessian-vector product, reverse over reverse (the suite uses forward over reverse), the Hessian
    # taken w.r.t. the conv / linear weights only.
    is_k = jax.tree_util.tree_map_with_path(lambda p, v: _path_names(p)[-1] == "kernel", params)
    g_k = jax.tree.map(lambda v, k: v if k else jnp.zeros_like(v), g, is_k)
    hg = jax.grad(lambda p: sum(jnp.vdot(jax.lax.stop_gradient(a), b) for a, b in
                                zip(jax.tree.leaves(g_k), jax.tree.leaves(jax.grad(ce)(p, x, y)))))(params)

    jac = jax.grad(lambda xx: jnp.sum(apply({"params": params}, xx)))(x)
    _, taps = apply({"params": params}, x, mutable=[layers.TAPS])
    half = x.shape[0] // 2
    zico = [jax.grad(ce)(params, x[:half], y[:half]), jax.grad(ce)(params, x[half:], y[half:])]

    k_w, k_x = jax.random.split(jax.random.fold_in(key, context.STREAM_ZEN))
    zp = measures.zen_params(params, k_w)
    x1, x2 = measures.zen_inputs(k_x, x.shape, CFG.zen_mixup_gamma)
    _, zt1 = apply({"params": zp}, x1, mutable=[layers.TAPS])
    _, zt2 = apply({"params": zp}, x2, mutable=[layers.TAPS])
    xm = jax.random.normal(jax.random.fold_in(key, context.STREAM_MECO), (1, *CFG.meco_input_hw, 3), jnp.float32)
    _, mt = apply({"params": params}, xm, mutable=[layers.TAPS])
    return dict(g=g, gp=gp, hg=hg, jac=jac, taps=taps[layers.TAPS], zico=zico, zen=(zt1[layers.TAPS], zt2[layers.TAPS]),
                meco=mt[layers.TAPS])


def _synflow_raw(params, cell):
    apply = _concrete(cell, bn=False)
    p64 = jax.tree.map(lambda v: jnp.abs(v).astype(jnp.float64), params)
    return p64, jax.grad(lambda p: jnp.sum(apply({"params": p}, jnp.ones((1, 8, 8, 3), jnp.float64))))(p64)


def _naslib_epe(jacob: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Port of NASLib ``epe_nas.eval_score_perclass`` (including its try / except)."""
    k = 1e-5
    per_class = {}
    for i, label in enumerate(labels):
        per_class[label] = np.vstack((per_class[label], jacob[i])) if label in per_class else jacob[i]
    scores = {}
    for c in per_class:
        try:
            corrs = np.array(np.corrcoef(per_class[c]))
            s = np.sum(np.log(abs(corrs) + k))
            if n_classes > 100:
                s /= len(corrs)
        except Exception:  # noqa: BLE001 -- the reference skips classes whose len() fails (one sample)
            continue
        scores[c] = s
    if n_classes <= 100:
        return float(sum(np.absolute(v) for v in scores.values()))
    score = sum(np.absolute(scores[a] - scores[b]) for a in scores for b in scores)
    return float(score / len(scores)) if scores else 0.0


def _reference(params, x, y, cell, key=jax.random.key(7)) -> dict[str, float]:
    raw = jax.jit(functools.partial(_raw, cell=cell), compiler_options=FAST)(params, x, y, key)
    raw = jax.tree.map(lambda v: np.asarray(v, np.float64), raw)
    ref = {}
    g = dict(_used_kernels(raw["g"], cell))
    w = dict(_used_kernels(params, cell))
    ref["grad_norm"] = sum(np.linalg.norm(g[n].ravel()) for n in w)
    ref["snip"] = sum(np.abs(w[n] * g[n]).sum() for n in w)
    ref["plain"] = sum((w[n] * g[n]).sum() for n in w)
    ref["l2_norm"] = sum(np.linalg.norm(v.ravel()) for v in w.values())
    hg = dict(_used_kernels(raw["hg"], cell))
    ref["grasp"] = -sum((w[n] * hg[n]).sum() for n in w)

    # fisher: each conv / linear output, its fan-in read off the layer's own weight.
    fisher = 0.0
    for p, gnk in jax.tree_util.tree_flatten_with_path(raw["gp"])[0]:
        names = _path_names(p)
        if names[-1] != layers.CONV_OUTPUT:
            continue
        owner = _tree_get(params, names[:-1])
        if "kernel" in owner:
            kernel = owner["kernel"]
        else:  # an edge's conv: the kernel of the op the cell has on that edge
            op = int(cell[int(names[-2][4:])])
            kernel = owner["conv1x1" if op == space.CONV1X1 else "conv3x3"]["kernel"]
        fisher += 0.5 * np.mean(gnk**2, axis=0).sum() * np.prod(kernel.shape[:-1])
    ref["fisher"] = fisher

    jac = raw["jac"].reshape(len(y), -1)
    v = np.linalg.eig(np.corrcoef(jac))[0].real  # NASLib jacov.eval_score
    ref["jacov"] = -np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5))
    ref["epe_nas"] = _naslib_epe(jac, np.asarray(y), SPEC.num_classes)

    kmat = np.zeros((len(y), len(y)))
    for t in layers.taps_of(raw["taps"], layers.ReluTap):  # NASLib nwot's hooks on every nn.ReLU
        c = (t.pre.reshape(len(y), -1) > 0).astype(np.float64)
        kmat += c @ c.T + (1 - c) @ (1 - c).T
    ref["nwot"] = np.linalg.slogdet(kmat)[1]

    zt1, zt2 = raw["zen"]
    (f1,), (f2,) = [[t.x for t in layers.taps_of(t, layers.PoolTap)] for t in (zt1, zt2)]
    zen = np.log(np.mean(np.abs(f1 - f2).sum(axis=(1, 2, 3))))
    for a, b in zip(layers.taps_of(zt1, layers.BNTap), layers.taps_of(zt2, layers.BNTap)):
        running = np.ones_like(a.var)
        for var in (a.var, b.var):  # PyTorch's train-mode update, momentum 0.1, unbiased variance
            running = 0.9 * running + 0.1 * var * a.count / (a.count - 1)
        zen += np.log(np.sqrt(np.mean(running)))
    ref["zen"] = zen

    g1, g2 = (dict(_used_kernels(t, cell)) for t in raw["zico"])  # port of ZiCo's caculate_zico
    zico = 0.0
    for n in w:
        grads = np.stack([g1[n].ravel(), g2[n].ravel()])
        std = np.std(grads, axis=0)
        nz = np.nonzero(std)[0]
        tmpsum = np.sum(np.mean(np.abs(grads), axis=0)[nz] / std[nz])
        if tmpsum != 0:
            zico += np.log(tmpsum)
    ref["zico"] = zico

    meco = []  # MeCo's hook: one term per module output, NaN / Inf correlations zeroed, min real eigenvalue
    for t in layers.taps_of(raw["meco"], layers.FeatureTap):
        fea = np.moveaxis(t.x[0], -1, 0).reshape(t.x.shape[-1], -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(fea)
        corr[~np.isfinite(corr)] = 0
        meco += [np.min(np.linalg.eig(corr)[0].real)] * int(t.weight)
    ref["meco"] = float(np.sum(meco))

    with jax.enable_x64(True):
        p64, g64 = jax.jit(functools.partial(_synflow_raw, cell=cell), compiler_options=FAST)(params)
        wa, ga = dict(_used_kernels(p64, cell)), dict(_used_kernels(g64, cell))
        ref["synflow"] = np.log(sum(np.abs(wa[n] * ga[n]).sum() for n in wa))

    ref["params"] = int(net.param_count(cell, net.NB201Config(channels=4, cells_per_stage=1))) / 1e6
    ref["flops"] = _tensorwatch_flops(cell, c=4, n=1, hw=8, classes=10) / 1e6
    return ref


def _tensorwatch_flops(cell, c=16, n=5, hw=32, classes=10) -> float:
    """FLOPs of the NB201 network of ``cell`` as tensorwatch's ModelStats counts them (batch 1), written out
    module by module: conv k*k*Cin*Cout*Hout*Wout, BN(affine) 2*numel, ReLU numel, AvgPool k*k*numel_out,
    AdaptiveAvgPool C*(H+1)*(W+1), Linear in*out."""
    total = 3 * 3 * 3 * c * hw * hw + 2 * c * hw * hw  # stem conv + BN
    for stage in range(3):
        ch, s = c * 2**stage, hw // 2**stage
        px = ch * s * s
        if stage:
            cin, sin = ch // 2, 2 * s
            total += cin * sin * sin + 9 * cin * ch * s * s + 2 * px  # conv_a: ReLU, conv (stride 2), BN
            total += px + 9 * ch * px + 2 * px  # conv_b
            total += 4 * cin * s * s + cin * px  # shortcut AvgPool2d(2) + conv1x1
        per_op = {space.CONV1X1: px + ch * px + 2 * px, space.CONV3X3: px + 9 * ch * px + 2 * px, space.AVGPOOL: 9 * px}
        total += n * sum(per_op.get(int(o), 0) for o in cell)
    last = c * 4 * (hw // 4) ** 2
    return float(total + 2 * last + last + c * 4 * (hw // 4 + 1) ** 2 + c * 4 * classes)


# --- tests ------------------------------------------------------------------------------------------------------


def test_every_proxy_matches_its_reference_on_a_masked_cell(params, batch, suite):
    """The traced suite (ops the cell lacks computed and masked) equals the direct references on the plain
    network of a cell with every op kind and an unreachable branch."""
    x, y = batch
    got = suite(params, x, y, MIXED)
    ref = _reference(params, x, y, MIXED)
    assert set(got) == set(ALL) == set(ref)
    for name in ALL:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert got["grad_norm"] > 0 and got["grasp"] != 0 and got["fisher"] > 0


def test_meco_counts_the_reference_modules(params, batch):
    """MeCo multiplicities = modules of the reference PyTorch NB201 model emitting each output (stem 1+3,
    per conv op ReLU 1 + conv 1 + BN 3, pool 2, skip 1, cell 1 (+1 last of stage), reduction 14, final 3)."""
    _, taps = _concrete(MIXED)({"params": params}, batch[0], mutable=[layers.TAPS])
    total = sum(float(t.weight) for t in layers.taps_of(taps[layers.TAPS], layers.FeatureTap))
    per_cell = 5 + 5 + 5 + 2 + 1 + 0 + 2  # conv3x3, conv1x1, conv3x3, pool, skip, none, cell output x2
    assert total == 4 + 3 * per_cell + 2 * 14 + 3
    relus = layers.taps_of(taps[layers.TAPS], layers.ReluTap)
    assert len(relus) == 3 * 3 + 2 * 2 + 1  # conv ops, reduction blocks, final ReLU (nwot's nn.ReLU hooks)


def test_one_compilation_for_many_cells_and_disconnected_cells_give_nan(params, batch, suite):
    x, y = batch
    cells = np.asarray(space.sample(jax.random.key(11), 3))
    none = np.zeros(6, np.int32)  # no input -> output path: constant logits
    outs = [suite(params, x, y, c) for c in (*cells, none)]  # assert_max_traces(n=1) inside the fixture
    for o in outs[:-1]:
        assert all(np.isfinite(v) for k, v in o.items() if k not in ("jacov", "epe_nas", "nwot", "zen"))
    dead = outs[-1]
    for name in ("jacov", "epe_nas", "nwot", "zen"):  # undefined (NASLib: its -1e8 sentinel)
        assert np.isnan(dead[name]), name
    for name in ("grad_norm", "snip", "grasp", "plain", "synflow", "zico"):  # no gradient reaches a weight
        assert dead[name] == 0.0, name
    assert dead["params"] > 0 and dead["flops"] > 0 and dead["l2_norm"] > 0


def test_non_finite_input_gives_nan_without_raising(params, batch, suite):
    x, y = batch
    out = suite(params, x.at[0, 0, 0, 0].set(jnp.nan), y, MIXED)
    for name in ("grad_norm", "snip", "fisher", "jacov", "nwot", "epe_nas", "plain", "grasp", "zico"):
        assert np.isnan(out[name]), name  # every proxy that reads the batch
    for name in ("params", "flops", "l2_norm", "synflow", "zen", "meco"):
        assert np.isfinite(out[name]), name  # their inputs are their own


@pytest.mark.parametrize("n_classes", [10, 120])
def test_epe_nas_formula_matches_naslib(n_classes):
    """Both of NASLib's branches (<= 100 classes: sum |s_c|; > 100: pairwise differences, singletons skipped)."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(12, 20))
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5])
    got = float(measures.epe_nas_score(jnp.asarray(rows, jnp.float32), jnp.asarray(labels), n_classes))
    np.testing.assert_allclose(got, _naslib_epe(rows, labels, n_classes), rtol=1e-4)


def test_params_and_flops_equal_nas_bench_suite_zero(shared_data):
    """On 300 of the 9,445 NAS-Bench-Suite-Zero cells, at the real size (C=16, N=5, CIFAR-10, 32 x 32)."""
    ref = data.load_nb201_proxies("c10", "nbsz", shared_data)
    rows = np.flatnonzero(ref.mask)[np.random.default_rng(0).choice(ref.mask.sum(), 300, replace=False)]
    cells = np.stack([space.parse(s) for s in ref.arch_str[rows]])
    cfg = P.ProxyConfig()
    spec = P.nb201_net(10, cfg)
    shapes = jax.eval_shape(spec.init, jax.random.key(0))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)  # values unused by params / flops
    fn = P.suite_fn(spec, ["params", "flops"], cfg)
    x, y = jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,), jnp.int32)
    out = jax.jit(jax.vmap(fn, in_axes=(None, None, None, 0, None)), compiler_options=FAST)(
        zeros, x, y, jnp.asarray(cells), jax.random.key(0))
    np.testing.assert_allclose(np.asarray(out["params"]), ref.proxy("params")[rows], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out["flops"]), ref.proxy("flops")[rows], rtol=1e-6)
    manual = np.array([_tensorwatch_flops(c) for c in cells]) / 1e6
    np.testing.assert_allclose(manual, ref.proxy("flops")[rows], rtol=1e-9)


def test_suite_validates_its_inputs(params, batch):
    x, y = batch
    with pytest.raises(ValueError, match="unknown proxy 'synflo'"):
        P.make_suite(SPEC, ["synflow", "synflo"], CFG)
    with pytest.raises(ValueError, match="duplicate"):
        P.make_suite(SPEC, ["nwot", "nwot"], CFG)
    suite = P.make_suite(SPEC, ["params"], CFG)
    with pytest.raises(ValueError, match=r"architecture must have shape \(6,\)"):
        suite(params, x, y, np.zeros(5, np.int32), jax.random.key(0))
    with pytest.raises(ValueError, match=r"op ids must be integers in \[0, 5\)"):
        suite(params, x, y, np.array([0, 1, 2, 3, 4, 5]), jax.random.key(0))
    with pytest.raises(ValueError, match="images must have shape"):
        suite(params, x[..., :2], y, MIXED, jax.random.key(0))
    with pytest.raises(ValueError, match="labels must have shape"):
        suite(params, x, y[:3], MIXED, jax.random.key(0))
    with pytest.raises(ValueError, match="ProxyConfig.input"):
        P.ProxyConfig(input="images")


def test_registry_metadata_and_protocol_record():
    assert set(P.NBSZ_PROXIES) <= set(P.PROXIES) and len(P.PROXIES) == 18
    assert {"eznas_a", "eznas_a_t3gn", "eznas_a_thirdparty"} <= set(P.PROXIES)
    assert P.PROXIES["synflow"].needs_bn_free and not P.PROXIES["nwot"].needs_labels
    assert P.PROXIES["grad_norm"].needs_labels and P.PROXIES["jacov"].reads_batch
    assert all(p.description for p in P.PROXIES.values())
    d = CFG.to_dict()
    assert d["batch_size"] == 8 and d["synflow_float64"] is True and d["meco_input_hw"] == [64, 64]


def test_proxy_name_sets():
    from jzcp.scoring import resolve_proxy_names

    assert resolve_proxy_names("all") == tuple(P.PROXIES)
    assert resolve_proxy_names("nbsz") == tuple(P.NBSZ_PROXIES) and len(P.NBSZ_PROXIES) == 13
    assert resolve_proxy_names(" synflow, nwot ") == ("synflow", "nwot")
    with pytest.raises(ValueError, match="unknown proxy 'synflo'"):
        resolve_proxy_names("synflo")
