"""PostgreSQL + pgvector backend: the embeddings in a ``vector`` column with an HNSW index, searched in SQL.

Tables keep their float32 blob (the source of truth every backend reads); the pgvector column beside it,
``embedding_vector``, is filled from the blob by :meth:`PgvectorIndex.sync` (a partial index finds the
rows still missing it, and a trigger clears it whenever the blob changes). One HNSW index per pack
(partial, ``WHERE pack = '<pack>'``, over ``embedding_vector::vector(<dim>)``) serves every service or
library of that pack; a search filters by the owner's id with pgvector's iterative index scans.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from faceatlas.index.base import (
    FaceIndex,
    Hits,
    IndexSettingError,
    IndexUnavailableError,
    best_first,
    empty_hits,
    unit_rows,
)
from faceatlas.storage.db import Database
from faceatlas.storage.pgvector import VECTOR_COLUMN, VECTOR_TABLES, add_vector_column

log = logging.getLogger("faceatlas.index")

BACKFILL_CHUNK = 2_000
#: The HNSW graph's density: as for the in-memory graph (:data:`faceatlas.index.memory.HNSW_M`), face
#: embeddings of 1 M people need M=32 for recall@5 >= 0.99 at a small ef_search.
PGVECTOR_M = 32
PGVECTOR_EF_CONSTRUCTION = 200
#: maintenance_work_mem for building the index: the graph must fit in it or pgvector goes on building
#: it on disk, ~100x slower. Bytes per face: the vector, 2M layer-0 neighbours of 16 bytes plus the upper
#: layers, headers. 16 bytes a neighbour was too few: a 1 M-face build (128-d, M=32) ran out at 800 000
#: faces and then inserted ~40 faces/s instead of ~500.
MAX_BUILD_MEMORY = 4 * 2**30
#: How the HNSW index holds the vectors (as the in-memory graph's ``GraphVectors``). ``vector``: the
#: float32 vectors themselves, whose inner products are the answer. ``binary``: their signs (pgvector's
#: ``binary_quantize``, a ``bit(dim)`` expression index, 64 bytes a 512-d face against 2 KB) walked by
#: Hamming distance; the walk's ``ef_search`` best candidates are then re-ranked by their exact inner
#: products in the same query.
PgGraphVectors = Literal["vector", "binary"]
PG_GRAPH_VECTORS: tuple[PgGraphVectors, ...] = get_args(PgGraphVectors)
MISSING_EXTENSION = (
    "the pgvector index needs PostgreSQL with the 'vector' extension (pgvector): install it on the "
    "database server and run CREATE EXTENSION vector, or choose --index exact/hnsw/auto"
)


def vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{float(v):.7g}" for v in vector) + "]"


def _pack_literal(pack: str) -> str:
    # the pack goes into a partial index predicate, which a bound parameter cannot match
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", pack):
        raise ValueError(f"pack id {pack!r} cannot name a pgvector index")
    return "'" + pack + "'"


@dataclass
class PgvectorIndex(FaceIndex):
    """Faces of one owner (``where``, e.g. ``{"service_id": 3}``) and one pack in ``table``.

    ``add`` and ``remove`` only maintain the vector column of rows the table already holds (the rows
    themselves are written by the storage layer); :meth:`sync` fills every row still missing it.
    """

    db: Database
    table: str
    pack: str
    dim: int
    where: Mapping[str, int] = field(default_factory=dict)
    key_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.int64))
    # measured at 1 M faces (M=32): ef 40: 12 ms, recall@5 0.984; 64: 16 ms, 0.999; 100: 26 ms, 0.999
    ef_search: int = 64
    graph_vectors: PgGraphVectors = "vector"
    kind: str = "pgvector"

    def __post_init__(self) -> None:
        if self.graph_vectors not in PG_GRAPH_VECTORS:
            raise IndexSettingError(
                f"graph_vectors must be one of {PG_GRAPH_VECTORS}, not {self.graph_vectors!r}"
            )
        if self.db.is_sqlite:
            raise IndexUnavailableError(MISSING_EXTENSION + " (this database is SQLite)")
        self.key_column, self.group_column = VECTOR_TABLES[self.table]
        slug = re.sub(r"[^a-z0-9]", "_", self.pack.lower())
        self.cast = f"{VECTOR_COLUMN}::vector({int(self.dim)})"
        if self.graph_vectors == "binary":
            self.index_name = f"ix_{self.table}_hnswbq_{slug}_{self.dim}"
            self.indexed = f"binary_quantize({self.cast})::bit({int(self.dim)})"
            self.operators = "bit_hamming_ops"
        else:
            self.index_name = f"ix_{self.table}_hnsw_{slug}_{self.dim}"
            self.indexed = self.cast
            self.operators = "vector_ip_ops"
        filters = [f"pack = {_pack_literal(self.pack)}", f"{VECTOR_COLUMN} IS NOT NULL"]
        filters += [f"{column} = :{column}" for column in self.where]
        self.filter_sql = " AND ".join(filters)
        with self.db.engine.begin() as conn:
            if not add_vector_column(conn, self.table):
                raise IndexUnavailableError(MISSING_EXTENSION)

    def _index_exists(self, conn: Connection) -> bool:
        return bool(conn.scalar(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": self.index_name}))

    def _ensure_index(self) -> None:
        """Create the pack's HNSW index once its vectors are in the column: a bulk build over filled
        rows is many times faster than inserting a million rows one by one into an existing graph."""
        with self.db.engine.begin() as conn:
            if self._index_exists(conn):
                return
            rows = int(
                conn.scalar(
                    text(
                        f"SELECT count(*) FROM {self.table} "
                        f"WHERE pack = {_pack_literal(self.pack)} AND {VECTOR_COLUMN} IS NOT NULL"
                    )
                )
                or 0
            )
            stored = self.dim // 8 if self.graph_vectors == "binary" else 4 * self.dim
            needed = rows * (stored + 48 * PGVECTOR_M + 128)
            memory_mb = max(64, min(MAX_BUILD_MEMORY, needed + needed // 4) // 2**20)
            conn.execute(text(f"SET LOCAL maintenance_work_mem = '{int(memory_mb)}MB'"))
            started = time.perf_counter()
            try:
                with conn.begin_nested():
                    conn.execute(
                        text(
                            f"CREATE INDEX IF NOT EXISTS {self.index_name} ON {self.table} USING hnsw "
                            f"(({self.indexed}) {self.operators}) WITH (m = {PGVECTOR_M}, "
                            f"ef_construction = {PGVECTOR_EF_CONSTRUCTION}) "
                            f"WHERE pack = {_pack_literal(self.pack)}"
                        )
                    )
            except DBAPIError:
                if not self._index_exists(conn):  # not just another process creating it at the same time
                    raise
        log.info(
            "pgvector index %s over %d faces built in %.1f s",
            self.index_name,
            rows,
            time.perf_counter() - started,
        )

    def _owner(self) -> dict[str, int]:
        return dict(self.where)

    def __len__(self) -> int:
        with self.db.engine.connect() as conn:
            return int(
                conn.scalar(text(f"SELECT count(*) FROM {self.table} WHERE {self.filter_sql}"), self._owner())
                or 0
            )

    def sync(self) -> int:
        """Fill the vector column of this owner's rows that lack it; returns how many were filled."""
        owner = " AND ".join(
            [f"{VECTOR_COLUMN} IS NULL", f"pack = {_pack_literal(self.pack)}"]
            + [f"{column} = :{column}" for column in self.where]
        )
        filled, after = 0, None
        while True:
            # walk the missing rows by key: rows skipped below (another embedding size) are not met again
            page = f" AND {self.key_column} > :after" if after is not None else ""
            sql = (
                f"SELECT {self.key_column}, embedding FROM {self.table} WHERE {owner}{page} "
                f"ORDER BY {self.key_column} LIMIT {BACKFILL_CHUNK}"
            )
            with self.db.engine.begin() as conn:
                rows = conn.execute(text(sql), {**self._owner(), "after": after}).all()
                if not rows:
                    self._ensure_index()
                    return filled
                after = rows[-1][0]
                rows = [r for r in rows if r[1] is not None and len(r[1]) == 4 * self.dim]
                if rows:
                    vectors = np.frombuffer(b"".join(r[1] for r in rows), "<f4").reshape(len(rows), -1)
                    self._write(conn, [r[0] for r in rows], unit_rows(vectors))
                    filled += len(rows)

    def _write(self, conn: Connection, keys: list, vectors: np.ndarray) -> None:
        conn.execute(
            text(
                f"UPDATE {self.table} SET {VECTOR_COLUMN} = CAST(:v AS vector) WHERE {self.key_column} = :k"
            ),
            [{"k": k, "v": vector_literal(v)} for k, v in zip(keys, vectors, strict=True)],
        )

    def add(self, keys: np.ndarray, groups: np.ndarray, vectors: np.ndarray) -> None:
        values = [k.decode() if isinstance(k, bytes) else int(k) for k in np.asarray(keys).ravel()]
        if values:
            with self.db.engine.begin() as conn:
                self._write(conn, values, unit_rows(vectors))

    def remove(self, keys: np.ndarray) -> int:
        values = [k.decode() if isinstance(k, bytes) else int(k) for k in np.asarray(keys).ravel()]
        if not values:
            return 0
        with self.db.engine.begin() as conn:
            result = conn.execute(
                text(f"UPDATE {self.table} SET {VECTOR_COLUMN} = NULL WHERE {self.key_column} = :k"),
                [{"k": k} for k in values],
            )
        return int(result.rowcount or 0)

    def clear(self) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(
                text(f"UPDATE {self.table} SET {VECTOR_COLUMN} = NULL WHERE {self.filter_sql}"), self._owner()
            )

    def _top(self, conn: Connection, query: np.ndarray, limit: int | None) -> Sequence[Any]:
        # the ORDER BY expression must be the indexed one for PostgreSQL to use the HNSW index
        query_vector = f"CAST(:q AS vector({self.dim}))"
        distance = f"{self.cast} <#> {query_vector}"
        columns = f"{self.key_column}, {self.group_column}, ({distance}) AS distance"
        rows = f"FROM {self.table} WHERE {self.filter_sql}"
        if self.graph_vectors == "binary" and limit is not None:
            # the walk's ef_search best codes, then their exact order (a limit the walk cannot fill
            # would only make it walk on)
            code = f"binary_quantize({query_vector})::bit({self.dim})"
            candidates = max(int(limit), self.ef_search)
            sql = (
                f"SELECT * FROM (SELECT {columns} {rows} ORDER BY {self.indexed} <~> {code} "
                f"LIMIT {candidates}) AS candidates ORDER BY distance"
            )
        else:
            sql = f"SELECT {columns} {rows} ORDER BY {distance}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return conn.execute(text(sql), {"q": vector_literal(query), **self._owner()}).all()

    def search(self, queries: np.ndarray, k: int, *, unique_groups: bool = False) -> list[Hits]:
        queries = unit_rows(queries)
        if queries.shape[1] != self.dim:
            return [empty_hits(self.key_dtype) for _ in range(len(queries))]
        results = []
        with self.db.engine.begin() as conn:
            # (once a transaction) iterative scans keep walking the graph until the owner filter yields
            # enough rows
            conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            # the planner's cost of an HNSW scan grows with ef_search and is not monotone: at 100 000 x
            # 512, ef_search 256 made it sort a parallel sequential scan (985 ms against 66 ms at 192 and
            # 114 ms at 384, EXPLAIN ANALYZE). Index scans (the graph, or the owner's b-tree for a small
            # owner) stay open to the planner.
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            for query in queries:
                fetch: int | None = None if k <= 0 else (k if not unique_groups else max(4 * k, 32))
                while True:
                    conn.execute(
                        text(f"SET LOCAL hnsw.ef_search = {max(self.ef_search, min(fetch or 1000, 1000))}")
                    )
                    rows = self._top(conn, query, fetch)
                    keys = np.array(
                        [r[0].encode() if isinstance(r[0], str) else r[0] for r in rows], self.key_dtype
                    )
                    groups = np.fromiter((r[1] for r in rows), np.int64, len(rows))
                    cosines = -np.fromiter((r[2] for r in rows), np.float32, len(rows))
                    order = best_first(cosines, groups, k, unique_groups)
                    if not unique_groups or fetch is None or len(order) >= k or len(rows) < fetch:
                        break
                    fetch = 4 * fetch if fetch < 4000 else None
                results.append(Hits(keys[order], groups[order], cosines[order]))
        return results

    def describe(self) -> dict[str, object]:
        with self.db.engine.connect() as conn:
            built = self._index_exists(conn)
        return {
            "backend": self.kind,
            "faces": len(self),
            "dim": self.dim,
            "index": self.index_name if built else None,
            "m": PGVECTOR_M,
            "ef_search": self.ef_search,
            "graph_vectors": self.graph_vectors,
        }
