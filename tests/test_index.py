"""faceatlas.index: one behavioural suite run on every backend.

The in-memory backends (exact float32, exact float16, HNSW) run on SQLite and, when
FACEATLAS_TEST_POSTGRES is set, on PostgreSQL; the pgvector backend runs on the PostgreSQL 18 +
pgvector server that ``.ci/pgvector-server`` starts (FACEATLAS_TEST_PGVECTOR, set by CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import inspect, text

from faceatlas.index import ExactIndex, FaceIndex, HnswIndex, IndexSettingError, IndexUnavailableError, memory
from faceatlas.index.memory import GraphVectors
from faceatlas.index.pgvector import PgvectorIndex
from faceatlas.index.service import IndexOptions, ServiceCollections
from faceatlas.storage.db import Database, sqlite_url
from faceatlas.storage.services import ServiceStore
from tests.api_helpers import drop_postgres_database, fresh_postgres_url

ROOT = Path(__file__).resolve().parents[1]
DIM = 16


def clustered_unit_vectors(n: int, dim: int, seed: int = 0, per_person: int = 8) -> np.ndarray:
    """Faces of n / per_person people: a centre each plus per-photo noise (like real embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // per_person), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------- the index itself
#: each backend with the width of the vectors its suite runs on (a binary graph is only ever given wide
#: vectors: sign bits of 16 values cannot tell faces apart)
MEMORY_BACKENDS: dict[str, tuple[Callable[[int], FaceIndex], int]] = {
    "exact": (lambda dim: ExactIndex(dim), DIM),
    "exact-float16": (lambda dim: ExactIndex(dim, dtype="float16"), DIM),
    # the int8 screen from the first face (by default it starts at SCREEN_FROM faces)
    "exact-screened": (lambda dim: ExactIndex(dim, screen_from=0), DIM),
    "hnsw": (lambda dim: HnswIndex(dim), DIM),
    "hnsw-binary": (lambda dim: HnswIndex(dim, graph_vectors="binary"), 512),
}


@pytest.fixture(params=sorted(MEMORY_BACKENDS))
def memory_backend(request: pytest.FixtureRequest) -> tuple[Callable[[int], FaceIndex], int]:
    return MEMORY_BACKENDS[request.param]


def test_add_replace_remove_and_search(memory_backend: tuple[Callable[[int], FaceIndex], int]) -> None:
    make_index, dim = memory_backend
    vectors = clustered_unit_vectors(3000, dim)
    index: FaceIndex = make_index(dim)
    keys = np.arange(3000, dtype=np.int64) * 7
    index.add(keys, np.arange(3000) // 10, vectors * 3.0)  # not unit length: the index normalises
    assert len(index) == 3000
    hits = index.search(vectors[:4], 5)
    assert [int(h.keys[0]) for h in hits] == [0, 7, 14, 21]
    assert hits[0].cosines[0] == pytest.approx(1.0, abs=2e-3)
    assert list(hits[0].cosines) == sorted(hits[0].cosines, reverse=True)
    # re-adding a key replaces it
    index.add(keys[:1], [99], vectors[2999:3000])
    assert len(index) == 3000
    assert sorted(index.search(vectors[2999:3000], 2)[0].keys.tolist()) == [0, 2999 * 7]
    # one result per group
    best = index.search(vectors[5:6], 20, unique_groups=True)[0]
    assert len(set(best.groups.tolist())) == len(best) == 20
    assert index.remove(keys[:1500]) == 1500 and index.remove(keys[:10]) == 0
    assert len(index) == 1500
    found = index.search(vectors[:1], 10)[0].keys
    assert not set(found.tolist()) & set(keys[:1500].tolist())
    # freed room is reused
    index.add(keys[:100], np.zeros(100), vectors[:100])
    assert len(index) == 1600 and int(index.search(vectors[50:51], 1)[0].keys[0]) == 350
    assert index.search(np.zeros((1, dim + 1), np.float32), 3)[0].keys.size == 0


def test_knn_for_a_graph(memory_backend: tuple[Callable[[int], FaceIndex], int]) -> None:
    make_index, dim = memory_backend
    vectors = clustered_unit_vectors(500, dim, seed=3)
    index: FaceIndex = make_index(dim)
    index.add(np.arange(500), np.arange(500), vectors)
    keys, cosines = index.knn(vectors[:50], 6)
    assert keys.shape == cosines.shape == (50, 6)
    assert (keys[:, 0] == np.arange(50)).all()
    exact = np.sort(vectors[:50] @ vectors.T, axis=1)[:, ::-1][:, :6]
    # every cosine given is the face's true cosine, best first
    true = np.einsum("qd,qkd->qk", vectors[:50], vectors[keys])
    np.testing.assert_allclose(cosines, true, atol=3e-3)
    assert (np.diff(cosines, axis=1) <= 0).all()
    if isinstance(index, HnswIndex) and index.binary:
        # a binary graph's codes order faces of the same person well, but faces of other people (cosine
        # ~0.1, the nearest "neighbours" of someone with few photos) only roughly: the same person's
        # photos must all be found (docs/scale.md measures the recall of the rest)
        near = exact >= 0.5
        assert near.sum() > 100
        np.testing.assert_allclose(cosines[near], exact[near], atol=3e-3)
    else:
        np.testing.assert_allclose(cosines, exact, atol=3e-3)
    small = make_index(dim)
    small.add(np.arange(3), np.arange(3), vectors[:3])
    keys, cosines = small.knn(vectors[:1], 5)
    assert np.isinf(cosines[0, 3:]).all() and sorted(keys[0, :3].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_int8_screen_gives_the_plain_products_answers(dtype: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    n, dim = 60_000, 512
    # 6 000 people with 10 photos each (photo to photo ~0.64, like real 512-d embeddings)
    people = rng.integers(0, n // 10, n)
    centres = rng.normal(size=(n // 10, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[people] + 0.75 / np.sqrt(dim) * rng.normal(size=(n, dim)).astype(np.float32)
    photos = vectors[::600] + 0.75 / np.sqrt(dim) * rng.normal(size=(100, dim)).astype(np.float32)
    strangers = rng.normal(size=(100, dim)).astype(np.float32)  # nobody stored is near them
    queries = np.vstack([photos, strangers, vectors[:5]])
    screened, plain = ExactIndex(dim, dtype=dtype), ExactIndex(dim, dtype=dtype, screen_from=None)
    keys = np.arange(n) * 3
    for index in (screened, plain):
        index.add(keys, people, vectors)
    assert screened.describe()["int8_screen"] and not plain.describe()["int8_screen"]

    def same_answers(index: ExactIndex) -> None:
        for k, unique in ((5, False), (1, False), (10, True)):
            for got, want in zip(
                index.search(queries, k, unique_groups=unique),
                plain.search(queries, k, unique_groups=unique),
                strict=True,
            ):
                assert got.keys.tolist() == want.keys.tolist()
                assert got.groups.tolist() == want.groups.tolist()
                np.testing.assert_allclose(got.cosines, want.cosines, atol=1e-5)

    same_answers(screened)
    # the screen leaves few rows to score exactly: a fraction of a percent, strangers included
    assert screened._screen is not None
    left = screened._screen.candidates(memory.unit_rows(queries), n, 5, people, False)
    assert max(len(rows) for rows in left) < n // 100
    # a removal marks the row moved into the hole stale (scored exactly every time) ...
    gone = rng.choice(keys, 300, replace=False)
    for index in (screened, plain):
        assert index.remove(gone) == 300
    assert 0 < int(screened._screen.stale[: len(screened)].sum()) <= 300
    same_answers(screened)
    # ... until there are many, then they are coded again
    more = rng.choice(np.setdiff1d(keys, gone), 2_000, replace=False)
    for index in (screened, plain):
        index.remove(more)
    assert not screened._screen.stale[: len(screened)].any()
    same_answers(screened)
    # saved, the screen is mapped with the matrix (shared by the processes that open it)
    screened.save(tmp_path / "exact")
    opened, _ = ExactIndex.load(tmp_path / "exact")
    assert opened._screen is not None and isinstance(opened._screen.codes, np.memmap)
    same_answers(opened)
    opened.add(np.array([10**9]), np.array([-1]), queries[:1])
    assert opened.search(queries[:1], 1)[0].keys.tolist() == [10**9]
    # a snapshot written without a screen gets one when it is opened
    for name in ("screen-codes.npy", "screen-scales.npy", "screen-sums.npy"):
        (tmp_path / "exact" / name).unlink()
    meta = json.loads((tmp_path / "exact" / memory.META).read_text())
    del meta[memory.SCREEN_META]
    (tmp_path / "exact" / memory.META).write_text(json.dumps(meta))
    old, _ = ExactIndex.load(tmp_path / "exact")
    assert old.describe()["int8_screen"]
    same_answers(old)
    # a screen that does not fit its matrix (a partial copy) is not used: the rows are coded again
    old.save(tmp_path / "exact")
    np.save(tmp_path / "exact" / "screen-scales.npy", np.zeros(7, np.float32))
    refused, _ = ExactIndex.load(tmp_path / "exact")
    assert refused._screen is not None and refused._screen.scales.shape == (len(refused._matrix),)
    same_answers(refused)


@pytest.mark.parametrize(("dim", "graph_vectors"), [(64, "float16"), (512, "binary")])
def test_recall_against_exact_on_clustered_faces(dim: int, graph_vectors: GraphVectors) -> None:
    vectors = clustered_unit_vectors(20_000, dim, seed=5)
    # a query is another photo of someone stored
    noise = np.random.default_rng(6).normal(size=(200, dim)).astype(np.float32) * 0.32 / np.sqrt(dim)
    queries = vectors[::100] + noise
    exact, hnsw = ExactIndex(dim), HnswIndex(dim)
    assert hnsw.graph_vectors == graph_vectors  # the default for this width
    for index in (exact, hnsw):
        index.add(np.arange(len(vectors)), np.zeros(len(vectors)), vectors)
    truth = exact.search(queries, 5)
    found = hnsw.search(queries, 5)
    recall = np.mean(
        [len(set(t.keys.tolist()) & set(f.keys.tolist())) / 5 for t, f in zip(truth, found, strict=True)]
    )
    assert recall >= 0.98
    # the cosines are the exact ones (a binary graph re-ranks on float16 rows), best first
    for t, f in zip(truth, found, strict=True):
        if t.keys.tolist() == f.keys.tolist():
            np.testing.assert_allclose(f.cosines, t.cosines, atol=2e-3)


def test_a_binary_graph_walks_again_only_when_its_walk_found_nobody_near() -> None:
    """A binary graph's query whose walk found no face at ``walk_again_below`` or above (the walk lost
    its way, or the face is a stranger's) is walked again with a wider beam; a query near a stored
    person is answered by the first walk."""
    dim = 512
    vectors = clustered_unit_vectors(4000, dim, seed=11)
    rng = np.random.default_rng(12)
    known = vectors[::40] + rng.normal(size=(100, dim)).astype(np.float32) * 0.3 / np.sqrt(dim)
    strangers = rng.normal(size=(30, dim)).astype(np.float32)
    index, once = HnswIndex(dim), HnswIndex(dim, walk_again_below=None)
    assert index.describe()["walk_again_below"] == memory.WALK_AGAIN_BELOW
    for graph in (index, once):
        graph.add(np.arange(4000), np.arange(4000) // 8, vectors)
    found = index.search(known, 5)
    assert index.second_walks == 0
    assert [int(h.keys[0]) for h in found] == list(range(0, 4000, 40))
    answers = index.search(strangers, 5)
    assert index.second_walks == 30
    unit = strangers / np.linalg.norm(strangers, axis=1, keepdims=True)
    for query, hits in zip(unit, answers, strict=True):
        # every stranger still gets five faces, with their true cosines, best first, all below the bar
        assert len(hits) == 5 and (np.diff(hits.cosines) <= 0).all()
        np.testing.assert_allclose(hits.cosines, vectors[hits.keys] @ query, atol=3e-3)
        assert hits.cosines[0] < memory.WALK_AGAIN_BELOW
    once.search(strangers, 5)
    assert once.second_walks == 0
    # a float16 graph is never walked again, whatever its answers (a bar no cosine reaches)
    narrow = HnswIndex(DIM, walk_again_below=1.5)
    narrow.add(np.arange(500), np.arange(500), clustered_unit_vectors(500, DIM))
    narrow.search(rng.normal(size=(10, DIM)).astype(np.float32), 5)
    assert narrow.second_walks == 0 and narrow.describe()["walk_again_below"] is None


def test_saved_index_reopens_without_rebuilding(
    memory_backend: tuple[Callable[[int], FaceIndex], int], tmp_path: Path
) -> None:
    make_index, dim = memory_backend
    vectors = clustered_unit_vectors(1000, dim, seed=9)
    index = make_index(dim)
    index.add(np.arange(1000), np.arange(1000) % 7, vectors)
    index.remove(np.arange(10))
    index.save(tmp_path / "ix", {"version": 12})
    loaded, meta = type(index).load(tmp_path / "ix")
    assert meta["version"] == 12 and len(loaded) == 990
    for a, b in zip(index.search(vectors[5:20], 3), loaded.search(vectors[5:20], 3), strict=True):
        assert a.keys.tolist() == b.keys.tolist() and a.groups.tolist() == b.groups.tolist()
    loaded.add(np.array([5000]), [1], vectors[:1])  # a reopened index keeps growing
    assert int(loaded.search(vectors[:1], 1)[0].keys[0]) == 5000
    if isinstance(loaded, ExactIndex):
        assert isinstance(loaded._matrix, np.memmap)


@pytest.mark.parametrize("dim", [DIM, 512], ids=["float16", "binary"])
def test_a_mapped_graph_takes_changes_beside_it_and_folds_them_on_save(tmp_path: Path, dim: int) -> None:
    vectors = clustered_unit_vectors(4000, dim, seed=11)
    owned = HnswIndex(dim)
    owned.add(np.arange(4000), np.arange(4000) // 8, vectors)
    owned.save(tmp_path / "ix")
    mapped, _ = HnswIndex.load(tmp_path / "ix")
    assert mapped.mapped and len(mapped) == 4000 and mapped.graph_vectors == owned.graph_vectors
    # the mapped graph is read-only: an added face is kept beside it, removed ones are masked
    mapped.add(np.array([9000]), [999], vectors[:1])
    assert mapped.remove(np.arange(1, 2000)) == 1999
    assert len(mapped) == 2002 and mapped.describe()["recent_faces"] == 1
    hits = mapped.search(vectors[:3], 5)
    assert {0, 9000} <= set(hits[0].keys.tolist())
    assert all(set(h.keys.tolist()).isdisjoint(range(1, 2000)) for h in hits)
    best = mapped.search(vectors[2500:2501], 10, unique_groups=True)[0]
    assert len(set(best.groups.tolist())) == 10 and int(best.keys[0]) == 2500
    assert mapped.remove(np.array([9000])) == 1 and 9000 not in mapped.search(vectors[:1], 5)[0].keys
    mapped.add(np.array([9001]), [999], vectors[:1])
    # the same answers after the fold; of a binary graph, the same person's photos (its codes order the
    # faces of other people, at cosine ~0.1, only roughly: see test_knn_for_a_graph)
    floor = 0.5 if mapped.binary else -1.0

    def answers(index: HnswIndex) -> list[list[int]]:
        return [h.keys[h.cosines >= floor].tolist() for h in index.search(vectors[2000:2100], 3)]

    before = answers(mapped)
    assert sum(map(len, before)) > 150
    mapped.save(tmp_path / "ix")  # folds the changes into a graph of its own, then saves it
    assert not mapped.mapped and mapped.recent_faces == 0 and len(mapped) == 2002
    again, _ = HnswIndex.load(tmp_path / "ix")
    assert again.mapped and len(again) == 2002
    assert answers(again) == before
    assert 9001 in again.search(vectors[:1], 2)[0].keys and 5 not in again.search(vectors[5:6], 3)[0].keys
    # a damaged graph file is refused before usearch reads it (it could crash the process)
    graph = tmp_path / "ix" / "graph.usearch"
    intact = graph.read_bytes()
    graph.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(ValueError, match="checksum"):
        HnswIndex.load(tmp_path / "ix")
    graph.write_bytes(intact[:4000] + bytes(4000) + intact[8000:])
    with pytest.raises(ValueError, match="checksum"):
        HnswIndex.load(tmp_path / "ix")
    graph.write_bytes(intact)
    if again.binary:  # the rows beside a binary graph, and its hyperplanes, are checked too
        rows_file, projection_file = tmp_path / "ix" / "rows.npy", tmp_path / "ix" / "projection.npy"
        rows, projection = np.load(rows_file), np.load(projection_file)
        np.save(rows_file, rows[:-1])
        with pytest.raises(ValueError, match="rows"):
            HnswIndex.load(tmp_path / "ix")
        np.save(rows_file, rows)
        projection_file.unlink()
        with pytest.raises(OSError):
            HnswIndex.load(tmp_path / "ix")
        np.save(projection_file, projection[:-1])
        with pytest.raises(ValueError, match="projection"):
            HnswIndex.load(tmp_path / "ix")
        np.save(projection_file, projection)
        assert [h.keys.tolist() for h in HnswIndex.load(tmp_path / "ix")[0].search(vectors[:5], 3)] == [
            h.keys.tolist() for h in again.search(vectors[:5], 3)
        ]
    # a snapshot of the hnswlib era (no format) is refused, so that its owner rebuilds it
    meta = json.loads((tmp_path / "ix" / "meta.json").read_text())
    del meta["format"]
    (tmp_path / "ix" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format"):
        HnswIndex.load(tmp_path / "ix")


def test_the_engine_loads_after_a_graph_was_made() -> None:
    """ONNX Runtime crashed on import when usearch had been loaded first (e.g. ``faceatlas search`` on a
    large library opening its graph before the engine): the index loads ORT before usearch."""
    code = (
        "import numpy as np\n"
        "from faceatlas.index import HnswIndex\n"
        "index = HnswIndex(8)\n"
        "index.add(np.arange(20), np.zeros(20), np.eye(20, 8, dtype=np.float32) + 0.1)\n"
        "from faceatlas.engine import Engine\n"
        "print(len(Engine('sface').analyze(np.full((64, 64, 3), 128, np.uint8))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "0", (done.returncode, done.stderr[-2000:])


@pytest.mark.parametrize("dim", [64, 512], ids=["float16", "binary"])
def test_processes_share_the_pages_of_a_mapped_graph(tmp_path: Path, dim: int) -> None:
    vectors = clustered_unit_vectors(20_000, dim, seed=12)
    index = HnswIndex(dim)
    index.add(np.arange(len(vectors)), np.zeros(len(vectors)), vectors)
    index.save(tmp_path / "ix")
    np.save(tmp_path / "queries.npy", vectors[::10])
    reader = (
        "import sys, numpy as np\n"
        "from faceatlas.index import HnswIndex\n"
        f"index, _ = HnswIndex.load({str(tmp_path / 'ix')!r})\n"
        f"queries = np.load({str(tmp_path / 'queries.npy')!r})\n"
        "hits = index.search(queries, 3)\n"
        "assert index.mapped and all(int(h.keys[0]) == 10 * i for i, h in enumerate(hits))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", reader],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for process in readers:
            assert process.stdout is not None and process.stderr is not None
            if process.stdout.readline().strip() != "ready":
                raise AssertionError(f"reader exited {process.wait()}: {process.stderr.read()[-2000:]}")
        # a binary graph's float16 rows (the re-rank reads them) are a shared mapping too
        files = ["graph.usearch", "rows.npy"] if index.binary else ["graph.usearch"]
        for process in readers:
            for file in files:
                size_kb = (tmp_path / "ix" / file).stat().st_size / 1024
                fields: dict[str, int] = {}
                mapping = None
                for line in Path(f"/proc/{process.pid}/smaps").read_text().splitlines():
                    if line[0] in "0123456789abcdef" and " " in line:
                        mapping = line.split()[-1]
                    elif mapping and mapping.endswith(file) and line.endswith(" kB"):
                        name, value, _ = line.split()
                        fields[name.rstrip(":")] = fields.get(name.rstrip(":"), 0) + int(value)
                # each file is a mapping in each reader whose pages both readers map (dirty while the
                # page cache has not written them back yet), and none of them is a private copy
                shared = fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0)
                assert shared >= 0.5 * size_kb and fields["Anonymous"] == 0, (file, fields)
                assert fields["Pss"] <= 0.6 * fields["Rss"], (file, fields)
    finally:
        for process in readers:
            process.communicate("\n", timeout=30)


@pytest.mark.parametrize("dim", [64, 512], ids=["float16", "binary"])
def test_every_face_is_found_by_its_own_vector_after_a_concurrent_build(
    monkeypatch: pytest.MonkeyPatch, dim: int
) -> None:
    # usearch's concurrent insert can store a face with no link to it (usearch issue #735), which no
    # beam then finds; many threads on a small graph make it happen in every build (3 000 x 64, 16
    # threads: 10-44 such faces in each of 10 plain usearch builds), so the index must find and relink them
    monkeypatch.setattr(memory, "SERIAL_INSERTS", 0)
    vectors = clustered_unit_vectors(3500, dim, seed=1)
    index = HnswIndex(dim, insert_threads=16)
    index.add(np.arange(3000), np.zeros(3000), vectors[:3000])
    index.add(np.arange(3000, 3500), np.zeros(500), vectors[3000:])  # an update, not a bulk load
    hits = index.search(vectors, 1)
    assert [int(h.keys[0]) for h in hits] == list(range(3500))


# --------------------------------------------------------------------------- the server's collections
@pytest.fixture(scope="module")
def postgres_urls() -> Iterator[dict[str, str | None]]:
    urls = {
        "postgresql": fresh_postgres_url("index"),
        "pgvector": fresh_postgres_url("index", "FACEATLAS_TEST_PGVECTOR"),
    }
    yield urls
    for key, env in (("postgresql", "FACEATLAS_TEST_POSTGRES"), ("pgvector", "FACEATLAS_TEST_PGVECTOR")):
        if urls[key]:
            drop_postgres_database(urls[key], env)  # type: ignore[arg-type]


BACKENDS = [
    ("exact", "sqlite"),
    ("exact-float16", "sqlite"),
    ("hnsw", "sqlite"),
    ("exact", "postgresql"),
    ("hnsw", "postgresql"),
    ("pgvector", "pgvector"),
]


@pytest.fixture(params=BACKENDS, ids=[f"{b}-{d}" for b, d in BACKENDS])
def backend(request: pytest.FixtureRequest, tmp_path: Path, postgres_urls: dict) -> Iterator[tuple[str, str]]:
    kind, database = request.param
    if database == "sqlite":
        url = sqlite_url(tmp_path / "faceatlas.db")
    else:
        url = postgres_urls[database]
        if url is None:
            env = "FACEATLAS_TEST_POSTGRES" if database == "postgresql" else "FACEATLAS_TEST_PGVECTOR"
            pytest.skip(f"{env} is not set (CI sets it)")
    yield kind, url
    if database != "sqlite":
        db = Database(url)
        store = ServiceStore(db)
        for record in store.list_services():  # the module shares one database per server
            store.delete_service(record.id)
        db.dispose()


def options_for(kind: str, snapshot_dir: Path | None = None, snapshot_min: int = 0) -> IndexOptions:
    if kind == "exact-float16":
        return IndexOptions(
            "exact", exact_dtype="float16", snapshot_dir=snapshot_dir, snapshot_min_faces=snapshot_min
        )
    return IndexOptions(kind, snapshot_dir=snapshot_dir, snapshot_min_faces=snapshot_min)


def only_snapshot(root: Path) -> Path:
    """The one snapshot folder under ``root`` (beside it: its lock file)."""
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return folder


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_collection_follows_writes_of_another_process(backend: tuple[str, str]) -> None:
    kind, url = backend
    mine_db, their_db = Database.open(url), Database(url)
    store, other = ServiceStore(mine_db), ServiceStore(their_db)
    try:
        sid = store.create_service("people", "recognition", "sface").id
        mine = ServiceCollections(store, "sface", DIM, 0.0, options_for(kind)).get(sid)
        theirs = ServiceCollections(other, "sface", DIM, 0.0, options_for(kind)).get(sid)
        assert len(mine) == len(theirs) == 0
        ids = [store.add_face(sid, f"p{i % 3}", unit(i), "sface")[0] for i in range(6)]
        store.add_face(sid, "p0", np.ones(DIM + 4, np.float32), "arcface")  # another pack: never searched
        theirs.sync()
        assert len(theirs) == 6
        best = theirs.search(unit(4)[None], 1)[0][0]
        assert (best.image_id, best.subject) == (ids[4], "p1")
        assert best.cosine == pytest.approx(1.0, abs=2e-3)

        store.delete_face(sid, ids[4])
        store.rename_subject(sid, "p2", "p0")
        theirs.sync()
        assert len(theirs) == 5
        assert theirs.search(unit(4)[None], 1)[0][0].image_id != ids[4]
        assert {m.subject for m in theirs.search(unit(0)[None], 0)[0]} == {"p0", "p1"}
        store.set_embedding(sid, ids[0], unit(50), "sface")  # re-embedded: replaced, not duplicated
        theirs.sync()
        assert len(theirs) == 5
        best = theirs.search(unit(50)[None], 1)[0][0]
        assert best.image_id == ids[0] and best.cosine == pytest.approx(1.0, abs=2e-3)
        per_subject = theirs.search(unit(1)[None], 0, unique_subjects=True)[0]
        assert sorted(m.subject for m in per_subject) == ["p0", "p1"]
        mine.sync(force=True)
        assert len(mine) == 5
    finally:
        mine_db.dispose()
        their_db.dispose()


def test_concurrent_writers_lose_nothing(backend: tuple[str, str]) -> None:
    kind, url = backend
    db = Database.open(url)
    store = ServiceStore(db)
    try:
        sid = store.create_service("busy", "recognition", "sface").id
        collections = ServiceCollections(store, "sface", DIM, 0.0, options_for(kind))
        collection = collections.get(sid)
        written: list[str] = []
        errors: list[BaseException] = []

        def writer(offset: int) -> None:
            try:
                writer_store = ServiceStore(Database(url))
                for i in range(15):
                    face_id, _ = writer_store.add_face(
                        sid, f"w{offset}", unit(1000 + offset * 100 + i), "sface"
                    )
                    written.append(face_id)
                    collections.after_write(sid)
                    collection.search(unit(i)[None], 3)
                writer_store.db.dispose()
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        collection.sync(force=True)
        assert len(collection) == 60 == store.count_faces(service_id=sid)
        for offset in range(4):
            best = collection.search(unit(1000 + offset * 100 + 7)[None], 1)[0][0]
            assert best.subject == f"w{offset}" and best.cosine == pytest.approx(1.0, abs=2e-3)
        assert {m.image_id for m in collection.search(unit(0)[None], 0)[0]} == set(written)
    finally:
        db.dispose()


SECOND_PROCESS = """
import sys, numpy as np
from faceatlas.index.memory import GraphVectors
from faceatlas.index.service import IndexOptions, ServiceCollections
from faceatlas.storage.db import Database
from faceatlas.storage.services import ServiceStore
url, kind, dtype, sid, dim = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
store = ServiceStore(Database(url))
collection = ServiceCollections(store, "sface", dim, 0.0, IndexOptions(kind, exact_dtype=dtype)).get(sid)
query = np.frombuffer(bytes.fromhex(sys.stdin.read().strip()), np.float32)[None]
best = collection.search(query, 1)[0][0]
print(len(collection), best.image_id, best.subject)
"""


def test_a_second_process_sees_the_writes(backend: tuple[str, str]) -> None:
    kind, url = backend
    db = Database.open(url)
    store = ServiceStore(db)
    try:
        sid = store.create_service("shared", "recognition", "sface").id
        ids = [store.add_face(sid, f"s{i}", unit(200 + i), "sface")[0] for i in range(5)]
        backend_name, dtype = ("exact", "float16") if kind == "exact-float16" else (kind, "float32")
        out = subprocess.run(
            [sys.executable, "-c", SECOND_PROCESS, url, backend_name, dtype, str(sid), str(DIM)],
            input=unit(203).tobytes().hex(),
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            timeout=120,
            check=True,
        ).stdout.split()
        assert out == ["5", ids[3], "s3"]
    finally:
        db.dispose()


MEMORY_ONLY = [
    b for b in BACKENDS if b[0] != "pgvector"
]  # pgvector keeps no snapshot: the rows are the index


@pytest.mark.parametrize("backend", MEMORY_ONLY, ids=[f"{b}-{d}" for b, d in MEMORY_ONLY], indirect=True)
def test_restart_opens_the_snapshot_and_replays_the_log(backend: tuple[str, str], tmp_path: Path) -> None:
    kind, url = backend
    snapshots = tmp_path / "snapshots"
    db = Database.open(url)
    store = ServiceStore(db)
    try:
        sid = store.create_service("big", "recognition", "sface").id
        vectors = clustered_unit_vectors(400, DIM, seed=11)
        ids = store.add_faces_bulk(sid, [f"s{i % 50}" for i in range(400)], vectors, "sface")
        first = ServiceCollections(store, "sface", DIM, 0.0, options_for(kind, snapshots, 100))
        assert len(first.get(sid)) == 400
        snapshot = only_snapshot(snapshots)
        assert (snapshot / "meta.json").is_file()
        # written after the snapshot: the next start must replay them
        new_id, _ = store.add_face(sid, "late", unit(777), "sface")
        store.delete_face(sid, ids[0])
        restarted = ServiceCollections(store, "sface", DIM, 0.0, options_for(kind, snapshots, 100)).get(sid)
        assert len(restarted) == 400
        assert restarted.search(unit(777)[None], 1)[0][0].image_id == new_id
        assert ids[0] not in {m.image_id for m in restarted.search(vectors[0][None], 5)[0]}
        assert restarted.search(vectors[10][None], 1)[0][0].image_id == ids[10]
        # every worker that opens the snapshot shares its pages
        assert restarted.index.describe()["memory_mapped"] is True
    finally:
        db.dispose()


def test_a_damaged_graph_snapshot_is_rebuilt_from_the_database(tmp_path: Path) -> None:
    db = Database.open(sqlite_url(tmp_path / "damaged.db"))
    store = ServiceStore(db)
    options = options_for("hnsw", tmp_path / "snap", 100)
    try:
        sid = store.create_service("big", "recognition", "sface").id
        vectors = clustered_unit_vectors(400, DIM, seed=4)
        ids = store.add_faces_bulk(sid, [f"s{i % 50}" for i in range(400)], vectors, "sface")
        ServiceCollections(store, "sface", DIM, 0.0, options).get(sid)  # writes the snapshot
        graph = only_snapshot(tmp_path / "snap") / "graph.usearch"
        graph.write_bytes(graph.read_bytes()[:-1000])  # e.g. a disk that filled up
        collection = ServiceCollections(store, "sface", DIM, 0.0, options).get(sid)
        assert len(collection) == 400 and collection.search(vectors[3][None], 1)[0][0].image_id == ids[3]
        rebuilt = HnswIndex.load(graph.parent, key_dtype="S36")[0]  # saved anew, readable
        assert rebuilt.search(vectors[3][None], 1)[0].keys[0].decode() == ids[3]
    finally:
        db.dispose()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_an_unwritable_snapshot_folder_does_not_stop_the_service(kind: str, tmp_path: Path) -> None:
    db = Database.open(sqlite_url(tmp_path / "ro.db"))
    store = ServiceStore(db)
    (tmp_path / "not-a-folder").write_text("a file where the snapshots would go")
    options = options_for(kind, tmp_path / "not-a-folder" / "snap", 100)
    try:
        sid = store.create_service("big", "recognition", "sface").id
        vectors = clustered_unit_vectors(400, DIM, seed=6)
        ids = store.add_faces_bulk(sid, [f"s{i % 50}" for i in range(400)], vectors, "sface")
        collections = ServiceCollections(store, "sface", DIM, 0.0, options)
        collection = collections.get(sid)  # the snapshot cannot be written: logged, served from memory
        assert collection.search(vectors[9][None], 1)[0][0].image_id == ids[9]
        late, _ = store.add_face(sid, "late", unit(31), "sface")
        collections.after_write(sid)
        collections.persist()  # at shutdown: the same
        assert len(collection) == 401 and collection.search(unit(31)[None], 1)[0][0].image_id == late
    finally:
        db.dispose()


def test_faces_added_beside_a_mapped_graph_are_folded_into_a_new_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faceatlas.index.service as service_module

    monkeypatch.setattr(service_module, "RECENT_FOLD", 3)
    db = Database.open(sqlite_url(tmp_path / "fold.db"))
    store = ServiceStore(db)
    options = options_for("hnsw", tmp_path / "snap", 100)
    try:
        sid = store.create_service("big", "recognition", "sface").id
        vectors = clustered_unit_vectors(400, DIM)
        store.add_faces_bulk(sid, [f"s{i % 50}" for i in range(400)], vectors, "sface")
        collections = ServiceCollections(store, "sface", DIM, 0.0, options)
        ServiceCollections(store, "sface", DIM, 0.0, options).get(sid)  # writes the snapshot
        collection = collections.get(sid)
        assert isinstance(collection.index, HnswIndex) and collection.index.mapped
        added = [store.add_face(sid, "late", unit(900 + i), "sface")[0] for i in range(2)]
        collections.after_write(sid)
        assert collection.index.recent_faces == 2  # beside the read-only graph
        added.append(store.add_face(sid, "late", unit(902), "sface")[0])
        collections.after_write(sid)
        assert isinstance(collection.index, HnswIndex)
        assert collection.index.mapped and collection.index.recent_faces == 0 and len(collection) == 403
        assert [collection.search(unit(900 + i)[None], 1)[0][0].image_id for i in range(3)] == added
        meta = json.loads((only_snapshot(tmp_path / "snap") / "meta.json").read_text())
        assert meta["size"] == 403 and meta["version"] == collection.version
        # removed faces are masked out of the mapped graph, and folded in the same way
        for image_id in added:
            store.delete_face(sid, image_id)
        collections.after_write(sid)
        assert collection.index.mapped and collection.index.pending_changes == 0 and len(collection) == 400
        assert not {collection.search(unit(900 + i)[None], 1)[0][0].image_id for i in range(3)} & set(added)
        meta = json.loads((only_snapshot(tmp_path / "snap") / "meta.json").read_text())
        assert meta["size"] == 400
    finally:
        db.dispose()


@contextlib.contextmanager
def growing_service(
    tmp_path: Path, seed: int
) -> Iterator[tuple[ServiceStore, int, np.ndarray, list[str], IndexOptions]]:
    """A service of 3 000 faces whose ``auto`` index switches to HNSW (from 1 000), with snapshots."""
    db = Database.open(sqlite_url(tmp_path / "auto.db"))
    store = ServiceStore(db)
    try:
        sid = store.create_service("grows", "recognition", "sface").id
        vectors = clustered_unit_vectors(3000, DIM, seed=seed)
        ids = store.add_faces_bulk(sid, [f"s{i % 300}" for i in range(3000)], vectors, "sface")
        options = IndexOptions("auto", hnsw_from=1000, snapshot_dir=tmp_path / "snap", snapshot_min_faces=0)
        yield store, sid, vectors, ids, options
    finally:
        db.dispose()


def test_auto_serves_exact_at_once_then_swaps_in_hnsw(tmp_path: Path) -> None:
    with growing_service(tmp_path, seed=13) as (store, sid, vectors, ids, options):
        collections = ServiceCollections(store, "sface", DIM, 0.0, options)
        collection = collections.get(sid)
        assert collection.index.kind == "exact"  # searchable before the graph exists
        late, _ = store.add_face(sid, "late", unit(4242), "sface")  # written while the graph builds
        store.delete_face(sid, ids[7])
        collections.after_write(sid)
        collection.wait_for_build(120)
        assert collection.index.kind == "hnsw" and len(collection) == 3000
        assert collection.search(unit(4242)[None], 1)[0][0].image_id == late
        assert ids[7] not in {m.image_id for m in collection.search(vectors[7][None], 10)[0]}
        snapshots = [p.name for p in (tmp_path / "snap").iterdir() if not p.name.endswith(".lock")]
        assert snapshots == [f"service-{sid}-sface-hnsw"]
        assert isinstance(collection.index, HnswIndex) and collection.index.mapped  # the saved graph
        reopened = ServiceCollections(store, "sface", DIM, 0.0, options).get(sid)
        assert reopened.index.kind == "hnsw" and len(reopened) == 3000


def test_workers_that_build_the_same_graph_end_up_sharing_one(tmp_path: Path) -> None:
    """Two workers' first start: both build the graph in the background; the one that finishes second
    opens the other's saved graph instead of saving its own, so both map one file."""
    with growing_service(tmp_path, seed=17) as (store, sid, vectors, ids, options):
        workers = [ServiceCollections(store, "sface", DIM, 0.0, options).get(sid) for _ in range(2)]
        for collection in workers:
            collection.wait_for_build(120)
        assert all(isinstance(c.index, HnswIndex) and c.index.mapped for c in workers)
        mapped = {
            line.split()[4]: line.split(maxsplit=5)[-1]
            for line in Path("/proc/self/maps").read_text().splitlines()
            if "graph.usearch" in line and str(tmp_path) in line
        }
        assert len(mapped) == 1 and "(deleted)" not in next(iter(mapped.values())), mapped
        late, _ = store.add_face(sid, "late", unit(5150), "sface")  # written after: both catch up
        for collection in workers:
            assert collection.search(unit(5150)[None], 1)[0][0].image_id == late
            assert collection.search(vectors[8][None], 1)[0][0].image_id == ids[8]


# --------------------------------------------------------------------------- settings and errors
def test_unknown_backend_and_missing_extension(tmp_path: Path) -> None:
    with pytest.raises(IndexSettingError, match="exact, hnsw, pgvector, auto"):
        IndexOptions("faiss")
    db = Database.open(sqlite_url(tmp_path / "x.db"))
    store = ServiceStore(db)
    sid = store.create_service("p", "recognition", "sface").id
    with pytest.raises(IndexUnavailableError, match="vector' extension"):
        ServiceCollections(store, "sface", DIM, 0.0, IndexOptions("pgvector")).get(sid)
    with pytest.raises(IndexSettingError, match="'float16'"):
        PgvectorIndex(db=db, table="service_face", pack="sface", dim=DIM, graph_vectors="float16")  # type: ignore[arg-type]
    db.dispose()
    url = fresh_postgres_url("novector")
    if url is None:
        return
    try:
        pg = Database.open(url)  # Debian's PostgreSQL 15 here has no pgvector: migrations still run
        assert "embedding_vector" not in {c["name"] for c in inspect(pg.engine).get_columns("service_face")}
        with pytest.raises(IndexUnavailableError, match="CREATE EXTENSION vector"):
            ServiceCollections(ServiceStore(pg), "sface", DIM, 0.0, IndexOptions("pgvector")).get(1)
        pg.dispose()
    finally:
        drop_postgres_database(url)


def test_pgvector_migration_adds_the_column() -> None:
    url = fresh_postgres_url("migration", "FACEATLAS_TEST_PGVECTOR")
    if url is None:
        pytest.skip("FACEATLAS_TEST_PGVECTOR is not set (CI sets it)")
    try:
        db = Database.open(url)
        with db.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT table_name FROM information_schema.columns WHERE column_name = 'embedding_vector'"
                )
            ).all()
        assert {r[0] for r in rows} == {"service_face", "library_faces"}
        db.dispose()
    finally:
        drop_postgres_database(url, "FACEATLAS_TEST_PGVECTOR")


def test_pgvector_binary_graph_finds_the_exact_neighbours() -> None:
    """A ``binary`` pgvector index walks sign codes and re-ranks by the exact inner product."""
    from sqlalchemy import event

    url = fresh_postgres_url("binary", "FACEATLAS_TEST_PGVECTOR")
    if url is None:
        pytest.skip("FACEATLAS_TEST_PGVECTOR is not set (CI sets it)")
    dim, n = 512, 6000
    vectors = clustered_unit_vectors(n, dim, seed=5)
    noise = np.random.default_rng(6).normal(size=(150, dim)).astype(np.float32) * 0.32 / np.sqrt(dim)
    queries = vectors[::40] + noise
    try:
        db = Database.open(url)
        store = ServiceStore(db)
        sid = store.create_service("wide", "recognition", "arcface").id
        ids = store.add_faces_bulk(sid, [f"p{i // 8}" for i in range(n)], vectors, "arcface")
        index = PgvectorIndex(
            db,
            "service_face",
            "arcface",
            dim,
            {"service_id": sid},
            key_dtype=np.dtype("S36"),
            graph_vectors="binary",
        )
        assert index.sync() == n
        assert index.describe()["index"] == "ix_service_face_hnswbq_arcface_512"
        with db.engine.begin() as conn:  # (as autovacuum would; without statistics the planner guesses)
            conn.execute(text("ANALYZE service_face"))
        exact = ExactIndex(dim)
        exact.add(np.arange(n), np.zeros(n), vectors)
        statements: list[tuple[str, dict]] = []

        def keep(conn: object, cursor: object, statement: str, parameters: object, *args: object) -> None:
            if statement.startswith("SELECT * FROM (SELECT"):
                statements.append((statement, parameters))  # type: ignore[arg-type]

        event.listen(db.engine, "before_cursor_execute", keep)
        found = index.search(queries, 5)
        event.remove(db.engine, "before_cursor_execute", keep)
        position = {face_id.encode(): i for i, face_id in enumerate(ids)}
        truth = exact.search(queries, 5)
        recall = np.mean(
            [
                len(set(t.keys.tolist()) & {position[k] for k in f.keys.tolist()}) / 5
                for t, f in zip(truth, found, strict=True)
            ]
        )
        assert recall >= 0.98
        for t, f in zip(truth, found, strict=True):  # exact cosines, best first
            if t.keys.tolist() == [position[k] for k in f.keys.tolist()]:
                np.testing.assert_allclose(f.cosines, t.cosines, atol=2e-3)
        # the codes' graph is walked (not a sort of every row, which would be exact whatever the codes)
        assert len(statements) == len(queries)
        with db.engine.begin() as conn:
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("EXPLAIN " + statements[0][0], statements[0][1])
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "ix_service_face_hnswbq_arcface_512" in plan
        # one face a subject, and a removed face is not found
        per_subject = index.search(queries[:1], 5, unique_groups=True)[0]
        assert len(set(per_subject.groups.tolist())) == len(per_subject) == 5
        first = found[0].keys[:1]
        assert index.remove(first) == 1
        assert first[0] not in index.search(queries[:1], 5)[0].keys.tolist()
        db.dispose()
    finally:
        drop_postgres_database(url, "FACEATLAS_TEST_PGVECTOR")


# --------------------------------------------------------------------------- the library's search
def _add_photo(db: Database, path: str, vectors: np.ndarray) -> list[int]:
    from sqlalchemy import insert

    from faceatlas.library.tables import Face, Photo

    with db.session() as s:
        photo_id = s.execute(
            insert(Photo).values(path=path, size=1, mtime=0.0).returning(Photo.id)
        ).scalar_one()
        ids = []
        for v in vectors:
            row = Face(
                photo_id=photo_id,
                x_min=0,
                y_min=0,
                x_max=50,
                y_max=50,
                score=0.9,
                embedding=np.asarray(v, np.float32).tobytes(),
                pack="sface",
            )
            s.add(row)
            s.flush()
            ids.append(row.id)
    return ids


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_library_search_reopens_its_snapshot_and_follows_changes(kind: str, tmp_path: Path) -> None:
    from sqlalchemy import delete

    from faceatlas.library.search import LibraryIndex, search_by_embedding
    from faceatlas.library.store import open_library
    from faceatlas.library.tables import Face

    db = open_library(tmp_path / "lib")
    vectors = clustered_unit_vectors(600, DIM, seed=21)
    face_ids = [fid for p in range(200) for fid in _add_photo(db, f"/p/{p}.jpg", vectors[3 * p : 3 * p + 3])]
    first = LibraryIndex(db, "sface", backend=kind)
    hits = search_by_embedding(db, vectors[31], pack="sface", threshold=0.5, top=5)
    assert hits[0].face_id == face_ids[31] and hits[0].path == "/p/10.jpg" and hits[0].match
    assert len({h.photo_id for h in hits}) == len(hits) == 5  # one hit per photo
    first.sync()
    assert len(first.index) == 600

    # another process: opens the saved index, reads no embedding
    reopened = LibraryIndex(db, "sface", backend=kind)
    reopened._load_rows = None  # type: ignore[assignment,method-assign]  # would fail if called
    ids, cosines = reopened.search(vectors[100], 1)
    assert ids.tolist() == [face_ids[100]] and cosines[0] == pytest.approx(1.0, abs=2e-3)

    # new photos are appended; a re-indexed photo (faces replaced) forces a reload
    extra = clustered_unit_vectors(3, DIM, seed=22)
    new_ids = _add_photo(db, "/p/new.jpg", extra)
    later = LibraryIndex(db, "sface", backend=kind)
    assert later.search(extra[1], 1)[0].tolist() == [new_ids[1]]
    with db.session() as s:
        s.execute(delete(Face).where(Face.id.in_(face_ids[:3])))
    ids, _ = later.search(vectors[0], 3)
    assert not set(ids.tolist()) & set(face_ids[:3]) and len(later.index) == 600
    db.dispose()
