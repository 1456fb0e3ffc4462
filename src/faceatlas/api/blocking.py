"""Blocking work off the event loop: one helper for database and engine calls, and a request's engine run.

Database calls may wait for another writer's lock and engine calls take tens of milliseconds of CPU, so
every one of them runs in a worker thread; engine calls also take a token of the inference limiter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from faceatlas.api.errors import NO_FACE, ApiError
from faceatlas.api.requests import FaceQuery
from faceatlas.api.responses import engine_plugins
from faceatlas.api.state import ServerState
from faceatlas.errors import ImageError, ImageTooLargeError
from faceatlas.face import DetectedFace
from faceatlas.images import DecodedImage, decode_image, decode_memory

T = TypeVar("T")


async def run_blocking(
    fn: Callable[..., T], *args: object, limiter: anyio.CapacityLimiter | None = None
) -> T:
    """``fn(*args)`` in a worker thread (``limiter`` bounds how many run at once)."""
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)


async def analyze(
    state: ServerState, data: bytes, query: FaceQuery, *, embed: bool, limit: int | None = None
) -> list[DetectedFace]:
    """Faces of one image. Decoding runs first, under the process's memory budget (waited for on the
    event loop) and outside the inference limiter, so that a huge image waiting for memory holds
    neither a thread nor an inference slot that an ordinary request needs; the engine then gets the
    decoded pixels."""
    plugins = engine_plugins(query)
    limit = query.limit if limit is None else limit
    timings: dict[str, float] | None = {} if query.status else None

    target_size = state.engine.decode_size
    max_bytes = state.settings.max_file_size
    max_memory = state.decode_gate.budget.max_single

    def decode() -> tuple[DecodedImage, float]:
        started = time.perf_counter()
        decoded = decode_image(data, target_size=target_size, max_bytes=max_bytes, max_memory=max_memory)
        return decoded, time.perf_counter() - started

    def work(decoded: DecodedImage) -> list[DetectedFace]:
        return state.engine.analyze(
            decoded,
            plugins=plugins,
            embed=embed,
            limit=limit,
            det_threshold=query.det_prob_threshold,
            detect=query.detect_faces,
            timings=timings,
        )

    try:
        # the header says how much memory the decode needs; a bomb is refused here, before any pixel
        needed = await run_blocking(
            lambda: decode_memory(data, target_size=target_size, max_bytes=max_bytes, max_memory=max_memory)
        )
        decoded, decode_seconds = await state.decode_gate.run(needed, decode)
        faces = await run_blocking(work, decoded, limiter=state.limiter)
    except ImageTooLargeError as exc:
        raise ApiError(413, 0, str(exc) or "The image is too large") from None
    except ImageError as exc:
        # CompreFace maps every 400 of its core (broken image included) to code 28
        raise ApiError(400, 28, f"{NO_FACE.message}: {exc}" if str(exc) else NO_FACE.message) from None
    if not faces:
        raise NO_FACE
    if timings is not None:
        for face in faces:  # the engine timed its own (instant) decode of the decoded pixels
            face.timings["decode"] = face.timings.get("decode", 0.0) + 1000.0 * decode_seconds / len(faces)
    return faces
