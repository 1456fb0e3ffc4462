"""faceatlas: self-hosted face recognition and photo-library face pipeline."""

from faceatlas.errors import FaceAtlasError, ImageError, ModelError
from faceatlas.face import Age, Face, Gender, Pose

__version__ = "0.1.0"

__all__ = ["Age", "Face", "FaceAtlasError", "Gender", "ImageError", "ModelError", "Pose", "__version__"]


def __getattr__(name: str):  # lazy: importing faceatlas must not load ONNX Runtime or OpenCV
    if name == "Engine":
        from faceatlas.engine import Engine

        return Engine
    if name in ("decode_image", "DecodedImage"):
        from faceatlas import images

        return getattr(images, name)
    raise AttributeError(name)
