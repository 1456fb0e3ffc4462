"""The Ray Data indexer on a local Ray: same library content as the local pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from faceatlas.library.pipeline import IndexOptions, index_library
from faceatlas.library.store import open_library

ray = pytest.importorskip("ray", reason="ray[data] is an optional extra (pip install 'faceatlas[ray]')")


def boxes_by_name(db) -> dict[str, np.ndarray]:
    from sqlalchemy import select

    from faceatlas.library.tables import Face, Photo

    out: dict[str, list] = {}
    with db.session() as s:
        for path, *box in s.execute(
            select(Photo.path, Face.x_min, Face.y_min, Face.x_max, Face.y_max).join(
                Photo, Photo.id == Face.photo_id
            )
        ):
            out.setdefault(Path(path).name, []).append(box)
    return {k: np.array(sorted(v)) for k, v in out.items()}


def test_ray_index_matches_local_index(engine, shared, photos, tmp_path):
    from faceatlas.library.ray_index import index_library_ray

    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    lfw = shared / "data" / "lfw-dev" / "images"
    for person in ("Tony_Blair", "Colin_Powell"):
        for image in sorted((lfw / person).iterdir())[:5]:
            shutil.copy(image, root / "nested" / image.name)
    shutil.copy(photos / "face_recognition_examples/examples/two_people.jpg", root / "two_people.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")

    options = IndexOptions(workers=1, batch_size=4)
    local_db = open_library(tmp_path / "local")
    index_library(local_db, engine, [root], options=options)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray_db = open_library(tmp_path / "ray")
        report = index_library_ray(ray_db, engine, [root], options=options)
        again = index_library_ray(ray_db, engine, [root], options=options)
    finally:
        ray.shutdown()
    assert report.indexed == 12 and [Path(p).name for p, _ in report.errors] == ["broken.jpg"]
    assert report.faces == sum(len(v) for v in boxes_by_name(local_db).values())
    assert again.indexed == 0 and again.skipped == 12
    local, remote = boxes_by_name(local_db), boxes_by_name(ray_db)
    assert local.keys() == remote.keys() and len(local["two_people.jpg"]) == 2
    for name, boxes in local.items():
        np.testing.assert_allclose(remote[name], boxes, atol=1.0)
