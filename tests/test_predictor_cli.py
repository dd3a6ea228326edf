"""``jzcp predictor pretrain | fit | eval | predict`` end to end on tiny settings (12 NB201 cells, a 1-layer
encoder of width 8, a few epochs): files, JSON reports, resume, K-shot fine-tuning, error messages."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from jzcp.cli import build_parser, main

TINY = ["--hidden", "8", "--layers", "1", "--no-progress"]


def _run(capsys, *argv) -> tuple[int, dict | None, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    try:
        report = json.loads(cap.out)
    except json.JSONDecodeError:
        report = None
    return rc, report, cap.err


@pytest.fixture(scope="module")
def work(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("predictor_cli")
    return {"cache": str(root / "graphs"), "out": root / "run", "data": str(shared_data)}


def _common(work, families="nb201:12", out=None):
    return ["--families", families, "--graph-cache", work["cache"], "--out", str(out or work["out"]),
            "--data-dir", work["data"]]


def test_help_lists_the_actions(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["predictor", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for action in ("pretrain", "fit", "eval", "predict"):
        assert action in text


@pytest.fixture(scope="module")
def pretrained(work):
    """Run pretrain once for the module (traces 12 NB201 cells into the cache)."""
    rc = main(["predictor", "pretrain", *_common(work), *TINY, "--epochs", "2", "--batch-size", "4"])
    assert rc == 0
    return work["out"] / "encoder.msgpack"


def test_pretrain_writes_encoder_report_and_resumes(work, pretrained, capsys):
    out = work["out"]
    assert pretrained.is_file() and (out / "pretrain.ckpt").is_file()
    first = json.loads((out / "pretrain.json").read_text())
    assert first["graphs"] >= 2 and first["epochs_run"] == 2
    assert first["families"][0]["family"] == "nb201" and first["families"][0]["items"] == 12
    assert len(first["history"]["train_ntxent"]) == 2 and all(np.isfinite(first["history"]["train_ntxent"]))
    # a second run finds the finished checkpoint: no new epochs, same history
    rc, again, _ = _run(capsys, "predictor", "pretrain", *_common(work), *TINY, "--epochs", "2", "--batch-size", "4")
    assert rc == 0 and again["history"] == first["history"]


def test_fit_eval_predict_pipeline(work, pretrained, capsys):
    out = work["out"]
    rc, fit, _ = _run(capsys, "predictor", "fit", *_common(work), *TINY, "--pretrained", str(pretrained),
                      "--epochs", "20", "--batch-size", "4")
    assert rc == 0 and fit["mode"] == "frozen" and fit["items"] == 12 and fit["target_units"] == "percent"
    assert (out / "model.msgpack").is_file()
    assert len((out / "train_archs.txt").read_text().splitlines()) == 12
    assert -1.0 <= fit["in_sample"]["spearman"] <= 1.0

    rc, ev, _ = _run(capsys, "predictor", "eval", *_common(work), "--model", str(out / "model.msgpack"),
                     "--no-progress")
    assert rc == 0
    row = ev["families"]["nb201"]
    assert row["predictor"]["n"] == 12 and row["excluded"] == 0
    assert set(row["baselines"]) == {"params", "macs"}
    # params of the traced graphs rank NB201 cells much like accuracy does (a real, not a random, baseline)
    assert row["baselines"]["params"]["spearman"] > 0.3
    assert (out / "eval.json").is_file()

    rc, pr, _ = _run(capsys, "predictor", "predict", *_common(work), "--model", str(out / "model.msgpack"),
                     "--no-progress")
    assert rc == 0 and pr["families"]["nb201"]["n"] == 12
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 12 and {r["family"] for r in rows} == {"nb201"}
    pred = np.array([float(r["prediction"]) for r in rows])
    assert np.all(np.isfinite(pred)) and pred.std() > 0
    assert all(r["arch"].startswith("|") for r in rows)  # NB201 arch strings


def test_k_shot_finetune_and_exclude(work, pretrained, capsys, tmp_path):
    out = work["out"]
    rc, _, _ = _run(capsys, "predictor", "fit", *_common(work), *TINY, "--pretrained", str(pretrained),
                    "--epochs", "5", "--batch-size", "4")
    assert rc == 0
    k_out = tmp_path / "k"
    rc, fit, _ = _run(capsys, "predictor", "fit", *_common(work, out=k_out), "--no-progress",
                      "--pretrained", str(out / "model.msgpack"), "--k", "5", "--epochs", "3")
    assert rc == 0 and fit["mode"] == "finetune" and fit["items"] == 5
    rc, ev, _ = _run(capsys, "predictor", "eval", *_common(work, out=k_out), "--no-progress",
                     "--model", str(k_out / "model.msgpack"), "--exclude", str(k_out / "train_archs.txt"))
    assert rc == 0 and ev["families"]["nb201"]["excluded"] == 5 and ev["families"]["nb201"]["predictor"]["n"] == 7


def test_ridge_head_k_shot(work, pretrained, capsys, tmp_path):
    rc, fit, _ = _run(capsys, "predictor", "fit", *_common(work, out=tmp_path), "--no-progress",
                      "--pretrained", str(pretrained), "--head", "ridge", "--k", "8", "--targets", "rank")
    assert rc == 0 and fit["mode"] == "frozen" and fit["items"] == 8 and fit["config"]["adapt"]
    assert fit["config"]["targets"] == "rank"
    assert fit["ridge_lambda"] in fit["config"]["ridge_lambdas"] and -1 <= fit["ridge_loo_spearman"] <= 1
    rc, ev, _ = _run(capsys, "predictor", "eval", *_common(work, out=tmp_path), "--no-progress",
                     "--model", str(tmp_path / "model.msgpack"), "--exclude", str(tmp_path / "train_archs.txt"))
    assert rc == 0 and ev["families"]["nb201"]["predictor"]["n"] == 4
    rc, _, err = _run(capsys, "predictor", "fit", *_common(work, out=tmp_path), *TINY, "--head", "ridge")
    assert rc == 2 and "--pretrained" in err


def test_no_pretrain_ablation_fits_end_to_end(work, pretrained, capsys, tmp_path):
    rc, fit, _ = _run(capsys, "predictor", "fit", *_common(work, out=tmp_path), *TINY, "--epochs", "2",
                      "--batch-size", "4")
    assert rc == 0 and fit["mode"] == "finetune" and fit["pretrained"] is None


def test_errors_are_reported_not_raised(work, pretrained, capsys, tmp_path):
    rc, _, err = _run(capsys, "predictor", "fit", *_common(work, families="nb201:12,bogus:3", out=tmp_path), *TINY)
    assert rc == 2 and "unknown family" in err
    rc, _, err = _run(capsys, "predictor", "eval", *_common(work, out=tmp_path), "--model", str(pretrained))
    assert rc == 2 and "not a fitted model" in err
    rc, _, err = _run(capsys, "predictor", "fit", *_common(work, out=tmp_path), *TINY, "--mode", "frozen")
    assert rc == 2 and "--pretrained" in err
    rc, _, err = _run(capsys, "predictor", "eval", *_common(work, out=tmp_path), "--model", str(tmp_path / "nope"))
    assert rc == 2 and "does not exist" in err


def test_kernel_head_k_shot(work, pretrained, capsys, tmp_path):
    rc, fit, _ = _run(capsys, "predictor", "fit", *_common(work, out=tmp_path), "--no-progress",
                      "--pretrained", str(pretrained), "--head", "kernel", "--k", "8", "--targets", "rank")
    assert rc == 0 and fit["mode"] == "frozen" and fit["config"]["adapt"] and fit["items"] == 8
    assert fit["kernel_bandwidth"] in fit["config"]["kernel_bandwidths"]
    assert fit["kernel_lambda"] in fit["config"]["kernel_lambdas"] and -1 <= fit["kernel_loo_spearman"] <= 1
    rc, ev, _ = _run(capsys, "predictor", "eval", *_common(work, out=tmp_path), "--no-progress",
                     "--model", str(tmp_path / "model.msgpack"), "--exclude", str(tmp_path / "train_archs.txt"))
    assert rc == 0 and ev["families"]["nb201"]["predictor"]["n"] == 4
