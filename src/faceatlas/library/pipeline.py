"""The streaming indexer: scan → decode, detect, embed (worker processes) → one writer.

Where the stages run is chosen per run (:func:`placement`):

- CPU (the default): every worker process decodes, detects, embeds and estimates attributes with
  its own single-threaded engine, one worker per core. A core never waits for another stage
  whatever the photo size (a 250 px LFW photo is all embedding, a 12 MP photo mostly decoding),
  and only the faces travel back to the main process, never the pixels. The main process writes.
- Accelerators (CUDA, TensorRT, ...): workers only decode; the main process's engine analyses
  batches of photos, so detection and embedding are batched across photos on the device.
- ``detect_in_workers=True, embed_in_workers=False``: the split of earlier versions (workers decode
  and detect, the main process embeds), kept for comparison (``benchmarks/index.py``).

At most ``window`` photos are in flight, which bounds memory. The writer thread commits whole photos
in transactions (see :mod:`faceatlas.library.writer`).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faceatlas.errors import FaceAtlasError
from faceatlas.library.scan import FileEntry, KnownPhoto, find_moves, missing_paths, plan, scan_photos
from faceatlas.library.work import (
    Decoded,
    WorkerEngineArgs,
    analyze_decoded,
    decode_and_detect,
    decode_photo,
    describe_error,
    worker_init,
)
from faceatlas.library.writer import PhotoResult, WriterThread, apply_moves, known_photos
from faceatlas.quality import face_qualities
from faceatlas.storage import Database

if TYPE_CHECKING:
    from faceatlas.engine import Engine

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
    #: engine. None: yes on CPU, no when the engine runs on an accelerator (see :func:`placement`).
    detect_in_workers: bool | None = None
    #: With detection in the workers, embed there too (the main process only writes). None: yes on CPU.
    embed_in_workers: bool | None = None


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

    def record(self, result: PhotoResult) -> None:
        """Count one photo handed to the writer (the local and the Ray indexer both report this way)."""
        if result.error is not None:
            self.errors.append((result.entry.path, result.error))
        elif not result.unchanged_content:
            self.faces += len(result.faces)

    def finish(self, indexed: int, write_seconds: float) -> None:
        """Close the run: how many photos were written, and the writer's time."""
        self.indexed = indexed
        self.stage_seconds["write"] += write_seconds

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


class Analyzer:
    """Runs batches of decoded photos through the engine and turns them into :class:`PhotoResult`s."""

    def __init__(self, engine: Engine, options: IndexOptions) -> None:
        self.engine = engine
        self.options = options
        self.stage_seconds: dict[str, float] = dict.fromkeys(("detect", "embed", "attributes"), 0.0)

    def finished(self, decoded: Decoded) -> PhotoResult:
        """The result of a photo a worker analysed completely (``embed_in_workers``)."""
        self._account(decoded.timings)
        width, height = decoded.original_size or (None, None)
        pack = self.engine.pack.id
        faces = list(decoded.faces or [])
        for face in faces:
            face.pack = pack
        return PhotoResult(
            decoded.entry,
            decoded.content_hash,
            width,
            height,
            decoded.taken_at,
            faces,
            pack=pack,
            quality=decoded.quality,
        )

    def analyze(self, batch: Sequence[Decoded]) -> list[PhotoResult]:
        if batch and batch[0].faces is not None:
            return self._embed_detected(batch)
        images = [d.image for d in batch]
        timings: dict[str, float] = {}
        kwargs: dict[str, Any] = {
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


def default_split(
    cores: int | None = None,
    *,
    detect_in_workers: bool = False,
    embed_in_workers: bool = False,
    accelerated: bool = False,
) -> tuple[int, int]:
    """(worker processes, main engine threads) for ``cores`` CPU cores and a stage placement.

    - Everything in the workers: one single-threaded worker per core; the main engine only names
      the pack (1 thread). Nothing to balance: each core runs whole photos, whatever their size.
    - Accelerator in the main process: every core but one decodes to keep the device fed.
    - Detection in the workers, embedding in the main process: half the cores each (the old split:
      idle cores whenever the two halves cost different amounts, e.g. 0.65 CPU/wall core on LFW).
    - Only decoding in the workers (CPU): a third of the cores decode (a 12 MP JPEG at 1/4 scale
      costs ~20 ms, analysing it ~40 ms).
    Never more busy threads than cores: oversubscribed ONNX Runtime threads lose throughput.
    """
    cores = cores or len(os.sched_getaffinity(0))
    if detect_in_workers and embed_in_workers:
        return cores, 1
    if accelerated and not detect_in_workers:
        return max(1, cores - 1), 1
    workers = max(1, cores // 2 if detect_in_workers else cores // 3)
    return workers, max(1, cores - workers)


def is_accelerated(engine: Engine | None) -> bool:
    """Whether ``engine`` runs on an execution provider other than ONNX Runtime's CPU one."""
    providers = getattr(engine, "providers", None) or ["CPUExecutionProvider"]
    return providers[0] != "CPUExecutionProvider"


def placement(
    options: IndexOptions, engine: Engine | None = None, *, accelerated: bool | None = None
) -> tuple[bool, bool]:
    """(detect in workers, embed in workers) for this run: the options, or the default for the engine.

    CPU: both, so every core runs whole photos. Accelerator: neither, so the device sees batches.
    """
    on_cpu = not (is_accelerated(engine) if accelerated is None else accelerated)
    detect = on_cpu if options.detect_in_workers is None else options.detect_in_workers
    embed = detect and (on_cpu if options.embed_in_workers is None else options.embed_in_workers)
    return detect, embed


def split_for(
    options: IndexOptions, *, accelerated: bool = False, cores: int | None = None
) -> tuple[int, int]:
    """:func:`default_split` for the placement ``options`` ask for (workers as given when set)."""
    detect, embed = placement(options, accelerated=accelerated)
    workers, threads = default_split(
        cores, detect_in_workers=detect, embed_in_workers=embed, accelerated=accelerated
    )
    return options.workers or workers, threads


ProgressCallback = Callable[[int, int, int], None]  # (photos done, photos to do, faces found)


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
    engine: Engine,
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
    engine: Engine,
    todo: list[FileEntry],
    known: dict[str, KnownPhoto],
    options: IndexOptions,
    report: IndexReport,
    progress: ProgressCallback | None,
) -> None:
    detect_in_workers, embed_in_workers = placement(options, engine)
    workers = split_for(options, accelerated=is_accelerated(engine))[0]
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
        report.record(result)
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
        engine_args: WorkerEngineArgs | None = None
        if detect_in_workers:
            detect_kwargs = {"det_threshold": options.det_threshold, "min_face_size": options.min_face_size}
            engine_args = (engine.pack.id, tuple(options.plugins), detect_kwargs, embed_in_workers)
        analyze_kwargs = {
            "plugins": tuple(options.plugins),
            "det_threshold": options.det_threshold,
            "min_face_size": options.min_face_size,
        }

        def handle(decoded: Decoded) -> None:
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
            elif decoded.embedded:
                emit(analyzer.finished(decoded))
            else:
                pending.append(decoded)

        # Workers are spawned and load their engines (~1 s); until the first one answers, the main
        # process indexes photos itself instead of waiting (only when workers run whole photos).
        workers_up = not embed_in_workers
        with ProcessPoolExecutor(
            max_workers=workers, initializer=worker_init, initargs=(engine_args,), mp_context=context
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
                if not workers_up:
                    finished, in_flight = wait(in_flight, timeout=0, return_when=FIRST_COMPLETED)
                    entry = None if finished else next(queue, None)
                    if entry is None:
                        # a worker answered, or nothing is left for the main process to take
                        workers_up, exhausted = True, exhausted or not finished
                    else:
                        old = known.get(entry.path)
                        decoded = decode_photo(entry, options.decode_size, old.content_hash if old else None)
                        if decoded.image is not None:
                            decoded = analyze_decoded(engine, decoded, embed=True, **analyze_kwargs)
                        handle(decoded)
                else:
                    finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    handle(future.result())
                if len(pending) >= batch_size or (exhausted and not in_flight and pending):
                    flush()
            if pending:
                flush()
    finally:
        writer.close()
        for stage, secs in analyzer.stage_seconds.items():
            report.stage_seconds[stage] += secs
        report.finish(done, writer.writer.seconds)
