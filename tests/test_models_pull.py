"""`faceatlas models pull` against a local HTTP server, and an InsightFace-layout pack loaded from the
model directory (SCRFD-500M from ../shared plus ONNX stand-ins built by the test)."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from faceatlas.cli.main import cli
from faceatlas.engine import Engine
from faceatlas.errors import ModelError, ModelIntegrityError
from faceatlas.models.packs import get_pack
from faceatlas.models.store import pull, verify_pack
from tests.onnx_builders import arcface_like, genderage_like, landmark106_like


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Iterator[tuple[str, str]]:
    """A buffalo_s-shaped zip (with a top-level folder, like antelopev2.zip) on a loopback HTTP server."""
    root = tmp_path_factory.mktemp("served")
    build = tmp_path_factory.mktemp("build")
    shutil.copy(shared / "models/scrfd/det_500m.onnx", build / "det_500m.onnx")
    arcface_like(build / "w600k_mbf.onnx")
    genderage_like(build / "genderage.onnx")
    landmark106_like(build / "2d106det.onnx")
    archive = root / "buffalo_s.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in sorted(build.iterdir()):
            bundle.write(file, f"buffalo_s/{file.name}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *args: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/buffalo_s.zip", digest
    finally:
        server.shutdown()


def test_good_hash_installs(served: tuple[str, str], tmp_path: Path) -> None:
    url, digest = served
    result = CliRunner().invoke(
        cli, ["models", "pull", "buffalo_s", "--model-dir", str(tmp_path), "--url", url, "--sha256", digest]
    )
    assert result.exit_code == 0, result.output
    installed = sorted(p.name for p in (tmp_path / "buffalo_s").iterdir())
    assert installed == ["2d106det.onnx", "det_500m.onnx", "genderage.onnx", "w600k_mbf.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["buffalo_s"]  # no temporary leftovers
    statuses = {c.filename: c.status for c in verify_pack(get_pack("buffalo_s"), tmp_path)}
    assert statuses["det_500m.onnx"] == "ok"  # byte-identical to the official file
    assert statuses["w600k_mbf.onnx"] == "size mismatch"  # our stand-in is not the official model
    assert statuses["1k3d68.onnx"] == "missing"


def test_bad_hash_is_rejected_and_leaves_nothing(served: tuple[str, str], tmp_path: Path) -> None:
    url, _ = served
    with pytest.raises(ModelIntegrityError, match="sha256"):
        pull(get_pack("buffalo_s"), tmp_path, url=url, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(
        cli, ["models", "pull", "buffalo_s", "--model-dir", str(tmp_path), "--url", url, "--sha256", "1" * 64]
    )
    assert result.exit_code != 0 and "does not match" in result.output
    assert list(tmp_path.iterdir()) == []


def test_custom_url_needs_a_hash_and_missing_files_fail(served: tuple[str, str], tmp_path: Path) -> None:
    url, _ = served
    with pytest.raises(ModelError, match="--sha256"):
        pull(get_pack("buffalo_s"), tmp_path, url=url)
    with pytest.raises(ModelError, match="HTTP 404"):
        pull(get_pack("buffalo_s"), tmp_path, url=url + ".missing", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_insightface_pack_runs_from_the_model_dir(
    served: tuple[str, str], tmp_path: Path, shared: Path
) -> None:
    url, digest = served
    pull(get_pack("buffalo_s"), tmp_path, url=url, sha256=digest)
    engine = Engine("buffalo_s", model_dir=tmp_path)
    assert engine.pack.id == "buffalo_s" and engine.pack.embedding_size == 512
    assert {"age", "gender", "landmarks2d106"} <= set(engine.pack.plugins)
    photo = shared / "data/photos/face_recognition_examples/examples/two_people.jpg"
    faces = engine.analyze(photo, plugins="age,gender,landmarks2d106,pose")
    assert len(faces) == 2
    for face in faces:
        assert face.pack == "buffalo_s"
        assert face.embedding.shape == (512,) and abs(np.linalg.norm(face.embedding) - 1) < 1e-5
        assert face.age is not None and face.gender is not None and face.gender.probability == 1.0
        assert face.landmarks106.shape == (106, 2)
    # Stand-in weights, real plumbing: different faces give different vectors, the same face the same one.
    assert float(faces[0].embedding @ faces[1].embedding) < 0.9999
    again = engine.analyze(photo)
    assert np.allclose(again[0].embedding, faces[0].embedding, atol=1e-5)
