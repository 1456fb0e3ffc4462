"""Indexing jobs of the web app: the streaming indexer, then clustering, one job per library at a time.

A job's state lives in ``<data dir>/jobs/<library>.json`` and the job holds an exclusive lock on
``<library>.lock`` while it runs, so every server process (``--workers N``) sees the same job and none
starts a second one. A job whose lock is free but whose state says it was running was killed with its
server: it is started again at the next start-up or the next request, and because the indexer skips the
photos already committed, nothing is indexed twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from faceatlas.errors import FaceAtlasError
from faceatlas.storage.db import utcnow

if TYPE_CHECKING:
    from faceatlas.web.context import LibraryHandle, WebContext

log = logging.getLogger("faceatlas.web")

ACTIVE_STATES = ("queued", "indexing", "clustering")
#: Seconds between two writes of a running job's progress to its file.
SAVE_INTERVAL = 0.5


class JobRunningError(FaceAtlasError, RuntimeError):
    """The library already has a running job."""


class JobCancelledError(FaceAtlasError):
    """Raised inside the indexer's progress callback to stop a job."""


@dataclass
class JobState:
    id: str
    library: str
    kind: str  # "folder" | "upload"
    roots: list[str]
    state: str = "queued"  # queued, indexing, clustering, done, failed, cancelled
    done: int = 0
    total: int = 0
    found: int = 0
    skipped: int = 0
    faces: int = 0
    photos_per_second: float = 0.0
    eta_seconds: float | None = None
    errors: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    rejected: list[dict[str, str]] = field(default_factory=list)  # uploads that are not photos
    stages: dict[str, Any] = field(default_factory=dict)
    slowest_stage: str | None = None
    clustering: dict[str, int] = field(default_factory=dict)
    message: str | None = None
    started_at: str = field(default_factory=lambda: utcnow().isoformat())
    finished_at: str | None = None
    resumed: int = 0

    @property
    def percent(self) -> float:
        if self.state == "done":
            return 100.0
        if self.total == 0:
            return 0.0
        return round(100.0 * self.done / self.total, 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["percent"] = self.percent
        data["active"] = self.state in ACTIVE_STATES
        return data


class _LibraryJobs:
    """The job file and lock of one library."""

    def __init__(self, folder: Path, library: str) -> None:
        self.state_path = folder / f"{library}.json"
        self.lock_path = folder / f"{library}.lock"

    def read(self) -> JobState | None:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        data.pop("percent", None)
        data.pop("active", None)
        try:
            return JobState(**data)
        except TypeError:
            return None

    def write(self, job: JobState) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f"{self.state_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(job.to_dict()))
        os.replace(tmp, self.state_path)

    def try_lock(self) -> IO[str] | None:
        """The open, exclusively locked lock file, or None when another job holds it."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+")  # noqa: SIM115 (held for the job's life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        return handle


class JobManager:
    """Starts, watches, cancels and resumes the indexing jobs of a :class:`WebContext`'s libraries."""

    def __init__(self, web: WebContext) -> None:
        self.web = web
        self.folder = web.config.data_dir / "jobs"
        self._threads: dict[str, threading.Thread] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._live: dict[str, JobState] = {}
        self._lock = threading.Lock()
        self._stopping = False

    def _files(self, library: str) -> _LibraryJobs:
        return _LibraryJobs(self.folder, library)

    def current(self, library: str) -> JobState | None:
        """The library's running or last job (resuming it first if its server was killed)."""
        with self._lock:
            live = self._live.get(library)
        if live is not None:
            return live
        job = self._files(library).read()
        if job is not None and job.state in ACTIVE_STATES:
            self._resume(library, job)
            with self._lock:
                return self._live.get(library, job)
        return job

    def start(
        self, library: str, roots: list[str], kind: str, rejected: list[dict[str, str]] | None = None
    ) -> JobState:
        job = JobState(uuid.uuid4().hex[:12], library, kind, roots, rejected=list(rejected or []))
        if not self._launch(library, job):
            raise JobRunningError(f"library {library!r} already has a running job; wait or cancel it")
        return job

    def cancel(self, library: str) -> JobState | None:
        with self._lock:
            event = self._cancel.get(library)
        if event is not None:
            event.set()
            thread = self._threads.get(library)
            if thread is not None:
                thread.join(timeout=30)
        return self.current(library)

    def resume_interrupted(self) -> None:
        for library in self.web.libraries:
            job = self._files(library).read()
            if job is not None and job.state in ACTIVE_STATES:
                self._resume(library, job)

    def shutdown(self) -> None:
        """Stop the running jobs, leaving them marked active so that the next start resumes them."""
        self._stopping = True
        with self._lock:
            events = list(self._cancel.values())
            threads = list(self._threads.values())
        for event in events:
            event.set()
        for thread in threads:
            thread.join(timeout=30)

    def _resume(self, library: str, job: JobState) -> None:
        job.resumed += 1
        job.message = "resumed after the server stopped"
        self._launch(library, job)

    def _launch(self, library: str, job: JobState) -> bool:
        with self._lock:
            thread = self._threads.get(library)
            if thread is not None and thread.is_alive():
                return False
            files = self._files(library)
            lock = files.try_lock()
            if lock is None:
                return False
            cancel = threading.Event()
            self._cancel[library] = cancel
            self._live[library] = job
            files.write(job)
            worker = threading.Thread(
                target=self._run, args=(library, job, files, lock, cancel), name=f"job-{library}", daemon=True
            )
            self._threads[library] = worker
        worker.start()
        return True

    def _run(
        self, library: str, job: JobState, files: _LibraryJobs, lock: IO[str], cancel: threading.Event
    ) -> None:
        handle = self.web.library(library)
        try:
            self._index(handle, job, files, cancel)
            job.state = "clustering"
            files.write(job)
            self._cluster(handle, job)
            job.state, job.eta_seconds = "done", 0.0
        except JobCancelledError:
            if self._stopping:
                job.message = "stopped with the server; resumes at the next start"
                files.write(job)  # still active: resumed later
                return
            job.state, job.message = "cancelled", "cancelled; start it again to go on where it stopped"
        except (FaceAtlasError, OSError) as exc:
            job.state, job.message = "failed", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a job thread must record why it died, never vanish silently
            log.exception("indexing job %s failed", job.id)
            job.state, job.message = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            if job.state not in ACTIVE_STATES:
                job.finished_at = utcnow().isoformat()
            files.write(job)
            with self._lock:
                self._live.pop(library, None)
                self._cancel.pop(library, None)
                self._threads.pop(library, None)
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def _index(
        self, handle: LibraryHandle, job: JobState, files: _LibraryJobs, cancel: threading.Event
    ) -> None:
        from faceatlas.library.pipeline import IndexOptions, index_library
        from faceatlas.library.scan import scan_photos

        job.state = "indexing"
        files.write(job)
        # Files (not folders) go to the indexer: a symlink under a root that points outside it is dropped.
        allowed = [Path(r).resolve() for r in job.roots]
        photos = [
            e.path for e in scan_photos(job.roots) if any(Path(e.path).is_relative_to(a) for a in allowed)
        ]
        started = time.monotonic()
        last_save = 0.0

        def progress(done: int, total: int, faces: int) -> None:
            nonlocal last_save
            if cancel.is_set():
                raise JobCancelledError("cancelled")
            job.done, job.total, job.faces = done, total, faces
            elapsed = time.monotonic() - started
            job.photos_per_second = round(done / elapsed, 2) if elapsed > 0 and done else 0.0
            job.eta_seconds = (
                round((total - done) / job.photos_per_second, 1) if job.photos_per_second else None
            )
            now = time.monotonic()
            if now - last_save >= SAVE_INTERVAL or done == total:
                last_save = now
                files.write(job)

        if not photos:
            report = None
        else:
            report = index_library(
                handle.db, self.web.engine, photos, options=IndexOptions(workers=1), progress=progress
            )
        if report is not None:
            data = report.to_dict()
            job.found, job.skipped = report.found, report.skipped
            job.errors = data["errors"]
            job.stages, job.slowest_stage = data["stages"], data["slowest_stage"]
            job.photos_per_second = data["photos_per_second"]
        job.done = job.total

    def _cluster(self, handle: LibraryHandle, job: JobState) -> None:
        from faceatlas.library.browse import forget
        from faceatlas.library.clustering import ClusterOptions, cluster_library

        engine = self.web.engine
        report = cluster_library(handle.db, engine.pack.id, ClusterOptions(threshold=engine.pack.threshold))
        forget(handle.db)  # the pages show the new people at once
        job.clustering = {
            "faces": report.faces,
            "joined_existing": report.joined_existing,
            "clustered": report.clustered,
            "new_people": report.new_people,
            "unassigned": report.unassigned,
            "people": report.people,
        }
