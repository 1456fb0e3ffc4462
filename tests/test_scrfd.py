"""SCRFD detectors from ../shared/models against YuNet, at several input sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceatlas.engine import Engine
from tests.test_engine import iou

PHOTOS = (
    "face_recognition_examples/examples/two_people.jpg",
    "face_recognition_examples/examples/obama.jpg",
    "face_recognition_examples/examples/biden.jpg",
    "face_recognition_examples/examples/obama-1080p.jpg",
    "face_recognition_examples/examples/knn_examples/test/obama_and_biden.jpg",
    "insightface-samples/cpp-package/inspireface/test_res/data/bulk/Rob_Lowe_0001.jpg",
    "insightface-samples/cpp-package/inspireface/test_res/data/bulk/woman.png",
    "exif-orientation-faces/two_people_orientation6.jpg",
)


@pytest.fixture(scope="module")
def scrfd(shared: Path) -> Engine:
    return Engine("sface", detector=f"scrfd:{shared / 'models/scrfd/det_500m.onnx'}", attributes=False)


def test_scrfd_finds_the_same_faces_as_yunet(engine: Engine, scrfd: Engine, photos: Path) -> None:
    for name in PHOTOS:
        ours = scrfd.analyze(photos / name, embed=False)
        reference = engine.analyze(photos / name, embed=False)
        assert len(ours) == len(reference) > 0, name
        for face in ours:
            assert max(iou(face.box, ref.box) for ref in reference) >= 0.6, name


@pytest.mark.parametrize("size", [320, 416, 608, 736])
def test_scrfd_any_multiple_of_32(shared: Path, photos: Path, size: int) -> None:
    model = shared / "models/scrfd/scrfd_2.5g_bnkps.onnx"
    engine = Engine("sface", detector=f"scrfd:{model}", det_size=size, attributes=False)
    faces = engine.analyze(photos / PHOTOS[0], embed=False)
    assert len(faces) == 2


def test_scrfd_rejects_sizes_that_are_not_multiples_of_32(shared: Path) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        Engine("sface", detector=f"scrfd:{shared / 'models/scrfd/det_500m.onnx'}", det_size=300)
