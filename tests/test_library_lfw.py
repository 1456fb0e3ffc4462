"""Clustering quality, incremental runs, user decisions and search on LFW people with 5+ photos.

All photos of the 199 LFW-dev people with at least 5 images go into one folder (2,616 photos),
indexed once per test session; each test works on its own copy of that library.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from faceatlas.cli.main import cli
from faceatlas.evaluation.cluster_metrics import cluster_scores
from faceatlas.library.clustering import ClusterOptions, cluster_library
from faceatlas.library.people import list_people
from faceatlas.library.pipeline import IndexOptions, index_library
from faceatlas.library.search import search_by_image
from faceatlas.library.store import open_library
from faceatlas.library.tables import Face, Photo


@pytest.fixture(scope="session")
def lfw_folder(shared: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lfw5")
    for person in sorted((shared / "data" / "lfw-dev" / "images").iterdir()):
        images = sorted(person.iterdir())
        if len(images) >= 5:
            for image in images:
                (folder / image.name).symlink_to(image)
    return folder


@pytest.fixture(scope="session")
def lfw_library_file(engine, lfw_folder: Path, tmp_path_factory) -> Path:
    """The indexed (not yet clustered) LFW library, built once per session."""
    target = tmp_path_factory.mktemp("lfw-lib") / "library.db"
    db = open_library(target)
    report = index_library(db, engine, [lfw_folder], options=IndexOptions(batch_size=32))
    print(f"\nLFW 5+: indexed {report.indexed} photos, {report.faces} faces in {report.wall_seconds:.1f} s")
    assert report.indexed == 2616 and not report.errors
    db.dispose()
    with sqlite3.connect(target) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return target


@pytest.fixture()
def lfw_db(lfw_library_file: Path, tmp_path: Path):
    copy = tmp_path / "library.db"
    shutil.copy(lfw_library_file, copy)
    return open_library(copy)


def labelled_faces(db) -> tuple[np.ndarray, np.ndarray]:
    """(face id, person name) of the labelled face of each photo: LFW centres its subject at (125, 125)."""
    with db.session() as s:
        rows = s.execute(
            select(Face.id, Photo.path, Face.x_min, Face.y_min, Face.x_max, Face.y_max).join(Photo)
        ).all()
    best: dict[str, tuple[float, int]] = {}
    for face_id, path, x0, y0, x1, y1 in rows:
        off_centre = ((x0 + x1) / 2 - 125) ** 2 + ((y0 + y1) / 2 - 125) ** 2
        if path not in best or off_centre < best[path][0]:
            best[path] = (off_centre, face_id)
    paths = sorted(best)
    return np.array([best[p][1] for p in paths]), np.array([Path(p).name.rsplit("_", 1)[0] for p in paths])


def clustering_scores(db, face_ids: np.ndarray, names: np.ndarray) -> tuple[float, float, int]:
    with db.session() as s:
        person = dict(s.execute(select(Face.id, Face.person_id)).all())
    # -1 = unassigned: scored as a cluster of its own.
    predicted = np.array([person[f] if person[f] is not None else -1 for f in face_ids])
    scores = cluster_scores(predicted, names)
    return scores.bcubed_precision, scores.bcubed_recall, scores.clusters


def options(engine) -> ClusterOptions:
    return ClusterOptions(threshold=engine.pack.threshold)


def test_lfw_clustering_quality(engine, lfw_db):
    report = cluster_library(lfw_db, engine.pack.id, options(engine))
    face_ids, names = labelled_faces(lfw_db)
    precision, recall, clusters = clustering_scores(lfw_db, face_ids, names)
    true_people = len(set(names.tolist()))
    print(
        f"\nLFW 5+ clustering: BCubed P={precision:.4f} R={recall:.4f}, "
        f"{clusters} clusters for {true_people} people; {report.new_people} people over all "
        f"{report.faces} faces, {report.unassigned} unassigned"
    )
    assert precision >= 0.95 and recall >= 0.90
    # No person holds two faces of one photo.
    with lfw_db.session() as s:
        pairs = s.execute(select(Face.photo_id, Face.person_id).where(Face.person_id.is_not(None))).all()
    assert len(pairs) == len(set(pairs))


def test_lfw_incremental_run_joins_existing_people(engine, lfw_db):
    face_ids, names = labelled_faces(lfw_db)
    with lfw_db.session() as s:
        photo_ids = np.array(s.scalars(select(Photo.id).order_by(Photo.id)).all())
        later = photo_ids[photo_ids % 3 == 0].tolist()  # a third of the photos "arrive later"
        s.execute(update(Face).where(Face.photo_id.in_(later)).values(pack="later"))
    first = cluster_library(lfw_db, engine.pack.id, options(engine))
    before = {p.id for p in list_people(lfw_db)}
    with lfw_db.session() as s:
        s.execute(update(Face).where(Face.pack == "later").values(pack=engine.pack.id))
    second = cluster_library(lfw_db, engine.pack.id, options(engine))
    precision, recall, _ = clustering_scores(lfw_db, face_ids, names)
    print(
        f"\nLFW incremental: first run {first.new_people} people; second run {second.joined_existing} faces "
        f"joined existing people, {second.new_people} new people; BCubed P={precision:.4f} R={recall:.4f}"
    )
    assert second.joined_existing > 600
    assert before <= {p.id for p in list_people(lfw_db)}  # existing ids are kept
    assert precision >= 0.95 and recall >= 0.90


def test_lfw_decisions_survive_rerun_and_rebuild(engine, lfw_db, tmp_path):
    library = str(tmp_path / "library.db")
    runner = CliRunner()
    assert runner.invoke(cli, ["cluster", "--library", library]).exit_code == 0
    people = list_people(lfw_db)
    biggest, second, third = people[0], people[1], people[2]
    with lfw_db.session() as s:
        wrong_face = s.scalars(select(Face.id).where(Face.person_id == third.id).order_by(Face.id)).first()

    def person(*args: str) -> None:
        result = runner.invoke(cli, ["person", *args, "--library", library])
        assert result.exit_code == 0, result.output

    person(str(biggest.id), "rename", "Most Photographed")
    person("Most Photographed", "merge", str(second.id))
    person(str(third.id), "rename", "Third")
    person("Third", "remove-face", str(wrong_face))
    for args in (["cluster"], ["cluster", "--rebuild"], ["cluster"]):
        assert runner.invoke(cli, [*args, "--library", library]).exit_code == 0
        now = {p.name: p for p in list_people(lfw_db) if p.name}
        assert now["Most Photographed"].id == biggest.id
        assert now["Most Photographed"].faces >= biggest.faces + second.faces - 2
        assert now["Third"].id == third.id and now["Third"].faces >= third.faces - 2
        with lfw_db.session() as s:
            assert s.get(Face, wrong_face).person_id != third.id
        assert second.id not in {p.id for p in list_people(lfw_db)}


def test_lfw_search_ranks_the_person_first(engine, lfw_db, lfw_folder):
    by_person: dict[str, list[str]] = {}
    for image in sorted(lfw_folder.iterdir()):
        by_person.setdefault(image.name.rsplit("_", 1)[0], []).append(str(image.resolve()))
    frequent = {name: paths for name, paths in by_person.items() if len(paths) >= 10}
    with_self, without_self = [], []
    for paths in frequent.values():
        hits = search_by_image(lfw_db, engine, paths[0], top=11)
        relevant = set(paths)
        with_self.append(sum(h.path in relevant for h in hits[:10]) / 10)
        others = [h for h in hits if h.path != paths[0]][:10]
        k = min(10, len(paths) - 1)
        without_self.append(sum(h.path in relevant for h in others[:k]) / k)
    print(
        f"\nLFW search over {len(frequent)} people with 10+ photos: precision@10 {np.mean(with_self):.4f} "
        f"(query photo counted), {np.mean(without_self):.4f} (query photo excluded, @min(10, n-1))"
    )
    assert np.mean(with_self) >= 0.9 and np.mean(without_self) >= 0.9
