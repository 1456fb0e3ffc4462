"""Face-index benchmark: every backend of faceatlas.index on realistic (clustered) unit vectors.

    PYTHONPATH=src python benchmarks/search.py [--sizes 100000,1000000] [--dims 128,512]
        [--backends exact,exact-float16,exact-unscreened,exact-float16-unscreened,
                    hnsw,hnsw-float16,hnsw-binary,pgvector,pgvector-binary]
        [--pgvector URL] [--queries 200]

Vectors: one centre per person (10 photos each) plus per-photo noise, so a photo's cosine to its person's
centre is ~0.8 and two photos of one person ~0.64 (like real face embeddings, not uniform random).
Queries are new photos of stored people. For each backend: build time, memory per face (resident-set
growth), one-query latency p50/p99 (one thread, like the server), a 100-query batch, and recall@1 /
recall@5 against the exact float32 answer. Results are merged into benchmarks/results/search.json
(one entry per size x dim x backend); the load average is recorded, since this machine is shared.
pgvector runs against ``--pgvector URL`` (e.g. the server ``.ci/pgvector-server start`` prints).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks.common import RESULTS, machine, rss_mb, summary
from faceatlas.index import ExactIndex, FaceIndex, Hits, HnswIndex
from faceatlas.index.pgvector import PgGraphVectors, PgvectorIndex
from faceatlas.models.runtime import default_threads

PER_PERSON = 10
NOISE = 0.75  # norm of the per-photo noise around a unit centre


def clustered(n: int, dim: int, seed: int, chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, person of each vector); generated in chunks to bound the peak memory."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // PER_PERSON), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    people = rng.integers(0, len(centres), n)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = centres[people[start:stop]] + NOISE / np.sqrt(dim) * rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, people


def query_photos(vectors: np.ndarray, people: np.ndarray, count: int, seed: int) -> np.ndarray:
    """New photos of stored people: the mean of a person's stored photos plus fresh noise."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(vectors), count)
    dim = vectors.shape[1]
    q = vectors[picks] + NOISE / np.sqrt(dim) * rng.standard_normal((count, dim), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def stranger_photos(count: int, dim: int, seed: int) -> np.ndarray:
    """Photos of people who are not stored (a recognition service's unknown faces): new centres plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((count, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    q = centres + NOISE / np.sqrt(dim) * rng.standard_normal((count, dim), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_top(queries: np.ndarray, vectors: np.ndarray, k: int = 5) -> np.ndarray:
    """Positions of each query's ``k`` most similar vectors, best first (the truth recall is measured
    against), a few queries at a time so that 3 M x 512 fits beside the index."""
    top = np.zeros((len(queries), k), np.int64)
    step = max(1, 2**27 // len(vectors))
    for start in range(0, len(queries), step):
        scores = queries[start : start + step] @ vectors.T
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
        top[start : start + step] = np.take_along_axis(best, order, axis=1)
    return top


def faces_and_queries(
    n: int, dim: int, queries: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The benchmark's ``n`` stored faces and the person of each, ``queries`` new photos of stored people,
    and each query's exact top 5 (the same for every script, so that their numbers compare)."""
    vectors, people = clustered(n, dim, seed=n + dim)
    asked = query_photos(vectors, people, queries, seed=1)
    return vectors, people, asked, exact_top(asked, vectors)


def make(backend: str, dim: int, url: str | None, n: int) -> FaceIndex:
    if backend in ("exact", "exact-float16"):  # with the int8 screen from SCREEN_FROM faces, as served
        return ExactIndex(dim, dtype="float16" if backend == "exact-float16" else "float32")
    if backend in ("exact-unscreened", "exact-float16-unscreened"):  # the plain product, for comparison
        return ExactIndex(dim, dtype="float16" if "float16" in backend else "float32", screen_from=None)
    if backend == "hnsw":  # the graph's vectors as the index picks them for this width
        return HnswIndex(dim)
    if backend in ("hnsw-float16", "hnsw-binary"):
        return HnswIndex(dim, graph_vectors="float16" if backend == "hnsw-float16" else "binary")
    raise ValueError(backend)


class Positions(FaceIndex):
    """Search results of a pgvector index with each face's position in the generated array as its key
    (the rows are keyed by UUIDs; recall compares positions)."""

    def __init__(self, index: FaceIndex, position_of: dict[bytes, int]) -> None:
        self.inner, self.position_of = index, position_of
        self.kind, self.dim, self.key_dtype = index.kind, index.dim, np.dtype(np.int64)

    def __len__(self) -> int:
        return len(self.inner)

    def add(self, keys: np.ndarray, groups: np.ndarray, vectors: np.ndarray) -> None:
        raise NotImplementedError

    def remove(self, keys: np.ndarray) -> int:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def search(self, queries: np.ndarray, k: int, *, unique_groups: bool = False) -> list[Hits]:
        return [
            Hits(np.array([self.position_of[key] for key in h.keys], np.int64), h.groups, h.cosines)
            for h in self.inner.search(queries, k, unique_groups=unique_groups)
        ]


def build_pgvector(
    url: str, vectors: np.ndarray, people: np.ndarray, graph_vectors: PgGraphVectors = "vector"
) -> tuple[FaceIndex, float | None, float | None]:
    """Rows in service_face (bulk insert, not timed), then the vector column and HNSW index (timed).
    A service already holding these rows (an earlier run) is reused: no build time then."""
    from sqlalchemy import text

    from faceatlas.index.pgvector import PgvectorIndex
    from faceatlas.storage.db import Database
    from faceatlas.storage.services import ServiceStore

    db = Database.open(url)
    store = ServiceStore(db)
    n, dim = vectors.shape
    name, pack = f"bench-{n}-{dim}", f"bench{dim}"
    existing = [r for r in store.list_services() if r.name == name]
    build: float | None = None
    per_face: float | None = None
    if existing and store.count_faces(service_id=existing[0].id) == n:
        # rows of an earlier run: timed only if the HNSW index still has to be built
        sid = existing[0].id
        started = time.perf_counter()
        index = PgvectorIndex(
            db,
            "service_face",
            pack,
            dim,
            {"service_id": sid},
            key_dtype=np.dtype("S36"),
            graph_vectors=graph_vectors,
        )
        had_index = index.describe()["index"] is not None
        index.sync()
        build = None if had_index else time.perf_counter() - started
    else:
        for record in existing:
            store.delete_service(record.id)
        sid = store.create_service(name, "recognition", pack).id
        for start in range(0, n, 50_000):
            chunk = vectors[start : start + 50_000]
            # subjects are the generated people (10 photos each); the face ids come back in order
            subjects = [f"person{p}" for p in people[start : start + len(chunk)]]
            ids = store.add_faces_bulk(sid, subjects, chunk, pack)
            with db.engine.begin() as conn:
                conn.execute(
                    text("CREATE TABLE IF NOT EXISTS bench_position (face_id text PRIMARY KEY, position int)")
                )
                conn.execute(
                    text("INSERT INTO bench_position VALUES (:f, :p)"),
                    [{"f": face_id, "p": start + i} for i, face_id in enumerate(ids)],
                )
        with db.engine.begin() as conn:
            size_before = conn.scalar(text("SELECT pg_database_size(current_database())"))
        started = time.perf_counter()
        index = PgvectorIndex(
            db,
            "service_face",
            pack,
            dim,
            {"service_id": sid},
            key_dtype=np.dtype("S36"),
            graph_vectors=graph_vectors,
        )
        index.sync()
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE service_face"))
            size_after = conn.scalar(text("SELECT pg_database_size(current_database())"))
        build = time.perf_counter() - started
        per_face = (size_after - size_before) / n
    with db.engine.begin() as conn:
        rows = conn.execute(
            text(
                "SELECT f.id, b.position FROM service_face f JOIN bench_position b ON b.face_id = f.id "
                "WHERE f.service_id = :sid"
            ),
            {"sid": sid},
        ).all()
    return Positions(index, {r[0].encode(): int(r[1]) for r in rows}), build, per_face


def one_at_a_time(index: FaceIndex, queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    """Each query's top 5 asked alone, as a server asks: (milliseconds of each, keys found)."""
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(index.search(q[None, :], 5)[0].keys)
        times.append((time.perf_counter() - t) * 1e3)
    return times, found


def measure(
    index: FaceIndex, queries: np.ndarray, truth: list[np.ndarray], strangers: np.ndarray | None = None
) -> dict[str, object]:
    """Latency and recall for ``queries`` (photos of stored people); with ``strangers``, the latency for
    those too (a binary graph walks again for a query whose walk found nobody near, so they cost more)."""
    graph: Any = index.inner if isinstance(index, Positions) else index
    walks_before = getattr(graph, "second_walks", 0)
    single, found = one_at_a_time(index, queries)
    walked_again = getattr(graph, "second_walks", 0) - walks_before
    batch = queries[:100]
    t = time.perf_counter()
    index.search(batch, 5)
    batch_ms = (time.perf_counter() - t) * 1e3
    r1 = float(np.mean([len(f) > 0 and f[0] == t[0] for f, t in zip(found, truth, strict=True)]))
    r5 = float(
        np.mean(
            [len(set(f[:5].tolist()) & set(t[:5].tolist())) / 5 for f, t in zip(found, truth, strict=True)]
        )
    )
    result: dict[str, object] = {
        "one_query_ms": summary(single),
        "batch_100_ms": round(batch_ms, 1),
        "batch_per_query_ms": round(batch_ms / len(batch), 3),
        "recall_at_1": round(r1, 4),
        "recall_at_5": round(r5, 4),
        "walked_again": round(walked_again / len(queries), 4),  # (the share of the single queries)
    }
    if strangers is not None:
        result["strangers_one_query_ms"] = summary(one_at_a_time(index, strangers)[0])
    return result


def mapped_graph(
    graph: HnswIndex, queries: np.ndarray, truth: list[np.ndarray], strangers: np.ndarray
) -> dict[str, object]:
    """The graph saved and opened again as a restarted server opens it: a shared memory map."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        graph.save(Path(folder) / "graph")
        saved_s = time.perf_counter() - started
        size = sum(f.stat().st_size for f in (Path(folder) / "graph").iterdir())
        started = time.perf_counter()
        mapped = HnswIndex.load(Path(folder) / "graph")[0]
        open_s = time.perf_counter() - started
        measured = measure(mapped, queries, truth, strangers)
        del mapped
    return {
        "save_s": round(saved_s, 2),
        "open_s": round(open_s, 3),
        "bytes_per_face_on_disk": round(size / max(len(graph), 1), 1),
        **measured,
    }


FRESH_PROCESS_SEARCH = """
import sys, time, json
t0 = time.perf_counter()
import numpy as np
from faceatlas.library.search import search_by_embedding
from faceatlas.library.store import open_library
db = open_library(sys.argv[1])
query = np.frombuffer(bytes.fromhex(sys.argv[2]), np.float32)
t1 = time.perf_counter()
hits = search_by_embedding(db, query, pack="sface", threshold=0.3, top=20)
t2 = time.perf_counter()
hits = search_by_embedding(db, query, pack="sface", threshold=0.3, top=20)
t3 = time.perf_counter()
print(json.dumps({"open_ms": (t1 - t0) * 1e3, "first_search_ms": (t2 - t1) * 1e3,
                  "second_search_ms": (t3 - t2) * 1e3, "top": hits[0].face_id}))
"""


def library_search(n: int) -> dict[str, object]:
    """``faceatlas search``'s path on an ``n``-face library, each query in a fresh process (as the CLI runs):
    the first search builds and saves the index, every later one opens it and reads no embedding."""
    import subprocess
    import tempfile

    from sqlalchemy import insert

    from faceatlas.library.store import open_library
    from faceatlas.library.tables import Face, Photo

    folder = Path(tempfile.mkdtemp(prefix="faceatlas-libsearch-"))
    db = open_library(folder)
    vectors, _ = clustered(n, 128, seed=7)
    with db.session() as s:
        photos = n // 2
        s.execute(insert(Photo), [{"path": f"/p/{i}.jpg", "size": 1, "mtime": 0.0} for i in range(photos)])
        for start in range(0, n, 50_000):
            s.execute(
                insert(Face),
                [
                    {
                        "photo_id": 1 + (i % photos),
                        "x_min": 0,
                        "y_min": 0,
                        "x_max": 50,
                        "y_max": 50,
                        "score": 0.9,
                        "embedding": vectors[i].tobytes(),
                        "pack": "sface",
                    }
                    for i in range(start, min(n, start + 50_000))
                ],
            )
    db.dispose()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    runs = []
    for i in range(4):
        query = vectors[1000 + i]
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", FRESH_PROCESS_SEARCH, str(folder), query.tobytes().hex()],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        entry = json.loads(out.stdout.strip().splitlines()[-1])
        entry["process_s"] = time.perf_counter() - started
        runs.append({k: round(v, 1) if isinstance(v, float) else v for k, v in entry.items()})
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return {
        "faces": n,
        "first_process": runs[0],
        "later_processes": runs[1:],
        "later_first_search_ms_max": max(r["first_search_ms"] for r in runs[1:]),
        "load_average_1m": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dims", default="128,512")
    parser.add_argument("--backends", default="exact,exact-float16,hnsw")
    parser.add_argument("--pgvector", default=os.environ.get("FACEATLAS_TEST_PGVECTOR"))
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--library-faces", type=int, default=0, help="only measure the library search")
    args = parser.parse_args()
    if args.library_faces:
        path = RESULTS / "search.json"
        results = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
        results["library_search"] = library_search(args.library_faces)
        print(json.dumps(results["library_search"], indent=2))
        path.write_text(json.dumps(results, indent=2, sort_keys=True))
        return
    from threadpoolctl import threadpool_limits

    path = RESULTS / "search.json"
    results = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    results["machine"] = machine()
    for n in [int(s) for s in args.sizes.split(",")]:
        for dim in [int(d) for d in args.dims.split(",")]:
            vectors, people, queries, top = faces_and_queries(n, dim, args.queries)
            truth = list(top)
            strangers = stranger_photos(args.queries, dim, seed=2)
            for backend in args.backends.split(","):
                key = f"{n}x{dim}/{backend}"
                if os.environ.get("FACEATLAS_THREADS") and backend.startswith("exact"):
                    # the int8 screen's ONNX Runtime threads (default: every core when alone)
                    key += f"/onnx-threads-{os.environ['FACEATLAS_THREADS']}"
                print(key, "...", flush=True)
                load_before = os.getloadavg()[0]
                if backend in ("pgvector", "pgvector-binary"):
                    if not args.pgvector:
                        print("  skipped: no --pgvector URL")
                        continue
                    index, build_s, per_face = build_pgvector(
                        args.pgvector, vectors, people, "binary" if backend == "pgvector-binary" else "vector"
                    )
                    memory = {"bytes_per_face_on_disk": None if per_face is None else round(per_face, 1)}
                else:
                    before = rss_mb()
                    started = time.perf_counter()
                    index = make(backend, dim, None, n)
                    index.reserve(n)
                    for start in range(0, n, 100_000):
                        stop = min(n, start + 100_000)
                        index.add(
                            np.arange(start, stop), np.zeros(stop - start, np.int64), vectors[start:stop]
                        )
                    build_s = time.perf_counter() - started
                    memory = {"bytes_per_face_resident": round((rss_mb() - before) * 2**20 / n, 1)}
                with threadpool_limits(1, user_api="blas"):
                    entry = {
                        "faces": n,
                        "dim": dim,
                        "backend": backend,
                        "build_s": None if build_s is None else round(build_s, 2),
                        **memory,
                        **measure(index, queries, truth, strangers),
                        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                    }
                    if isinstance(index, ExactIndex):
                        entry["int8_screen"] = index.describe()["int8_screen"]
                        entry["onnx_threads"] = default_threads()
                    graph: Any = index.inner if isinstance(index, Positions) else index
                    if isinstance(graph, HnswIndex | PgvectorIndex):
                        # the beam width trades latency for recall: the curve, at every width
                        default_ef = graph.beam() if isinstance(graph, HnswIndex) else graph.ef_search
                        entry["ef_search"] = default_ef
                        entry["graph_vectors"] = graph.graph_vectors
                        if isinstance(graph, HnswIndex):
                            # (part of build_s: faces no walk reached, found and inserted again)
                            entry["relink_check_s"] = round(graph.relink_check_s, 2)
                            entry["relinked_faces"] = graph.relinked_faces
                        entry["by_ef_search"] = {}
                        beams = (40, 64, 128, 192, 256, 384, 512)
                        if isinstance(graph, PgvectorIndex) and graph.graph_vectors == "binary":
                            beams += (768, 1000)  # sign codes want wider beams; pgvector allows up to 1000
                        for ef in beams:
                            graph.ef_search = ef
                            measured = measure(index, queries, truth, strangers)
                            entry["by_ef_search"][ef] = {
                                "p50_ms": measured["one_query_ms"]["p50"],  # type: ignore[index]
                                "p99_ms": measured["one_query_ms"]["p99"],  # type: ignore[index]
                                "recall_at_1": measured["recall_at_1"],
                                "recall_at_5": measured["recall_at_5"],
                                "walked_again": measured["walked_again"],
                                "strangers_p50_ms": measured["strangers_one_query_ms"]["p50"],  # type: ignore[index]
                            }
                    if isinstance(graph, HnswIndex):
                        graph.ef_search = None
                        entry["mapped"] = mapped_graph(graph, queries, truth, strangers)
                print("  ", json.dumps(entry), flush=True)
                results["runs"][key] = entry
                RESULTS.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(results, indent=2, sort_keys=True))
                del index
                gc.collect()
            del vectors
            gc.collect()


if __name__ == "__main__":
    main()
