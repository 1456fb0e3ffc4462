"""Shared fixtures: the shared data folder and one engine per test session (models load once)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(
    os.environ.get("FACEATLAS_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared")
).resolve()
PHOTOS = SHARED / "data" / "photos"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED}; set FACEATLAS_SHARED")
    return SHARED


@pytest.fixture(scope="session")
def photos(shared: Path) -> Path:
    return shared / "data" / "photos"


@pytest.fixture(scope="session")
def engine():
    """The default ``sface`` engine, loaded once for the whole test session."""
    from faceatlas.engine import Engine

    return Engine("sface")
