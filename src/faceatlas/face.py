"""The typed record of one detected face."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True, slots=True)
class Age:
    """Estimated age: a point value and the range holding most of the probability mass."""

    value: float
    low: int
    high: int
    probability: float


@dataclass(frozen=True, slots=True)
class Gender:
    value: Literal["male", "female"]
    probability: float


@dataclass(frozen=True, slots=True)
class Mask:
    """CompreFace's mask plugin answer: the likelier label and its probability."""

    value: Literal["with_mask", "without_mask"]
    probability: float


@dataclass(frozen=True, slots=True)
class Pose:
    """Head pose in degrees (positive yaw: the face turns to the image's left)."""

    pitch: float
    yaw: float
    roll: float


@dataclass(slots=True)
class DetectedFace:
    """One face, with coordinates in the original (orientation-corrected) image's pixels.

    ``box`` is ``(x_min, y_min, x_max, y_max)``; ``landmarks`` is a (5, 2) float array in the
    order left eye, right eye, nose tip, left mouth corner, right mouth corner (left/right as
    seen in the image). ``embedding`` is L2-normalised float32 and only meaningful together
    with ``pack``: embeddings of different packs are never compared.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    pack: str
    embedding: np.ndarray | None = None
    age: Age | None = None
    gender: Gender | None = None
    pose: Pose | None = None
    landmarks106: np.ndarray | None = None
    mask: Mask | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def to_dict(self, *, include_embedding: bool = True) -> dict[str, Any]:
        """A JSON-ready dict; fields that were not computed are left out."""
        x_min, y_min, x_max, y_max = self.box
        out: dict[str, Any] = {
            "box": {
                "x_min": round(x_min, 1),
                "y_min": round(y_min, 1),
                "x_max": round(x_max, 1),
                "y_max": round(y_max, 1),
            },
            "score": round(float(self.score), 5),
            "landmarks": np.round(self.landmarks.astype(np.float64), 1).tolist(),
            "pack": self.pack,
        }
        if self.landmarks106 is not None:
            out["landmarks106"] = np.round(self.landmarks106.astype(np.float64), 1).tolist()
        if self.age is not None:
            out["age"] = {
                "value": round(self.age.value, 1),
                "low": self.age.low,
                "high": self.age.high,
                "probability": round(self.age.probability, 5),
            }
        if self.gender is not None:
            out["gender"] = {"value": self.gender.value, "probability": round(self.gender.probability, 5)}
        if self.pose is not None:
            out["pose"] = {
                "pitch": round(self.pose.pitch, 2),
                "yaw": round(self.pose.yaw, 2),
                "roll": round(self.pose.roll, 2),
            }
        if self.mask is not None:
            out["mask"] = {"value": self.mask.value, "probability": round(self.mask.probability, 5)}
        if include_embedding and self.embedding is not None:
            out["embedding"] = [round(float(v), 6) for v in self.embedding]
        return out
