"""The face engine: one model pack loaded once, shared by every caller in the process.

``Engine`` is thread-safe: ONNX Runtime sessions may be run from several threads at once and the
engine keeps no per-call state. Batches are formed across all faces of an image and across images.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceatlas.face import DetectedFace
from faceatlas.images import DecodedImage, ImageSource, decode_image
from faceatlas.models import registry
from faceatlas.models.alignment import ARCFACE_TEMPLATE, align_faces
from faceatlas.models.attributes import estimate_pose
from faceatlas.models.detection import Detections
from faceatlas.models.packs import PackSpec, get_pack
from faceatlas.models.registry import (
    AttributeModel,
    FaceDetector,
    FaceEmbedder,
    LoadContext,
    detector_ref,
    load_attributes,
)
from faceatlas.models.runtime import inference_scope, resolve_providers
from faceatlas.models.store import model_dir as model_dir_for
from faceatlas.vectors import compreface_similarity, cosine_to_distance

KNOWN_PLUGINS = ("landmarks", "age", "gender", "pose", "landmarks2d106", "mask")
# Which DetectedFace field holds each attribute plugin's value.
PLUGIN_FIELDS = {"age": "age", "gender": "gender", "landmarks2d106": "landmarks106", "mask": "mask"}
# Plugins whose values are points in the detector's image, mapped to original pixels like the boxes.
POINT_PLUGINS = frozenset({"landmarks2d106"})
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
        context = LoadContext(self.spec, self.providers, threads, self.model_root)
        self.detector: FaceDetector = registry.load(
            context, detector_ref(self.spec, detector), input_size=(det_size, det_size)
        )
        self.recognizer: FaceEmbedder = registry.load(context, self.spec.recognizer)
        self.attribute_models: list[AttributeModel] = load_attributes(context) if attributes else []

        calibration = self.spec.calibration()
        provided = {plugin for model in self.attribute_models for plugin in model.provides}
        self.pack = PackInfo(
            id=self.spec.name,
            version=self.spec.version,
            embedding_size=self.recognizer.embedding_size,
            threshold=calibration.threshold,
            c0=calibration.c0,
            c1=calibration.c1,
            calibration_source=calibration.source,
            plugins=tuple(p for p in KNOWN_PLUGINS if p in provided or p in ("landmarks", "pose")),
            detector_name=self.detector.name,
            recognizer_name=self.spec.recognizer_name,
        )
        self.load_seconds = time.perf_counter() - started

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
        with inference_scope():  # adaptive sessions use every core only for a lone call
            return self._analyze_batch(
                images, plugins, embed, limit, det_threshold, min_face_size, detect, timings
            )

    def _analyze_batch(
        self,
        images: Sequence[ImageSource | DecodedImage],
        plugins: Iterable[str] | str | None,
        embed: bool,
        limit: int,
        det_threshold: float | None,
        min_face_size: float,
        detect: bool,
        timings: dict[str, float] | None,
    ) -> list[list[DetectedFace]]:
        wanted = _filter_plugins(plugins)
        threshold = self.detector.default_threshold if det_threshold is None else float(det_threshold)
        clock = _Clock(timings)

        with clock("decode"):
            decoded = [self.decode(image) for image in images]
        with clock("detect"):
            if detect and len(decoded) > 1 and self.detector.max_batch > 1:
                # one network call for many photos (SCRFD on an accelerator)
                many = self.detector.detect_many([d.rgb for d in decoded], threshold)
                found = [self._select(d, f, limit, min_face_size) for d, f in zip(decoded, many, strict=True)]
            else:
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

    def embed(
        self,
        image: ImageSource | DecodedImage,
        *,
        limit: int = 0,
        det_threshold: float | None = None,
        min_face_size: float = 0,
        detect: bool = True,
    ) -> np.ndarray:
        """(n_faces, d) unit embeddings of an image's faces, largest face first."""
        faces = self.analyze(
            image,
            embed=True,
            limit=limit,
            det_threshold=det_threshold,
            min_face_size=min_face_size,
            detect=detect,
        )
        if not faces:
            return np.zeros((0, self.pack.embedding_size), dtype=np.float32)
        return np.stack([f.embedding for f in faces if f.embedding is not None])

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

    def attribute_model(self, plugin: str) -> AttributeModel | None:
        """The loaded model that answers ``plugin`` (``"age"``, ``"mask"`` ...), if the pack has one."""
        return next((m for m in self.attribute_models if plugin in m.provides), None)

    def is_same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        return float(np.dot(a, b)) >= self.pack.threshold

    # ------------------------------------------------------------------ internals

    def _detect(
        self, decoded: DecodedImage, threshold: float, limit: int, min_face_size: float
    ) -> Detections:
        return self._select(decoded, self.detector.detect(decoded.rgb, threshold), limit, min_face_size)

    @staticmethod
    def _select(decoded: DecodedImage, found: Detections, limit: int, min_face_size: float) -> Detections:
        """Drop faces under ``min_face_size`` original pixels, largest first, at most ``limit``."""
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
        values: dict[str, list[Any]] = {}
        for model in self.attribute_models:
            if model.provides & wanted:
                values.update(model.predict(decoded.rgb, found, wanted))
        for plugin in POINT_PLUGINS & values.keys():
            values[plugin] = [points * decoded.scale for points in values[plugin]]
        poses = (
            estimate_pose(found.landmarks, (decoded.width, decoded.height))
            if "pose" in wanted
            else [None] * n
        )
        width, height = decoded.original_size
        boxes = found.boxes * decoded.scale
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        landmarks = found.landmarks * decoded.scale
        faces = []
        for i in range(n):
            x_min, y_min, x_max, y_max = (float(v) for v in boxes[i])
            face = DetectedFace(
                box=(x_min, y_min, x_max, y_max),
                score=float(found.scores[i]),
                landmarks=landmarks[i].astype(np.float32),
                pack=self.pack.id,
                embedding=None if vectors is None else vectors[i],
                pose=poses[i],
            )
            for plugin, per_face in values.items():
                setattr(face, PLUGIN_FIELDS[plugin], per_face[i])
            faces.append(face)
        return faces

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
