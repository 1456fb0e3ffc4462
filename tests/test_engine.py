"""The engine with the real ``sface`` pack on real photos, SCRFD from ../shared, and an ArcFace-style
recogniser built by the test (InsightFace weights cannot be downloaded here)."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from faceatlas.engine import Engine
from faceatlas.errors import ImageError, ProviderUnavailableError
from faceatlas.models.alignment import ARCFACE_TEMPLATE, align_faces
from faceatlas.models.packs import bundled_file

EXAMPLES = "data/photos/face_recognition_examples/examples"


def iou(a, b) -> float:  # type: ignore[no-untyped-def]
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_face_counts(engine: Engine, shared: Path) -> None:
    assert len(engine.analyze(shared / EXAMPLES / "two_people.jpg")) == 2
    assert len(engine.analyze(shared / EXAMPLES / "obama.jpg")) == 1


def test_faces_are_sorted_largest_first_and_limited(engine: Engine, shared: Path) -> None:
    faces = engine.analyze(shared / EXAMPLES / "two_people.jpg")
    assert faces[0].area >= faces[1].area
    assert len(engine.analyze(shared / EXAMPLES / "two_people.jpg", limit=1)) == 1
    smallest_side = min(min(f.width, f.height) for f in faces)
    assert len(engine.analyze(shared / EXAMPLES / "two_people.jpg", min_face_size=smallest_side + 1)) <= 1


def test_exif_oriented_copies_give_the_upright_boxes(engine: Engine, photos: Path) -> None:
    folder = photos / "exif-orientation-faces"
    for name, count in (("obama", 1), ("two_people", 2)):
        upright = engine.analyze(folder / f"{name}_upright_orientation1.jpg", embed=False)
        assert len(upright) == count
        for orientation in range(2, 9):
            faces = engine.analyze(folder / f"{name}_orientation{orientation}.jpg", embed=False)
            assert len(faces) == count, (name, orientation)
            for face in faces:
                best = max(iou(face.box, ref.box) for ref in upright)
                assert best >= 0.9, (name, orientation, best)


def test_threshold_classifies_deepface_pairs(engine: Engine, photos: Path) -> None:
    folder = photos / "deepface-pairs"
    rows = list(csv.DictReader((folder / "master.csv").read_text().splitlines()))
    files = sorted({r["file_x"] for r in rows} | {r["file_y"] for r in rows})
    results = engine.analyze_batch([folder / f for f in files], limit=1)
    vectors = {f: faces[0].embedding if faces else None for f, faces in zip(files, results, strict=True)}
    correct = 0
    for row in rows:
        a, b = vectors[row["file_x"]], vectors[row["file_y"]]
        same = a is not None and b is not None and engine.is_same_person(a, b)
        correct += same == (row["Decision"].strip() == "Yes")
    assert correct / len(rows) >= 0.95


def test_embeddings_are_unit_vectors_of_the_pack(engine: Engine, shared: Path) -> None:
    face = engine.analyze(shared / EXAMPLES / "obama.jpg")[0]
    assert face.embedding is not None and face.embedding.dtype == np.float32
    assert face.embedding.shape == (engine.pack.embedding_size,)
    assert abs(float(np.linalg.norm(face.embedding)) - 1) < 1e-5
    assert face.pack == engine.pack.id == "sface"


def test_same_person_is_closer_than_other_person(engine: Engine, shared: Path) -> None:
    obama = engine.embed(shared / EXAMPLES / "obama.jpg")[0]
    obama2 = engine.embed(shared / EXAMPLES / "obama2.jpg")[0]
    biden = engine.embed(shared / EXAMPLES / "biden.jpg")[0]
    assert engine.is_same_person(obama, obama2)
    assert not engine.is_same_person(obama, biden)
    assert engine.similarity(obama, obama2) > 0.5 > engine.similarity(obama, biden)


def test_sface_matches_opencv_on_the_original_file(engine: Engine, shared: Path) -> None:
    """Our folded float SFace against OpenCV's FaceRecognizerSF running the shipped int8 file."""
    detector_file = str(bundled_file("face_detection_yunet_2023mar_int8bq.onnx"))
    recognizer_file = str(bundled_file("face_recognition_sface_2021dec_int8bq.onnx"))
    detector = cv2.FaceDetectorYN.create(detector_file, "", (320, 320), 0.6)
    recognizer = cv2.FaceRecognizerSF.create(recognizer_file, "")
    for name in ("obama.jpg", "biden.jpg", "two_people.jpg"):
        bgr = cv2.imread(str(shared / EXAMPLES / name))
        detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, detections = detector.detect(bgr)
        for row in detections:
            reference = recognizer.feature(recognizer.alignCrop(bgr, row)).ravel()
            reference /= np.linalg.norm(reference)
            landmarks = row[4:14].reshape(1, 5, 2)
            crops = align_faces(np.ascontiguousarray(bgr[:, :, ::-1]), landmarks, ARCFACE_TEMPLATE, 112)
            ours = engine.recognizer.embed(crops)[0]
            assert float(ours @ reference) >= 0.9999


def test_batch_equals_single(engine: Engine, shared: Path) -> None:
    paths = [shared / EXAMPLES / n for n in ("obama.jpg", "two_people.jpg", "biden.jpg")]
    batched = engine.analyze_batch(paths)
    for path, faces in zip(paths, batched, strict=True):
        single = engine.analyze(path)
        assert len(single) == len(faces)
        for a, b in zip(single, faces, strict=True):
            assert np.allclose(a.box, b.box)
            assert float(a.embedding @ b.embedding) > 0.9999


def test_attribute_plugins(engine: Engine, shared: Path) -> None:
    face = engine.analyze(shared / EXAMPLES / "obama.jpg", plugins="age,gender,pose,landmarks,undefined")[0]
    assert face.gender is not None and face.gender.value == "male" and face.gender.probability > 0.9
    assert face.age is not None and 25 <= face.age.value <= 65 and face.age.low <= face.age.high
    assert face.pose is not None and abs(face.pose.yaw) < 20 and abs(face.pose.roll) < 15
    assert face.landmarks.shape == (5, 2)
    plain = engine.analyze(shared / EXAMPLES / "obama.jpg", plugins="undefined")[0]
    assert plain.age is None and plain.gender is None and plain.pose is None


def test_pose_follows_a_turned_head(engine: Engine, shared: Path) -> None:
    # Mirroring the image flips the sign of yaw and roll, and leaves pitch alone.
    rgb = cv2.imread(str(shared / EXAMPLES / "two_people.jpg"))[:, :, ::-1]
    left = engine.analyze(np.ascontiguousarray(rgb), plugins="pose")
    right = engine.analyze(np.ascontiguousarray(rgb[:, ::-1]), plugins="pose")
    turned = max(left, key=lambda f: abs(f.pose.yaw))
    mirrored = min(right, key=lambda f: abs(f.box[0] - (rgb.shape[1] - turned.box[2])))
    assert abs(turned.pose.yaw) > 10
    assert np.sign(turned.pose.yaw) == -np.sign(mirrored.pose.yaw)
    assert abs(turned.pose.pitch - mirrored.pose.pitch) < 5


def test_whole_image_mode(engine: Engine, shared: Path) -> None:
    crop = cv2.imread(str(shared / EXAMPLES / "obama.jpg"))[91:420, 370:610, ::-1]
    faces = engine.analyze(np.ascontiguousarray(crop), detect=False)
    assert len(faces) == 1 and faces[0].score == 1.0
    assert faces[0].box == (0.0, 0.0, float(crop.shape[1]), float(crop.shape[0]))
    detected = engine.embed(shared / EXAMPLES / "obama.jpg")[0]
    assert float(faces[0].embedding @ detected) > engine.pack.threshold


def test_bad_inputs_raise_typed_errors(engine: Engine, tmp_path: Path, shared: Path) -> None:
    jpeg = (shared / EXAMPLES / "obama.jpg").read_bytes()
    for bad in (b"", b"hello, not an image", jpeg[: len(jpeg) // 3]):
        with pytest.raises(ImageError):
            engine.analyze(bad)
    tiny = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes()
    assert engine.analyze(tiny) == []


def test_thread_safety(engine: Engine, shared: Path) -> None:
    paths = [shared / EXAMPLES / n for n in ("obama.jpg", "two_people.jpg", "biden.jpg", "obama2.jpg")]
    expected = [engine.embed(p) for p in paths]
    failures: list[str] = []

    def worker(index: int) -> None:
        for _ in range(3):
            got = engine.embed(paths[index % len(paths)])
            if got.shape != expected[index % len(paths)].shape or not np.allclose(
                got, expected[index % len(paths)], atol=1e-4
            ):
                failures.append(f"thread {index}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available on this machine"
)
def test_missing_provider_fails_at_load() -> None:
    with pytest.raises(ProviderUnavailableError, match="cuda"):
        Engine("sface", providers=("cuda",))


def test_unknown_pack_and_missing_pack(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown model pack"):
        Engine("nope")
    from faceatlas.errors import ModelNotInstalledError

    with pytest.raises(ModelNotInstalledError, match="faceatlas models pull buffalo_l"):
        Engine("buffalo_l", model_dir=tmp_path)
