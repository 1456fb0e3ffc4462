"""The server's repository and in-memory collections on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from sqlalchemy import inspect, text

from faceatlas.api.collections import Collection, Collections
from faceatlas.errors import (
    ServiceExistsError,
    ServiceNotFoundError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from faceatlas.storage.db import Database, sqlite_url
from faceatlas.storage.services import ServiceStore
from tests.api_helpers import drop_postgres_database, fresh_postgres_url

DIM = 8


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str | None]:
    url = fresh_postgres_url("storage")
    yield url
    if url:
        drop_postgres_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "faceatlas.db")
    if postgres_url is None:
        pytest.skip("FACEATLAS_TEST_POSTGRES is not set (CI sets it)")
    return postgres_url


@pytest.fixture
def store(db_url: str) -> Iterator[ServiceStore]:
    db = Database.open(db_url)
    store = ServiceStore(db)
    yield store
    for record in store.list_services():  # the PostgreSQL database is shared by the module's tests
        store.delete_service(record.id)
    db.dispose()


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_schema_is_created_by_the_service_branch(store: ServiceStore) -> None:
    tables = set(inspect(store.db.engine).get_table_names())
    assert {"face_service", "service_subject", "service_face", "service_image", "service_version"} <= tables
    assert "service_change" in tables


def test_services_keys_and_cascading_delete(store: ServiceStore) -> None:
    rec = store.create_service("people", "recognition", "sface")
    det = store.create_service("cams", "detection", "sface")
    assert len(rec.api_key) == 36 and rec.api_key != det.api_key
    with pytest.raises(ServiceExistsError):
        store.create_service("people", "detection", "sface")
    with pytest.raises(ValueError):
        store.create_service("x", "bogus", "sface")
    assert store.service_by_key(det.api_key).type == "detection"
    rotated = store.rotate_key("people")
    assert rotated.api_key != rec.api_key
    assert store.service_by_key(rec.api_key) is None
    assert store.service_by_key(rotated.api_key).name == "people"
    store.add_face(rec.id, "ann", unit(1), "sface", b"jpeg-bytes")
    deleted = store.delete_service(str(rec.id))
    assert deleted.name == "people"
    assert [s.name for s in store.list_services()] == ["cams"]
    assert store.count_faces() == 0
    with pytest.raises(ServiceNotFoundError):
        store.get_service("people")


def test_subjects_are_case_insensitive_and_renames_merge(store: ServiceStore) -> None:
    sid = store.create_service("people", "recognition", "sface").id
    a1, _ = store.add_face(sid, "Ann", unit(1), "sface", b"img-a1")
    a2, _ = store.add_face(sid, "ann", unit(2), "sface", None)
    b1, _ = store.add_face(sid, "Bob", unit(3), "sface", b"img-b1")
    assert store.list_subjects(sid) == ["Ann", "Bob"]
    assert store.get_face(sid, a2).subject == "Ann"
    assert store.get_image(sid, a1) == b"img-a1"
    assert store.get_image(sid, a2) is None
    np.testing.assert_allclose(store.get_face(sid, b1).embedding, unit(3))
    with pytest.raises(SubjectExistsError):
        store.add_subject(sid, "BOB")
    store.add_subject(sid, "Carol")

    faces, total = store.list_faces(sid, 0, 2)
    assert total == 3 and len(faces) == 2
    faces, total = store.list_faces(sid, 0, 20, "ANN")
    assert total == 2 and {f.image_id for f in faces} == {a1, a2}

    assert store.rename_subject(sid, "Bob", "bob") is True  # a case-only change is a rename
    assert store.rename_subject(sid, "Bob", "Bob") is False
    assert store.rename_subject(sid, "Bob", "") is False
    with pytest.raises(SubjectNotFoundError):
        store.rename_subject(sid, "Nobody", "x")
    assert store.rename_subject(sid, "bob", "ANN") is True  # merge
    assert store.list_subjects(sid) == ["Ann", "Carol"]
    assert store.list_faces(sid, 0, 20, "ann")[1] == 3

    assert store.delete_subject_faces(sid, "nobody") == 0
    assert [f.image_id for f in store.delete_faces(sid, [b1, "missing", a1])] == [b1, a1]
    assert store.delete_face(sid, a1) is None
    assert store.delete_subject(sid, "ann") is True
    assert store.list_faces(sid, 0, 20)[1] == 0
    assert store.delete_all_subjects(sid) == 1  # Carol, who never had a face


def test_collections_follow_another_process_by_delta(db_url: str, store: ServiceStore) -> None:
    """Two Database objects behave like two server processes on one database."""
    sid = store.create_service("people", "recognition", "sface").id
    other = ServiceStore(Database(db_url))
    try:
        mine = Collections(store, "sface", DIM, poll_interval=0.0).get(sid)
        theirs = Collections(other, "sface", DIM, poll_interval=0.0).get(sid)
        assert len(mine) == len(theirs) == 0
        ids = [store.add_face(sid, f"p{i % 3}", unit(i), "sface")[0] for i in range(6)]
        old, _ = store.add_face(sid, "p0", unit(99, DIM + 4), "arcface")  # another pack: never searched
        changes = other.changes_since(sid, theirs.version)
        assert changes is not None and not changes.reload and changes.added == {*ids, old}
        theirs.sync()
        assert len(theirs) == 6
        best = theirs.search(unit(4)[None], 1)[0][0]
        assert (best.image_id, best.subject) == (ids[4], "p1")
        assert best.cosine == pytest.approx(1.0, abs=1e-5)

        store.delete_face(sid, ids[4])
        store.rename_subject(sid, "p2", "p0")  # a rename reloads the whole collection
        theirs.sync()
        assert len(theirs) == 5
        assert theirs.search(unit(4)[None], 1)[0][0].image_id != ids[4]
        assert {m.subject for m in theirs.search(unit(0)[None], 0)[0]} == {"p0", "p1"}
        assert store.count_faces(other_than_pack="sface") == 1
        store.set_embedding(sid, ids[0], unit(50), "sface")  # re-embedded: replaced, not duplicated
        theirs.sync()
        assert len(theirs) == 5
        best = theirs.search(unit(50)[None], 1)[0][0]
        assert best.image_id == ids[0] and best.cosine == pytest.approx(1.0, abs=1e-5)
        mine.sync(force=True)
        assert len(mine) == 5
    finally:
        other.db.dispose()


def test_search_ranks_like_brute_force_and_per_subject(store: ServiceStore) -> None:
    sid = store.create_service("many", "recognition", "sface").id
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(300, DIM)).astype(np.float32)
    subjects = [f"s{i % 40}" for i in range(300)]
    store.add_faces_bulk(sid, subjects, vectors, "sface")
    collection = Collection(store, sid, "sface", DIM, poll_interval=0.0)
    query = rng.normal(size=(2, DIM)).astype(np.float32)
    results = collection.search(query, 5)
    unit_vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for q, found in zip(query, results, strict=True):
        expected = np.sort(unit_vectors @ (q / np.linalg.norm(q)))[::-1][:5]
        np.testing.assert_allclose([m.cosine for m in found], expected, rtol=1e-5)
    per_subject = collection.search(query[:1], 0, unique_subjects=True)[0]
    assert len(per_subject) == 40 and len({m.subject for m in per_subject}) == 40
    cosines = [m.cosine for m in per_subject]
    assert cosines == sorted(cosines, reverse=True)
    assert per_subject[0].cosine == pytest.approx(results[0][0].cosine)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_keys_stored_in_clear_keep_working_after_the_hash_migration(backend: str, tmp_path: Path) -> None:
    """A database of service_0001 holds keys in clear; service_0002 hashes them in place and keeps
    every service's subjects and faces (no table rebuild that would cascade)."""
    url = sqlite_url(tmp_path / "old.db") if backend == "sqlite" else fresh_postgres_url("keys")
    if url is None:
        pytest.skip("FACEATLAS_TEST_POSTGRES is not set (CI sets it)")
    db = Database(url)
    try:
        command.upgrade(db.alembic_config(), "service_0001")
        key = str(uuid.uuid4())
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO face_service (name, type, api_key, pack, created) "
                    "VALUES ('old', 'recognition', :key, 'sface', :now)"
                ),
                {"key": key, "now": datetime.now(UTC)},
            )
            service_id = conn.execute(text("SELECT id FROM face_service")).scalar_one()
            conn.execute(text("INSERT INTO service_version VALUES (:id, 0)"), {"id": service_id})
            conn.execute(
                text("INSERT INTO service_subject (service_id, name, name_key) VALUES (:id, 'Ann', 'ann')"),
                {"id": service_id},
            )
        store = ServiceStore(db)
        db.migrate()
        assert store.service_by_key(key).name == "old"  # type: ignore[union-attr]
        assert store.list_subjects(service_id) == ["Ann"]
        with db.engine.connect() as conn:
            stored = conn.execute(text("SELECT key_hash, key_hint FROM face_service")).one()
        assert tuple(stored) == (hashlib.sha256(key.encode()).hexdigest(), key[-4:])
        assert store.get_service("old").api_key is None  # never shown again
    finally:
        db.dispose()
        if backend == "postgresql":
            drop_postgres_database(url)


def _locks_of_this_process() -> list[str]:
    pid = str(os.getpid())
    with open("/proc/locks") as handle:
        return [line.split(":", 1)[1].strip() for line in handle if pid in line.split()]


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads Linux's /proc/locks")
def test_opening_the_database_again_keeps_this_process_s_locks(tmp_path: Path) -> None:
    """Closing any descriptor of a SQLite file drops every POSIX lock the process holds on it, which let
    another process checkpoint under a live connection ("database disk image is malformed")."""
    url = sqlite_url(tmp_path / "faceatlas.db")
    first = Database.open(url)
    ServiceStore(first).create_service("cams", "recognition", "sface")
    with first.engine.connect() as connection:
        connection.exec_driver_sql("BEGIN")
        connection.exec_driver_sql("SELECT count(*) FROM face_service").all()  # holds a WAL read lock
        held = _locks_of_this_process()
        assert held, "a read transaction in WAL mode holds locks on the -shm file"
        second = Database.open(url)
        assert _locks_of_this_process() == held
        connection.exec_driver_sql("ROLLBACK")
    second.dispose()
    first.dispose()
