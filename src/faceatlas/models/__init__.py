"""Model packs and the ONNX model wrappers the engine is built from."""

from faceatlas.models.packs import PACKS, Calibration, PackSpec, get_pack

__all__ = ["PACKS", "Calibration", "PackSpec", "get_pack"]
