"""The streaming indexer: scan → decode (worker processes) → batched analysis (engine) → one writer.

Decoding (file read, content hash, DCT-scaled JPEG decode, EXIF orientation) is the CPU-heavy part
that parallelises perfectly, so it runs in a process pool; at most ``window`` decodes are in
flight, which bounds memory. The main process groups decoded images into batches for
``engine.analyze_batch`` and hands each analysed photo to the writer thread, which commits whole
photos in transactions (see :mod:`faceatlas.library.writer`).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from faceatlas.errors import FaceAtlasError
from faceatlas.library.scan import FileEntry, KnownPhoto, find_moves, missing_paths, plan, scan_photos
from faceatlas.library.writer import PhotoResult, WriterThread, apply_moves, known_photos
from faceatlas.quality import face_qualities
from faceatlas.storage import Database

#: Long side the photos are decoded to (DCT-scaled, so a 12 MP JPEG decodes at 1/2..1/8 size).
#: 960 lets a 4000x3000 JPEG decode at 1/4 (1000x750) while a face of 5 % of the width keeps ~50 px.
DEFAULT_DECODE_SIZE = 960

INDEX_STAGES = ("decode", "detect", "embed", "attributes", "write")


@dataclass(frozen=True, slots=True)
class IndexOptions:
    workers: int = 0  # 0 = see default_split()
    batch_size: int = 16
    decode_size: int = DEFAULT_DECODE_SIZE
    plugins: tuple[str, ...] = ()
    det_threshold: float | None = None
    min_face_size: float = 0
    #: Detect (and estimate attributes) in the decode processes, each with its own single-threaded
    #: engine; the main process then only embeds. Balances the cores better when decoding is cheap
    #: compared with analysis (see ``benchmarks/index.py``: 31.6 vs 23.5 photos/s on 2 cores).
    detect_in_workers: bool = True


@dataclass(slots=True)
class IndexReport:
    """What one indexing run did, with the time spent per stage."""

    found: int = 0
    skipped: int = 0
    indexed: int = 0
    faces: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    moved: int = 0  # photos found under a new path by their content hash (faces kept, not re-detected)
    missing: list[str] = field(default_factory=list)  # known photos gone from disk (see `index --prune`)
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(INDEX_STAGES, 0.0))
    wall_seconds: float = 0.0

    @property
    def photos_per_second(self) -> float:
        return self.indexed / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def slowest_stage(self) -> str:
        return max(self.stage_seconds, key=lambda k: self.stage_seconds[k])

    def stage_table(self) -> list[tuple[str, float, float]]:
        """(stage, seconds, share of the summed stage time)."""
        total = sum(self.stage_seconds.values()) or 1.0
        return [(name, secs, secs / total) for name, secs in self.stage_seconds.items()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "skipped": self.skipped,
            "indexed": self.indexed,
            "faces": self.faces,
            "errors": [{"path": p, "reason": r} for p, r in self.errors],
            "moved": self.moved,
            "missing": self.missing,
            "wall_seconds": round(self.wall_seconds, 3),
            "photos_per_second": round(self.photos_per_second, 2),
            "faces_per_second": round(self.faces / self.wall_seconds, 2) if self.wall_seconds else 0.0,
            "stages": {
                name: {"seconds": round(s, 3), "share": round(f, 4)} for name, s, f in self.stage_table()
            },
            "slowest_stage": self.slowest_stage,
        }


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
    faces: list[Any] | None = None  # already detected (detect_in_workers), not yet embedded
    timings: dict[str, float] = field(default_factory=dict)


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


def decode_and_detect(entry: FileEntry, decode_size: int, known_hash: str | None) -> Decoded:
    """:func:`decode_photo`, then detection in this worker's own engine when it has one."""
    decoded = decode_photo(entry, decode_size, known_hash)
    if _WORKER_ENGINE is None or decoded.image is None:
        return decoded
    timings: dict[str, float] = {}
    try:
        decoded.faces = _WORKER_ENGINE.analyze(decoded.image, embed=False, timings=timings, **_WORKER_KWARGS)
    except FaceAtlasError as exc:
        decoded.error, decoded.image = describe_error(exc), None
    decoded.timings = timings
    return decoded


class Analyzer:
    """Runs batches of decoded photos through the engine and turns them into :class:`PhotoResult`s."""

    def __init__(self, engine: Any, options: IndexOptions) -> None:
        self.engine = engine
        self.options = options
        self.stage_seconds: dict[str, float] = dict.fromkeys(("detect", "embed", "attributes"), 0.0)

    def analyze(self, batch: Sequence[Decoded]) -> list[PhotoResult]:
        if batch and batch[0].faces is not None:
            return self._embed_detected(batch)
        images = [d.image for d in batch]
        timings: dict[str, float] = {}
        kwargs = {
            "plugins": self.options.plugins,
            "det_threshold": self.options.det_threshold,
            "min_face_size": self.options.min_face_size,
            "timings": timings,
        }
        faces_per_image: list[Any]
        try:
            faces_per_image = self.engine.analyze_batch(images, **kwargs)
        except FaceAtlasError:
            # One bad image should not fail its neighbours: retry one by one.
            faces_per_image = []
            for image in images:
                try:
                    faces_per_image.append(self.engine.analyze(image, **kwargs))
                except FaceAtlasError as exc:
                    faces_per_image.append(exc)
        self._account(timings)
        pack = self.engine.pack.id
        results = []
        for d, faces in zip(batch, faces_per_image, strict=True):
            width, height = d.image.original_size
            if isinstance(faces, BaseException):
                results.append(
                    PhotoResult(
                        d.entry,
                        d.content_hash,
                        width,
                        height,
                        d.taken_at,
                        error=describe_error(faces),
                        pack=pack,
                    )
                )
            else:
                results.append(
                    PhotoResult(
                        d.entry,
                        d.content_hash,
                        width,
                        height,
                        d.taken_at,
                        list(faces),
                        pack=pack,
                        quality=face_qualities(d.image, faces),
                    )
                )
        return results

    def _embed_detected(self, batch: Sequence[Decoded]) -> list[PhotoResult]:
        pack = self.engine.pack.id
        results = []
        start = time.perf_counter()
        for d in batch:
            faces = list(d.faces or [])
            if faces:
                self.engine.embed_faces(d.image, faces)
            for face in faces:
                face.pack = pack
            self._account(d.timings)
            width, height = d.image.original_size
            quality = face_qualities(d.image, faces)
            results.append(
                PhotoResult(
                    d.entry, d.content_hash, width, height, d.taken_at, faces, pack=pack, quality=quality
                )
            )
        self.stage_seconds["embed"] += time.perf_counter() - start
        return results

    def _account(self, timings: dict[str, float]) -> None:
        # Alignment is the recogniser's input preparation, so it is reported as part of "embed".
        self.stage_seconds["detect"] += timings.get("detect", 0.0) + timings.get("decode", 0.0)
        self.stage_seconds["embed"] += timings.get("align", 0.0) + timings.get("embed", 0.0)
        self.stage_seconds["attributes"] += timings.get("attributes", 0.0)


def default_split(cores: int | None = None, *, detect_in_workers: bool = False) -> tuple[int, int]:
    """(decode processes, engine threads) for ``cores`` CPU cores.

    Decoding a 12 MP JPEG at 1/4 scale costs ~20 ms and analysing it ~50 ms, so about a third of
    the cores decode and the rest run the engine. Never more busy threads than cores: ONNX Runtime
    threads spin while waiting, so oversubscribing halves the throughput (measured on 2 cores:
    1 decoder + 1 engine thread 24 photos/s, 1 + 2 threads 12 photos/s, 2 + 1 15 photos/s).
    """
    cores = cores or len(os.sched_getaffinity(0))
    # With detection in the workers, decoding + detecting (~40 ms) and embedding (~35 ms) are even.
    workers = max(1, cores // 2 if detect_in_workers else cores // 3)
    return workers, max(1, cores - workers)


ProgressCallback = Callable[[int, int, int], None]  # (photos done, photos to do, faces found)


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


def _worker_init(engine_args: tuple[str, tuple[str, ...], dict[str, Any]] | None = None) -> None:
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

        global _WORKER_ENGINE, _WORKER_KWARGS
        pack, plugins, kwargs = engine_args
        _WORKER_ENGINE = Engine(pack, threads=1, attributes=bool(plugins))
        _WORKER_KWARGS = {"plugins": plugins, **kwargs}


def start_run(
    db: Database, roots: Iterable[str | os.PathLike[str]], progress: ProgressCallback | None
) -> tuple[IndexReport, list[FileEntry], dict[str, KnownPhoto]]:
    """Scan ``roots`` and split the photos into those to index and those already indexed and unchanged."""
    report = IndexReport()
    entries = scan_photos(roots)
    known = known_photos(db)
    todo, report.skipped = plan(entries, known)
    todo, moves, report.missing = find_moves(todo, missing_paths(known, entries), known)
    report.moved = apply_moves(db, moves)
    report.found = len(entries)
    if progress:
        progress(0, len(todo), 0)
    return report, todo, known


def index_library(
    db: Database,
    engine: Any,
    roots: Iterable[str | os.PathLike[str]],
    *,
    options: IndexOptions | None = None,
    progress: ProgressCallback | None = None,
) -> IndexReport:
    """Index every new or changed photo under ``roots`` into the library ``db``."""
    options = options or IndexOptions()
    started = time.perf_counter()
    report, todo, known = start_run(db, roots, progress)
    if todo:
        _run_local(db, engine, todo, known, options, report, progress)
    report.wall_seconds = time.perf_counter() - started
    return report


def _run_local(
    db: Database,
    engine: Any,
    todo: list[FileEntry],
    known: dict[str, KnownPhoto],
    options: IndexOptions,
    report: IndexReport,
    progress: ProgressCallback | None,
) -> None:
    workers = options.workers or default_split(detect_in_workers=options.detect_in_workers)[0]
    batch_size = max(options.batch_size, 1)
    window = batch_size * 2 + workers * 2
    analyzer = Analyzer(engine, options)
    writer = WriterThread(db)
    pending: list[Decoded] = []
    in_flight: set[Future] = set()
    queue = iter(todo)
    done = 0

    def emit(result: PhotoResult) -> None:
        nonlocal done
        writer.put(result)
        done += 1
        if result.error is not None:
            report.errors.append((result.entry.path, result.error))
        elif not result.unchanged_content:
            report.faces += len(result.faces)
        if progress:
            progress(done, len(todo), report.faces)

    def flush() -> None:
        batch = pending[:]
        pending.clear()
        for result in analyzer.analyze(batch):
            emit(result)

    try:
        # "spawn": forking a process whose ONNX Runtime / OpenCV thread pools are running can
        # deadlock the child (seen with cv2.setNumThreads after fork), so decoders start clean.
        context = multiprocessing.get_context("spawn")
        engine_args = None
        if options.detect_in_workers:
            detect_kwargs = {"det_threshold": options.det_threshold, "min_face_size": options.min_face_size}
            engine_args = (engine.pack.id, tuple(options.plugins), detect_kwargs)
        with ProcessPoolExecutor(
            max_workers=workers, initializer=_worker_init, initargs=(engine_args,), mp_context=context
        ) as pool:
            exhausted = False
            while True:
                while not exhausted and len(in_flight) < window:
                    entry = next(queue, None)
                    if entry is None:
                        exhausted = True
                        break
                    old = known.get(entry.path)
                    in_flight.add(
                        pool.submit(
                            decode_and_detect, entry, options.decode_size, old.content_hash if old else None
                        )
                    )
                if not in_flight:
                    break
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    decoded: Decoded = future.result()
                    report.stage_seconds["decode"] += decoded.seconds
                    if decoded.error is not None or decoded.unchanged_content:
                        emit(
                            PhotoResult(
                                decoded.entry,
                                decoded.content_hash,
                                error=decoded.error,
                                unchanged_content=decoded.unchanged_content,
                            )
                        )
                    else:
                        pending.append(decoded)
                if len(pending) >= batch_size or (exhausted and not in_flight and pending):
                    flush()
            if pending:
                flush()
    finally:
        writer.close()
        for stage, secs in analyzer.stage_seconds.items():
            report.stage_seconds[stage] += secs
        report.stage_seconds["write"] += writer.writer.seconds
        report.indexed = done
