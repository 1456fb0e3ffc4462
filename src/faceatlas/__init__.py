"""faceatlas: self-hosted face recognition and photo-library face pipeline.

``from faceatlas import Engine`` is the one public path to the engine. It is imported lazily (importing
faceatlas must not load ONNX Runtime or OpenCV); type checkers see it through ``TYPE_CHECKING``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faceatlas.errors import FaceAtlasError, ImageError, ModelError
from faceatlas.face import Age, DetectedFace, Gender, Pose

if TYPE_CHECKING:
    from faceatlas.engine import Engine
    from faceatlas.images import DecodedImage, decode_image

__version__ = "0.1.0"

__all__ = [
    "Age",
    "DecodedImage",
    "DetectedFace",
    "Engine",
    "FaceAtlasError",
    "Gender",
    "ImageError",
    "ModelError",
    "Pose",
    "__version__",
    "decode_image",
]

_LAZY = {"Engine": "faceatlas.engine", "DecodedImage": "faceatlas.images", "decode_image": "faceatlas.images"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'faceatlas' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
