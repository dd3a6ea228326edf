"""The jzcp command line: help, data check, space inspection, clear errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jzcp import cli

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "jzcp.cli", "--help"], capture_output=True, text=True, check=True)
    for word in ("data", "space", "score", "--data-dir"):
        assert word in out.stdout


def test_data_check(shared_data, capsys):
    assert cli.main(["data", "check", "--quick", "--data-dir", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "nb201/nb201_gt.npz" in out and "usable" in out


def test_data_check_missing_dir_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["--data-dir", str(tmp_path / "nope"), "data", "check"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_space_nb201_arch(shared_data, capsys):
    assert cli.main(["space", "nb201", "--arch", BEST, "--json", "--data-dir", str(shared_data)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["arch"] == BEST and row["ops"] == [3, 3, 3, 1, 3, 3]
    assert row["params"] == 1288506 and row["nbsz_valid"] and row["connected"]
    from jzcp import data

    assert row["index"] == data.load_nb201(shared_data).index_of(BEST)


def test_space_nb201_malformed_arch(capsys):
    assert cli.main(["space", "nb201", "--arch", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"]) == 2
    assert "unknown op 'conv'" in capsys.readouterr().err


def test_space_nb201_index_round_trip(shared_data, capsys):
    assert cli.main(["space", "nb201", "--index", "123", "--json", "--data-dir", str(shared_data)]) == 0
    assert json.loads(capsys.readouterr().out)["index"] == 123


@pytest.mark.parametrize("argv", [["score", "--help"], ["space", "nb201", "--help"]])
def test_subcommand_help(argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
