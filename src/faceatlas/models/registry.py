"""The model registry: which class loads a pack's model of a given kind, and the protocols they share.

A pack (:mod:`faceatlas.models.packs`) names each of its models by a ``kind`` and its files; the
registry's one ``match`` turns the kind into a class, and the class loads itself from the pack with
``from_pack(context, ref)``. Adding a model type is one new class with ``from_pack`` and one line here.

Three small protocols cover what the engine calls:

* :class:`FaceDetector` — ``detect(rgb, threshold) -> Detections`` in the coordinates of ``rgb``;
* :class:`FaceEmbedder` — ``embed(crops) -> (N, d)`` unit vectors from 112×112 aligned crops;
* :class:`AttributeModel` — ``predict(rgb, detections, wanted) -> {plugin: [value per face]}`` for the
  plugins it ``provides`` (``age``, ``gender``, ``landmarks2d106`` …).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

import numpy as np

from faceatlas.errors import ModelNotInstalledError, UnknownModelError
from faceatlas.models.packs import YUNET_FILE, ModelFile, ModelRef, PackSpec
from faceatlas.models.store import resolve_file

if TYPE_CHECKING:
    from faceatlas.models.detection import Detections


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What every model needs to load itself: its pack, where files live, how sessions run."""

    spec: PackSpec
    providers: list[str]
    threads: int | None
    model_root: Path

    def path(self, file: ModelFile) -> Path:
        return resolve_file(self.spec, file, self.model_root)


class PackModel(Protocol):
    name: str

    @classmethod
    def from_pack(cls, context: LoadContext, ref: ModelRef, **options: Any) -> Self: ...


class FaceDetector(PackModel, Protocol):
    default_threshold: float
    max_batch: int  # images per network call in detect_many (1: one call per image)

    def detect(self, rgb: np.ndarray, threshold: float) -> Detections: ...

    def detect_many(self, images: list[np.ndarray], threshold: float) -> list[Detections]: ...


class FaceEmbedder(PackModel, Protocol):
    embedding_size: int

    def embed(self, crops: np.ndarray) -> np.ndarray: ...


class AttributeModel(PackModel, Protocol):
    provides: frozenset[str]

    def predict(
        self, rgb: np.ndarray, detections: Detections, wanted: Collection[str]
    ) -> dict[str, list[Any]]: ...


def model_class(kind: str) -> type[PackModel]:
    """The class that loads models of this kind (imported on demand: each pulls in its own runtime)."""
    match kind:
        case "yunet":
            from faceatlas.models.detection import YuNetDetector

            return YuNetDetector
        case "scrfd":
            from faceatlas.models.detection import SCRFDDetector

            return SCRFDDetector
        case "arcface":
            from faceatlas.models.recognition import Recognizer

            return Recognizer
        case "dlib-agegender":
            from faceatlas.models.attributes import DlibAgeGender

            return DlibAgeGender
        case "insightface-genderage":
            from faceatlas.models.attributes import InsightFaceGenderAge

            return InsightFaceGenderAge
        case "keras-mask":
            from faceatlas.models.mask import MaskClassifier

            return MaskClassifier
        case "insightface-2d106":
            from faceatlas.models.attributes import Landmarks106

            return Landmarks106
    raise UnknownModelError(f"unknown model kind {kind!r}")


def load(context: LoadContext, ref: ModelRef, **options: Any) -> Any:
    """Load one model of the pack through the class its kind names."""
    return model_class(ref.kind).from_pack(context, ref, **options)


def detector_ref(spec: PackSpec, override: str | None) -> ModelRef:
    """The pack's detector, or an override: ``"yunet"`` (the bundled YuNet), ``"yunet:/path.onnx"``
    or ``"scrfd:/path.onnx"`` (a file of that architecture, used to evaluate detectors)."""
    if not override:
        return spec.detector
    kind, _, path = override.partition(":")
    if kind not in ("yunet", "scrfd") or (kind == "scrfd" and not path):
        raise UnknownModelError(
            f"unknown detector {override!r}; use 'yunet', 'yunet:/path/model.onnx' or "
            "'scrfd:/path/model.onnx'"
        )
    if not path:
        return ModelRef("yunet", (YUNET_FILE,))
    absolute = str(Path(path).expanduser().resolve())
    yunet = kind == "yunet"
    return ModelRef(kind, (ModelFile(absolute, fold_quantized=yunet, spatial=yunet),))


def load_attributes(context: LoadContext) -> list[AttributeModel]:
    """The pack's attribute models; optional ones whose files are absent are skipped."""
    models: list[AttributeModel] = []
    for ref in context.spec.attributes:
        try:
            models.append(load(context, ref))
        except ModelNotInstalledError:
            if not ref.optional:
                raise
    return models
