"""Shaping results the way CompreFace answers them: faces as FacePredictionResultDto, plugin versions,
similarities rounded as Java does."""

from __future__ import annotations

from typing import Any

import numpy as np

from faceatlas.api.collections import round_half_up
from faceatlas.api.requests import CALCULATOR, FaceQuery
from faceatlas.api.state import ServerState
from faceatlas.face import DetectedFace
from faceatlas.vectors import similarity_of_cosine

# CompreFace's stored-image download headers (EmbeddingController: images never change)
IMAGE_HEADERS = {"Cache-Control": "public, max-age=31536000"}

# CompreFace skips these plugins when detection is off (CORE/constants.py SKIPPED_PLUGINS)
_SKIPPED_WITHOUT_DETECTION = {"pose", "mask"}
_ATTRIBUTE_PLUGINS = ("age", "gender", "pose", "landmarks2d106", "mask")


def engine_plugins(query: FaceQuery) -> tuple[str, ...]:
    plugins = tuple(p for p in query.plugins if p != CALCULATOR)
    if not query.detect_faces:
        plugins = tuple(p for p in plugins if p not in _SKIPPED_WITHOUT_DETECTION)
    return plugins


def similarity(state: ServerState, cosines: np.ndarray) -> np.ndarray:
    pack = state.engine.pack
    return similarity_of_cosine(cosines, pack.c0, pack.c1)


def plugins_versions(state: ServerState, query: FaceQuery, *, embedded: bool) -> dict[str, str]:
    pack = state.engine.pack
    versions = {"detector": f"faceatlas.{pack.detector_name}"}
    if embedded or CALCULATOR in query.plugins:
        versions[CALCULATOR] = f"faceatlas.Calculator@{pack.id}"
    for plugin in engine_plugins(query):
        versions[plugin] = f"faceatlas.{plugin}"
    return versions


def face_json(face: DetectedFace, query: FaceQuery, *, round_probability: bool) -> dict[str, Any]:
    """One face as CompreFace's FacePredictionResultDto; fields of plugins that did not run are left out."""
    x_min, y_min, x_max, y_max = (round(float(v)) for v in face.box)
    probability = round_half_up(face.score) if round_probability else float(face.score)
    out: dict[str, Any] = {
        "box": {
            "probability": probability,
            "x_max": x_max,
            "y_max": y_max,
            "x_min": max(x_min, 0),
            "y_min": max(y_min, 0),
        }
    }
    requested = set(query.plugins)
    if "landmarks" in requested and face.landmarks is not None:
        out["landmarks"] = np.rint(face.landmarks).astype(int).tolist()
    if "landmarks2d106" in requested and face.landmarks106 is not None:
        out["landmarks"] = np.rint(face.landmarks106).astype(int).tolist()
    if "age" in requested and face.age is not None:
        out["age"] = {
            "probability": round_half_up(face.age.probability),
            "high": int(face.age.high),
            "low": int(face.age.low),
        }
    if "gender" in requested and face.gender is not None:
        out["gender"] = {"probability": round_half_up(face.gender.probability), "value": face.gender.value}
    if "pose" in requested and face.pose is not None:
        out["pose"] = {
            "pitch": round(float(face.pose.pitch), 5),
            "roll": round(float(face.pose.roll), 5),
            "yaw": round(float(face.pose.yaw), 5),
        }
    if "mask" in requested and face.mask is not None:
        out["mask"] = {"probability": round_half_up(face.mask.probability), "value": face.mask.value}
    if CALCULATOR in requested and face.embedding is not None:
        out["embedding"] = [float(v) for v in face.embedding]
    if query.status:
        out["execution_time"] = execution_time(face, query)
    return out


def execution_time(face: DetectedFace, query: FaceQuery) -> dict[str, float]:
    """Per-face milliseconds in CompreFace's keys (the engine times stages, shared across faces)."""
    ms = face.timings
    out = {"detector": round(ms.get("decode", 0.0) + ms.get("detect", 0.0), 3)}
    if "embed" in ms:
        out[CALCULATOR] = round(ms.get("align", 0.0) + ms["embed"], 3)
    for plugin in _ATTRIBUTE_PLUGINS:
        if plugin in query.plugins:
            out[plugin] = round(ms.get("attributes", 0.0), 3)
    return out
