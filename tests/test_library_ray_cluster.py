"""``faceatlas index --ray ADDRESS`` on a real two-node Ray cluster (tests/ray_cluster.py), library on
PostgreSQL: a worker process killed mid-job is retried by Ray and the library ends identical to a
local run (no duplicate, no missing face)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from faceatlas.library.pipeline import IndexOptions, index_library
from faceatlas.library.store import open_library
from faceatlas.library.tables import Face, Photo
from tests.api_helpers import drop_postgres_database, fresh_postgres_url
from tests.ray_cluster import RayCluster, can_make_namespaces
from tests.test_library_ray import boxes_by_name

pytestmark = pytest.mark.slow
PHOTOS = 120


@pytest.fixture
def library_url() -> object:
    url = fresh_postgres_url("raycluster")
    if url is None:
        pytest.skip("FACEATLAS_TEST_POSTGRES is not set (CI sets it)")
    yield url
    drop_postgres_database(url)


def lfw_folder(shared: Path, target: Path, count: int) -> Path:
    images = sorted((shared / "data" / "lfw-dev" / "images").glob("*/*.jpg"))[:count]
    target.mkdir(parents=True)
    for image in images:
        shutil.copy(image, target / image.name)
    return target


def test_two_node_cluster_survives_a_killed_worker(engine, shared, tmp_path, library_url) -> None:  # type: ignore[no-untyped-def]
    if not can_make_namespaces():
        pytest.skip("a network namespace for the second node needs root and iproute2 (CI runs as root)")
    root = lfw_folder(shared, tmp_path / "photos", PHOTOS)
    local_db = open_library(tmp_path / "local")
    index_library(local_db, engine, [root], options=IndexOptions(workers=1, batch_size=2, plugins=()))
    expected = boxes_by_name(local_db)

    ray_db = open_library(library_url)
    killed: list[int] = []
    with RayCluster() as cluster:
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faceatlas",
                "index",
                str(root),
                "--library",
                library_url,
                "--batch-size",
                "2",
                "--no-attributes",
                f"--ray={cluster.address}",
                "--json",
            ],
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        output: dict[str, str] = {}
        reader = threading.Thread(
            target=lambda: output.update(zip(("out", "err"), driver.communicate(), strict=False))
        )
        reader.start()
        # once results flow, kill the analysis worker on the second node
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline and driver.poll() is None:
            with ray_db.session() as s:
                done = s.scalar(select(func.count()).select_from(Photo)) or 0
            workers = cluster.workers("node", "MapWorker")
            if done >= 2 and workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
            time.sleep(0.2)
        reader.join(timeout=600)
        if driver.poll() is None:
            driver.kill()
    assert killed, f"no worker on the second node to kill; driver said: {output.get('err', '')[-3000:]}"
    assert driver.returncode == 0, output.get("err", "")[-3000:]
    # the report is the first JSON object on stdout; Ray may log a retry line after it
    report, _ = json.JSONDecoder().raw_decode(output["out"], output["out"].index("{"))
    assert report["indexed"] == PHOTOS and not report["errors"]
    with ray_db.session() as s:
        assert s.scalar(select(func.count()).select_from(Photo)) == PHOTOS
        assert s.scalar(select(func.count()).select_from(Face)) == sum(len(v) for v in expected.values())
    remote = boxes_by_name(ray_db)
    assert remote.keys() == expected.keys()
    for name, boxes in expected.items():
        np.testing.assert_allclose(remote[name], boxes, atol=1.0)
    ray_db.dispose()
