"""Running the engine for a request and shaping its faces the way CompreFace's core does."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import numpy as np

from faceatlas.api.collections import round_half_up
from faceatlas.api.errors import NO_FACE, ApiError
from faceatlas.api.params import CALCULATOR, FaceQuery
from faceatlas.api.state import ServerState
from faceatlas.errors import ImageError, ImageTooLargeError
from faceatlas.face import DetectedFace

# CompreFace skips these plugins when detection is off (CORE/constants.py SKIPPED_PLUGINS)
_SKIPPED_WITHOUT_DETECTION = {"pose", "mask"}
_ATTRIBUTE_PLUGINS = ("age", "gender", "pose", "landmarks2d106", "mask")


def engine_plugins(query: FaceQuery) -> tuple[str, ...]:
    plugins = tuple(p for p in query.plugins if p != CALCULATOR)
    if not query.detect_faces:
        plugins = tuple(p for p in plugins if p not in _SKIPPED_WITHOUT_DETECTION)
    return plugins


async def analyze(
    state: ServerState, data: bytes, query: FaceQuery, *, embed: bool, limit: int | None = None
) -> list[DetectedFace]:
    """Faces of one image, computed in the bounded worker pool so the event loop never waits."""
    plugins = engine_plugins(query)
    limit = query.limit if limit is None else limit

    def work() -> list[DetectedFace]:
        return state.engine.analyze(
            data,
            plugins=plugins,
            embed=embed,
            limit=limit,
            det_threshold=query.det_prob_threshold,
            detect=query.detect_faces,
            timings={} if query.status else None,
        )

    try:
        faces = await anyio.to_thread.run_sync(work, limiter=state.limiter)
    except ImageTooLargeError as exc:
        raise ApiError(413, 0, str(exc) or "The image is too large") from None
    except ImageError as exc:
        # CompreFace maps every 400 of its core (broken image included) to code 28
        raise ApiError(400, 28, f"{NO_FACE.message}: {exc}" if str(exc) else NO_FACE.message) from None
    if not faces:
        raise NO_FACE
    return faces


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
