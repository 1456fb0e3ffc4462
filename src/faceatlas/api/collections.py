"""In-memory face collections: one float32 matrix per recognition service, searched with one product.

Each :class:`Collection` mirrors the faces of one service that were embedded with the engine's pack.
It follows the database through the service's version log (:meth:`ServiceStore.changes_since`):
writes made by this process are applied right after they commit, writes of other processes are
picked up by a cheap version poll (at most every ``poll_interval`` seconds) before a search.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import numpy as np

from faceatlas.storage.services import FaceRows, ServiceStore
from faceatlas.vectors import normalize_rows


def round_half_up(value: float, places: int = 5) -> float:
    """Java's BigDecimal.valueOf(x).setScale(places, HALF_UP), which CompreFace applies to similarities."""
    return float(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS after a big reload (glibc keeps them otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _grown(array: np.ndarray, used: int, capacity: int) -> np.ndarray:
    out = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    out[:used] = array[:used]
    return out


@dataclass(frozen=True, slots=True)
class Match:
    image_id: str
    subject: str
    cosine: float


class Collection:
    """The searchable embeddings of one service (only those of one pack)."""

    def __init__(
        self, store: ServiceStore, service_id: int, pack: str, dim: int, poll_interval: float
    ) -> None:
        self.store = store
        self.service_id = service_id
        self.pack = pack
        self.dim = dim
        self.poll_interval = poll_interval
        self.version = -1
        self._lock = threading.RLock()
        self._checked = 0.0
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._subject_of = np.zeros(0, dtype=np.int64)
        # image ids as fixed-width bytes: 36 bytes a face instead of ~100 for a str plus a dict entry
        self._ids = np.zeros(0, dtype="S36")
        self._names: dict[int, str] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    # ----------------------------------------------------------------- keeping up with the database
    def sync(self, *, force: bool = False) -> None:
        """Apply what changed in the database since our version (polled at most every poll_interval)."""
        now = time.monotonic()
        if not force and self.version >= 0 and now - self._checked < self.poll_interval:
            return
        with self._lock:
            if not force and self.version >= 0 and now - self._checked < self.poll_interval:
                return
            self._checked = now
            if self.version < 0:
                self._reload()
                return
            changes = self.store.changes_since(self.service_id, self.version)
            if changes is None:
                return
            if changes.reload:
                self._reload()
                return
            # a face that was deleted and added again (re-embedded), or that the last reload already
            # picked up, is replaced, never duplicated
            self._remove(changes.deleted | changes.added)
            if changes.added:
                self._append(self.store.load_faces(self.service_id, self.pack, changes.added))
            self.version = changes.version

    def _reload(self) -> None:
        version = self.store.version(self.service_id)
        count = self.store.count_faces(service_id=self.service_id, pack=self.pack)
        # room for the faces plus some growth, so that the next adds do not double the matrix
        capacity = max(64, count + count // 8)
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)
        self._matrix = np.zeros((capacity, self.dim), dtype=np.float32)
        self._subject_of = np.zeros(capacity, dtype=np.int64)
        self._ids = np.zeros(capacity, dtype="S36")
        self._names, self._size = {}, 0
        for rows in self.store.iter_faces(self.service_id, self.pack):
            self._append(rows)
        self.version = version
        release_free_memory()

    def _append(self, rows: FaceRows) -> None:
        count = len(rows.ids)
        if count == 0 or rows.embeddings.shape[1] != self.dim:
            # (a pack id reused with another embedding size has nothing comparable to store)
            return
        needed = self._size + count
        if needed > len(self._matrix):
            capacity = max(needed, 2 * len(self._matrix))
            self._matrix = _grown(self._matrix, self._size, capacity)
            self._subject_of = _grown(self._subject_of, self._size, capacity)
            self._ids = _grown(self._ids, self._size, capacity)
        self._matrix[self._size : needed] = normalize_rows(rows.embeddings)
        self._subject_of[self._size : needed] = rows.subject_ids
        self._ids[self._size : needed] = np.array(rows.ids, dtype="S36")
        self._names.update(rows.subjects)
        self._size = needed

    def _remove(self, face_ids: Iterable[str]) -> None:
        wanted = np.array([f.encode() for f in face_ids], dtype="S36")
        if len(wanted) == 0 or self._size == 0:
            return
        rows = np.flatnonzero(np.isin(self._ids[: self._size], wanted))
        # fill each hole with the current last row, from the highest hole down, so the matrix stays dense
        for row in rows[::-1]:
            last = self._size - 1
            if row != last:
                self._matrix[row] = self._matrix[last]
                self._subject_of[row] = self._subject_of[last]
                self._ids[row] = self._ids[last]
            self._size = last

    # ----------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int, *, unique_subjects: bool = False) -> list[list[Match]]:
        """The ``k`` most similar stored faces (k <= 0: all) for each query row, best first."""
        queries = normalize_rows(np.atleast_2d(queries))
        self.sync()
        with self._lock:
            n = self._size
            if n == 0 or queries.shape[1] != self.dim:
                return [[] for _ in range(len(queries))]
            cosines = queries @ self._matrix[:n].T  # (q, n): the one matrix product
            subject_of = self._subject_of[:n]
            results = []
            for scores in cosines:
                order = self._rank(scores, subject_of, k, unique_subjects)
                results.append(
                    [
                        Match(
                            self._ids[i].decode(), self._names.get(int(subject_of[i]), ""), float(scores[i])
                        )
                        for i in order
                    ]
                )
        return results

    @staticmethod
    def _rank(scores: np.ndarray, subject_of: np.ndarray, k: int, unique_subjects: bool) -> np.ndarray:
        n = len(scores)
        if unique_subjects:
            order = np.argsort(-scores, kind="stable")
            # first (best) row of every subject, kept in score order
            _, first = np.unique(subject_of[order], return_index=True)
            order = order[np.sort(first)]
            return order if k <= 0 else order[:k]
        if k <= 0 or k >= n:
            return np.argsort(-scores, kind="stable")
        top = np.argpartition(-scores, k - 1)[:k]
        return top[np.argsort(-scores[top], kind="stable")]

    def subject_names(self) -> set[str]:
        with self._lock:
            return set(self._names.values())


class Collections:
    """The collections of every recognition service this process has served, created on first use."""

    def __init__(self, store: ServiceStore, pack: str, dim: int, poll_interval: float = 0.2) -> None:
        self.store = store
        self.pack = pack
        self.dim = dim
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._by_service: dict[int, Collection] = {}

    def get(self, service_id: int) -> Collection:
        with self._lock:
            collection = self._by_service.get(service_id)
            if collection is None:
                collection = Collection(self.store, service_id, self.pack, self.dim, self.poll_interval)
                self._by_service[service_id] = collection
        collection.sync()
        return collection

    def after_write(self, service_id: int) -> None:
        """Bring the service's collection up to date right after this process wrote to it."""
        with self._lock:
            collection = self._by_service.get(service_id)
        if collection is not None:
            collection.sync(force=True)

    def drop(self, service_id: int) -> None:
        with self._lock:
            self._by_service.pop(service_id, None)
