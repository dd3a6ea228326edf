"""``jzcp evolve``: task split (held-out architectures never in a fitness), argument checks, and -- on a tiny
setting (pop 6, 2 generations, 2 tasks x 3 nets, a 4-channel 1-cell-per-stage NB201 network) -- the whole command:
outputs, and a run stopped after 1 generation (or killed with SIGKILL) then resumed ends bit-identical to a
straight run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jzcp import cli
from jzcp import evolve_cli as E

TINY = ["--pop", "6", "--tasks", "2", "--nets-per-task", "3", "--channels", "4", "--cells-per-stage", "1"]


def test_help_lists_evolve():
    out = subprocess.run([sys.executable, "-m", "jzcp.cli", "--help"], capture_output=True, text=True, check=True)
    assert "evolve" in out.stdout
    with pytest.raises(SystemExit) as e:
        cli.main(["evolve", "--help"])
    assert e.value.code == 0


def test_split_and_tasks(shared_data):
    fit, held = E.split_pool(15625)
    assert len(fit) == 5625 and len(held) == 10000 and not set(fit) & set(held)
    assert np.array_equal(E.split_pool(15625)[0], fit)  # fixed, whatever the seeds of a run
    tasks = E.make_tasks(["nb201"], 4, 20, seed=3, data_dir=shared_data)
    assert len(tasks) == 80 and len(set(tasks.keys)) == 80
    assert set(tasks.index) <= set(fit) and np.bincount(tasks.task).tolist() == [20] * 4
    from jzcp import data

    gt = data.load_nb201(shared_data)
    np.testing.assert_allclose(tasks.target, gt.target("c10valid_val")[tasks.index])
    assert all(gt.arch_str[i] == k for i, k in zip(tasks.index, tasks.keys))
    other = E.make_tasks(["nb201"], 4, 20, seed=4, data_dir=shared_data)
    assert set(other.keys) != set(tasks.keys)
    ho = E.holdout_tasks("nb201", 1000, seed=0, data_dir=shared_data)
    assert len(ho) == 1000 and set(ho.index) <= set(held)


def test_tasks_on_nb101_and_nb301(shared_data):
    from jzcp.scoring import load_benchmark

    for space, n in (("nb101", 500), ("nb301", 1218)):
        bench = load_benchmark(space, "cifar10", shared_data)
        tasks = E.make_tasks([space], 2, 10, seed=0, data_dir=shared_data)
        np.testing.assert_allclose(tasks.target, bench.targets["val_accuracy"][tasks.index])
        assert set(tasks.target_name) == {"val_accuracy"} and set(tasks.space) == {space}
        whole = E.holdout_tasks(space, 0, data_dir=shared_data, whole_space=True)
        assert len(whole) == n and len(E.holdout_tasks(space, 0, data_dir=shared_data)) < n
    with pytest.raises(ValueError, match="cifar10 only"):
        E.holdout_tasks("nb101", 0, dataset="cifar100", data_dir=shared_data)


def test_holdout_scores_checkpoint_resumes(tmp_path, shared_data, monkeypatch):
    from jzcp import statistics as st

    tasks = E.holdout_tasks("nb201", 5, seed=0, data_dir=shared_data)
    proto = E.StatsProtocol(channels=4, cells_per_stage=1)
    forms = ["mean_abs(det(act_D))", "frobenius_norm(sigmoid(logdet(sign(inpactgrad_D))))"]
    ckpt = tmp_path / "scores.json"
    first = E.evaluate_holdout(forms, tasks, proto, data_dir=shared_data, checkpoint=ckpt)
    saved = json.loads(ckpt.read_text())
    assert saved["formulas"] == forms and len(saved["scores"]) == 5

    calls = []
    make = st.make_program_scorer

    def counting(*a, **k):
        scorer = make(*a, **k)
        return lambda *x: calls.append(1) or scorer(*x)

    monkeypatch.setattr(st, "make_program_scorer", counting)
    assert E.evaluate_holdout(forms, tasks, proto, data_dir=shared_data, checkpoint=ckpt) == first
    assert calls == []  # everything came from the file
    for name in list(saved["scores"])[:2]:  # as if killed before these two were saved
        del saved["scores"][name]
    ckpt.write_text(json.dumps(saved))
    assert E.evaluate_holdout(forms, tasks, proto, data_dir=shared_data, checkpoint=ckpt) == first
    assert len(calls) == 2
    with pytest.raises(ValueError, match="other formulas"):
        E.evaluate_holdout(forms[:1], tasks, proto, data_dir=shared_data, checkpoint=ckpt)
    ckpt.write_text("{")
    with pytest.raises(ValueError, match="unreadable"):
        E.evaluate_holdout(forms, tasks, proto, data_dir=shared_data, checkpoint=ckpt)


def test_argument_errors(tmp_path, shared_data, capsys):
    base = ["evolve", *TINY, "--generations", "1", "--data-dir", str(shared_data), "--cache-dir", str(tmp_path / "c")]
    assert cli.main([*base, "--out", str(tmp_path / "a"), "--spaces", "nb999"]) == 2
    assert "not supported" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "b"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "c2"), "--generations", "0"]) == 2
    with pytest.raises(ValueError, match="nets-per-task"):
        E.make_tasks(["nb201"], 2, 1, seed=0, data_dir=shared_data)


def test_screen_networks_cover_shapes():
    def net(*sigs):
        return [{"inpact_D": np.zeros((1, *s[0])), "wt": np.zeros((1, *s[1])), "act_D": np.zeros((1, *s[2]))}
                for s in sigs]

    a, b, c = ((1, 2, 4, 4), (2, 2, 1, 1), (1, 2, 4, 4)), ((1, 2, 4, 4), (2, 2, 3, 3), (1, 2, 4, 4)), \
        ((1, 4, 2, 2), (4, 4, 3, 3), (1, 4, 2, 2))
    assert E.screen_networks([net(a), net(a, b), net(c)]) == [1, 2]


def _run(args) -> int:
    return cli.main(["evolve", *TINY, *args, "--quiet"])


def _state_arrays(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _same(a: dict, b: dict) -> bool:
    def eq(x, y):
        return np.array_equal(x, y, equal_nan=x.dtype.kind == "f")

    return a.keys() == b.keys() and all(eq(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_evolve_command_outputs_and_resume(tmp_path, shared_data):
    common = ["--data-dir", str(shared_data), "--cache-dir", str(tmp_path / "cache"), "--seed", "5"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _run([*common, "--generations", "2", "--out", str(straight), "--holdout", "12"]) == 0
    hof = json.loads((straight / "hall_of_fame.json").read_text())
    assert hof["generations"] == 2 and hof["hall_of_fame"] and 1 <= len(hof["final_picks"]) <= 3
    from jzcp import programs as pg

    for entry in hof["hall_of_fame"]:
        assert pg.to_formula(pg.parse(entry["formula"])) == entry["formula"] and -1 < entry["fitness"] <= 1
    assert hof["holdout"]["n"] == 12 and pg.EZNAS_A in hof["holdout"]["results"]
    assert all(p["direction"] in (-1, 1) for p in hof["final_picks"]) and hof["eznas_a_direction"] in (-1, 1)
    for r in hof["holdout"]["results"].values():  # held-out correlations of the proxy = score x direction
        assert r["oriented_spearman"] == pytest.approx(r["spearman"] * r["direction"])
    history = json.loads((straight / "history.json").read_text())
    assert [h["generation"] for h in history] == [0, 1]
    assert (straight / "fitness.png").stat().st_size > 1000
    assert len(json.loads((straight / "tasks.json").read_text())) == 6
    assert _run([*common, "--generations", "2", "--out", str(straight)]) == 2  # no silent overwrite

    # stop after 1 generation, then resume to 2: bit-identical to the straight run
    assert _run([*common, "--generations", "1", "--out", str(split)]) == 0
    assert _run([*common, "--generations", "2", "--out", str(split), "--resume"]) == 0
    a, b = _state_arrays(straight / "state.npz"), _state_arrays(split / "state.npz")
    assert _same(a, b)
    hof_b = json.loads((split / "hall_of_fame.json").read_text())
    assert hof_b["hall_of_fame"] == hof["hall_of_fame"] and hof_b["final_picks"] == hof["final_picks"]
    assert [h["generation"] for h in json.loads((split / "history.json").read_text())] == [0, 1]
    # resuming with another search setting is refused
    assert _run([*common, "--generations", "3", "--out", str(split), "--resume", "--metric", "spearman"]) == 2

    # SIGKILL in the middle of an 8-generation run, then --resume: same final state as an uninterrupted run
    killed, full = tmp_path / "killed", tmp_path / "full"
    gens = ["--generations", "8"]
    assert _run([*common, *gens, "--out", str(full)]) == 0
    cmd = [sys.executable, "-m", "jzcp.cli", "evolve", *TINY, *common, *gens, "--out", str(killed), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None and not (killed / "state.npz").is_file():
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # right after the first checkpoint (or earlier)
    proc.wait()
    if (killed / "state.npz").is_file():
        with np.load(killed / "state.npz") as z:
            assert int(z[".generation"]) < 8  # the kill did interrupt the run
        assert _run([*common, *gens, "--out", str(killed), "--resume"]) == 0
    else:  # killed before the first checkpoint: start again
        assert _run([*common, *gens, "--out", str(killed)]) == 0
    assert _same(_state_arrays(full / "state.npz"), _state_arrays(killed / "state.npz"))
