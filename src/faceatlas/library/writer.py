"""The single writer of the indexer: one transaction per group of photos, a photo always with all its faces.

Photos arrive as :class:`PhotoResult` records from the pipeline (local processes or Ray). Because a
photo row and its face rows are inserted in the same transaction, and ``path`` is unique, a run
killed at any moment leaves only whole photos behind, and the next run re-does exactly the photos
whose transaction did not commit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from faceatlas.errors import LibraryWriteError
from faceatlas.face import DetectedFace
from faceatlas.library.scan import FileEntry, KnownPhoto, Move
from faceatlas.library.tables import STATUS_ERROR, STATUS_OK, Decision, Face, Photo
from faceatlas.storage import Database
from faceatlas.storage.db import utcnow


@dataclass(slots=True)
class PhotoResult:
    """Everything the library records about one photo after analysis (or failure)."""

    entry: FileEntry
    content_hash: str | None = None
    width: int | None = None
    height: int | None = None
    taken_at: datetime | None = None
    faces: list[DetectedFace] = field(default_factory=list)
    error: str | None = None
    pack: str | None = None
    #: Same bytes as already indexed (only size/mtime changed): refresh the stat, keep the faces.
    unchanged_content: bool = False
    #: faceatlas.quality score of each face (same order as ``faces``); None where not measured.
    quality: list[float] | None = None


def face_row(photo_id: int, face: DetectedFace, quality: float | None = None) -> dict:
    """Column values of one face row."""
    row: dict = {
        "quality": None if quality is None else float(quality),
        "photo_id": photo_id,
        "x_min": float(face.box[0]),
        "y_min": float(face.box[1]),
        "x_max": float(face.box[2]),
        "y_max": float(face.box[3]),
        "score": float(face.score),
        "landmarks": np.asarray(face.landmarks, np.float32).tobytes(),
        "embedding": None if face.embedding is None else np.asarray(face.embedding, np.float32).tobytes(),
        "pack": face.pack,
        "age": None,
        "gender": None,
        "gender_probability": None,
        "pitch": None,
        "yaw": None,
        "roll": None,
        "person_id": None,
        "source": None,
    }
    if face.age is not None:
        row["age"] = float(face.age.value)
    if face.gender is not None:
        row["gender"] = face.gender.value
        row["gender_probability"] = float(face.gender.probability)
    if face.pose is not None:
        row["pitch"], row["yaw"], row["roll"] = (
            float(face.pose.pitch),
            float(face.pose.yaw),
            float(face.pose.roll),
        )
    return row


def known_photos(db: Database) -> dict[str, KnownPhoto]:
    """Path -> what the library holds, for deciding what to skip."""
    with db.session() as session:
        rows = session.execute(select(Photo.path, Photo.size, Photo.mtime, Photo.content_hash)).all()
    return {path: KnownPhoto(size, mtime, content_hash) for path, size, mtime, content_hash in rows}


def apply_moves(db: Database, moves: Sequence[Move]) -> int:
    """Point moved photos at their new path (faces, people and decisions stay as they are)."""
    if not moves:
        return 0
    with db.session() as session:
        for move in moves:
            session.execute(
                update(Photo)
                .where(Photo.path == move.old_path)
                .values(path=move.entry.path, size=move.entry.size, mtime=move.entry.mtime)
            )
    return len(moves)


@dataclass(frozen=True, slots=True)
class PruneReport:
    photos: int
    faces: int
    removed_people: int  # unnamed people left without faces, deleted


def prune_photos(db: Database, paths: Sequence[str]) -> PruneReport:
    """Forget deleted photos: their faces leave their people; unnamed people left empty disappear."""
    from faceatlas.library.clustering import drop_empty_people

    photos = faces = 0
    with db.session() as session:
        for start in range(0, len(paths), 500):
            chunk = list(paths[start : start + 500])
            ids = list(session.scalars(select(Photo.id).where(Photo.path.in_(chunk))))
            if not ids:
                continue
            # Explicit, not only ON DELETE CASCADE: decisions about these faces go with them on any backend.
            face_ids = select(Face.id).where(Face.photo_id.in_(ids))
            faces += int(session.scalar(select(func.count()).select_from(face_ids.subquery())) or 0)
            session.execute(delete(Decision).where(Decision.face_id.in_(face_ids)))
            session.execute(delete(Face).where(Face.photo_id.in_(ids)))
            session.execute(delete(Photo).where(Photo.id.in_(ids)))
            photos += len(ids)
        removed = drop_empty_people(session) if photos else 0
    return PruneReport(photos, faces, removed)


class LibraryWriter:
    """Writes photo results in transactions; not thread-safe (use one per writing thread)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.seconds = 0.0
        self.photos = 0
        self.faces = 0

    def write(self, results: Sequence[PhotoResult]) -> None:
        """Commit ``results`` in one transaction (all or nothing)."""
        if not results:
            return
        start = time.perf_counter()
        with self.db.session() as session:
            for result in results:
                self._write_one(session, result)
        self.seconds += time.perf_counter() - start
        self.photos += len(results)
        self.faces += sum(len(r.faces) for r in results if r.error is None and not r.unchanged_content)

    @staticmethod
    def _write_one(session: Session, result: PhotoResult) -> None:
        entry = result.entry
        photo_id = session.execute(select(Photo.id).where(Photo.path == entry.path)).scalar_one_or_none()
        if result.unchanged_content and photo_id is not None:
            session.execute(
                update(Photo).where(Photo.id == photo_id).values(size=entry.size, mtime=entry.mtime)
            )
            return
        values = {
            "path": entry.path,
            "size": entry.size,
            "mtime": entry.mtime,
            "content_hash": result.content_hash,
            "width": result.width,
            "height": result.height,
            "taken_at": result.taken_at,
            "status": STATUS_OK if result.error is None else STATUS_ERROR,
            "error": result.error,
            "pack": result.pack,
            "face_count": 0 if result.error is not None else len(result.faces),
            "indexed_at": utcnow(),
        }
        if photo_id is None:
            photo_id = session.execute(insert(Photo).values(**values).returning(Photo.id)).scalar_one()
        else:
            # The file changed: its old faces (and decisions about them) no longer describe it.
            session.execute(delete(Face).where(Face.photo_id == photo_id))
            session.execute(update(Photo).where(Photo.id == photo_id).values(**values))
        if result.error is None and result.faces:
            qualities: list[float | None] = [None] * len(result.faces)
            if result.quality is not None:
                qualities = list(result.quality)
            session.execute(
                insert(Face),
                [face_row(photo_id, f, q) for f, q in zip(result.faces, qualities, strict=True)],
            )


class WriterThread:
    """Runs a :class:`LibraryWriter` in a background thread fed through a bounded queue.

    Groups whatever results are waiting (up to ``max_group``) into one transaction so that the
    commit rate adapts to the pipeline's speed.
    """

    _STOP = object()

    def __init__(self, db: Database, *, max_queue: int = 256, max_group: int = 64) -> None:
        self.writer = LibraryWriter(db)
        self.max_group = max_group
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="faceatlas-writer", daemon=True)
        self.thread.start()

    def put(self, result: PhotoResult) -> None:
        if self.error is not None:
            raise LibraryWriteError("library writer failed") from self.error
        self.queue.put(result)

    def close(self) -> None:
        """Flush everything queued and stop; re-raises a write error."""
        self.queue.put(self._STOP)
        self.thread.join()
        if self.error is not None:
            raise LibraryWriteError("library writer failed") from self.error

    def _run(self) -> None:
        stop = False
        while not stop:
            group = [self.queue.get()]
            while len(group) < self.max_group:
                try:
                    group.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if group[-1] is self._STOP or self._STOP in group:
                stop = True
                group = [g for g in group if g is not self._STOP]
            if self.error is None:
                try:
                    self.writer.write(group)
                except BaseException as exc:  # surfaced to the producer via put()/close()
                    self.error = exc
