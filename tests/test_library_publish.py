"""One gallery: named library people published into a recognition service (``services import-library``),
recognised through the official SDK; re-runs are idempotent, renames and removed faces follow, subjects the
import did not create are never touched, packs must match."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from faceatlas.cli.main import cli
from faceatlas.library.clustering import ClusterOptions, cluster_library
from faceatlas.library.people import remove_face, rename_person
from faceatlas.library.pipeline import IndexOptions, index_library
from faceatlas.library.publish import PackMismatchError, PublishError, publish_library
from faceatlas.library.store import open_library
from faceatlas.library.tables import Face, Person, Photo
from faceatlas.storage.db import Database
from faceatlas.storage.link_tables import LibraryFaceLink, LibrarySubjectLink
from faceatlas.storage.services import ServiceStore
from tests.api_helpers import LiveServer, drop_postgres_database, fresh_postgres_url, sdk_python

PEOPLE = {"Colin_Powell": "Colin Powell", "Tony_Blair": "Tony Blair"}
INDEXED = range(1, 9)  # images 1..8 of each person go into the library
HELD_OUT = 12  # image 12 of each is the "camera" photo


@pytest.fixture(scope="module")
def library(engine, shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """A library of 8 photos each of two LFW people (plus two strangers), clustered and named."""
    images = shared / "data" / "lfw-dev" / "images"
    folder = tmp_path_factory.mktemp("photos")
    for person in PEOPLE:
        for index in INDEXED:
            name = f"{person}_{index:04d}.jpg"
            (folder / name).symlink_to(images / person / name)
    for stranger in ("Hugo_Chavez", "Laura_Bush"):
        (folder / f"{stranger}_0001.jpg").symlink_to(images / stranger / f"{stranger}_0001.jpg")
    target = tmp_path_factory.mktemp("library") / "library.db"
    db = open_library(target)
    report = index_library(db, engine, [folder], options=IndexOptions(batch_size=16))
    assert report.indexed == 18 and not report.errors
    cluster_library(db, engine.pack.id, ClusterOptions(threshold=engine.pack.threshold))
    # name each LFW person's cluster: the person owning most of their photos' centred faces
    with db.session() as s:
        rows = s.execute(
            select(Face.person_id, Photo.path).join(Photo).where(Face.person_id.is_not(None))
        ).all()
    for prefix, name in PEOPLE.items():
        owners = Counter(pid for pid, path in rows if Path(path).name.startswith(prefix))
        rename_person(db, owners.most_common(1)[0][0], name)
    db.dispose()
    return target


def _setup(library: Path, tmp_path: Path, database: str | None) -> tuple[Database, ServiceStore, Path]:
    copy = tmp_path / "library.db"
    copy.write_bytes(library.read_bytes())
    data_dir = tmp_path / "data"
    db_args = ["--database", database] if database else []
    run("services", "create", "--name", "cams", "--data-dir", str(data_dir), *db_args)
    return open_library(copy), ServiceStore(Database.open(database, data_dir=data_dir)), data_dir


@pytest.fixture()
def setup(library: Path, tmp_path: Path) -> Iterator[tuple[Database, ServiceStore, Path]]:
    """A private copy of the library and a fresh data directory with a recognition service ``cams``."""
    db, store, data_dir = _setup(library, tmp_path, None)
    yield db, store, data_dir
    db.dispose()
    store.db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_setup(request, library: Path, tmp_path: Path) -> Iterator[tuple[Database, ServiceStore, Path]]:  # type: ignore[no-untyped-def]
    """As ``setup``, with the service's database on SQLite and on PostgreSQL."""
    url = None
    if request.param == "postgresql":
        url = fresh_postgres_url("publish")
        if url is None:
            pytest.skip("FACEATLAS_TEST_POSTGRES is not set (CI sets it)")
    db, store, data_dir = _setup(library, tmp_path, url)
    yield db, store, data_dir
    db.dispose()
    store.db.dispose()
    if url is not None:
        drop_postgres_database(url)


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def import_json(library: Path | str, data_dir: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    out = run(
        "services", "import-library", "--library", str(library), "--service", "cams",
        "--faces-per-person", "3", "--json", "--data-dir", str(data_dir), *extra,
    )  # fmt: skip
    return json.loads(out)


def linked_faces(store: ServiceStore) -> dict[str, set[int]]:
    """subject name -> library face ids stored for it."""
    from faceatlas.storage.service_tables import ServiceSubject

    with store.db.session() as s:
        rows = s.execute(
            select(ServiceSubject.name, LibraryFaceLink.library_face_id).join(
                ServiceSubject, ServiceSubject.id == LibraryFaceLink.subject_id
            )
        ).all()
    out: dict[str, set[int]] = {}
    for name, face in rows:
        out.setdefault(name, set()).add(int(face))
    return out


SDK_RECOGNIZE = r"""
import json, sys
from compreface import CompreFace
port, key = sys.argv[1:3]
recognition = CompreFace("http://127.0.0.1", port).init_face_recognition(key)
print(json.dumps([recognition.recognize(image_path=p, options={"limit": 1}) for p in sys.argv[3:]]))
"""


def test_import_then_sdk_recognises_held_out_photos(setup, shared: Path) -> None:  # type: ignore[no-untyped-def]
    db, store, data_dir = setup
    library_file = Path(db.url.split("///", 1)[1])
    report = import_json(library_file, data_dir)
    assert report["changed"] is True
    by_name = {p["name"]: p for p in report["people"]}
    assert set(by_name) == set(PEOPLE.values())
    assert all(p["added"] == 3 and p["removed"] == 0 and p["skipped"] is None for p in by_name.values())
    service = store.get_service("cams")
    assert sorted(store.list_subjects(service.id)) == sorted(PEOPLE.values())
    # the stored faces are the person's own faces, all different, each with a decodable crop
    faces = linked_faces(store)
    with db.session() as s:
        for name, face_ids in faces.items():
            person = s.scalar(select(Person).where(Person.name == name))
            own = set(s.scalars(select(Face.id).where(Face.person_id == person.id)))
            assert len(face_ids) == 3 and face_ids <= own
    refs, total = store.list_faces(service.id, 0, 100)
    assert total == 6
    for ref in refs:
        image = store.get_image(service.id, ref.image_id)
        assert image is not None and image[:2] == b"\xff\xd8"

    live = LiveServer(data_dir)
    key = store.rotate_key("cams").api_key  # keys are stored hashed: a fresh one to use
    images = shared / "data" / "lfw-dev" / "images"
    held_out = [images / person / f"{person}_{HELD_OUT:04d}.jpg" for person in PEOPLE]
    with live:
        done = subprocess.run(
            [str(sdk_python()), "-c", SDK_RECOGNIZE, str(live.port), key, *map(str, held_out)],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        answers = json.loads(done.stdout)
        for answer, expected in zip(answers, PEOPLE.values(), strict=True):
            best = answer["result"][0]["subjects"][0]
            assert best["subject"] == expected and best["similarity"] > 0.8, answer

        # re-running changes nothing: same faces, same ids
        before = {r.image_id for r in store.list_faces(service.id, 0, 100)[0]}
        again = import_json(library_file, data_dir)
        assert again["changed"] is False
        assert all(p["added"] == 0 and p["removed"] == 0 for p in again["people"])
        assert {r.image_id for r in store.list_faces(service.id, 0, 100)[0]} == before

        # renaming the person renames the subject, and the running server sees it
        rename_person(db, "Tony Blair", "Tony B")
        renamed = import_json(library_file, data_dir)
        tony = next(p for p in renamed["people"] if p["name"] == "Tony B")
        assert tony["renamed_from"] == "Tony Blair" and tony["added"] == 0 and tony["removed"] == 0
        assert {r.image_id for r in store.list_faces(service.id, 0, 100)[0]} == before
        subjects = httpx.get(
            live.url + "/api/v1/recognition/subjects", headers={"x-api-key": key}, timeout=30
        ).json()["subjects"]
        assert sorted(subjects) == ["Colin Powell", "Tony B"]


def test_removed_faces_leave_and_foreign_subjects_stay(any_setup) -> None:  # type: ignore[no-untyped-def]
    db, store, _data_dir = any_setup
    service = store.get_service("cams")
    # subjects the import did not create: one unrelated, one with a library person's name
    visitor = store.add_face(service.id, "Visitor", _unit(0), service.pack, b"x")[0]
    clash = store.add_face(service.id, "colin powell", _unit(1), service.pack, b"y")[0]

    report = publish_library(db, store, "cams", faces_per_person=2)
    by_name = {p.name: p for p in report.people}
    assert "not created by this import" in (by_name["Colin Powell"].skipped or "")
    assert by_name["Tony Blair"].added == 2
    assert {r.image_id for r in store.list_faces(service.id, 0, 10, subject="Visitor")[0]} == {visitor}
    assert {r.image_id for r in store.list_faces(service.id, 0, 10, subject="colin powell")[0]} == {clash}

    # "not this person" on a stored face: it leaves the subject, another face takes its place
    stored = linked_faces(store)["Tony Blair"]
    gone = min(stored)
    remove_face(db, "Tony Blair", gone)
    second = publish_library(db, store, "cams", faces_per_person=2)
    tony = next(p for p in second.people if p.name == "Tony Blair")
    assert tony.removed == 1 and tony.added == 1
    assert gone not in linked_faces(store)["Tony Blair"] and len(linked_faces(store)["Tony Blair"]) == 2

    # only the people asked for are touched; an unnamed person is refused with the reason
    only = publish_library(db, store, "cams", people=["Tony Blair"], faces_per_person=2)
    assert [p.name for p in only.people] == ["Tony Blair"] and not only.changed
    with db.session() as s:
        nobody = Person()
        s.add(nobody)
        s.flush()
        unnamed = nobody.id
    with pytest.raises(PublishError, match="no name"):
        publish_library(db, store, "cams", people=[unnamed])

    # a person no longer named loses the subject the import made; foreign subjects still stay
    with db.session() as s:
        s.execute(Person.__table__.update().where(Person.name == "Tony Blair").values(name=None))
    third = publish_library(db, store, "cams", faces_per_person=2)
    assert third.deleted_subjects == ["Tony Blair"]
    assert sorted(store.list_subjects(service.id)) == ["Visitor", "colin powell"]
    with store.db.session() as s:
        assert s.scalars(select(LibrarySubjectLink)).all() == []


def test_packs_must_match_and_type_must_be_recognition(setup) -> None:  # type: ignore[no-untyped-def]
    db, store, data_dir = setup
    store.create_service("other-pack", "recognition", "buffalo_l")
    with pytest.raises(PackMismatchError, match="pack sface"):
        publish_library(db, store, "other-pack")
    store.create_service("det", "detection", "sface")
    with pytest.raises(PublishError, match="detection service"):
        publish_library(db, store, "det")
    result = CliRunner().invoke(
        cli,
        ["services", "import-library", "--library", str(Path(db.url.split("///", 1)[1])), "--service",
         "other-pack", "--data-dir", str(data_dir)],
    )  # fmt: skip
    assert result.exit_code != 0 and "buffalo_l" in result.output
    assert store.list_subjects(store.get_service("other-pack").id) == []


def _unit(seed: int):  # type: ignore[no-untyped-def]
    import numpy as np

    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def test_best_faces_are_different_from_each_other(engine, shared: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Three copies of one photo among six others: the three faces chosen never include two copies."""
    images = shared / "data" / "lfw-dev" / "images" / "Laura_Bush"
    folder = tmp_path / "photos"
    folder.mkdir()
    originals = sorted(images.glob("*.jpg"))[:6]
    for image in originals:
        (folder / image.name).symlink_to(image)
    from PIL import Image

    for quality, copy in ((93, "copy_a.jpg"), (90, "copy_b.jpg")):  # other bytes, the same face
        Image.open(originals[0]).save(folder / copy, quality=quality)
    db = open_library(tmp_path / "library.db")
    index_library(db, engine, [folder])
    cluster_library(db, engine.pack.id, ClusterOptions(threshold=engine.pack.threshold))
    with db.session() as s:
        rows = s.execute(select(Face.id, Face.person_id, Photo.path).join(Photo)).all()
    person = Counter(pid for _, pid, _ in rows if pid is not None).most_common(1)[0][0]
    rename_person(db, person, "Laura")
    copy_names = {originals[0].name, "copy_a.jpg", "copy_b.jpg"}
    copies = {face for face, pid, path in rows if pid == person and Path(path).name in copy_names}
    assert len(copies) == 3
    store = ServiceStore(Database.open(data_dir=tmp_path / "data"))
    store.create_service("cams", "recognition", engine.pack.id)
    report = publish_library(db, store, "cams", faces_per_person=3)
    assert report.people[0].added == 3
    chosen = linked_faces(store)["Laura"]
    assert len(chosen & copies) <= 1, (chosen, copies)
    store.db.dispose()
    db.dispose()
