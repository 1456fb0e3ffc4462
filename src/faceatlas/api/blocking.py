"""Blocking work off the event loop: one helper for database and engine calls, and a request's engine run.

Database calls may wait for another writer's lock and engine calls take tens of milliseconds of CPU, so
every one of them runs in a worker thread; engine calls also take a token of the inference limiter.
"""

from __future__ import annotations

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

T = TypeVar("T")


async def run_blocking(
    fn: Callable[..., T], *args: object, limiter: anyio.CapacityLimiter | None = None
) -> T:
    """``fn(*args)`` in a worker thread (``limiter`` bounds how many run at once)."""
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)


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
        faces = await run_blocking(work, limiter=state.limiter)
    except ImageTooLargeError as exc:
        raise ApiError(413, 0, str(exc) or "The image is too large") from None
    except ImageError as exc:
        # CompreFace maps every 400 of its core (broken image included) to code 28
        raise ApiError(400, 28, f"{NO_FACE.message}: {exc}" if str(exc) else NO_FACE.message) from None
    if not faces:
        raise NO_FACE
    return faces
