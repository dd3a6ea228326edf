"""Shared fixtures: the real benchmark data (``../shared/data`` or ``$JZCP_DATA``), skipped cleanly when absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA = Path(os.environ.get("JZCP_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (REAL_DATA / "nb201" / "nb201_gt.npz").is_file():
        pytest.skip(f"shared benchmark data not found at {REAL_DATA}")
    return REAL_DATA
