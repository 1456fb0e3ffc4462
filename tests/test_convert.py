"""The model conversion: the PRelu rewrite is exact, YuNet runs at any size, caches are versioned."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from faceatlas.engine import Engine
from faceatlas.models import convert
from faceatlas.models.alignment import ARCFACE_TEMPLATE, align_faces
from faceatlas.models.detection import SCRFDDetector, YuNetDetector
from faceatlas.models.packs import bundled_file, get_pack

EXAMPLES = "data/photos/face_recognition_examples/examples"


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def test_prelu_rewrite_gives_the_same_embeddings(engine: Engine, shared: Path, tmp_path: Path) -> None:
    spec = get_pack("sface").recognizer_file
    source = bundled_file(spec.filename)
    folded = convert.fold_constant_dequantize(onnx.load(str(source)))
    assert any(node.op_type == "PRelu" for node in folded.graph.node)
    converted = convert.converted_model(source, tmp_path, expected_sha256=spec.sha256, batchable=True)
    assert not any(node.op_type == "PRelu" for node in onnx.load(str(converted)).graph.node)

    rgb = cv2.imread(str(shared / EXAMPLES / "two_people.jpg"))[:, :, ::-1]
    faces = engine.analyze(np.ascontiguousarray(rgb), embed=False)
    crops = align_faces(rgb, np.stack([f.landmarks for f in faces]), ARCFACE_TEMPLATE, 112)
    blob = np.ascontiguousarray(crops.astype(np.float32).transpose(0, 3, 1, 2))
    before = np.concatenate(
        [_session(folded).run(None, {"data": blob[i : i + 1]})[0] for i in range(len(blob))]
    )
    after = _session(converted).run(None, {"data": blob})[0]
    assert len(faces) == 2
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)


def test_converted_files_are_versioned(tmp_path: Path) -> None:
    spec = get_pack("sface").detector_file
    source = bundled_file(spec.filename)
    stale = tmp_path / f"{source.stem}.{spec.sha256[:16]}.fixed.onnx"  # the name before versioning
    stale.write_bytes(b"not a model")
    fresh = convert.converted_model(source, tmp_path, expected_sha256=spec.sha256, spatial=True)
    assert fresh != stale and f".v{convert.CONVERSION_VERSION}." in fresh.name
    assert convert.converted_model(source, tmp_path, expected_sha256=spec.sha256, spatial=True) == fresh
    _session(fresh)  # a real model, not the stale bytes


def test_yunet_at_the_image_size_finds_what_the_640_canvas_finds(shared: Path, tmp_path: Path) -> None:
    spec = get_pack("sface").detector_file
    source = bundled_file(spec.filename)
    fixed = YuNetDetector(
        convert.converted_model(source, tmp_path, expected_sha256=spec.sha256), ["CPUExecutionProvider"]
    )
    any_size = YuNetDetector(
        convert.converted_model(source, tmp_path, expected_sha256=spec.sha256, spatial=True),
        ["CPUExecutionProvider"],
    )
    assert any_size.any_size and not fixed.any_size
    for name in ("obama.jpg", "two_people.jpg", "obama-1080p.jpg"):
        rgb = np.ascontiguousarray(cv2.imread(str(shared / EXAMPLES / name))[:, :, ::-1])
        a, b = fixed.detect(rgb, 0.6), any_size.detect(rgb, 0.6)
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(b.boxes, a.boxes, atol=2.0)
        np.testing.assert_allclose(b.landmarks, a.landmarks, atol=2.0)


def test_scrfd_batches_give_the_per_image_detections(shared: Path) -> None:
    model = shared / "models/scrfd/det_500m.onnx"
    single = SCRFDDetector(model, ["CPUExecutionProvider"], batched=False)
    batched = SCRFDDetector(model, ["CPUExecutionProvider"], batched=True, max_batch=2)
    assert single.max_batch == 1 and batched.max_batch == 2
    names = ("obama.jpg", "two_people.jpg", "biden.jpg")
    images = [np.ascontiguousarray(cv2.imread(str(shared / EXAMPLES / n))[:, :, ::-1]) for n in names]
    for one, many in zip(
        [single.detect(i, 0.5) for i in images], batched.detect_many(images, 0.5), strict=True
    ):
        assert len(one) == len(many) > 0
        np.testing.assert_allclose(many.boxes, one.boxes, atol=0.05)
        np.testing.assert_allclose(many.landmarks, one.landmarks, atol=0.05)
