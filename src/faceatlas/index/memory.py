"""In-memory backends: the exact product (float32 or float16) and HNSW (hnswlib).

Both can be saved to a folder and opened again, so a restart does not rebuild them from the
database. The exact index is opened as a copy-on-write memory map: several server workers on one
machine share the pages of one file and only the rows a worker changes become its own.

hnswlib was chosen by a measurement on 50 000 clustered 128-d unit vectors here (one thread, M=16,
ef=64): hnswlib 0.052 ms a query at recall@5 0.990, faiss-cpu HNSW 0.063 ms at 0.993, usearch
0.160 ms at 0.980; of the three, hnswlib alone also deletes and updates single elements in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from faceatlas.index.base import FaceIndex, Hits, IndexUnavailableError, best_first, empty_hits, unit_rows

#: rows of the exact matrix multiplied at once (bounds the (queries x rows) score block to ~64 MB)
SCORE_BLOCK = 16_000_000
META = "meta.json"
#: float16 rows widened at once: small enough to stay in cache
FLOAT16_BLOCK = 32_768


def _grown(array: np.ndarray, used: int, capacity: int) -> np.ndarray:
    out = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    out[:used] = array[:used]
    return out


def _keys_array(keys: np.ndarray | list, dtype: np.dtype) -> np.ndarray:
    return np.asarray(keys, dtype=dtype).ravel()


def _added(
    keys: np.ndarray | list, vectors: np.ndarray, key_dtype: np.dtype, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """The keys and unit vectors of an ``add``, checked against each other and the index's size."""
    keys = _keys_array(keys, key_dtype)
    if len(keys) == 0:
        return keys, np.zeros((0, dim), np.float32)
    unit = unit_rows(vectors)
    if unit.shape != (len(keys), dim):
        raise ValueError(f"expected {len(keys)} vectors of {dim} values, got {unit.shape}")
    return keys, unit


def _replace_dir(tmp: Path, target: Path) -> None:
    """Swap a fully written folder into place (readers that mapped the old files keep them)."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


class ExactIndex(FaceIndex):
    """Every stored vector in one dense matrix; a search is one matrix product (exact results)."""

    kind = "exact"

    def __init__(self, dim: int, *, key_dtype: DTypeLike = np.int64, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"exact index dtype must be float32 or float16, not {dtype!r}")
        self.dim = dim
        self.key_dtype = np.dtype(key_dtype)
        self.dtype = np.dtype(dtype)
        self._lock = threading.RLock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._matrix = np.zeros((0, self.dim), self.dtype)
            self._keys = np.zeros(0, self.key_dtype)
            self._groups = np.zeros(0, np.int64)
            self._size = 0

    def __len__(self) -> int:
        return self._size

    def reserve(self, count: int) -> None:
        """Make room for ``count`` faces in all (a bulk load then never copies the matrix)."""
        with self._lock:
            if count > len(self._matrix):
                self._resize(count)

    def _resize(self, capacity: int) -> None:
        self._matrix = _grown(self._matrix, self._size, capacity)
        self._keys = _grown(self._keys, self._size, capacity)
        self._groups = _grown(self._groups, self._size, capacity)

    def add(self, keys: np.ndarray, groups: np.ndarray, vectors: np.ndarray) -> None:
        keys, vectors = _added(keys, vectors, self.key_dtype, self.dim)
        if len(keys) == 0:
            return
        with self._lock:
            self.remove(keys)
            needed = self._size + len(keys)
            if needed > len(self._matrix):
                self._resize(max(needed, 2 * len(self._matrix), 64))
            self._matrix[self._size : needed] = vectors
            self._keys[self._size : needed] = keys
            self._groups[self._size : needed] = np.asarray(groups, np.int64).ravel()
            self._size = needed

    def remove(self, keys: np.ndarray) -> int:
        wanted = _keys_array(keys, self.key_dtype)
        with self._lock:
            if len(wanted) == 0 or self._size == 0:
                return 0
            rows = np.flatnonzero(np.isin(self._keys[: self._size], wanted))
            # fill each hole with the current last row, from the highest hole down, so the matrix stays
            # dense (and, when memory-mapped, only the two touched rows become private pages)
            for row in rows[::-1]:
                last = self._size - 1
                if row != last:
                    self._matrix[row] = self._matrix[last]
                    self._keys[row] = self._keys[last]
                    self._groups[row] = self._groups[last]
                self._size = last
            return len(rows)

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of (keys, groups, vectors as float32) of every face, e.g. to build another index."""
        with self._lock:
            n = self._size
            return self._keys[:n].copy(), self._groups[:n].copy(), self._matrix[:n].astype(np.float32)

    def _scores(self, queries: np.ndarray, n: int) -> np.ndarray:
        if self.dtype == np.float32:
            return queries @ self._matrix[:n].T
        # NumPy has no float16 BLAS: widen one block of rows at a time
        out = np.empty((len(queries), n), np.float32)
        step = max(1, min(FLOAT16_BLOCK, SCORE_BLOCK // max(len(queries), 1)))
        for start in range(0, n, step):
            block = self._matrix[start : min(n, start + step)].astype(np.float32)
            out[:, start : start + len(block)] = queries @ block.T
        return out

    def search(self, queries: np.ndarray, k: int, *, unique_groups: bool = False) -> list[Hits]:
        queries = unit_rows(queries)
        with self._lock:
            n = self._size
            if n == 0 or queries.shape[1] != self.dim:
                return [empty_hits(self.key_dtype) for _ in range(len(queries))]
            results: list[Hits] = []
            step = max(1, SCORE_BLOCK // n)
            groups = self._groups[:n]
            for start in range(0, len(queries), step):
                for scores in self._scores(queries[start : start + step], n):
                    order = best_first(scores, groups, k, unique_groups)
                    results.append(Hits(self._keys[order], groups[order], scores[order].astype(np.float32)))
        return results

    # ----------------------------------------------------------------- persistence
    def save(self, folder: Path, extra: dict[str, object] | None = None) -> None:
        """Write the index to ``folder`` (atomically replaced), with room to grow by an eighth."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        with self._lock:
            n = self._size
            capacity = max(64, n + n // 8)
            matrix = np.lib.format.open_memmap(tmp / "vectors.npy", "w+", self.dtype, (capacity, self.dim))
            matrix[:n] = self._matrix[:n]
            matrix.flush()
            del matrix
            np.save(tmp / "keys.npy", _grown(self._keys, n, capacity))
            np.save(tmp / "groups.npy", _grown(self._groups, n, capacity))
            meta = {"kind": self.kind, "dim": self.dim, "dtype": self.dtype.name, "size": n, **(extra or {})}
        (tmp / META).write_text(json.dumps(meta))
        _replace_dir(tmp, folder)

    @classmethod
    def load(cls, folder: Path, *, key_dtype: DTypeLike = np.int64) -> tuple[ExactIndex, dict]:
        """Open a saved index; the matrix is mapped copy-on-write (shared by every process using it)."""
        folder = Path(folder)
        meta = json.loads((folder / META).read_text())
        index = cls(int(meta["dim"]), key_dtype=key_dtype, dtype=str(meta["dtype"]))
        index._matrix = np.load(folder / "vectors.npy", mmap_mode="c")
        index._keys = np.load(folder / "keys.npy").astype(index.key_dtype, copy=False)
        index._groups = np.load(folder / "groups.npy")
        index._size = int(meta["size"])
        return index, meta

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "dtype": self.dtype.name,
            "memory_mapped": isinstance(self._matrix, np.memmap),
        }


def _hnswlib() -> Any:  # hnswlib ships no type information
    try:
        import hnswlib
    except ImportError as exc:  # pragma: no cover - hnswlib is a dependency
        raise IndexUnavailableError("the hnsw index needs the hnswlib package (pip install hnswlib)") from exc
    return hnswlib


#: The graph's density, measured on 1 M clustered 128-d faces (``benchmarks/hnsw_params.py``, 2 cores):
#: M=16, ef_construction=100 builds in ~3 min but finds only 96.5 % of the true top 5 even at ef 512
#: (1.7 ms); M=32, ef_construction=200 builds in 8 min (2 threads) and finds 99.87 % at ef 128 (0.6 ms).
#: Face embeddings of different people are nearly orthogonal (high intrinsic dimension), which is the
#: case that needs the denser graph.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200


class HnswIndex(FaceIndex):
    """Approximate search with an HNSW graph (hnswlib, inner product on unit vectors).

    Every face occupies a *slot*; the slot number is its hnswlib label. A removed face's slot is marked
    deleted and reused by a later add, so the graph is updated in place and never rebuilt.
    """

    kind = "hnsw"

    def __init__(
        self,
        dim: int,
        *,
        key_dtype: DTypeLike = np.int64,
        m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        ef_search: int | None = None,
        threads: int = 1,
    ) -> None:
        self.dim = dim
        self.key_dtype = np.dtype(key_dtype)
        self.m, self.ef_construction, self.ef_search, self.threads = m, ef_construction, ef_search, threads
        self._lock = threading.RLock()
        self.clear()

    def clear(self, capacity: int = 1024) -> None:
        with self._lock:
            self._graph = _hnswlib().Index(space="ip", dim=self.dim)
            self._graph.init_index(max_elements=capacity, ef_construction=self.ef_construction, M=self.m)
            self._keys = np.zeros(capacity, self.key_dtype)
            self._groups = np.zeros(capacity, np.int64)
            self._alive = np.zeros(capacity, bool)
            self._used = 0  # slots ever handed out (high-water mark)
            self._free: list[int] = []
            self._count = 0

    def __len__(self) -> int:
        return self._count

    def reserve(self, count: int) -> None:
        with self._lock:
            if count > self._graph.get_max_elements():
                self._resize(count)

    def _resize(self, capacity: int) -> None:
        self._graph.resize_index(capacity)
        self._keys = _grown(self._keys, self._used, capacity)
        self._groups = _grown(self._groups, self._used, capacity)
        self._alive = _grown(self._alive, self._used, capacity)

    def add(self, keys: np.ndarray, groups: np.ndarray, vectors: np.ndarray) -> None:
        keys, vectors = _added(keys, vectors, self.key_dtype, self.dim)
        if len(keys) == 0:
            return
        with self._lock:
            self.remove(keys)
            reused = [self._free.pop() for _ in range(min(len(self._free), len(keys)))]
            fresh = len(keys) - len(reused)
            if self._used + fresh > self._graph.get_max_elements():
                self._resize(max(self._used + fresh, 2 * self._graph.get_max_elements()))
            slots = np.asarray(reused + list(range(self._used, self._used + fresh)), np.int64)
            self._used += fresh
            # hnswlib updates a reused (deleted) label in place and un-deletes it
            self._graph.add_items(vectors, slots.astype(np.uint64), num_threads=-1)
            self._keys[slots] = keys
            self._groups[slots] = np.asarray(groups, np.int64).ravel()
            self._alive[slots] = True
            self._count += len(keys)

    def remove(self, keys: np.ndarray) -> int:
        wanted = _keys_array(keys, self.key_dtype)
        with self._lock:
            if len(wanted) == 0 or self._count == 0:
                return 0
            slots = np.flatnonzero(self._alive[: self._used] & np.isin(self._keys[: self._used], wanted))
            for slot in slots:
                self._graph.mark_deleted(int(slot))
                self._free.append(int(slot))
            self._alive[slots] = False
            self._count -= len(slots)
            return len(slots)

    def beam(self) -> int:
        """The search beam (hnswlib's ef): fixed when given, else widened with the size. Measured with
        the default graph (M=32, ef_construction=200) on clustered 128-d faces, recall@5 against exact
        search: 200 000 faces, ef 64: 99.87 % (0.22 ms); 1 M faces, ef 64: 98.1 %, ef 128: 99.87 %
        (0.62 ms), ef 256: 99.93 % (1.1 ms). A smaller graph (M) needs a wider beam."""
        if self.ef_search is not None:
            return self.ef_search
        beam = min(256, max(64, self._count // 8000))
        return beam if self.m >= HNSW_M else 2 * beam

    def _query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """hnswlib's top-k; asks with a wider beam if the graph cannot fill k results."""
        k = min(k, self._count)
        ef = max(self.beam(), k)
        while True:
            self._graph.set_ef(ef)
            try:
                labels, distances = self._graph.knn_query(queries, k=k, num_threads=self.threads)
                return labels.astype(np.int64), (1.0 - distances).astype(np.float32)
            except RuntimeError:
                if ef >= self._count:
                    k = max(1, k // 2)
                ef = min(2 * ef, max(self._count, 1))

    def search(self, queries: np.ndarray, k: int, *, unique_groups: bool = False) -> list[Hits]:
        queries = unit_rows(queries)
        with self._lock:
            if self._count == 0 or queries.shape[1] != self.dim:
                return [empty_hits(self.key_dtype) for _ in range(len(queries))]
            if k <= 0 or 2 * k >= self._count:
                return self._search_all(queries, k, unique_groups)
            results = []
            for query in queries:
                want = k
                # one result per group: over-fetch until enough groups are found or all faces are seen
                fetch = want if not unique_groups else min(self._count, max(4 * want, 32))
                while True:
                    slots, cosines = self._query(query[None, :], fetch)
                    slots, cosines = slots[0], cosines[0]
                    groups = self._groups[slots]
                    order = best_first(cosines, groups, want, unique_groups)
                    if not unique_groups or len(order) >= want or fetch >= self._count:
                        break
                    fetch = min(self._count, 4 * fetch)
                results.append(Hits(self._keys[slots[order]], groups[order], cosines[order]))
            return results

    def _search_all(self, queries: np.ndarray, k: int, unique_groups: bool) -> list[Hits]:
        """Most of the faces asked for (k <= 0: all of them): a graph walk cannot promise to reach
        every element, so score every stored vector instead."""
        slots = np.flatnonzero(self._alive[: self._used])
        vectors = np.asarray(self._graph.get_items(slots.astype(np.uint64), return_type="numpy"), np.float32)
        groups = self._groups[slots]
        results = []
        for scores in queries @ vectors.T:
            order = best_first(scores, groups, k, unique_groups)
            results.append(Hits(self._keys[slots[order]], groups[order], scores[order].astype(np.float32)))
        return results

    # ----------------------------------------------------------------- persistence
    def save(self, folder: Path, extra: dict[str, object] | None = None) -> None:
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        with self._lock:
            self._graph.save_index(str(tmp / "hnsw.bin"))
            n = self._used
            np.save(tmp / "keys.npy", self._keys[:n])
            np.save(tmp / "groups.npy", self._groups[:n])
            np.save(tmp / "alive.npy", self._alive[:n])
            meta = {
                "kind": self.kind,
                "dim": self.dim,
                "size": self._count,
                "used": n,
                "m": self.m,
                "ef_construction": self.ef_construction,
                **(extra or {}),
            }
        (tmp / META).write_text(json.dumps(meta))
        _replace_dir(tmp, folder)

    @classmethod
    def load(
        cls, folder: Path, *, key_dtype: DTypeLike = np.int64, ef_search: int | None = None
    ) -> tuple[HnswIndex, dict]:
        folder = Path(folder)
        meta = json.loads((folder / META).read_text())
        index = cls(
            int(meta["dim"]),
            key_dtype=key_dtype,
            m=int(meta["m"]),
            ef_construction=int(meta["ef_construction"]),
            ef_search=ef_search,
        )
        used = int(meta["used"])
        capacity = max(1024, used + used // 8)
        index._graph = _hnswlib().Index(space="ip", dim=index.dim)
        index._graph.load_index(str(folder / "hnsw.bin"), max_elements=capacity)
        index._keys = _grown(np.load(folder / "keys.npy").astype(index.key_dtype, copy=False), used, capacity)
        index._groups = _grown(np.load(folder / "groups.npy"), used, capacity)
        index._alive = _grown(np.load(folder / "alive.npy"), used, capacity)
        index._used = used
        index._free = [int(s) for s in np.flatnonzero(~index._alive[:used])]
        index._count = int(index._alive[:used].sum())
        return index, meta

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "m": self.m, "ef_search": self.beam()}
