"""Indexing real photos: formats, orientations, bad files, skipping, kill -9 and resume, CLI commands."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceatlas.cli.main import cli
from faceatlas.library.pipeline import IndexOptions, index_library, placement, split_for
from faceatlas.library.store import open_library
from faceatlas.library.thumbnails import face_thumbnail

SRC = Path(__file__).resolve().parents[1] / "src"

#: relative path in the test tree -> faces expected
EXPECTED = {
    "2019/portraits/obama.jpg": 1,
    "2019/Biden.JPG": 1,
    "2020/group/two_people.jpg": 2,
    "2020/nobody/landscape.jpg": 0,
    "orientation/obama_upright_orientation1.jpg": 1,
    "orientation/obama_orientation3.jpg": 1,
    "orientation/obama_orientation6.jpg": 1,
    "orientation/obama_orientation8.jpg": 1,
    "orientation/two_people_orientation5.jpg": 2,
    "orientation/two_people_orientation7.jpg": 2,
    "converted/biden.png": 1,
    "converted/obama2.webp": 1,
    "converted/deep/obama-480p.heic": 1,
}
BAD = {"bad/truncated.jpg", "bad/not-an-image.png"}


@pytest.fixture(scope="module")
def photo_tree(photos: Path, tmp_path_factory) -> Path:
    import pillow_heif

    pillow_heif.register_heif_opener()
    root = tmp_path_factory.mktemp("tree")
    examples = photos / "face_recognition_examples" / "examples"
    copies = {
        "2019/portraits/obama.jpg": examples / "obama.jpg",
        "2019/Biden.JPG": examples / "biden.jpg",
        "2020/group/two_people.jpg": examples / "two_people.jpg",
        "2020/nobody/landscape.jpg": photos / "exif-orientation" / "Landscape_1.jpg",
    }
    for name in EXPECTED:
        if name.startswith("orientation/"):
            copies[name] = photos / "exif-orientation-faces" / Path(name).name
    for rel, src in copies.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    (root / "converted" / "deep").mkdir(parents=True)
    Image.open(examples / "biden.jpg").save(root / "converted/biden.png")
    Image.open(examples / "obama2.jpg").save(root / "converted/obama2.webp", quality=90)
    Image.open(examples / "obama-480p.jpg").save(root / "converted/deep/obama-480p.heic", quality=80)
    (root / "bad").mkdir()
    (root / "bad/truncated.jpg").write_bytes((examples / "obama.jpg").read_bytes()[:3000])
    (root / "bad/not-an-image.png").write_text("this is not a picture\n")
    (root / "bad/notes.txt").write_text("ignored: not a photo suffix\n")
    return root


def rel_faces(db, root: Path) -> dict[str, list[tuple[float, ...]]]:
    """relative path -> sorted face boxes, for every readable photo."""
    from sqlalchemy import select

    from faceatlas.library.tables import Face, Photo

    out: dict[str, list[tuple[float, ...]]] = {}
    with db.session() as s:
        for path, status in s.execute(select(Photo.path, Photo.status)):
            if status == "ok":
                out[str(Path(path).relative_to(root))] = []
        for path, *box in s.execute(
            select(Photo.path, Face.x_min, Face.y_min, Face.x_max, Face.y_max).join(
                Photo, Photo.id == Face.photo_id
            )
        ):
            out[str(Path(path).relative_to(root))].append(tuple(box))
    return {k: sorted(v) for k, v in out.items()}


def test_index_finds_faces_reports_bad_files_and_skips_unchanged(engine, photo_tree, tmp_path):
    db = open_library(tmp_path / "lib")
    report = index_library(db, engine, [photo_tree], options=IndexOptions(workers=2, batch_size=4))
    assert report.found == len(EXPECTED) + len(BAD)
    assert {str(Path(p).relative_to(photo_tree)) for p, _ in report.errors} == BAD
    reasons = dict((str(Path(p).relative_to(photo_tree)), r) for p, r in report.errors)
    assert reasons["bad/truncated.jpg"].startswith("CorruptImageError")
    assert "Error" in reasons["bad/not-an-image.png"]
    faces = rel_faces(db, photo_tree)
    assert {k: len(v) for k, v in faces.items()} == EXPECTED
    assert report.faces == sum(EXPECTED.values())
    assert set(report.stage_seconds) == {"decode", "detect", "embed", "attributes", "write"}
    assert report.stage_seconds["detect"] > 0 and report.stage_seconds["embed"] > 0
    # Every EXIF orientation gives the upright photo's face boxes (in upright pixel coordinates).
    upright = np.array(faces["orientation/obama_upright_orientation1.jpg"])
    for name in ("obama_orientation3.jpg", "obama_orientation6.jpg", "obama_orientation8.jpg"):
        np.testing.assert_allclose(np.array(faces[f"orientation/{name}"]), upright, atol=4)
    np.testing.assert_allclose(
        np.array(faces["orientation/two_people_orientation5.jpg"]),
        np.array(faces["orientation/two_people_orientation7.jpg"]),
        atol=4,
    )

    again = index_library(db, engine, [photo_tree], options=IndexOptions(workers=2))
    assert (again.indexed, again.skipped, again.errors) == (0, len(EXPECTED) + len(BAD), [])

    # A touched file with the same bytes is recognised by its hash: faces (and their ids) are kept.
    from sqlalchemy import select

    from faceatlas.library.tables import Face

    with db.session() as s:
        ids_before = sorted(s.scalars(select(Face.id)))
    os.utime(photo_tree / "2019/Biden.JPG", (time.time() + 5, time.time() + 5))
    touched = index_library(db, engine, [photo_tree], options=IndexOptions(workers=1))
    assert touched.indexed == 1 and touched.faces == 0
    with db.session() as s:
        assert sorted(s.scalars(select(Face.id))) == ids_before
    assert index_library(db, engine, [photo_tree]).indexed == 0


def test_cli_cluster_people_search_export_and_thumbnails(engine, photo_tree, photos, tmp_path):
    library = tmp_path / "cli-lib"
    db = open_library(library)
    index_library(db, engine, [photo_tree], options=IndexOptions(workers=2))
    runner = CliRunner()
    result = runner.invoke(cli, ["cluster", "--library", str(library)])
    assert result.exit_code == 0, result.output
    listed = json.loads(runner.invoke(cli, ["people", "--library", str(library), "--json"]).output)
    obama = max(listed, key=lambda p: p["faces"])
    assert obama["faces"] >= 6  # obama.jpg, 4 orientations, webp, heic, and in two_people
    assert (
        runner.invoke(
            cli, ["person", str(obama["id"]), "rename", "Barack Obama", "--library", str(library)]
        ).exit_code
        == 0
    )

    query = photos / "face_recognition_examples" / "tests" / "test_images" / "obama.jpg"
    out = runner.invoke(cli, ["search", str(query), "--library", str(library), "--top", "5", "--json"])
    assert out.exit_code == 0, out.output
    hits = json.loads(out.output)
    assert len(hits) == 5 and all(h["match"] and h["person"] == "Barack Obama" for h in hits)
    assert hits == sorted(hits, key=lambda h: -h["similarity"])

    exported = json.loads(
        runner.invoke(cli, ["export", "--library", str(library), "--format", "json"]).output
    )
    named = next(p for p in exported["people"] if p["name"] == "Barack Obama")
    assert len(named["photos"]) == obama["photos"]
    assert {Path(e["path"]).name for e in exported["errors"]} == {"truncated.jpg", "not-an-image.png"}
    csv_text = runner.invoke(cli, ["export", "--library", str(library), "--format", "csv"]).output
    assert csv_text.splitlines()[0].startswith("photo_path,photo_id")
    assert len(csv_text.splitlines()) == 1 + sum(EXPECTED.values())

    albums = tmp_path / "albums"
    assert (
        runner.invoke(
            cli,
            ["export", "--library", str(library), "--albums", str(albums), "-o", str(tmp_path / "x.json")],
        ).exit_code
        == 0
    )
    links = list((albums / "Barack Obama").iterdir())
    assert len(links) == obama["photos"] and all(
        link.is_symlink() and link.resolve().is_file() for link in links
    )

    face_id = named["faces"][0]["face_id"]
    thumb = face_thumbnail(db, face_id, tmp_path / "thumbs", size=96)
    assert Image.open(thumb).size == (96, 96)
    stamp = thumb.stat().st_mtime_ns
    assert face_thumbnail(db, face_id, tmp_path / "thumbs", size=96).stat().st_mtime_ns == stamp

    listing = runner.invoke(
        cli,
        ["person", "Barack Obama", "faces", "--library", str(library), "--thumbnails", str(tmp_path / "t")],
    )
    assert listing.exit_code == 0, listing.output
    rows = [line.split("\t") for line in listing.output.splitlines()]
    assert len(rows) == obama["faces"]
    assert {int(r[0]) for r in rows} == {f["face_id"] for f in named["faces"]}
    assert all(Image.open(r[2]).size == (160, 160) for r in rows)


def _photo_count(db_file: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("select count(*) from library_photos").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigkill_mid_run_then_resume_gives_the_same_library(engine, shared, tmp_path):
    # ~60 small LFW photos in nested folders: quick to index, long enough to kill in the middle.
    root = tmp_path / "photos"
    people = sorted((shared / "data" / "lfw-dev" / "images").iterdir())
    chosen = [d for d in people if len(list(d.iterdir())) >= 6][:10]
    for person in chosen:
        for img in sorted(person.iterdir())[:6]:
            (root / person.name[0] / person.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(img, root / person.name[0] / person.name / img.name)
    total = sum(1 for _ in root.rglob("*.jpg"))
    reference = open_library(tmp_path / "ref")
    index_library(reference, engine, [root], options=IndexOptions(workers=1, batch_size=2))

    killed = tmp_path / "killed"
    db_file = killed / "library.db"
    cmd = [
        sys.executable,
        "-c",
        "from faceatlas.cli.main import main; main()",
        "index",
        str(root),
        "--library",
        str(killed),
        "--workers",
        "1",
        "--batch-size",
        "2",
        "--no-attributes",
    ]
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while _photo_count(db_file) < 6 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: the indexer and its decoders
        proc.wait()
    committed = _photo_count(db_file)
    assert 6 <= committed < total, f"kill landed at {committed}/{total} photos"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = open_library(killed)
    assert _photo_count(db_file) == total
    ref_faces, got_faces = rel_faces(reference, root), rel_faces(resumed, root)
    assert got_faces.keys() == ref_faces.keys()
    for path, boxes in ref_faces.items():
        assert len(got_faces[path]) == len(boxes), path
        np.testing.assert_allclose(
            np.array(got_faces[path]).reshape(-1, 4), np.array(boxes).reshape(-1, 4), atol=1.0
        )
    with sqlite3.connect(db_file) as con:
        assert (
            con.execute(
                "select count(*) from library_faces f left join library_photos p on p.id = f.photo_id "
                "where p.id is null"
            ).fetchone()[0]
            == 0
        )
        mismatched = con.execute(
            "select count(*) from library_photos p where face_count != "
            "(select count(*) from library_faces f where f.photo_id = p.id)"
        ).fetchone()[0]
        assert mismatched == 0


def embeddings_by_photo(db, root: Path) -> dict[str, list[tuple[np.ndarray, str]]]:
    """relative path -> (embedding, pack) of its faces, in the order of their sorted boxes."""
    from sqlalchemy import select

    from faceatlas.library.tables import Face, Photo

    out: dict[str, list] = {}
    with db.session() as s:
        for path, *box, blob, pack in s.execute(
            select(
                Photo.path, Face.x_min, Face.y_min, Face.x_max, Face.y_max, Face.embedding, Face.pack
            ).join(Photo, Photo.id == Face.photo_id)
        ):
            out.setdefault(str(Path(path).relative_to(root)), []).append((tuple(box), blob, pack))
    return {
        k: [(np.frombuffer(b, np.float32), p) for _, b, p in sorted(v, key=lambda t: t[0])]
        for k, v in out.items()
    }


@pytest.mark.parametrize("embed_in_workers", [False, True], ids=["embed-in-main", "embed-in-workers"])
def test_detect_in_workers_gives_the_same_faces(engine, photo_tree, tmp_path, embed_in_workers):
    in_main = open_library(tmp_path / "main")
    in_workers = open_library(tmp_path / "workers")
    index_library(in_main, engine, [photo_tree], options=IndexOptions(workers=1, detect_in_workers=False))
    options = IndexOptions(workers=2, detect_in_workers=True, embed_in_workers=embed_in_workers)
    report = index_library(in_workers, engine, [photo_tree], options=options)
    assert report.faces == sum(EXPECTED.values()) and len(report.errors) == len(BAD)
    assert report.stage_seconds["detect"] > 0 and report.stage_seconds["embed"] > 0
    a, b = rel_faces(in_main, photo_tree), rel_faces(in_workers, photo_tree)
    assert a.keys() == b.keys()
    for path, boxes in a.items():
        np.testing.assert_allclose(np.array(b[path]).reshape(-1, 4), np.array(boxes).reshape(-1, 4), atol=1.0)
    ea, eb = embeddings_by_photo(in_main, photo_tree), embeddings_by_photo(in_workers, photo_tree)
    assert ea.keys() == eb.keys()
    for path, faces in ea.items():
        for (vector, pack), (other, other_pack) in zip(faces, eb[path], strict=True):
            assert pack == other_pack == engine.pack.id
            assert float(vector @ other) > 0.99, path
    sizes = "SELECT width, height FROM library_photos ORDER BY width, height"
    with in_main.engine.connect() as a_conn, in_workers.engine.connect() as b_conn:
        assert a_conn.exec_driver_sql(sizes).all() == b_conn.exec_driver_sql(sizes).all()


def test_default_placement_runs_whole_photos_in_one_worker_per_core() -> None:
    assert placement(IndexOptions(), accelerated=False) == (True, True)
    assert placement(IndexOptions(), accelerated=True) == (False, False)
    assert placement(IndexOptions(detect_in_workers=True, embed_in_workers=False)) == (True, False)
    assert split_for(IndexOptions(), cores=2) == (2, 1)
    assert split_for(IndexOptions(), accelerated=True, cores=8) == (7, 1)
    assert split_for(IndexOptions(workers=3), cores=2) == (3, 1)
