"""Search by face: which photos of the library contain the person in a query image.

The library's faces of one pack are searched through a :mod:`faceatlas.index` index (groups are
photos, so a photo counts once, by its best face). The in-memory index is saved beside the database
and reopened by the next search (``faceatlas search`` is one process per query): a query reads no
embedding from the database unless the library changed since the snapshot, which a fingerprint of
the face table (count, highest id, newest photo index time) tells in three index look-ups.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select

from faceatlas.errors import NoFaceError
from faceatlas.index import ExactIndex, FaceIndex, HnswIndex, IndexSettingError
from faceatlas.index.memory import META
from faceatlas.library.tables import Face, Person, Photo
from faceatlas.storage import Database, default_data_dir

if TYPE_CHECKING:
    from faceatlas.engine import Engine

log = logging.getLogger("faceatlas.library")
LOAD_CHUNK = 20_000
#: ``faceatlas search`` runs one process per query, so the index is opened for every query. The exact
#: matrix and an HNSW graph are both memory-mapped (opened without reading them), and the exact answer
#: is cheap enough up to this size (200 000 x 128: ~10 ms a query; 1 M: ~60 ms)
LIBRARY_HNSW_FROM = 1_000_000


@dataclass(frozen=True, slots=True)
class SearchHit:
    photo_id: int
    path: str
    face_id: int
    similarity: float  # cosine similarity of the best-matching face in the photo
    person_id: int | None
    person_name: str | None
    match: bool  # similarity >= the pack's same-person threshold


def snapshot_folder(db: Database, pack: str, kind: str) -> Path:
    """Beside a SQLite library; in the data folder for a server database."""
    digest = hashlib.sha256(db.url.encode()).hexdigest()[:16]
    if db.is_sqlite and db.url.split("///", 1)[-1] not in ("", ":memory:"):
        base = Path(db.url.split("///", 1)[-1]).parent / "index"
    else:
        base = default_data_dir() / "index"
    return base / digest / f"library-{pack}-{kind}"


class LibraryIndex:
    """The faces of one pack in a library, kept in step with the database by its fingerprint."""

    def __init__(
        self, db: Database, pack: str, *, backend: str = "auto", hnsw_from: int = LIBRARY_HNSW_FROM
    ) -> None:
        if backend not in ("exact", "hnsw", "pgvector", "auto"):
            raise IndexSettingError(f"index must be exact, hnsw, pgvector or auto, not {backend!r}")
        self.db, self.pack, self.backend, self.hnsw_from = db, pack, backend, hnsw_from
        self.index: FaceIndex | None = None
        self.fingerprint: list[Any] | None = None
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- keeping up with the database
    def _fingerprint(self) -> list[Any]:
        """What changes whenever faces are added, deleted or replaced: the number of faces (all packs:
        SQLite counts a whole table from its smallest index, a filtered count reads every entry), the
        highest face id, the newest photo index time (a re-indexed photo replaces its faces)."""
        with self.db.session() as s:
            count = s.scalar(select(func.count()).select_from(Face)) or 0
            top = s.scalar(select(func.max(Face.id))) or 0
            newest = s.scalar(select(func.max(Photo.indexed_at)))
        return [int(count), int(top), newest.isoformat() if newest else ""]

    def _dim(self) -> int | None:
        with self.db.session() as s:
            size = s.scalar(
                select(func.length(Face.embedding))
                .where(Face.pack == self.pack, Face.embedding.is_not(None))
                .limit(1)
            )
        return None if size is None else int(size) // 4

    def _load_rows(self, index: FaceIndex, after_id: int = 0) -> int:
        query = (
            select(Face.id, Face.photo_id, Face.embedding)
            .where(Face.pack == self.pack, Face.embedding.is_not(None), Face.id > after_id)
            .order_by(Face.id)
        )
        loaded = 0
        with self.db.session() as s:
            for rows in s.execute(query.execution_options(yield_per=LOAD_CHUNK)).partitions():
                rows = [r for r in rows if r[2] is not None and len(r[2]) == 4 * index.dim]
                if not rows:
                    continue
                vectors = np.frombuffer(b"".join(r[2] or b"" for r in rows), np.float32).reshape(
                    len(rows), -1
                )
                index.add(
                    np.fromiter((r[0] for r in rows), np.int64, len(rows)),
                    np.fromiter((r[1] for r in rows), np.int64, len(rows)),
                    vectors,
                )
                loaded += len(rows)
        return loaded

    def sync(self) -> None:
        with self._lock:
            if self.backend == "pgvector":
                self._sync_pgvector()
                return
            fingerprint = self._fingerprint()
            if self.index is None:
                self._open_snapshot(fingerprint)
            if fingerprint == self.fingerprint:
                return
            old = self.fingerprint
            if (
                self.index is not None
                and old is not None
                and len(old) == len(fingerprint)
                and fingerprint[0] > old[0]
                and self._only_appended(old, fingerprint)
            ):
                self._load_rows(self.index, after_id=old[1])  # new faces only (ids grow)
            else:
                self._reload(fingerprint[0])
            self.fingerprint = fingerprint
            self._save()

    def _only_appended(self, old: list[Any], new: list[Any]) -> bool:
        """True when the faces now in the table are the old ones plus faces with higher ids."""
        with self.db.session() as s:
            added = s.scalar(select(func.count()).select_from(Face).where(Face.id > old[1])) or 0
        return added > 0 and old[0] + int(added) == new[0]

    def _reload(self, count: int) -> None:
        started = time.perf_counter()
        dim = self._dim()
        kind = self.backend if self.backend != "auto" else ("hnsw" if count >= self.hnsw_from else "exact")
        index: FaceIndex = HnswIndex(dim or 1) if kind == "hnsw" else ExactIndex(dim or 1)
        index.reserve(count)
        if dim is not None:
            self._load_rows(index)
        self.index = index
        log.info(
            "library: %d faces loaded into a %s index in %.1f s",
            len(index),
            kind,
            time.perf_counter() - started,
        )

    def _kinds(self) -> tuple[str, ...]:
        return ("exact", "hnsw") if self.backend == "auto" else (self.backend,)

    def _open_snapshot(self, fingerprint: list[Any]) -> None:
        for kind in self._kinds():
            folder = snapshot_folder(self.db, self.pack, kind)
            if not (folder / META).is_file():
                continue
            try:
                loader = HnswIndex.load if kind == "hnsw" else ExactIndex.load
                index, meta = loader(folder)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("library index snapshot %s unreadable (%s); rebuilding", folder, exc)
                continue
            self.index, self.fingerprint = index, meta.get("fingerprint")
            return

    def _save(self) -> None:
        if self.index is None:
            return
        folder = snapshot_folder(self.db, self.pack, self.index.kind)
        try:
            self.index.save(folder, {"fingerprint": self.fingerprint})
        except OSError as exc:  # a read-only library still searches, it just reloads next time
            log.warning("cannot save the library index to %s: %s", folder, exc)
            return
        if isinstance(self.index, ExactIndex):
            self.index = ExactIndex.load(folder)[0]
        elif isinstance(self.index, HnswIndex) and not self.index.mapped:
            self.index = HnswIndex.load(folder)[0]

    def _sync_pgvector(self) -> None:
        if self.index is None:
            from faceatlas.index.pgvector import PgvectorIndex

            dim = self._dim()
            if dim is None:
                return
            self.index = PgvectorIndex(self.db, "library_faces", self.pack, dim)
        self.index.sync()

    # ----------------------------------------------------------------- search
    def search(self, query: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
        """(face ids, cosines) of the best face of each of the ``top`` best photos."""
        self.sync()
        if self.index is None or len(self.index) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        hits = self.index.search(np.atleast_2d(query), top, unique_groups=True)[0]
        return hits.keys.astype(np.int64), hits.cosines

    def describe(self) -> dict[str, object]:
        return {
            "library": True,
            **(self.index.describe() if self.index else {"backend": self.backend, "faces": 0}),
        }


_open_indexes: dict[tuple[str, str, str], LibraryIndex] = {}
_open_lock = threading.Lock()


def library_index(db: Database, pack: str, backend: str = "auto") -> LibraryIndex:
    """The process's index of ``pack`` in the library ``db`` (made on first use)."""
    with _open_lock:
        key = (db.url, pack, backend)
        if key not in _open_indexes:
            _open_indexes[key] = LibraryIndex(db, pack, backend=backend)
        return _open_indexes[key]


def search_by_embedding(
    db: Database, embedding: np.ndarray, *, pack: str, threshold: float, top: int = 20, index: str = "auto"
) -> list[SearchHit]:
    """Photos ranked by their best face's cosine similarity to ``embedding`` (same pack only)."""
    face_ids, cosines = library_index(db, pack, index).search(np.asarray(embedding, np.float32).ravel(), top)
    if face_ids.size == 0:
        return []
    with db.session() as session:
        info = {
            fid: (pid, path, person_id, name)
            for fid, pid, path, person_id, name in session.execute(
                select(Face.id, Photo.id, Photo.path, Face.person_id, Person.name)
                .join(Photo, Photo.id == Face.photo_id)
                .outerjoin(Person, Person.id == Face.person_id)
                .where(Face.id.in_([int(i) for i in face_ids]))
            ).all()
        }
    hits = []
    for fid, sim in zip(face_ids.tolist(), cosines.tolist(), strict=True):
        if fid not in info:  # deleted between the index's sync and this read
            continue
        pid, path, person_id, name = info[fid]
        hits.append(SearchHit(pid, path, fid, float(sim), person_id, name, sim >= threshold))
    return hits


def search_by_image(
    db: Database, engine: Engine, image: Any, *, top: int = 20, index: str = "auto"
) -> list[SearchHit]:
    """Search with the largest face of ``image`` (anything ``engine.analyze`` accepts)."""
    faces = engine.analyze(image, limit=1)
    if not faces or faces[0].embedding is None:
        raise NoFaceError("no face found in the query image")
    return search_by_embedding(
        db, faces[0].embedding, pack=engine.pack.id, threshold=engine.pack.threshold, top=top, index=index
    )
