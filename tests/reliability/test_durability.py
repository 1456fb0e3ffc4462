"""Durability: ``kill -9`` while clients write loses no acknowledged face (SQLite and PostgreSQL), and a
soak of mixed requests keeps the server's resident memory flat."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.api_helpers import drop_postgres_database, fresh_postgres_url
from tests.reliability.conftest import Server, start_server
from tests.reliability.support import Figures, KeepAlive, multipart, rss_mb

WRITERS = 4


def add_until_killed(server: Server, figures: Figures, image: bytes, acknowledged: list[str]) -> None:
    client = KeepAlive(server.url, Figures())  # the requests cut by the kill are expected failures
    body, headers = multipart({"file": ("obama.jpg", image)})
    while True:
        try:
            answer = client.request(
                "POST", "/api/v1/recognition/faces?subject=durable", body, {**server.key, **headers}
            )
        except OSError:
            return
        figures.count(answer.status)
        if answer.status != 201:
            return
        acknowledged.append(answer.json()["image_id"])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_during_writes_loses_no_acknowledged_face(
    backend: str, tmp_path: Path, figures: Figures, face_images: dict[str, bytes]
) -> None:
    url = None
    if backend == "postgresql":
        url = fresh_postgres_url("kill9")
        if url is None:
            pytest.skip("FACEATLAS_TEST_POSTGRES is not set (CI sets it)")
    try:
        server = start_server(tmp_path, url)
        acknowledged: list[str] = []
        writers = [
            threading.Thread(
                target=add_until_killed, args=(server, figures, face_images["obama"], acknowledged)
            )
            for _ in range(WRITERS)
        ]
        for writer in writers:
            writer.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        for writer in writers:
            writer.join(timeout=60)
        assert len(acknowledged) >= 12

        server.process = None
        server.start()
        listed = KeepAlive(server.url, figures).request(
            "GET", "/api/v1/recognition/faces?subject=durable&size=10000", headers=server.key
        )
        stored = {face["image_id"] for face in listed.json()["faces"]}
        lost = [image_id for image_id in acknowledged if image_id not in stored]
        figures.lost_writes += len(lost)
        figures.note(f"kill_9_{backend}", {"acknowledged": len(acknowledged), "lost": len(lost)})
        assert not lost
        server.stop()
    finally:
        if url is not None:
            drop_postgres_database(url)


def test_soak_keeps_memory_flat(server: Server, figures: Figures, face_images: dict[str, bytes]) -> None:
    key = server.new_key()
    client = KeepAlive(server.url, figures)
    image, headers = multipart({"file": ("obama.jpg", face_images["obama"])})
    other, _ = multipart({"file": ("biden.jpg", face_images["biden"])})

    def one_round(i: int) -> None:
        if i % 25 == 0:
            answer = client.request("POST", "/api/v1/recognition/recognize", other, {**key, **headers})
        elif i % 25 == 1:
            answer = client.request(
                "POST", f"/api/v1/recognition/faces?subject=s{i % 7}", image, {**key, **headers}
            )
        elif i % 5 == 2:
            answer = client.request("GET", "/api/v1/recognition/faces?size=50", headers=key)
        elif i % 5 == 3:
            answer = client.request(
                "POST",
                "/api/v1/recognition/subjects",
                b"{" * (i % 300),
                {**key, "Content-Type": "application/json"},
            )
        else:
            answer = client.request(
                "GET", f"/api/v1/recognition/faces?page=99999999999999999999{i}", headers=key
            )
        assert answer.status < 500

    for i in range(300):  # warm up: caches, the collection, malloc arenas
        one_round(i)
    before = rss_mb(server.pid)
    for i in range(300, 1500):
        one_round(i)
    after = rss_mb(server.pid)
    figures.rss(after)
    figures.note(
        "soak", {"requests": 1500, "rss_after_warmup_mb": round(before, 1), "rss_end_mb": round(after, 1)}
    )
    assert after - before < 40
    assert client.dropped == 0
