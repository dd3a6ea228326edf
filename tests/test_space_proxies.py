"""The proxies on every search space (ProxyNet constructors), `jzcp space NAME`, and `jzcp score --space
nb101|nb301` on the NAS-Bench-Suite-Zero subsets. Small network configs keep the compilations short."""
from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jzcp import cli, proxies, scoring
from jzcp.networks import darts, macro, mobilenetv3, nb101
from jzcp.spaces import darts as darts_space
from jzcp.spaces import macro as macro_space
from jzcp.spaces import mobilenetv3 as mbv3_space
from jzcp.spaces import nb101 as nb101_space

CFG = proxies.ProxyConfig(batch_size=4, seed=3)
FAST = ("params", "flops", "nwot")  # forward only: short compilations for the default run
GRADIENT = ("params", "flops", "nwot", "grad_norm", "snip", "jacov")


def _nb101_archs(n):
    cells = nb101_space.sample(jax.random.key(0), n)
    return [nb101.encode(nb101_space.Cell(*(np.asarray(a)[i] for a in cells))) for i in range(n)]


SMALL = {
    # name: (ProxyNet, archs, exact parameter count of an arch)
    "nb101": lambda: (
        proxies.nb101_net(10, CFG, stem_channels=8, num_stacks=2, cells_per_stack=1),
        _nb101_archs(3),
        lambda a: nb101.param_count(a, nb101.NB101Config(stem_channels=8, num_stacks=2, cells_per_stack=1)),
    ),
    "nb301": lambda: (
        proxies.darts_net(10, CFG, channels=4, layers=3),
        list(np.asarray(darts_space.sample(jax.random.key(1), 3))),
        lambda a: darts.param_count(a, darts.DartsConfig(channels=4, layers=3)),
    ),
    "macro": lambda: (
        proxies.macro_net(10, CFG, stem_channels=4, head_channels=16),
        list(np.asarray(macro_space.sample(jax.random.key(2), 3))),
        lambda a: macro.param_count(a, macro.MacroConfig(stem_channels=4, head_channels=16)),
    ),
    "mobilenetv3": lambda: (
        proxies.mobilenetv3_net(10, CFG, resolution=32),
        [np.asarray(mbv3_space.flatten(a)) for a in
         (jax.tree.map(lambda v, i=i: np.asarray(v)[i], mbv3_space.sample(jax.random.key(3), 3)) for i in range(3))],
        lambda a: mobilenetv3.param_count(mbv3_space.unflatten(a),
                                          mobilenetv3.MobileNetV3NetConfig(resolution=32, num_classes=10)),
    ),
}


def _check_space(space, names, value_name):
    spec, archs, count = SMALL[space]()
    suite = jax.jit(chex.assert_max_traces(proxies.suite_fn(spec, names, CFG), n=1))
    x = jax.random.normal(jax.random.key(0), (4, *spec.image_shape))
    y = jnp.arange(4) % spec.num_classes
    values = []
    try:
        for a in archs:
            out = suite(proxies.fresh_params(spec, CFG, a), x, y, jnp.asarray(a), jax.random.key(0))
            assert float(out["params"]) * 1e6 == pytest.approx(float(count(a)), rel=1e-6), space
            assert all(np.isfinite(float(v)) for v in out.values()), (space, out)
            values.append(float(out[value_name]))
    finally:
        chex.clear_trace_counter()
    assert len(set(values)) == len(values), "different architectures must get different scores"


# nb301 in the slow job: tests/test_network_darts.py checks its forward and gradient proxies against the plain
# network (and its parameter counts) in the default run.
@pytest.mark.parametrize("space", [pytest.param(s, marks=pytest.mark.slow) if s == "nb301" else s for s in sorted(SMALL)])
def test_forward_proxies_on_every_space_compile_once_and_count_params_exactly(space):
    _check_space(space, FAST, "nwot")


@pytest.mark.slow
@pytest.mark.parametrize("space", sorted(SMALL))
def test_gradient_proxies_on_every_space(space):
    _check_space(space, GRADIENT, "grad_norm")


def test_space_net_by_name_and_unknown_space():
    assert proxies.space_net("nb301", 10, CFG, channels=4, layers=3) is proxies.darts_net(10, CFG, channels=4, layers=3)
    with pytest.raises(ValueError, match="unknown search space 'nb999'"):
        proxies.space_net("nb999", 10, CFG)


@pytest.mark.parametrize("space, bad, message", [
    ("nb301", np.full((2, 8, 2), 9), "reads state 9"),
    ("macro", np.array([0, 1, 2, 3, 0, 0, 0, 0]), "op ids"),
    ("mobilenetv3", np.zeros(45, np.int32), "d"),
])
def test_suite_rejects_malformed_architectures(space, bad, message):
    spec, _, _ = SMALL[space]()
    suite = proxies.make_suite(spec, ("params",), CFG)
    x = np.zeros((4, *spec.image_shape), np.float32)
    with pytest.raises(ValueError, match=message):  # checked before any parameter is touched
        suite(None, x, np.zeros(4, np.int32), bad, jax.random.key(0))


def test_mobilenetv3_flat_round_trip():
    arch = jax.tree.map(np.asarray, mbv3_space.sample(jax.random.key(5)))
    flat = mbv3_space.flatten(arch)
    assert flat.shape == (45,)
    back = mbv3_space.unflatten(np.asarray(flat))
    for u, v in zip(arch, back):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="45 entries"):
        mbv3_space.unflatten(np.zeros(44, np.int32))


# --- jzcp space NAME ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["nb101", "nb301", "macro", "mobilenetv3"])
def test_space_sample_prints_params_and_flops(space, capsys):
    assert cli.main(["space", space, "--sample", "2", "--seed", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and all(r["params"] > 0 and r["flops_M"] > 0 for r in rows)


def test_space_arch_round_trips(capsys):
    assert cli.main(["space", "macro", "--arch", "01202120", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["arch"] == "01202120" and row["params"] == int(macro.param_count(macro_space.parse("01202120")))
    assert cli.main(["space", "nb301", "--sample", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert cli.main(["space", "nb301", "--arch", row["genotype"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["compact"] == row["compact"]
    assert cli.main(["space", "nb101", "--sample", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert cli.main(["space", "nb101", "--arch", str(tuple(row["naslib"])), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hash"] == row["hash"]


@pytest.mark.parametrize("space, arch, message", [
    ("macro", "0120212", "8 characters"),
    ("nb101", "(0, 1, 0, 0, 0, 9)", "op ids"),
    ("nb301", "((0, 1),)", ""),
    ("mobilenetv3", '{"ks": [3], "e": [4]}', "missing key"),
])
def test_space_malformed_arch_is_a_clear_error(space, arch, message, capsys):
    assert cli.main(["space", space, "--arch", arch]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jzcp: error:") and message in err


# --- jzcp score --space nb101 | nb301 ------------------------------------------------------------------------


@pytest.mark.parametrize("space, n", [("nb101", 500), ("nb301", 1218)])
def test_benchmarks_load_with_ground_truth(shared_data, space, n):
    bench = scoring.load_benchmark(space, "cifar10", shared_data)
    assert len(bench) == n and len(set(bench.keys)) == n
    if space == "nb101":  # raw encodings: many rows prune to the same network
        from jzcp.spaces import nb101 as nb101_space

        hashes = {nb101_space.spec_hash(nb101.decode(a)) for a in bench.archs}
        assert len(hashes) == 292
    assert np.all(np.isfinite(bench.targets["val_accuracy"]))
    # The reference's params / FLOPs are the ones jzcp's networks count (units: millions / MFLOPs).
    net = nb101 if space == "nb101" else darts
    idx = np.arange(0, n, n // 7)
    ours = np.array([float(net.param_count(bench.archs[i])) / 1e6 for i in idx])
    np.testing.assert_allclose(ours, bench.reference["params"][idx], rtol=1e-6)
    assert bench.key_of(str(bench.keys[5])) == bench.keys[5]


def test_benchmark_rejects_other_datasets_and_spaces(shared_data):
    with pytest.raises(ValueError, match="cifar10 only"):
        scoring.load_benchmark("nb101", "cifar100", shared_data)
    with pytest.raises(ValueError, match="no ground truth"):
        scoring.load_benchmark("macro", "cifar10", shared_data)


def test_archs_file_for_nb301(shared_data, tmp_path):
    bench = scoring.load_benchmark("nb301", "cifar10", shared_data)
    f = tmp_path / "archs.txt"
    f.write_text(f"# two cells\n{bench.keys[7]}\n{bench.keys[3]}\n")
    np.testing.assert_array_equal(scoring.select_archs(str(f), 0, bench), [7, 3])
    f.write_text("((0, 1), (1, 2))\n")
    with pytest.raises(ValueError, match="archs.txt:1"):
        scoring.select_archs(str(f), 0, bench)


def test_score_command_on_nb301(shared_data, tmp_path, capsys):
    out = tmp_path / "nb301"
    argv = ["score", "--space", "nb301", "--proxies", "params,flops", "--archs", "sample:3", "--batch-size", "2",
            "--out", str(out), "--no-plots", "--data-dir", str(shared_data)]
    assert cli.main(argv) == 0
    report = json.loads((out / "correlations.json").read_text())
    assert report["protocol"]["space"] == "nb301" and report["num_archs"] == 3
    assert set(report["correlations"]) == {"params", "flops"}
    # params / FLOPs agree with NAS-Bench-Suite-Zero's exactly, so their rank agreement is perfect.
    assert report["reference"]["params"]["spearman"] == pytest.approx(1.0)
    assert report["reference"]["flops"]["spearman"] == pytest.approx(1.0)
    assert "agreement with NAS-Bench-Suite-Zero" in capsys.readouterr().out
    assert cli.main(argv) == 0  # resumes: nothing left to score
    assert "3 archs (3 already in" in capsys.readouterr().err
    # an interim report of a larger run: only the architectures scored so far, in the order asked for
    bench = scoring.load_benchmark("nb301", "cifar10", shared_data)
    done = scoring.select_archs("sample:3", 0, bench)
    more = np.concatenate([[i for i in range(10) if i not in done][:2], done[::-1]])
    table, report = scoring.score(bench, more, ("params", "flops"), proxies.ProxyConfig(batch_size=2, seed=42), out,
                                  data_dir=shared_data, plots=False, scored_only=True)
    assert list(table["index"]) == list(done[::-1]) and report["num_archs"] == 3


def test_score_survives_a_kill_before_the_first_row_and_refuses_a_foreign_csv(shared_data, tmp_path, capsys):
    argv = ["score", "--space", "nb301", "--proxies", "params", "--archs", "sample:2", "--batch-size", "2",
            "--no-plots", "--data-dir", str(shared_data), "--out"]
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "scores.csv").write_text("")  # what a kill during the first architecture used to leave
    assert cli.main(argv + [str(killed)]) == 0
    assert json.loads((killed / "correlations.json").read_text())["num_archs"] == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "scores.csv").write_text("name,value\nx,1\n")
    assert cli.main(argv + [str(foreign)]) != 0
    assert "not a jzcp scores CSV" in capsys.readouterr().err
