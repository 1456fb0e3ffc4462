"""In-memory backends: the exact product (float32 or float16) and HNSW (usearch).

Both can be saved to a folder and opened again, so a restart does not rebuild them from the
database, and both are opened as memory maps: several server workers on one machine share the pages
of one file (the exact matrix copy-on-write, the HNSW graph read-only).

usearch was chosen over hnswlib and faiss-cpu by measurement (200 000 and 1 M clustered 128-d faces,
M=32, ef_construction=200, 2 build threads; ``docs/scale.md``). hnswlib searches fastest (1 M: 0.62 ms
at recall@5 0.9987) but can only load a saved graph into each process's own memory; faiss can map the
vectors but reads the graph's links into memory, and aborts the process when a mapped index is
changed; usearch maps the whole graph, stores float16 vectors (half the memory, cosines within 1.1e-4)
and reaches recall@5 0.9987 at 1 M in 1.6 ms (ef 192). Wider (512-d) faces are walked on binary codes
and re-ranked exactly (``GraphVectors``): at 1 M, 1.64 ms for recall@5 0.995 against a float16 graph's
6.5 ms for 0.996.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import DTypeLike

from faceatlas.index.base import (
    FaceIndex,
    Hits,
    IndexSettingError,
    IndexUnavailableError,
    best_first,
    empty_hits,
    unit_rows,
)
from faceatlas.index.screen import SCREEN_FROM, Int8Screen

#: rows of the exact matrix multiplied at once (bounds the (queries x rows) score block to ~64 MB)
SCORE_BLOCK = 16_000_000
META = "meta.json"
#: the screen's bounds in a snapshot's meta.json
SCREEN_META = "int8_screen"
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


@contextlib.contextmanager
def _temporary_folder(target: Path) -> Iterator[Path]:
    """A fresh folder beside ``target`` to write a snapshot into; removed if the writing fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, target: Path) -> None:
    """Swap a fully written folder into place (readers that mapped the old files keep them)."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


class ExactIndex(FaceIndex):
    """Every stored vector in one dense matrix; a search is one matrix product (exact results).

    From ``screen_from`` faces (None: never) the matrix has an int8 screen beside it
    (:mod:`faceatlas.index.screen`): a query is scored on the int8 codes first and only the rows they
    cannot rule out are scored on the matrix, which gives the same answers from a quarter of the bytes.
    """

    kind = "exact"

    def __init__(
        self,
        dim: int,
        *,
        key_dtype: DTypeLike = np.int64,
        dtype: str = "float32",
        screen_from: int | None = SCREEN_FROM,
    ) -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"exact index dtype must be float32 or float16, not {dtype!r}")
        self.dim = dim
        self.key_dtype = np.dtype(key_dtype)
        self.dtype = np.dtype(dtype)
        self.screen_from = screen_from
        self._lock = threading.RLock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._matrix = np.zeros((0, self.dim), self.dtype)
            self._keys = np.zeros(0, self.key_dtype)
            self._groups = np.zeros(0, np.int64)
            self._size = 0
            self._screen: Int8Screen | None = None

    def _screen_if_due(self) -> None:
        """Code every row once the index has reached ``screen_from`` faces (later rows as they come)."""
        if self._screen is None and self.screen_from is not None and self._size >= self.screen_from:
            screen = Int8Screen(self.dim)
            screen.resize(len(self._matrix), 0)
            screen.write(0, self._matrix[: self._size])
            self._screen = screen

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
        if self._screen is not None:
            self._screen.resize(capacity, self._size)

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
            if self._screen is not None:
                self._screen.write(self._size, self._matrix[self._size : needed])
            self._size = needed
            self._screen_if_due()

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
                    if self._screen is not None:
                        self._screen.moved(row)
                self._size = last
            if self._screen is not None:
                self._screen.recode_stale(self._matrix, self._size)
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
            screen = self._screen if 0 < k < n else None
            for start in range(0, len(queries), step):
                block = queries[start : start + step]
                if screen is not None and np.isfinite(block).all():
                    candidates = screen.candidates(block, n, k, groups, unique_groups)
                    for query, rows in zip(block, candidates, strict=True):
                        scores = np.asarray(self._matrix[rows], np.float32) @ query
                        best = best_first(scores, groups[rows], k, unique_groups)
                        order = rows[best]
                        results.append(Hits(self._keys[order], groups[order], scores[best]))
                    continue
                for scores in self._scores(block, n):
                    order = best_first(scores, groups, k, unique_groups)
                    results.append(Hits(self._keys[order], groups[order], scores[order].astype(np.float32)))
        return results

    # ----------------------------------------------------------------- persistence
    def save(self, folder: Path, extra: dict[str, object] | None = None) -> None:
        """Write the index to ``folder`` (atomically replaced), with room to grow by an eighth."""
        folder = Path(folder)
        with _temporary_folder(folder) as tmp, self._lock:
            n = self._size
            capacity = max(64, n + n // 8)
            matrix = np.lib.format.open_memmap(tmp / "vectors.npy", "w+", self.dtype, (capacity, self.dim))
            matrix[:n] = self._matrix[:n]
            matrix.flush()
            del matrix
            np.save(tmp / "keys.npy", _grown(self._keys, n, capacity))
            np.save(tmp / "groups.npy", _grown(self._groups, n, capacity))
            meta = {"kind": self.kind, "dim": self.dim, "dtype": self.dtype.name, "size": n, **(extra or {})}
            if self._screen is not None:
                self._screen.recode_stale(self._matrix, n, force=True)
                meta[SCREEN_META] = self._screen.save(tmp, n, capacity)
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
        if SCREEN_META in meta:
            index._screen = Int8Screen.load(folder, index.dim, len(index._matrix), meta[SCREEN_META])
        index._screen_if_due()  # a snapshot saved without a screen (or before it was due) gets one here
        return index, meta

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "dtype": self.dtype.name,
            "memory_mapped": isinstance(self._matrix, np.memmap),
            "int8_screen": self._screen is not None,
        }


def _usearch_index() -> Any:  # usearch's Index is typed loosely; the calls below are checked by tests
    # ONNX Runtime's extension crashes (SIGSEGV) while it loads if usearch's was loaded before it
    # (usearch 2.26 links its own C++ runtime; ORT 1.30): load ORT first, whichever is needed first
    import onnxruntime  # noqa: F401

    try:
        from usearch.index import Index
    except ImportError as exc:  # pragma: no cover - usearch is a dependency
        raise IndexUnavailableError("the hnsw index needs the usearch package (pip install usearch)") from exc
    return Index


#: The graph's density, measured on 1 M clustered 128-d faces (``benchmarks/hnsw_params.py``, 2 cores):
#: M=16, ef_construction=100 finds only 96.5 % of the true top 5 even at ef 512; M=32,
#: ef_construction=200 finds 99.87 % at ef 128. Face embeddings of different people are nearly
#: orthogonal (high intrinsic dimension), which is the case that needs the denser graph.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
#: vectors in the graph are stored as float16: against float32 (usearch, 200 000 faces) half the
#: memory, a faster build (61 vs 108 s) and search (0.32 vs 0.55 ms at ef 64), cosines within 1.1e-4
HNSW_DTYPE = "f16"
#: How the graph holds its vectors. ``float16``: the graph's inner products are the answer.
#: ``binary``: a SimHash code (the signs of ``CODE_BITS_PER_VALUE`` random projections per value) walked
#: by Hamming distance; the graph's best candidates are then re-ranked by exact cosine on float16 rows
#: kept beside it. Measured on 1 M clustered 512-d faces (M=32, ef_construction=200, 2 build threads,
#: one query thread, re-rank of the best 64): float16 builds in 2 807 s and needs 6.5 ms for recall@5
#: 0.996 (ef 256); 1 024-bit codes build in 400 s and reach 0.991 in 1.64 ms (ef 256). 512 bits (the
#: signs themselves) lose the walk at that size (0.91 at ef 256); 2 048 bits cost more per step (2.8 ms
#: for 0.995). At 128-d the signs are too coarse (200 000 faces, 128 bits: recall@5 0.85-0.91 at any beam).
GraphVectors = Literal["float16", "binary"]
GRAPH_VECTORS: tuple[GraphVectors, ...] = get_args(GraphVectors)
#: the narrowest vectors given a binary graph by default
BINARY_FROM_DIM = 512
CODE_BITS_PER_VALUE = 2
#: a binary graph is built with a wider beam: 1 M x 512 (M=32), ef_construction 400 against 200: recall@5
#: 0.9935 against 0.992 at ef 256, 0.996 against 0.994 at ef 320, same search time, build 886 against
#: 519 s. (Each Hamming distance of the walk costs ~100 ns, a cache miss, so a sparser graph is not
#: faster at equal recall: M=24 needs ef 384 for 0.993. Inserting faces grouped by region did not
#: make the walk's memory reads any cheaper: 100 ns a distance either way, and recall fell.)
BINARY_EF_CONSTRUCTION = 400
#: candidates of a binary graph re-ranked (at least): 1 M x 512, ef 256: recall@5 0.991 in 1.64 ms;
#: re-ranking the whole beam instead: 0.992 in 1.94 ms
RERANK_CANDIDATES = 64
#: a binary graph's query whose best re-ranked answer is below this cosine is walked again with
#: ``WALK_AGAIN_WIDER`` times the beam. A walk that never reached the query's person returns strangers
#: only (cosine ~0.2 among 1 M clustered faces), where a walk that did returns the person's photos
#: (0.5-0.8); 0.30 is the same-person threshold of the 512-d packs, so an answer below it is no match
#: either way and only such queries pay the second walk.
WALK_AGAIN_BELOW = 0.30
WALK_AGAIN_WIDER = 4
GRAPH_FILE = "graph.usearch"
#: the float16 rows beside a binary graph, and the hyperplanes of its codes
ROWS_FILE = "rows.npy"
PROJECTION_FILE = "projection.npy"
#: faces inserted one thread at a time before the graph is built on every core
SERIAL_INSERTS = 10_000
#: the snapshot format; a snapshot of another format (hnswlib's, before 4) is rebuilt
HNSW_FORMAT = 4


#: the beams of the searches for each checked face's own vector, each asked only for the faces the one
#: before did not find. 200 000 x 512, binary graph: ef 8 alone: 54 us a face, 7.8 % not found; ef 32
#: alone: 154 us, 0.04 %; then the search beam (83). ef 8 then the search beam: 89.5 us a face; ef 8,
#: 32, then the search beam: 83 us, the re-inserts and their neighbours' check included.
RELINK_CHECK_BEAMS = (8, 32)
#: times unreachable faces are inserted again and the faces near them checked again
RELINK_ROUNDS = 4
#: the faces near a re-inserted one that are checked again: inserting a face rewrites the link lists of
#: the faces it links to, and what those lists drop lies near them
RELINK_NEIGHBOURS = 256
#: graphs this small are checked whole after every insert (~0.3 s at the 200 000-face rate): in 1 of 40
#: builds of 3 500 faces on 16 threads, checking the neighbours alone left faces unreachable
RELINK_WHOLE_GRAPH = 5_000


def _returned_keys(found: Any, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys, which of them were returned) of a usearch search of ``queries`` rows: one query's matches
    hold only what was found, a batch's rows are padded past their counts."""
    keys = np.asarray(found.keys, np.uint64).reshape(queries, -1)
    counts = np.asarray(getattr(found, "counts", keys.shape[1])).reshape(-1, 1)
    return keys, np.arange(keys.shape[1]) < counts


def _unreached(graph: Any, slots: np.ndarray, codes: np.ndarray, beam: int) -> np.ndarray:
    """Positions in ``slots`` of the faces a walk of ``beam`` for their own ``codes`` does not return
    among its best four (four: the same vector stored twice ties with itself)."""
    graph.expansion_search = beam
    keys, returned = _returned_keys(graph.search(codes, 4, threads=0), len(slots))  # (0: every core)
    return np.flatnonzero(~((keys == slots.astype(np.uint64)[:, None]) & returned).any(axis=1))


def _checksum(path: Path) -> int:
    """CRC-32 of a file, read in 16 MB blocks (~0.5 s for a 1 M-face graph)."""
    crc = 0
    with open(path, "rb") as file:
        while block := file.read(16 << 20):
            crc = zlib.crc32(block, crc)
    return crc


class HnswIndex(FaceIndex):
    """Approximate search with an HNSW graph (usearch): inner products of float16 unit vectors, or, for
    wide vectors (``graph_vectors="binary"``, the default from 512 values), Hamming distances of SimHash
    codes whose best candidates are re-ranked by their exact cosines (float16 rows beside the graph).

    Every face occupies a *slot*, its key in the graph. A removed face's slot is removed from the graph
    and reused by a later add, so the graph is updated in place and never rebuilt.

    An index opened from a snapshot with ``mapped=True`` serves the saved graph as a read-only memory map:
    every process that opens the same snapshot shares its pages (several server workers hold one copy).
    Such a graph cannot change, so faces added afterwards go to a small exact index beside it, removed
    ones are masked out of the graph's answers, and :meth:`save` folds both into a new graph.
    """

    kind = "hnsw"

    def __init__(
        self,
        dim: int,
        *,
        key_dtype: DTypeLike = np.int64,
        m: int = HNSW_M,
        ef_construction: int | None = None,
        ef_search: int | None = None,
        threads: int = 1,
        insert_threads: int = 0,
        graph_vectors: GraphVectors | None = None,
        walk_again_below: float | None = WALK_AGAIN_BELOW,
    ) -> None:
        self.dim = dim
        # (binary graphs only; None: never walk again)
        self.walk_again_below = walk_again_below
        self.insert_threads = insert_threads  # threads of a bulk insert (0: every core)
        self.key_dtype = np.dtype(key_dtype)
        self.m, self.ef_search, self.threads = m, ef_search, threads
        if graph_vectors is None:
            graph_vectors = "binary" if dim >= BINARY_FROM_DIM else "float16"
        if graph_vectors not in GRAPH_VECTORS:
            raise IndexSettingError(f"graph_vectors must be one of {GRAPH_VECTORS}, not {graph_vectors!r}")
        self.graph_vectors: GraphVectors = graph_vectors
        if ef_construction is None:
            ef_construction = BINARY_EF_CONSTRUCTION if self.binary else HNSW_EF_CONSTRUCTION
        self.ef_construction = ef_construction
        # the random hyperplanes of a binary graph's codes (saved with the graph: a code means nothing
        # without them)
        bits = -(-CODE_BITS_PER_VALUE * dim // 8) * 8  # whole bytes
        self._projection = (
            np.random.default_rng(dim).standard_normal((dim, bits), dtype=np.float32) if self.binary else None
        )
        self._lock = threading.RLock()
        self.clear()

    @property
    def binary(self) -> bool:
        """The graph walks SimHash codes and its answers are re-ranked on the float16 rows beside it."""
        return self.graph_vectors == "binary"

    @property
    def walk_again_bar(self) -> float | None:
        """The cosine below which a query's walk is walked again (binary graphs only; else None)."""
        return self.walk_again_below if self.binary else None

    @property
    def graph_dim(self) -> int:
        """Values (or bits) of one vector in the graph."""
        return self.dim if self._projection is None else self._projection.shape[1]

    def _new_graph(self) -> Any:
        return _usearch_index()(
            ndim=self.graph_dim,
            metric="hamming" if self.binary else "ip",
            dtype="b1" if self.binary else HNSW_DTYPE,
            connectivity=self.m,
            expansion_add=self.ef_construction,
        )

    def _graph_codes(self, vectors: np.ndarray) -> np.ndarray:
        """What the graph stores of unit vectors: the vectors, or their SimHash codes (8 bits a byte)."""
        if self._projection is None:
            return vectors
        return np.packbits(vectors @ self._projection > 0, axis=-1)

    def clear(self, capacity: int = 1024) -> None:
        with self._lock:
            self._graph = self._new_graph()
            self._mapped = False  # the graph is a read-only view of a snapshot file
            self._graph_slots = 0  # faces in a mapped graph's file, including those masked since
            self._recent = ExactIndex(self.dim, key_dtype=self.key_dtype)
            self._keys = np.zeros(capacity, self.key_dtype)
            self._groups = np.zeros(capacity, np.int64)
            self._alive = np.zeros(capacity, bool)
            # the float16 rows of a binary graph's faces, by slot (the re-rank reads them)
            self._rows = np.zeros((capacity if self.binary else 0, self.dim), np.float16)
            self._used = 0  # slots ever handed out (high-water mark)
            self._free: list[int] = []
            self._count = 0  # faces in the graph (the recent ones are counted by _recent)
            # faces inserted again because no walk reached them, and the seconds spent looking
            self.relinked_faces, self.relink_check_s = 0, 0.0
            # queries walked again because the first walk found no face at WALK_AGAIN_BELOW or above
            self.second_walks = 0

    def __len__(self) -> int:
        return self._count + len(self._recent)

    @property
    def mapped(self) -> bool:
        """The graph is a shared read-only memory map of a snapshot."""
        return self._mapped

    @property
    def recent_faces(self) -> int:
        """Faces added since the graph was mapped (kept beside it until the next save)."""
        return len(self._recent)

    @property
    def pending_changes(self) -> int:
        """Faces added beside a mapped graph plus faces masked out of it: what the next save folds in."""
        return len(self._recent) + (self._graph_slots - self._count if self._mapped else 0)

    def reserve(self, count: int) -> None:
        with self._lock:
            if not self._mapped and count > len(self._keys):
                self._resize(count)

    def _resize(self, capacity: int) -> None:
        self._keys = _grown(self._keys, self._used, capacity)
        self._groups = _grown(self._groups, self._used, capacity)
        self._alive = _grown(self._alive, self._used, capacity)
        if self.binary:
            self._rows = _grown(self._rows, self._used, capacity)

    def add(self, keys: np.ndarray, groups: np.ndarray, vectors: np.ndarray) -> None:
        keys, vectors = _added(keys, vectors, self.key_dtype, self.dim)
        if len(keys) == 0:
            return
        with self._lock:
            self.remove(keys)
            if self._mapped:
                self._recent.add(keys, groups, vectors)
                return
            reused = [self._free.pop() for _ in range(min(len(self._free), len(keys)))]
            fresh = len(keys) - len(reused)
            if self._used + fresh > len(self._keys):
                self._resize(max(self._used + fresh, 2 * len(self._keys)))
            slots = np.asarray(reused + list(range(self._used, self._used + fresh)), np.uint64)
            self._used += fresh
            # concurrent inserts into a small graph lose links (5 of 300 true neighbours missed on 500
            # faces built with 2 threads, none with 1): the first faces go in one at a time
            serial = max(0, min(len(slots), SERIAL_INSERTS - len(self._graph)))
            codes = self._graph_codes(vectors)
            if serial:
                self._graph.add(slots[:serial], codes[:serial], threads=1)
            if serial < len(slots):
                self._graph.add(slots[serial:], codes[serial:], threads=self.insert_threads)
            if self.binary:
                self._rows[slots] = vectors
            self._keys[slots] = keys
            self._groups[slots] = np.asarray(groups, np.int64).ravel()
            self._alive[slots] = True
            self._count += len(keys)
            # inserts can prune away an earlier face's last link too: a bulk load (and a small graph) is
            # checked whole. An update of a larger graph checks its own faces only: the faces near them
            # as well would cost as much as the whole graph once an update is a few thousand faces, and
            # the service builds its graph 50 000 faces at a time.
            if 4 * len(slots) >= len(self._graph) or len(self._graph) <= RELINK_WHOLE_GRAPH:
                slots = self._live_slots()
            self._relink_unreachable(slots)

    def _live_slots(self) -> np.ndarray:
        return np.flatnonzero(self._alive[: self._used]).astype(np.uint64)

    def _with_neighbours(self, slots: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``slots`` and the :data:`RELINK_NEIGHBOURS` faces nearest each (``codes``: their graph vectors);
        every face of a graph of up to :data:`RELINK_WHOLE_GRAPH` faces."""
        if len(self._graph) <= RELINK_WHOLE_GRAPH:
            return self._live_slots()
        self._graph.expansion_search = max(self.beam(), RELINK_NEIGHBOURS)
        found = self._graph.search(codes, RELINK_NEIGHBOURS, threads=0)
        near, returned = _returned_keys(found, len(slots))
        return np.unique(np.concatenate([slots.astype(np.uint64), near[returned]]))

    def _relink_unreachable(self, slots: np.ndarray) -> None:
        """Insert again, one thread at a time, every face of ``slots`` that a walk from the graph's entry
        point does not reach with its own stored vector. A concurrent insert can leave a face stored but
        with no link to it (usearch issue #735, open in 2.26.6): no beam ever finds it again, so a
        subject enrolled with one photo would never be recognised. Seen here on 20 000 x 512 built
        under load (1 build in 25) and on a quiet 200 000 x 128 build (3 faces missed at ef 512)."""
        if len(slots) == 0:
            return
        started = time.perf_counter()
        codes = np.vstack(self._graph.get(slots))
        for _ in range(RELINK_ROUNDS):
            lost = np.arange(len(slots))
            # (a short walk also misses many faces that are merely far from the entry: wider walks ask
            # again for those only)
            for beam in (*RELINK_CHECK_BEAMS, self.beam()):
                lost = lost[_unreached(self._graph, slots[lost], codes[lost], beam)]
                if len(lost) == 0:
                    break
            if len(lost) == 0:
                break
            lost_slots, lost_codes = slots[lost], codes[lost]
            self._graph.remove(lost_slots)
            self._graph.add(lost_slots, lost_codes, threads=1)
            self.relinked_faces += len(lost)
            # a re-insert can prune another face's last link: check the re-inserted faces and those
            # near them again (not the whole graph: at 200 000 faces a whole check is ~17 s)
            slots = self._with_neighbours(lost_slots, lost_codes)
            codes = np.vstack(self._graph.get(slots))
        self.relink_check_s += time.perf_counter() - started

    def remove(self, keys: np.ndarray) -> int:
        wanted = _keys_array(keys, self.key_dtype)
        with self._lock:
            if len(wanted) == 0 or len(self) == 0:
                return 0
            removed = self._recent.remove(wanted)
            slots = np.flatnonzero(self._alive[: self._used] & np.isin(self._keys[: self._used], wanted))
            if len(slots):
                if not self._mapped:  # (a mapped graph cannot change: its answers are masked instead)
                    self._graph.remove(slots.astype(np.uint64))
                    self._free.extend(int(s) for s in slots)
                self._alive[slots] = False
                self._count -= len(slots)
            return removed + len(slots)

    def beam(self) -> int:
        """The search beam (ef) of a query's first walk: fixed when given, else widened with the size.
        Measured with the default graph (M=32, ef_construction=200) on clustered faces, one query thread,
        recall@5 against exact search (``docs/scale.md``): 128-d float16, 100 000 faces, ef 64: 100 %
        (0.28 ms); 1 M, ef 128: 98.9 % (1.1 ms), ef 200: 99.6 % (1.5 ms). 512-d float16, 1 M: ef 200:
        98.0 % (5.0 ms), ef 256: 99.6 % (6.5 ms), so wider float16 vectors get a 1.3 times wider beam.
        512-d binary codes in a graph built with ``BINARY_EF_CONSTRUCTION``, up to 1 M faces, get 0.65
        times the float16 beam (130 at 1 M): a walk that loses its way is walked again
        (``WALK_AGAIN_BELOW``), so the first walk need not be wide enough for the hardest query. 1 M,
        2 000 queries: ef 128 alone lost 2.65 % of them; ef 128, then 512 for those, found 99.75 % in
        1.40 ms, where ef 260 alone found 99.76 % in 2.39 ms. Binary graphs built with ef_construction
        200 (snapshots made before), and larger binary graphs, get twice the beam: at 1 M three such
        builds found 98.6-99.2 % at ef 256 and 99.3 % at ef 384; at 3 M, ef 384: 93.1 %, ef 512:
        94.9 % (3.8 ms), so past 1 M every step of beam counts. A smaller graph (M) needs a wider beam
        too."""
        if self.ef_search is not None:
            return self.ef_search
        beam = min(256, max(64, self._count // 5000))
        if self.binary:
            measured = self.ef_construction >= BINARY_EF_CONSTRUCTION and self._count <= 1_000_000
            beam = max(64, int(0.65 * beam)) if measured else 2 * beam
        elif self.dim > 256:
            beam = int(1.3 * beam)
        return beam if self.m >= HNSW_M else 2 * beam

    def _graph_hits(
        self, query: np.ndarray, code: np.ndarray, fetch: int, beam: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Slots and cosines of (at least) ``fetch`` live faces of the graph nearest to one query (whose
        graph ``code`` is given) by a walk of ``beam``, or of every live face the walk found if fewer."""
        if self.binary:
            fetch = max(fetch, RERANK_CANDIDATES)
        self._graph.expansion_search = max(beam, fetch)
        found = self._graph.search(code, fetch, threads=self.threads)
        slots = np.asarray(found.keys, np.int64)
        live = self._alive[slots]
        slots = slots[live]
        if self.binary:
            cosines = self._rows[slots].astype(np.float32) @ query
        else:
            cosines = 1.0 - np.asarray(found.distances, np.float32)[live]
        # float16 rounding can put a face's cosine with itself a little above 1
        return slots, np.clip(cosines, -1.0, 1.0)

    def search(self, queries: np.ndarray, k: int, *, unique_groups: bool = False) -> list[Hits]:
        queries = unit_rows(queries)
        with self._lock:
            if len(self) == 0 or queries.shape[1] != self.dim:
                return [empty_hits(self.key_dtype) for _ in range(len(queries))]
            if k <= 0 or 2 * k >= self._count:
                return self._search_all(queries, k, unique_groups)
            masked = self._graph_slots - self._count if self._mapped else 0
            recent = None
            if self.recent_faces:
                recent = self._recent.search(queries, k, unique_groups=unique_groups)
            results = []
            # every query's code at once: one pass over the projection, not one per query and retry
            codes = self._graph_codes(queries)
            below = self.walk_again_bar
            first_beam = self.beam()
            for row, query in enumerate(queries):
                # one result per group, or faces masked out of a mapped graph: over-fetch until enough
                # are found or the whole graph has been asked
                fetch = min(self._count + masked, (max(4 * k, 32) if unique_groups else k) + min(masked, 32))
                beam = first_beam
                while True:
                    slots, cosines = self._graph_hits(query, codes[row], fetch, beam)
                    if below is not None and beam == first_beam and not (cosines >= below).any():
                        beam *= WALK_AGAIN_WIDER  # (the walk lost its way: strangers only)
                        self.second_walks += 1
                        continue
                    groups = self._groups[slots]
                    enough = len(slots) >= k and (not unique_groups or len(np.unique(groups)) >= k)
                    if enough or fetch >= self._count + masked:
                        break
                    fetch = min(self._count + masked, 4 * fetch)
                keys = self._keys[slots]
                if recent is not None:
                    keys = np.concatenate([keys, recent[row].keys])
                    groups = np.concatenate([groups, recent[row].groups])
                    cosines = np.concatenate([cosines, recent[row].cosines])
                order = best_first(cosines, groups, k, unique_groups)
                results.append(Hits(keys[order], groups[order], cosines[order]))
            return results

    def _graph_entries(self) -> tuple[np.ndarray, np.ndarray]:
        """Slots and float32 vectors of every live face of the graph."""
        slots = np.flatnonzero(self._alive[: self._used])
        if len(slots) == 0:
            return slots, np.zeros((0, self.dim), np.float32)
        if self.binary:
            return slots, self._rows[slots].astype(np.float32)
        return slots, np.vstack(self._graph.get(slots.astype(np.uint64), dtype=np.float32))

    def _search_all(self, queries: np.ndarray, k: int, unique_groups: bool) -> list[Hits]:
        """Most of the faces asked for (k <= 0: all of them): a graph walk cannot promise to reach
        every element, so score every stored vector instead."""
        slots, vectors = self._graph_entries()
        recent_keys, recent_groups, recent_vectors = self._recent.entries()
        keys = np.concatenate([self._keys[slots], recent_keys])
        groups = np.concatenate([self._groups[slots], recent_groups])
        vectors = np.vstack([vectors, recent_vectors])
        results = []
        for scores in queries @ vectors.T:
            order = best_first(scores, groups, k, unique_groups)
            results.append(Hits(keys[order], groups[order], scores[order].astype(np.float32)))
        return results

    # ----------------------------------------------------------------- persistence
    def _take_ownership(self) -> None:
        """Turn a mapped graph into one of this process's own, folding in what changed since."""
        if not self._mapped:
            return
        # a copy of the mapped file in this process's memory (no rebuild), then the removals applied
        owned = _usearch_index().restore(self._graph.save())
        owned.expansion_add = self.ef_construction
        masked = np.flatnonzero(~self._alive[: self._used])
        if len(masked):
            owned.remove(masked.astype(np.uint64))
        self._graph, self._mapped = owned, False
        self._keys, self._groups, self._alive = (
            np.array(self._keys[: self._used]),
            np.array(self._groups[: self._used]),
            np.array(self._alive[: self._used]),
        )
        if self.binary:
            self._rows = np.array(self._rows[: self._used])
        self._free = [int(s) for s in np.flatnonzero(~self._alive[: self._used])]
        keys, groups, vectors = self._recent.entries()
        self._recent = ExactIndex(self.dim, key_dtype=self.key_dtype)
        self.add(keys, groups, vectors)

    def save(self, folder: Path, extra: dict[str, object] | None = None) -> None:
        folder = Path(folder)
        with _temporary_folder(folder) as tmp, self._lock:
            if self._mapped and (len(self._recent) or self._count < self._graph_slots):
                self._take_ownership()
            try:
                self._graph.save(str(tmp / GRAPH_FILE))
            except RuntimeError as exc:  # usearch reports a failed write (e.g. a full disk) this way
                raise OSError(f"cannot write {tmp / GRAPH_FILE}: {exc}") from exc
            checksum = _checksum(tmp / GRAPH_FILE)
            n = self._used
            np.save(tmp / "keys.npy", self._keys[:n])
            np.save(tmp / "groups.npy", self._groups[:n])
            np.save(tmp / "alive.npy", self._alive[:n])
            if self._projection is not None:  # (a binary graph)
                np.save(tmp / ROWS_FILE, self._rows[:n])
                np.save(tmp / PROJECTION_FILE, self._projection)
            meta = {
                "kind": self.kind,
                "format": HNSW_FORMAT,
                "graph_crc32": checksum,
                "dim": self.dim,
                "size": self._count,
                "used": n,
                "m": self.m,
                "ef_construction": self.ef_construction,
                "graph_vectors": self.graph_vectors,
                **(extra or {}),
            }
            (tmp / META).write_text(json.dumps(meta))
            _replace_dir(tmp, folder)

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        key_dtype: DTypeLike = np.int64,
        ef_search: int | None = None,
        mapped: bool = True,
    ) -> tuple[HnswIndex, dict]:
        """Open a saved graph: as a shared read-only memory map (``mapped``), or as this process's own."""
        folder = Path(folder)
        meta = json.loads((folder / META).read_text())
        if meta.get("format") != HNSW_FORMAT:
            raise ValueError(f"an HNSW snapshot of format {meta.get('format', 'hnswlib')}, not {HNSW_FORMAT}")
        index = cls(
            int(meta["dim"]),
            key_dtype=key_dtype,
            m=int(meta["m"]),
            ef_construction=int(meta["ef_construction"]),
            ef_search=ef_search,
            graph_vectors=meta.get("graph_vectors", "float16"),  # (snapshots before binary graphs)
        )
        used = int(meta["used"])
        path = folder / GRAPH_FILE
        # a damaged graph could send the search outside the file (a crash, not an error): its checksum
        # is checked before usearch reads it
        if _checksum(path) != meta.get("graph_crc32"):
            raise ValueError(f"{path} does not match its checksum (damaged or partly written)")
        try:
            graph = _usearch_index().restore(str(path), view=mapped)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable usearch graph: {exc}") from exc
        keys = np.load(folder / "keys.npy", mmap_mode="r" if mapped else None)
        groups = np.load(folder / "groups.npy", mmap_mode="r" if mapped else None)
        alive = np.load(folder / "alive.npy")
        if index.binary:
            index._projection = np.load(folder / PROJECTION_FILE)
            if index._projection.shape[0] != index.dim or index._projection.dtype != np.float32:
                raise ValueError(f"{folder / PROJECTION_FILE} is not a projection of {index.dim}-d faces")
        if graph is None or graph.ndim != index.graph_dim or len(graph) != int(alive[:used].sum()):
            raise ValueError(f"{path} does not hold the {index.dim}-d faces its snapshot lists")
        if index.binary:
            rows = np.load(folder / ROWS_FILE, mmap_mode="r" if mapped else None)
            if rows.shape != (used, index.dim) or rows.dtype != np.float16:
                raise ValueError(f"{folder / ROWS_FILE} does not hold the {used} rows its snapshot lists")
            index._rows = rows if mapped else _grown(rows, used, max(1024, used + used // 8))
        graph.expansion_add = index.ef_construction
        if mapped:
            # the keys and groups of a mapped graph never change: shared pages too; the mask is ours
            index._keys, index._groups, index._alive = keys.astype(index.key_dtype, copy=False), groups, alive
        else:
            capacity = max(1024, used + used // 8)
            index._keys = _grown(keys.astype(index.key_dtype, copy=False), used, capacity)
            index._groups = _grown(groups, used, capacity)
            index._alive = _grown(alive, used, capacity)
        index._graph, index._mapped = graph, mapped
        index._used = used
        index._count = int(alive[:used].sum())
        index._graph_slots = index._count
        index._free = [] if mapped else [int(s) for s in np.flatnonzero(~alive[:used])]
        return index, meta

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "library": "usearch",
            "m": self.m,
            "graph_vectors": self.graph_vectors,
            "ef_search": self.beam(),
            "walk_again_below": self.walk_again_bar,
            "memory_mapped": self._mapped,
            "recent_faces": self.recent_faces,
        }
