"""The face collections of the REST server's recognition services, each searched through a :class:`FaceIndex`.

A :class:`ServiceCollection` mirrors the faces of one service that were embedded with the server's pack.
It follows the database through the service's version log (:meth:`ServiceStore.changes_since`): writes
made by this process are applied right after they commit, writes of other processes are picked up by a
cheap version poll (at most every ``poll_interval`` seconds) before a search.

In-memory indexes are saved to a snapshot folder, keyed by the version they hold, so a restart opens the
snapshot (the exact matrix as a shared copy-on-write memory map) and replays only the changes logged
since, instead of reading every embedding again.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from faceatlas.index.base import AUTO_HNSW_FROM, INDEX_CHOICES, FaceIndex, IndexSettingError
from faceatlas.index.memory import HNSW_M, META, ExactIndex, HnswIndex
from faceatlas.storage.service_tables import ServiceSubject
from faceatlas.storage.services import FaceRows, ServiceStore

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("faceatlas.index")

KEY_DTYPE = np.dtype("S36")  # image ids as fixed-width bytes: 36 bytes a face instead of ~100 for a str
#: collections smaller than this are reloaded from the database rather than snapshotted
SNAPSHOT_MIN_FACES = 20_000
#: faces added beside a memory-mapped HNSW graph (searched exactly) or removed from it (masked out of
#: its answers) before they are folded into a new graph and saved: 50 000 128-d faces take ~1 ms to
#: search exactly
RECENT_FOLD = 50_000


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS after a big reload (glibc keeps them otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def snapshot_root(data_dir: Path, database_url: str) -> Path:
    """Where the snapshots of one database live (a data dir may serve several databases)."""
    return Path(data_dir) / "index" / hashlib.sha256(database_url.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Match:
    image_id: str
    subject: str
    cosine: float


@dataclass(frozen=True, slots=True)
class IndexOptions:
    backend: str = "auto"  # exact | hnsw | pgvector | auto
    exact_dtype: str = "float32"
    hnsw_from: int = AUTO_HNSW_FROM
    snapshot_dir: Path | None = None
    snapshot_min_faces: int = SNAPSHOT_MIN_FACES
    # auto: serve from the exact index at once and build the HNSW graph in a background thread
    background_build: bool = True

    def __post_init__(self) -> None:
        if self.backend not in INDEX_CHOICES:
            raise IndexSettingError(f"index must be one of {', '.join(INDEX_CHOICES)}, not {self.backend!r}")


class ServiceCollection:
    """The searchable embeddings of one service (only those of one pack)."""

    def __init__(
        self,
        store: ServiceStore,
        service_id: int,
        pack: str,
        dim: int,
        poll_interval: float,
        options: IndexOptions | None = None,
    ) -> None:
        self.store = store
        self.service_id = service_id
        self.pack = pack
        self.dim = dim
        self.poll_interval = poll_interval
        self.options = options or IndexOptions()
        self.version = -1
        self._saved_version = -1
        self._lock = threading.RLock()
        self._checked = 0.0
        self._names: dict[int, str] = {}
        self._generation = 0  # bumped by every full reload: a background build of an older one is dropped
        self._builder: threading.Thread | None = None
        self.index: FaceIndex = ExactIndex(dim, key_dtype=KEY_DTYPE, dtype=self.options.exact_dtype)
        if self.options.backend == "pgvector":
            from faceatlas.index.pgvector import PgvectorIndex

            self.index = PgvectorIndex(
                store.db, "service_face", pack, dim, {"service_id": service_id}, key_dtype=KEY_DTYPE
            )

    def __len__(self) -> int:
        return len(self.index)

    @property
    def pgvector(self) -> bool:
        return self.index.kind == "pgvector"

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
            if self.version < 0 and not self._open_snapshot():
                self._reload()
                return
            changes = self.store.changes_since(self.service_id, self.version)
            if changes is None:
                return
            if self.pgvector:
                # the rows are the index: fill the vector column of new rows, refresh the names
                self.index.sync()
                self._names = self._subject_names()
                self.version = changes.version
                return
            if changes.reload:
                self._reload()
                return
            # a face that was deleted and added again (re-embedded), or that the last reload already
            # picked up, is replaced, never duplicated
            self.index.remove(np.array([f.encode() for f in changes.deleted | changes.added], KEY_DTYPE))
            if changes.added:
                self._add(self.store.load_face_rows(self.service_id, self.pack, changes.added))
            self.version = changes.version
            if isinstance(self.index, HnswIndex) and self.index.pending_changes >= RECENT_FOLD:
                self.persist()  # fold what changed beside a mapped graph into a new graph

    def _subject_names(self) -> dict[int, str]:
        with self.store.db.session() as s:
            rows = s.execute(
                select(ServiceSubject.id, ServiceSubject.name).where(
                    ServiceSubject.service_id == self.service_id
                )
            ).all()
        return {int(r[0]): r[1] for r in rows}

    def _chosen_kind(self, count: int) -> str:
        backend = self.options.backend
        if backend == "auto":
            return "hnsw" if count >= self.options.hnsw_from else "exact"
        return backend

    def _reload(self) -> None:
        version = self.store.version(self.service_id)
        if self.pgvector:
            self.index.sync()
            self._names = self._subject_names()
            self.version = version
            return
        count = self.store.count_faces(service_id=self.service_id, pack=self.pack)
        kind = self._chosen_kind(count)
        build_later = kind == "hnsw" and self.options.backend == "auto" and self.options.background_build
        if build_later:
            kind = "exact"
        self._generation += 1
        started = time.perf_counter()
        self.index = (
            HnswIndex(self.dim, key_dtype=KEY_DTYPE)
            if kind == "hnsw"
            else ExactIndex(self.dim, key_dtype=KEY_DTYPE, dtype=self.options.exact_dtype)
        )
        # room for the faces plus some growth, so that the next adds do not copy the index
        self.index.reserve(count + count // 8)
        self._names = {}
        for rows in self.store.iter_faces(self.service_id, self.pack):
            self._add(rows)
        self.version = version
        release_free_memory()
        log.info(
            "service %s: %d faces loaded into a %s index in %.1f s",
            self.service_id,
            len(self.index),
            kind,
            time.perf_counter() - started,
        )
        if build_later:
            self._start_build()
        elif len(self.index) >= self.options.snapshot_min_faces:
            self.persist()

    def _start_build(self) -> None:
        """Build the HNSW graph from the exact index in the background, then swap it in."""
        if self._builder is not None and self._builder.is_alive():
            return
        if not isinstance(self.index, ExactIndex):
            return
        keys, groups, vectors = self.index.entries()
        version, generation = self.version, self._generation

        def build() -> None:
            started = time.perf_counter()
            graph = HnswIndex(self.dim, key_dtype=KEY_DTYPE, threads=1)
            graph.reserve(len(keys) + len(keys) // 8)
            for start in range(0, len(keys), 50_000):
                stop = start + 50_000
                graph.add(keys[start:stop], groups[start:stop], vectors[start:stop])
            with self._lock:
                if generation != self._generation:
                    return  # a full reload happened meanwhile; it starts its own build
                # catch up with what was written while the graph was being built
                changes = self.store.changes_since(self.service_id, version)
                if changes is not None:
                    if changes.reload:
                        return
                    graph.remove(np.array([f.encode() for f in changes.deleted | changes.added], KEY_DTYPE))
                    if changes.added:
                        rows = self.store.load_face_rows(self.service_id, self.pack, changes.added)
                        if len(rows.ids) and rows.embeddings.shape[1] == self.dim:
                            graph.add(np.array(rows.ids, KEY_DTYPE), rows.subject_ids, rows.embeddings)
                            self._names.update(rows.subjects)
                    self.version = changes.version
                log.info(
                    "service %s: HNSW graph of %d faces built in %.0f s",
                    self.service_id,
                    len(graph),
                    time.perf_counter() - started,
                )
                # one worker at a time decides: a worker that finishes second must see the first's save
                with self._snapshot_lock("hnsw"):
                    if self._adopt_saved_graph(at_least=version):
                        return  # another worker finished first: its graph, shared, replaces ours
                    self.index = graph
                    self._save_snapshot()

        self._builder = threading.Thread(target=build, name=f"hnsw-build-{self.service_id}", daemon=True)
        self._builder.start()

    @contextlib.contextmanager
    def _snapshot_lock(self, kind: str) -> Iterator[None]:
        """An advisory lock on one snapshot, held across the processes of a server (POSIX ``flock``)."""
        folder = self._snapshot_folder(kind)
        handle = None
        if folder is not None and fcntl is not None:
            try:
                folder.parent.mkdir(parents=True, exist_ok=True)
                handle = open(folder.with_name(folder.name + ".lock"), "a+b")  # noqa: SIM115
            except OSError:  # an unwritable data dir: nothing is saved there either
                handle = None
        if handle is None:  # no snapshots, or not POSIX: workers may each keep their own graph
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes
            yield

    def _adopt_saved_graph(self, *, at_least: int) -> bool:
        """Open the HNSW snapshot another worker of this server saved while we built the same graph
        (from version ``at_least`` or later): its pages are then shared, where saving ours would leave
        each worker with a graph of its own. The changes since its version are replayed by sync."""
        try:
            found = self._read_snapshot("hnsw", at_least=at_least)
        except (OSError, ValueError, KeyError):
            return False
        if found is None:
            return False
        self._use_snapshot(*found)
        self._checked = 0.0  # the next search replays what changed since that version
        log.info("service %s: opened the HNSW graph another worker saved", self.service_id)
        return True

    def wait_for_build(self, timeout: float | None = None) -> None:
        """Block until a background HNSW build (if any) has finished."""
        builder = self._builder
        if builder is not None:
            builder.join(timeout)

    def _add(self, rows: FaceRows) -> None:
        if len(rows.ids) == 0 or rows.embeddings.shape[1] != self.dim:
            # (a pack id reused with another embedding size has nothing comparable to store)
            return
        self.index.add(np.array(rows.ids, KEY_DTYPE), rows.subject_ids, rows.embeddings)
        self._names.update(rows.subjects)

    # ----------------------------------------------------------------- snapshots
    def _snapshot_folder(self, kind: str) -> Path | None:
        if self.options.snapshot_dir is None:
            return None
        return Path(self.options.snapshot_dir) / f"service-{self.service_id}-{self.pack}-{kind}"

    def _service_created(self) -> str:
        return self.store.get_service(self.service_id).created.isoformat()

    def _use_snapshot(self, index: FaceIndex, meta: dict) -> None:
        """Serve from an opened snapshot; sync replays what was logged after its version."""
        self.index = index
        self._names = {int(k): v for k, v in meta["names"].items()}
        self.version = self._saved_version = int(meta["version"])

    def _read_snapshot(self, kind: str, *, at_least: int = -1) -> tuple[FaceIndex, dict] | None:
        """The saved index of ``kind`` with its meta, when one of this service matches these settings
        (and holds version ``at_least`` or later); None when there is none. Raises OSError, ValueError
        or KeyError for one that cannot be read."""
        folder = self._snapshot_folder(kind)
        if folder is None or not (folder / META).is_file():
            return None
        meta = json.loads((folder / META).read_text())
        if meta.get("created") != self._service_created() or int(meta["dim"]) != self.dim:
            return None
        if int(meta["version"]) < at_least:
            return None
        if kind == "exact" and meta.get("dtype") != self.options.exact_dtype:
            return None
        if kind == "hnsw" and int(meta.get("m", 0)) < HNSW_M:
            return None  # a sparser graph of an earlier version: rebuilt (its recall is lower)
        loader = HnswIndex if kind == "hnsw" else ExactIndex
        return loader.load(folder, key_dtype=KEY_DTYPE)[0], meta

    def _open_snapshot(self) -> bool:
        """Open the newest snapshot of this service, if one matches; the caller then replays the log."""
        if self.pgvector or self.options.snapshot_dir is None:
            return False
        kinds = ("hnsw", "exact") if self.options.backend == "auto" else (self.options.backend,)
        for kind in kinds:
            try:
                found = self._read_snapshot(kind)
            except (OSError, ValueError, KeyError) as exc:
                log.warning(
                    "service %s: snapshot %s unreadable (%s); reloading",
                    self.service_id,
                    self._snapshot_folder(kind),
                    exc,
                )
                continue
            if found is None:
                continue
            index, meta = found
            self._use_snapshot(index, meta)
            log.info("service %s: opened %s snapshot of %d faces", self.service_id, kind, len(index))
            if (
                kind == "exact"
                and self.options.backend == "auto"
                and self.options.background_build
                and len(index) >= self.options.hnsw_from
            ):
                self._start_build()
            return True
        return False

    def persist(self) -> None:
        """Save the in-memory index (when it changed since the last save) for the next start."""
        with self._lock, self._snapshot_lock(self.index.kind):
            self._save_snapshot()

    def _save_snapshot(self) -> None:
        """:meth:`persist` with the locks held (the collection's and the snapshot's)."""
        folder = self._snapshot_folder(self.index.kind)
        if folder is None or self.pgvector or self.version == self._saved_version or self.version < 0:
            return
        extra = {"version": self.version, "created": self._service_created(), "names": self._names}
        try:
            self.index.save(folder, extra)
        except OSError as exc:  # a full disk or a read-only data dir: serve on, rebuild next start
            log.warning("service %s: cannot save the index to %s (%s)", self.service_id, folder, exc)
            return
        self._saved_version = self.version
        # the other kind's snapshot is now older than this one
        for other in ("exact", "hnsw"):
            stale = self._snapshot_folder(other)
            if other != self.index.kind and stale is not None and stale.exists():
                shutil.rmtree(stale, ignore_errors=True)
        # map the files just written: other workers opening them share these pages
        if isinstance(self.index, ExactIndex) and not isinstance(self.index._matrix, np.memmap):
            self.index = ExactIndex.load(folder, key_dtype=KEY_DTYPE)[0]
            release_free_memory()
        elif isinstance(self.index, HnswIndex) and not self.index.mapped:
            self.index = HnswIndex.load(folder, key_dtype=KEY_DTYPE)[0]
            release_free_memory()

    # ----------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int, *, unique_subjects: bool = False) -> list[list[Match]]:
        """The ``k`` most similar stored faces (k <= 0: all) for each query row, best first."""
        self.sync()
        found = self.index.search(np.atleast_2d(queries), k, unique_groups=unique_subjects)
        with self._lock:
            names = self._names
            missing = {int(g) for hits in found for g in hits.groups if int(g) not in names}
            if missing:
                names = self._names = self._subject_names()
            return [
                [
                    Match(key.decode(), names.get(int(group), ""), float(cosine))
                    for key, group, cosine in zip(hits.keys, hits.groups, hits.cosines, strict=True)
                ]
                for hits in found
            ]

    def subject_names(self) -> set[str]:
        with self._lock:
            return set(self._names.values())

    def describe(self) -> dict[str, object]:
        return {"service_id": self.service_id, "version": self.version, **self.index.describe()}


class ServiceCollections:
    """The collections of every recognition service this process has served, created on first use."""

    def __init__(
        self,
        store: ServiceStore,
        pack: str,
        dim: int,
        poll_interval: float = 0.2,
        options: IndexOptions | None = None,
    ) -> None:
        self.store = store
        self.pack = pack
        self.dim = dim
        self.poll_interval = poll_interval
        self.options = options or IndexOptions()
        self._lock = threading.Lock()
        self._by_service: dict[int, ServiceCollection] = {}

    def get(self, service_id: int) -> ServiceCollection:
        with self._lock:
            collection = self._by_service.get(service_id)
            if collection is None:
                collection = ServiceCollection(
                    self.store, service_id, self.pack, self.dim, self.poll_interval, self.options
                )
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

    def persist(self) -> None:
        """Snapshot every large in-memory collection (at shutdown)."""
        with self._lock:
            collections = list(self._by_service.values())
        for collection in collections:
            if len(collection) >= self.options.snapshot_min_faces:
                collection.persist()

    def describe(self) -> dict[str, object]:
        with self._lock:
            collections = list(self._by_service.values())
        return {
            "setting": self.options.backend,
            "services": [c.describe() for c in collections],
        }
