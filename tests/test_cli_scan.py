"""`faceatlas scan` and `faceatlas models` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
from click.testing import CliRunner

from faceatlas.cli.main import cli

EXAMPLES = "data/photos/face_recognition_examples/examples"


def test_scan_prints_json_and_writes_annotated_copies(shared: Path, tmp_path: Path) -> None:
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not a photo")
    images = [shared / EXAMPLES / "two_people.jpg", shared / EXAMPLES / "obama.jpg", not_an_image]
    result = CliRunner().invoke(cli, ["scan", *map(str, images), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pack"] == "sface"
    two, one, bad = report["images"]
    assert len(two["faces"]) == 2 and len(one["faces"]) == 1
    assert {"box", "score", "landmarks", "age", "gender", "pose"} <= set(one["faces"][0])
    assert "embedding" not in one["faces"][0]
    assert bad["error"].startswith("UnsupportedImageError")
    annotated = cv2.imread(two["annotated"])
    assert annotated.shape[:2] == (two["height"], two["width"])


def test_scan_fails_when_every_image_fails(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    result = CliRunner().invoke(cli, ["scan", str(empty)])
    assert result.exit_code == 1
    assert "EmptyImageError" in result.stdout


def test_console_script_lists_packs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "faceatlas", "models", "list"], capture_output=True, text=True, check=True
    )
    for pack in ("sface", "buffalo_l", "buffalo_s", "buffalo_sc", "antelopev2"):
        assert pack in out.stdout


def test_models_verify_bundled_pack() -> None:
    result = CliRunner().invoke(cli, ["models", "verify", "sface"])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "mismatch" not in result.output
