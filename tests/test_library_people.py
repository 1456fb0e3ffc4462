"""Library storage, writer and people decisions on synthetic faces (no models needed)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from faceatlas.face import DetectedFace
from faceatlas.library.clustering import ClusterOptions, cluster_library
from faceatlas.library.people import (
    DecisionError,
    FaceNotFoundError,
    PersonNotFoundError,
    list_people,
    merge_people,
    remove_face,
    rename_person,
    split_faces,
)
from faceatlas.library.scan import FileEntry, plan, scan_photos
from faceatlas.library.store import library_url, open_library
from faceatlas.library.tables import Decision, Face, Person, Photo
from faceatlas.library.writer import LibraryWriter, PhotoResult, known_photos

PACK = "synthetic"
# min_faces=2: these tests add people two faces at a time; the default (3) has its own tests.
OPTIONS = ClusterOptions(threshold=0.5, min_face_size=10, min_faces=2)


def make_face(vector: np.ndarray, x: float = 0.0, size: float = 50.0) -> DetectedFace:
    v = np.asarray(vector, np.float32)
    return DetectedFace(
        box=(x, 0.0, x + size, size),
        score=0.9,
        landmarks=np.zeros((5, 2), np.float32),
        pack=PACK,
        embedding=v / np.linalg.norm(v),
    )


@pytest.fixture()
def people_vectors():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(4, 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def sample(person: int) -> np.ndarray:
        return centres[person] + rng.normal(scale=0.05, size=32)

    return sample


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        yield open_library(tmp_path / "lib")
        return
    from tests.api_helpers import drop_postgres_database, fresh_postgres_url

    url = fresh_postgres_url("library")
    if url is None:
        pytest.skip("FACEATLAS_TEST_POSTGRES is not set (CI sets it)")
    database = open_library(url)
    yield database
    database.dispose()
    drop_postgres_database(url)


def add_photos(db, photos: list[list[np.ndarray]], start: int = 0) -> None:
    writer = LibraryWriter(db)
    results = [
        PhotoResult(
            FileEntry(f"/photos/{start + i:04d}.jpg", 100, 1.0),
            f"hash{start + i}",
            640,
            480,
            faces=[make_face(v, x=60.0 * k) for k, v in enumerate(vectors)],
            pack=PACK,
        )
        for i, vectors in enumerate(photos)
    ]
    writer.write(results)


def person_of(db, photo_path: str) -> set[int | None]:
    with db.session() as s:
        return set(s.scalars(select(Face.person_id).join(Photo).where(Photo.path == photo_path)))


def test_library_url_forms(tmp_path):
    assert library_url(tmp_path).endswith("/library.db")
    assert library_url(tmp_path / "x.db").endswith("/x.db")
    assert library_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_scan_is_recursive_and_case_insensitive(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.JPG", "a/b/two.heic", "three.Png", "notes.txt", "a/b/four.tiff", "five.jpeg.bak"):
        (tmp_path / name).write_bytes(b"x")
    found = [e.path.rsplit("/", 1)[-1] for e in scan_photos([tmp_path])]
    assert sorted(found) == ["four.tiff", "one.JPG", "three.Png", "two.heic"]


def test_writer_and_skip_plan(db):
    add_photos(db, [[np.ones(32)], []])
    known = known_photos(db)
    assert set(known) == {"/photos/0000.jpg", "/photos/0001.jpg"}
    entries = [
        FileEntry("/photos/0000.jpg", 100, 1.0),
        FileEntry("/photos/0001.jpg", 100, 2.0),
        FileEntry("/photos/new.jpg", 5, 1.0),
    ]
    todo, skipped = plan(entries, known)
    assert [e.path for e in todo] == ["/photos/0001.jpg", "/photos/new.jpg"] and skipped == 1


def test_a_failed_transaction_leaves_no_half_photo(db):
    writer = LibraryWriter(db)
    good = PhotoResult(FileEntry("/p/good.jpg", 1, 1.0), "h", faces=[make_face(np.ones(32))], pack=PACK)
    broken_face = make_face(np.ones(32))
    broken_face.pack = None  # violates NOT NULL on the face row, after the photo row was inserted
    bad = PhotoResult(FileEntry("/p/bad.jpg", 1, 1.0), "h", faces=[broken_face], pack=PACK)
    with pytest.raises(IntegrityError):
        writer.write([good, bad])
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Photo)) == 0
        assert s.scalar(select(func.count()).select_from(Face)) == 0


def test_rewriting_a_changed_photo_replaces_its_faces(db):
    add_photos(db, [[np.ones(32), np.ones(32)]])
    writer = LibraryWriter(db)
    writer.write(
        [PhotoResult(FileEntry("/photos/0000.jpg", 200, 5.0), "new", faces=[make_face(np.ones(32))])]
    )
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Face)) == 1
        assert s.scalar(select(Photo.size)) == 200


def test_clustering_groups_people_and_respects_same_photo(db, people_vectors):
    # 12 photos of person 0, 8 of person 1; photo 0 holds two faces of person 0 (a reflection).
    photos = [[people_vectors(0)] for _ in range(12)] + [[people_vectors(1)] for _ in range(8)]
    photos[0].append(people_vectors(0))
    add_photos(db, photos)
    report = cluster_library(db, PACK, OPTIONS)
    assert report.new_people == 2
    assert [(p.faces, p.photos) for p in list_people(db)] == [(12, 12), (8, 8)]
    assert None in person_of(db, "/photos/0000.jpg")  # the second face of that photo stays unassigned


def test_new_faces_join_existing_people_and_ids_are_stable(db, people_vectors):
    add_photos(db, [[people_vectors(0)] for _ in range(6)] + [[people_vectors(1)] for _ in range(6)])
    cluster_library(db, PACK, OPTIONS)
    before = {p.id: p.faces for p in list_people(db)}
    add_photos(
        db, [[people_vectors(0)], [people_vectors(1)], [people_vectors(2)], [people_vectors(2)]], start=100
    )
    report = cluster_library(db, PACK, OPTIONS)
    assert report.joined_existing == 2 and report.new_people == 1
    after = {p.id: p.faces for p in list_people(db)}
    assert all(after[pid] == n + 1 for pid, n in before.items())
    assert len(after) == 3


def test_user_decisions_survive_reruns_and_rebuild(db, people_vectors):
    add_photos(
        db,
        [[people_vectors(0)] for _ in range(6)]
        + [[people_vectors(1)] for _ in range(6)]
        + [[people_vectors(2)] for _ in range(6)],
    )
    cluster_library(db, PACK, OPTIONS)
    a, b, c = (p.id for p in list_people(db))
    rename_person(db, a, "Alice")
    rename_person(db, c, "Carol")
    merge_people(db, "Alice", b)  # the user says people a and b are one person
    with db.session() as s:
        rejected = s.scalars(select(Face.id).where(Face.person_id == c).order_by(Face.id)).first()
    remove_face(db, "Carol", rejected)
    for rebuild in (False, True, False):
        cluster_library(db, PACK, OPTIONS, rebuild=rebuild)
        people = {p.name: p for p in list_people(db) if p.name}
        assert people["Alice"].id == a and people["Alice"].faces == 12
        assert people["Carol"].id == c and people["Carol"].faces == 5
        with db.session() as s:
            assert s.get(Face, rejected).person_id != c
            assert s.get(Person, b).merged_into == a
    with db.session() as s:
        kinds = sorted(s.scalars(select(Decision.kind)))
    assert kinds == ["merge", "reject", "rename", "rename"]


def test_split_moves_faces_for_good(db, people_vectors):
    add_photos(db, [[people_vectors(0)] for _ in range(8)])
    cluster_library(db, PACK, OPTIONS)
    (person,) = list_people(db)
    with db.session() as s:
        moved = list(s.scalars(select(Face.id).where(Face.person_id == person.id).order_by(Face.id).limit(3)))
    new = split_faces(db, person.id, moved, name="Twin")
    cluster_library(db, PACK, OPTIONS, rebuild=True)
    counts = {p.name: p.faces for p in list_people(db)}
    assert counts["Twin"] == 3 and counts[None] == 5
    assert new.id in {p.id for p in list_people(db)}


def test_decision_errors_are_typed(db, people_vectors):
    add_photos(db, [[people_vectors(0)] for _ in range(3)] + [[people_vectors(1)] for _ in range(3)])
    cluster_library(db, PACK, OPTIONS)
    a, b = (p.id for p in list_people(db))
    rename_person(db, a, "Alice")
    with pytest.raises(PersonNotFoundError):
        rename_person(db, "Nobody", "X")
    with pytest.raises(DecisionError):
        rename_person(db, b, "Alice")
    with pytest.raises(DecisionError):
        merge_people(db, a, "Alice")
    with pytest.raises(FaceNotFoundError):
        remove_face(db, b, 10_000)
