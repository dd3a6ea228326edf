"""The notebooks in ``notebooks/`` run top to bottom without errors (nbclient, a fresh kernel, small data).

Each is executed in a temporary working directory with ``$JZCP_DATA`` pointing at the shared data; a
notebook that raises fails the test with the failing cell's traceback. Marked slow (about a minute per notebook
on the 2-core CPU): ``python -m pytest -m slow tests/test_notebooks.py``."""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow  # about a minute each on the 2-core CPU: python -m pytest -m slow tests/test_notebooks.py
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, shared_data, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("JZCP_DATA", str(shared_data))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_there_are_notebooks():
    assert any(p.name == "predictor_quickstart.ipynb" for p in NOTEBOOKS)
