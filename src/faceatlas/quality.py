"""How usable a detected face is for recognition: one score in [0, 1] from size, detector confidence,
sharpness of the aligned crop and head pose.

Why a score at all: the embedding of a tiny, blurred or profile face is closer to *everyone* than a good
face's is, so such faces are the ones that glue strangers together and get absorbed into the wrong
person. Clustering lets faces below a quality gate neither create nor join a person automatically (a
user can still assign them by hand).

The score is the product of four factors, each a linear ramp clipped to [0, 1], so any one bad
property is enough to reject a face and a face must be fine in every respect to score high:

* **size**: the shorter side of the box in original pixels, 0 at ``SIZE_RAMP[0]``, 1 at ``SIZE_RAMP[1]``
  (the recogniser works at 112 px; below ~24 px there is little identity left);
* **detection score**: 0 at ``SCORE_RAMP[0]``, 1 at ``SCORE_RAMP[1]`` (low scores are often not faces);
* **sharpness**: the variance of the Laplacian of the aligned 112×112 grey crop, on a log scale from
  ``SHARPNESS_RAMP[0]`` to ``SHARPNESS_RAMP[1]`` (the crop is what the recogniser sees, so a small face
  upscaled to 112 px reads as blurred too);
* **pose**: full marks up to ``POSE_FREE_DEGREES`` of yaw or pitch, falling to 0 at
  ``POSE_ZERO_DEGREES``. Yaw and pitch come from the pose plugin when it ran, otherwise from a rough
  estimate on the five landmarks (:func:`landmark_pose`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from faceatlas.face import DetectedFace
from faceatlas.images import DecodedImage
from faceatlas.models.alignment import ARCFACE_TEMPLATE, align_faces

SIZE_RAMP = (16.0, 64.0)
SCORE_RAMP = (0.5, 0.85)
SHARPNESS_RAMP = (5.0, 150.0)
POSE_FREE_DEGREES = 25.0
POSE_ZERO_DEGREES = 75.0
CROP_SIZE = 112


@dataclass(frozen=True, slots=True)
class QualityParts:
    """The measured properties of a face and the score they give."""

    size: float  # shorter box side, original pixels
    detection_score: float
    sharpness: float  # variance of the Laplacian of the aligned grey crop
    yaw: float  # degrees
    pitch: float  # degrees

    @property
    def score(self) -> float:
        return quality_score(self.size, self.detection_score, self.sharpness, self.yaw, self.pitch)


def _ramp(value: float, low: float, high: float) -> float:
    return float(min(max((value - low) / (high - low), 0.0), 1.0))


def quality_score(size: float, detection_score: float, sharpness: float, yaw: float, pitch: float) -> float:
    """The product of the four factors described in the module docstring, in [0, 1]."""
    size_factor = _ramp(size, *SIZE_RAMP)
    score_factor = _ramp(detection_score, *SCORE_RAMP)
    log_sharp = math.log(max(sharpness, 1e-6))
    sharp_factor = _ramp(log_sharp, math.log(SHARPNESS_RAMP[0]), math.log(SHARPNESS_RAMP[1]))
    turn = max(abs(yaw), abs(pitch))
    pose_factor = 1.0 - _ramp(turn, POSE_FREE_DEGREES, POSE_ZERO_DEGREES)
    return size_factor * score_factor * sharp_factor * pose_factor


def crop_sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of an RGB (or grey) uint8 crop: low for blurred or upscaled faces."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def landmark_pose(landmarks: np.ndarray) -> tuple[float, float]:
    """Rough (yaw, pitch) in degrees from the 5 landmarks (eyes, nose, mouth corners).

    After undoing the roll, the nose tip of a frontal face sits on the vertical line between the eye
    midpoint and the mouth midpoint; turning the head by θ moves it sideways by about
    ``0.5 · tan θ`` inter-ocular distances (fitted to the pose plugin on LFW). Pitch is read the
    same way from the nose's height between the eye and mouth lines (0.58 of the way down when
    frontal). Good to ~10° for moderate poses, which is all a quality gate needs. Signs follow
    :class:`faceatlas.face.Pose` (positive yaw: the face turns to the image's left).
    """
    p = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose, mouth_l, mouth_r = p
    eye_vec = right_eye - left_eye
    iod = float(np.hypot(*eye_vec))
    if iod < 1e-6:
        return 90.0, 0.0
    cos_r, sin_r = eye_vec / iod
    rotate = np.array([[cos_r, sin_r], [-sin_r, cos_r]])  # undo the roll
    eyes_mid = (left_eye + right_eye) / 2
    mouth_mid = (mouth_l + mouth_r) / 2
    nose_r = rotate @ (nose - eyes_mid)
    mouth_r_ = rotate @ (mouth_mid - eyes_mid)
    axis_x = mouth_r_[0] * (nose_r[1] / mouth_r_[1]) if abs(mouth_r_[1]) > 1e-6 else 0.0
    yaw = -math.degrees(math.atan(((nose_r[0] - axis_x) / iod) / 0.5))
    vertical = nose_r[1] / mouth_r_[1] if abs(mouth_r_[1]) > 1e-6 else 0.58
    pitch = math.degrees(math.atan((vertical - 0.58) / 0.5))
    return yaw, pitch


def quality_parts(image: DecodedImage, faces: Sequence[DetectedFace]) -> list[QualityParts]:
    """Measure every face of ``image`` (faces in original-image coordinates, as the engine returns them)."""
    if not faces:
        return []
    landmarks = np.stack([np.asarray(f.landmarks, np.float64) for f in faces]) / image.scale
    crops = align_faces(image.rgb, landmarks, ARCFACE_TEMPLATE, CROP_SIZE)
    out = []
    for face, crop in zip(faces, crops, strict=True):
        if face.pose is not None:
            yaw, pitch = face.pose.yaw, face.pose.pitch
        else:
            yaw, pitch = landmark_pose(face.landmarks)
        out.append(
            QualityParts(
                size=float(min(face.width, face.height)),
                detection_score=float(face.score),
                sharpness=crop_sharpness(crop),
                yaw=float(yaw),
                pitch=float(pitch),
            )
        )
    return out


def face_qualities(image: DecodedImage, faces: Sequence[DetectedFace]) -> list[float]:
    """The quality score of every face of ``image``."""
    return [parts.score for parts in quality_parts(image, faces)]
