"""Every refusal of the core reaches the user as one clean line and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PHOTOS

OBAMA = PHOTOS / "face_recognition_examples" / "examples" / "obama.jpg"


def _faceatlas(*args: str, models: Path, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FACEATLAS_MODELS": str(models), "FACEATLAS_DATA": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "faceatlas", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("index", "{photos}", "--pack", "buffalo_l", "--library", "{library}"),
            "faceatlas models pull buffalo_l",
        ),
        (
            ("search", str(OBAMA), "--pack", "buffalo_l", "--library", "{library}"),
            "no library at",
        ),
        (("models", "pull", "nosuchpack"), "unknown model pack 'nosuchpack'"),
        (("serve", "--pack", "nosuch", "--port", "0"), "unknown model pack 'nosuch'"),
        (("serve", "--pack", "buffalo_l", "--port", "0"), "faceatlas models pull buffalo_l"),
        (("eval", "lfw", "--root", "{photos}", "--pack", "nosuch"), "unknown model pack 'nosuch'"),
    ],
)
def test_refusals_are_one_clean_line_with_exit_code_2(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "obama.jpg").write_bytes(OBAMA.read_bytes())
    filled = [a.format(photos=photos, library=tmp_path / "x.faces") for a in args]
    done = _faceatlas(*filled, models=tmp_path / "models", data=tmp_path / "data")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, done.stderr
    assert error_lines[0].startswith("Error: ") and expected in error_lines[0]
