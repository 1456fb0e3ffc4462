"""The library path on every photo of LFW-dev: index all 6,922 photos into one library, cluster, score.

    PYTHONPATH=src python benchmarks/cluster_lfw_library.py [--work DIR]

Unlike ``faceatlas eval cluster --distractors`` (main faces only), the library holds every detected face,
background people included. Scores are computed on each photo's main face: the face centred nearest to
(125, 125), where LFW centres its subject. Runs: a single run at quality gates 0 and 0.3, an incremental
run (faces of a random half of the photos first, then the rest), and a rebuild after it. Writes
``benchmarks/results/cluster_lfw_library.json``. The indexed library is kept in ``--work`` and reused.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, machine, write_result


def main_faces(db: Any) -> tuple[np.ndarray, np.ndarray]:
    from sqlalchemy import select

    from faceatlas.library.tables import Face, Photo

    with db.session() as s:
        rows = s.execute(
            select(Face.id, Photo.path, Face.x_min, Face.y_min, Face.x_max, Face.y_max).join(Photo)
        ).all()
    best: dict[str, tuple[float, int]] = {}
    for face_id, path, x0, y0, x1, y1 in rows:
        off = ((x0 + x1) / 2 - 125) ** 2 + ((y0 + y1) / 2 - 125) ** 2
        if path not in best or off < best[path][0]:
            best[path] = (off, face_id)
    paths = sorted(best)
    names = np.array([Path(p).name.rsplit("_", 1)[0] for p in paths])
    return np.array([best[p][1] for p in paths]), names


def scores(db: Any, face_ids: np.ndarray, names: np.ndarray) -> dict[str, Any]:
    from sqlalchemy import select

    from faceatlas.evaluation.cluster_metrics import distractor_scores
    from faceatlas.library.tables import Face

    with db.session() as s:
        person = dict(s.execute(select(Face.id, Face.person_id)).all())
    predicted = np.array([-1 if person[f] is None else person[f] for f in face_ids])
    return distractor_scores(predicted, names).to_dict()


def copy_library(source: Path, target: Path) -> Path:
    with sqlite3.connect(source) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(source, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/faceatlas-lfw-library"))
    args = parser.parse_args()

    from sqlalchemy import select, update

    from faceatlas.engine import Engine
    from faceatlas.library.clustering import ClusterOptions, cluster_library
    from faceatlas.library.pipeline import IndexOptions, index_library
    from faceatlas.library.store import open_library
    from faceatlas.library.tables import Face, Photo

    work = args.work
    photos = work / "photos"
    indexed = work / "index.db"
    result: dict[str, Any] = {"machine": machine()}
    if not indexed.exists():
        photos.mkdir(parents=True, exist_ok=True)
        for image in sorted((SHARED / "data" / "lfw-dev" / "images").glob("*/*.jpg")):
            link = photos / image.name
            if not link.exists():
                link.symlink_to(image)
        started = time.perf_counter()
        report = index_library(open_library(indexed), Engine("sface"), [photos], options=IndexOptions())
        result["index"] = {
            "photos": report.indexed,
            "faces": report.faces,
            "seconds": time.perf_counter() - started,
        }
    pack = "sface"
    runs: dict[str, Any] = {}
    for gate in (0.0, 0.3):
        db = open_library(copy_library(indexed, work / f"single-{gate}.db"))
        face_ids, names = main_faces(db)
        report = cluster_library(db, pack, ClusterOptions.for_pack(pack, min_quality=gate))
        runs[f"single_gate_{gate}"] = {
            "faces": report.faces,
            "eligible": report.eligible,
            "threshold": report.threshold,
            **scores(db, face_ids, names),
        }
    db = open_library(copy_library(indexed, work / "incremental.db"))
    face_ids, names = main_faces(db)
    with db.session() as s:
        photo_ids = np.array(s.scalars(select(Photo.id).order_by(Photo.id)).all())
        later = photo_ids[np.random.default_rng(0).random(photo_ids.size) < 0.5].tolist()
        for start in range(0, len(later), 500):
            s.execute(update(Face).where(Face.photo_id.in_(later[start : start + 500])).values(pack="later"))
    options = ClusterOptions.for_pack(pack)
    first = cluster_library(db, pack, options)
    with db.session() as s:
        s.execute(update(Face).where(Face.pack == "later").values(pack=pack))
    started = time.perf_counter()
    second = cluster_library(db, pack, options)
    runs["incremental"] = {
        "threshold_first": first.threshold,
        "threshold_second": second.threshold,
        "joined_existing": second.joined_existing,
        "new_people": second.new_people,
        "seconds": time.perf_counter() - started,
        **scores(db, face_ids, names),
    }
    cluster_library(db, pack, options, rebuild=True)
    runs["rebuild_after_incremental"] = scores(db, face_ids, names)
    result["runs"] = runs
    path = write_result("cluster_lfw_library", result)
    print(path)
    for name, run in runs.items():
        overall = run["overall"]
        print(
            f"{name}: P={overall['bcubed_precision']:.4f} R={overall['bcubed_recall']:.4f} "
            f"clusters={overall['clusters']} fake={run['fake_people']} ({run['fake_people_share']:.2%}) "
            f"strangers in a person={run['strangers_in_a_person']}/{run['strangers']} "
            f">=5: P={run['frequent_bcubed_precision']:.4f} R={run['frequent_bcubed_recall']:.4f}"
        )


if __name__ == "__main__":
    main()
