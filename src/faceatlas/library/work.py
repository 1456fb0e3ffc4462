"""The worker side of the indexer: what each decode (and analyse) process runs.

Kept apart from :mod:`faceatlas.library.pipeline` so that a spawned worker imports only the core
(images, engine, quality) and never SQLAlchemy or the library's tables: those imports cost a worker
~0.5 CPU-s at start-up, 10 % of a 300-photo run on two cores.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceatlas.errors import FaceAtlasError
from faceatlas.library.scan import FileEntry
from faceatlas.quality import face_qualities

if TYPE_CHECKING:
    from faceatlas.engine import Engine


@dataclass(slots=True)
class Decoded:
    """What a decode worker sends back: the decoded image or the reason it failed."""

    entry: FileEntry
    content_hash: str | None = None
    image: Any = None  # faceatlas.images.DecodedImage
    taken_at: datetime | None = None
    error: str | None = None
    unchanged_content: bool = False
    seconds: float = 0.0
    faces: list[Any] | None = None  # already detected (detect_in_workers)
    embedded: bool = False  # faces are complete (embed_in_workers); the pixels were not sent back
    original_size: tuple[int, int] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    quality: list[float] | None = None  # faceatlas.quality per face, measured before the pixels are dropped


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def decode_photo(entry: FileEntry, decode_size: int, known_hash: str | None) -> Decoded:
    """Read, hash and decode one photo (runs in a worker process; never raises for bad files)."""
    from faceatlas.images import decode_image, read_exif_datetime

    start = time.perf_counter()
    try:
        data = Path(entry.path).read_bytes()
    except OSError as exc:
        return Decoded(entry, error=describe_error(exc), seconds=time.perf_counter() - start)
    digest = hashlib.sha256(data).hexdigest()
    if known_hash is not None and digest == known_hash:
        return Decoded(entry, digest, unchanged_content=True, seconds=time.perf_counter() - start)
    try:
        image = decode_image(data, target_size=decode_size)
    except FaceAtlasError as exc:
        return Decoded(entry, digest, error=describe_error(exc), seconds=time.perf_counter() - start)
    except Exception as exc:  # a decoder bug on one file must not stop a library-wide run
        return Decoded(entry, digest, error=describe_error(exc), seconds=time.perf_counter() - start)
    try:
        taken_at = read_exif_datetime(data)
    except Exception:
        taken_at = None  # a broken EXIF date is not a reason to drop the photo
    return Decoded(entry, digest, image, taken_at, seconds=time.perf_counter() - start)


_WORKER_ENGINE: Any = None
_WORKER_KWARGS: dict[str, Any] = {}
_WORKER_EMBEDS = False


def decode_and_detect(entry: FileEntry, decode_size: int, known_hash: str | None) -> Decoded:
    """:func:`decode_photo`, then detection (and embedding) in this worker's own engine when it has one."""
    decoded = decode_photo(entry, decode_size, known_hash)
    if _WORKER_ENGINE is None or decoded.image is None:
        return decoded
    return analyze_decoded(_WORKER_ENGINE, decoded, embed=_WORKER_EMBEDS, **_WORKER_KWARGS)


def analyze_decoded(engine: Engine, decoded: Decoded, *, embed: bool, **kwargs: Any) -> Decoded:
    """Detect (and embed) the faces of a decoded photo; with ``embed`` the pixels are then dropped."""
    timings: dict[str, float] = {}
    try:
        decoded.faces = engine.analyze(decoded.image, embed=embed, timings=timings, **kwargs)
    except FaceAtlasError as exc:
        decoded.error, decoded.image = describe_error(exc), None
    decoded.timings = timings
    if embed and decoded.image is not None:
        # Done with the pixels: send back only the faces (a 1000x750 image is 2.2 MB to pickle).
        decoded.original_size = decoded.image.original_size
        decoded.quality = face_qualities(decoded.image, decoded.faces or [])
        decoded.image, decoded.embedded = None, True
    return decoded


def exit_with_parent() -> None:
    """Make this worker process die when the indexer dies, even by SIGKILL (no orphaned decoders).

    Linux: PR_SET_PDEATHSIG. Elsewhere: a daemon thread that exits when the parent pid changes.
    """
    import sys
    import threading

    # The pid that started us, not getppid() now: the parent may already be gone (then getppid() is 1).
    started_by = multiprocessing.parent_process()
    parent = started_by.pid if started_by is not None and started_by.pid else os.getppid()
    if os.getppid() != parent:
        os._exit(1)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
        else:
            if os.getppid() != parent:  # the parent died before the signal was armed
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="faceatlas-parent-watch", daemon=True).start()


WorkerEngineArgs = tuple[str, tuple[str, ...], dict[str, Any], bool]  # pack, plugins, kwargs, embed


def worker_init(engine_args: WorkerEngineArgs | None = None) -> None:
    exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the indexer's to handle, not each worker's
    # Decoders must not each spin up a full thread pool in OpenCV / BLAS: the cores are theirs already.
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    if engine_args is not None:
        from faceatlas.engine import Engine

        global _WORKER_ENGINE, _WORKER_KWARGS, _WORKER_EMBEDS
        pack, plugins, kwargs, embeds = engine_args
        _WORKER_ENGINE = Engine(pack, threads=1, attributes=bool(plugins))
        _WORKER_KWARGS = {"plugins": plugins, **kwargs}
        _WORKER_EMBEDS = embeds
