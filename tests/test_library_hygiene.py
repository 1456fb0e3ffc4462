"""Library hygiene on real photos: moved and deleted photos, merges across a cannot-link, a missing library,
Ctrl-C / SIGKILL during ``index``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from faceatlas.cli.main import cli
from faceatlas.library.clustering import ClusterOptions, cluster_library, list_faces
from faceatlas.library.people import list_people, rename_person, resolve_person
from faceatlas.library.pipeline import IndexOptions, index_library
from faceatlas.library.scan import FileEntry
from faceatlas.library.store import open_library
from faceatlas.library.tables import Face, Person, Photo
from faceatlas.library.writer import LibraryWriter, PhotoResult, prune_photos
from tests.test_library_people import make_face

SRC = Path(__file__).resolve().parents[1] / "src"


def lfw_people(shared: Path, people: int, photos: int) -> list[list[Path]]:
    chosen = [
        d
        for d in sorted((shared / "data" / "lfw-dev" / "images").iterdir())
        if len(list(d.iterdir())) >= photos
    ]
    return [sorted(d.iterdir())[:photos] for d in chosen[:people]]


@pytest.fixture()
def small_library(engine, shared: Path, tmp_path: Path):
    """Three LFW people with 5 photos each, copied into a folder, indexed and clustered."""
    root = tmp_path / "photos"
    for person in lfw_people(shared, 3, 5):
        folder = root / person[0].parent.name
        folder.mkdir(parents=True)
        for image in person:
            shutil.copy(image, folder / image.name)
    db = open_library(tmp_path / "lib")
    index_library(db, engine, [root], options=IndexOptions(workers=1))
    cluster_library(db, engine.pack.id, ClusterOptions.for_pack(engine.pack.id))
    return db, root


def people_of(db) -> dict[str, set[int | None]]:
    """photo file name -> person ids of its faces."""
    with db.session() as s:
        rows = s.execute(select(Photo.path, Face.person_id).join(Face, Face.photo_id == Photo.id)).all()
    out: dict[str, set[int | None]] = {}
    for path, person in rows:
        out.setdefault(Path(path).name, set()).add(person)
    return out


def test_quality_is_measured_and_stored(small_library):
    db, _ = small_library
    with db.session() as s:
        qualities = list(s.scalars(select(Face.quality)))
    assert qualities and all(q is not None and 0.0 <= q <= 1.0 for q in qualities)
    # LFW subjects are sharp, frontal and large: most score high
    assert np.median(qualities) > 0.5


def test_a_moved_photo_keeps_its_faces_and_people(engine, small_library, tmp_path):
    db, root = small_library
    assert len(list_people(db)) == 3
    before = people_of(db)
    photo = sorted(root.rglob("*.jpg"))[0]
    with db.session() as s:
        face_ids = sorted(s.scalars(select(Face.id).join(Photo).where(Photo.path == str(photo.resolve()))))
    moved = root / "elsewhere" / f"renamed-{photo.name}"
    moved.parent.mkdir()
    photo.rename(moved)
    report = index_library(db, engine, [root], options=IndexOptions(workers=1))
    assert report.moved == 1 and report.indexed == 0 and report.faces == 0 and report.missing == []
    with db.session() as s:
        assert (
            sorted(s.scalars(select(Face.id).join(Photo).where(Photo.path == str(moved.resolve()))))
            == face_ids
        )
        assert (
            s.scalar(select(func.count()).select_from(Photo).where(Photo.path == str(photo.resolve()))) == 0
        )
    after = people_of(db)
    assert after[moved.name] == before[photo.name] and None not in after[moved.name]
    cluster_library(db, engine.pack.id, ClusterOptions.for_pack(engine.pack.id))
    assert people_of(db)[moved.name] == before[photo.name]


def test_a_deleted_photo_is_reported_then_pruned(engine, small_library):
    db, root = small_library
    person_folder = sorted(p for p in root.iterdir() if p.is_dir())[0]
    victims = sorted(person_folder.iterdir())
    with db.session() as s:
        person = s.scalar(select(Face.person_id).join(Photo).where(Photo.path == str(victims[0].resolve())))
    assert person is not None
    victims[0].unlink()
    report = index_library(db, engine, [root], options=IndexOptions(workers=1))
    assert report.missing == [str(victims[0].resolve())]
    with db.session() as s:  # reported only: nothing is forgotten yet
        assert s.scalar(select(func.count()).select_from(Photo)) == 15
    result = CliRunner().invoke(
        cli, ["index", str(root), "--library", str(db.url.split("///")[-1]), "--prune"]
    )
    assert result.exit_code == 0, result.output
    assert "pruned 1 deleted photos" in result.output
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Photo)) == 14
        assert s.scalar(select(func.count()).select_from(Face).where(Face.person_id == person)) == 4
    # the rest of that person's photos go too: the unnamed, empty person disappears
    for image in victims[1:]:
        image.unlink()
    missing = index_library(db, engine, [root], options=IndexOptions(workers=1)).missing
    pruned = prune_photos(db, missing)
    assert pruned.photos == 4 and pruned.removed_people == 1
    with db.session() as s:
        assert s.get(Person, person) is None
    assert len(list_people(db)) == 2


def test_a_merge_across_a_cannot_link_says_which_faces_and_why(tmp_path):
    db = open_library(tmp_path / "lib")
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 32))
    photos = [[a + rng.normal(scale=0.05, size=32)] for _ in range(4)]
    photos += [[b + rng.normal(scale=0.05, size=32)] for _ in range(4)]
    photos.append(
        [a + rng.normal(scale=0.05, size=32), b + rng.normal(scale=0.05, size=32)]
    )  # both in one photo
    writer = LibraryWriter(db)
    writer.write(
        [
            PhotoResult(
                FileEntry(f"/p/{i}.jpg", 1, 1.0),
                f"h{i}",
                faces=[make_face(v, x=60.0 * k) for k, v in enumerate(vs)],
                pack="synthetic",
            )
            for i, vs in enumerate(photos)
        ]
    )
    cluster_library(db, "synthetic", ClusterOptions(threshold=0.5, min_face_size=10))
    first, second = list_people(db)
    assert first.faces == second.faces == 5

    rename_person(db, first.id, "Ann")
    runner = CliRunner()
    result = runner.invoke(
        cli, ["person", "ann", "merge", str(second.id), "--library", str(tmp_path / "lib")]
    )
    assert result.exit_code == 0, result.output
    with db.session() as s:
        shared_photo = s.scalar(select(Photo.id).where(Photo.path == "/p/8.jpg"))
        blocked = s.scalar(select(Face.id).where(Face.photo_id == shared_photo, Face.person_id.is_(None)))
    assert blocked is not None
    assert f"face {blocked} was not moved" in result.output
    assert "/p/8.jpg" in result.output and "two faces of one photo" in result.output
    assert [(p.name, p.faces) for p in list_people(db)] == [("Ann", 9)]
    # the blocked face is what `faceatlas faces --unassigned` lists
    assert {f.face_id for f in list_faces(db, unassigned=True)} == {blocked}


def test_person_names_are_case_insensitive(tmp_path):
    db = open_library(tmp_path / "lib")
    with db.session() as s:
        s.add(Person(name="Grace Hopper"))
    with db.session() as s:
        assert resolve_person(s, "grace HOPPER").name == "Grace Hopper"
    with db.session() as s:
        other = Person()
        s.add(other)
        s.flush()
        other_id = other.id
    from faceatlas.library.people import DecisionError

    with pytest.raises(DecisionError):
        rename_person(db, other_id, "GRACE hopper")


@pytest.mark.parametrize(
    "command", [["people"], ["cluster"], ["export"], ["faces", "--unassigned"], ["person", "1", "photos"]]
)
def test_a_missing_library_is_an_error(tmp_path, command):
    missing = tmp_path / "nope" / "library.db"
    result = CliRunner().invoke(cli, [*command, "--library", str(missing)])
    assert result.exit_code == 2  # a refusal, like every other (tests/test_cli_errors.py)
    assert "no library at" in result.output
    assert not missing.exists() and not missing.parent.exists()


def lfw_links(shared: Path, tmp_path: Path) -> Path:
    """A folder of 240 LFW photos (links): long enough to index that a signal lands mid-run."""
    root = tmp_path / "photos"
    root.mkdir()
    for person in lfw_people(shared, 40, 6):
        for image in person:
            (root / image.name).symlink_to(image)
    return root


def index_command(root: Path, library: Path, *options: str) -> tuple[list[str], dict[str, str]]:
    """``faceatlas index ROOT --library LIBRARY OPTIONS`` as a subprocess command line and environment."""
    cmd = [sys.executable, "-c", "from faceatlas.cli.main import main; main()", "index", str(root)]
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return [*cmd, "--library", str(library), *options], env


def _photo_count(db_file: Path) -> int:
    import sqlite3

    if not db_file.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=1) as con:
            return int(con.execute("select count(*) from library_photos").fetchone()[0])
    except sqlite3.Error:
        return 0


def session_processes(session_id: int) -> list[int]:
    """Pids of live (not zombie) processes in a session."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, sid = fields[0], int(fields[3])
        if sid == session_id and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_index_leaves_no_worker_behind(shared, tmp_path):
    root = lfw_links(shared, tmp_path)
    cmd, env = index_command(root, tmp_path / "lib", "--workers", "2")
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        # photos committed: the decode workers are up and working
        while _photo_count(tmp_path / "lib" / "library.db") < 4 and time.monotonic() < deadline:
            assert proc.poll() is None, "index ended before it could be killed"
            time.sleep(0.05)
        assert len(session_processes(proc.pid)) >= 3, "expected the indexer and its two workers"
        proc.send_signal(signal.SIGKILL)  # the indexer only, as the OOM killer or `kill -9 PID` would
        proc.wait()
        deadline = time.monotonic() + 5
        while session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = session_processes(proc.pid)
        assert left == [], f"processes left after the indexer was killed: {left}"
    finally:
        for pid in session_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals a process group")
def test_ctrl_c_during_index_says_how_to_resume(shared, tmp_path):
    root = lfw_links(shared, tmp_path)
    cmd, env = index_command(root, tmp_path / "lib", "--workers", "1")
    proc = subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a test run started in the background (`pytest &`, CI scripts) ignores
        # SIGINT, and an ignored SIGINT is inherited, so the index would never see the Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        # mid-run: photos committed and the worker up, or a quarter of the photos done whatever the worker
        while time.monotonic() < deadline:
            assert proc.poll() is None, "index ended before it could be interrupted"
            committed = _photo_count(tmp_path / "lib" / "library.db")
            if committed >= 60 or (committed >= 4 and len(session_processes(proc.pid)) >= 2):
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert "Run the same command again to resume" in err
    assert str(root) in err


def test_hidden_people_and_manual_assignments_survive_rebuild(tmp_path):
    from sqlalchemy import update

    from faceatlas.library.people import assign_face, hide_person

    db = open_library(tmp_path / "lib")
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 32))
    photos = [[a + rng.normal(scale=0.05, size=32)] for _ in range(5)]
    photos += [[b + rng.normal(scale=0.05, size=32)] for _ in range(5)]
    LibraryWriter(db).write(
        [
            PhotoResult(FileEntry(f"/p/{i}.jpg", 1, 1.0), f"h{i}", faces=[make_face(v)], pack="synthetic")
            for i, vs in enumerate(photos)
            for v in vs
        ]
    )
    with db.session() as s:
        blurred = s.scalar(select(Face.id).order_by(Face.id.desc()))  # a face of person b ...
        s.execute(update(Face).where(Face.id == blurred).values(quality=0.05))  # ... below the gate
    options = ClusterOptions(threshold=0.5, min_face_size=10, min_quality=0.3)
    cluster_library(db, "synthetic", options)
    first, second = list_people(db)
    assert (first.faces, second.faces) == (5, 4)  # the low-quality face joined nobody
    hide_person(db, second.id)
    assign_face(db, blurred, second.id)  # by hand, a below-gate face can be assigned
    for rebuild in (True, False, True):
        cluster_library(db, "synthetic", options, rebuild=rebuild)
        with db.session() as s:
            assert s.get(Face, blurred).person_id == second.id
            hidden = s.get(Person, second.id)
            assert hidden is not None and hidden.hidden
        assert sorted(p.faces for p in list_people(db)) == [5, 5]
