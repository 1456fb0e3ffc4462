"""A real ``faceatlas serve`` process driven by the official CompreFace SDK and by concurrent clients;
restarts; two server processes on one PostgreSQL database."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import (
    EXAMPLES,
    LiveServer,
    drop_postgres_database,
    fresh_postgres_url,
    sdk_python,
    subprocess_env,
)

SDK_SCRIPT = r"""
import json, sys
from compreface import CompreFace

port, rec_key, det_key, ver_key, examples = sys.argv[1:6]
cf = CompreFace("http://127.0.0.1", port, {"limit": 0, "det_prob_threshold": 0.8, "prediction_count": 1,
                                           "status": "true"})
recognition = cf.init_face_recognition(rec_key)
faces = recognition.get_face_collection()
subjects = recognition.get_subjects()
out = {}
out["add"] = [faces.add(image_path=f"{examples}/{name}", subject=subject)
              for name, subject in (("obama.jpg", "Obama"), ("obama2.jpg", "Obama"), ("biden.jpg", "Biden"))]
out["list"] = faces.list()
out["recognize"] = recognition.recognize(
    image_path=f"{examples}/two_people.jpg",
    options={"prediction_count": 2, "face_plugins": "age,gender", "status": "true"})
out["verify"] = faces.verify(image_path=f"{examples}/obama_small.jpg", image_id=out["add"][0]["image_id"])
out["subjects_list"] = subjects.list()
out["subjects_add"] = subjects.add("Nobody")
out["subjects_rename"] = subjects.update("Biden", "Joe")
out["subjects_after_rename"] = subjects.list()
out["subjects_delete"] = subjects.delete("Nobody")
out["delete_one"] = faces.delete(out["add"][1]["image_id"])
detection = cf.init_face_detection(det_key)
out["detect"] = detection.detect(image_path=f"{examples}/obama.jpg",
                                 options={"face_plugins": "age,gender,landmarks", "status": "true"})
verification = cf.init_face_verification(ver_key)
out["verification"] = verification.verify(source_image_path=f"{examples}/obama.jpg",
                                          target_image_path=f"{examples}/two_people.jpg")
out["delete_all"] = faces.delete_all("Obama")
out["list_after"] = faces.list()
out["subjects_delete_all"] = subjects.delete_all()
out["subjects_final"] = subjects.list()
print(json.dumps(out))
"""


@pytest.fixture(scope="module", params=["exact", "hnsw", "pgvector"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The official SDK and the restart test run once per face-index backend."""
    database = None
    if request.param == "pgvector":
        database = fresh_postgres_url("live", "FACEATLAS_TEST_PGVECTOR")
        if database is None:
            pytest.skip("FACEATLAS_TEST_PGVECTOR is not set (CI sets it)")
    live = LiveServer(tmp_path_factory.mktemp("live"), database=database, extra=("--index", request.param))
    live.keys = {t: live.create_service(t, t) for t in ("recognition", "detection", "verification")}  # type: ignore[attr-defined]
    try:
        with live:
            yield live
    finally:
        if database is not None:
            drop_postgres_database(database, "FACEATLAS_TEST_PGVECTOR")


def test_official_sdk_drives_the_server(server: LiveServer, shared: Path) -> None:
    keys = server.keys  # type: ignore[attr-defined]
    done = subprocess.run(
        [
            str(sdk_python()),
            "-c",
            SDK_SCRIPT,
            str(server.port),
            keys["recognition"],
            keys["detection"],
            keys["verification"],
            str(shared / EXAMPLES),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)

    assert [a["subject"] for a in out["add"]] == ["Obama", "Obama", "Biden"]
    assert len({a["image_id"] for a in out["add"]}) == 3
    assert out["list"]["total_elements"] == 3
    assert {f["image_id"] for f in out["list"]["faces"]} == {a["image_id"] for a in out["add"]}

    result = out["recognize"]["result"]
    assert len(result) == 2 and "plugins_versions" in out["recognize"]
    by_side = sorted(result, key=lambda face: face["box"]["x_min"])  # two_people.jpg: Obama left, Biden right
    assert by_side[0]["subjects"][0]["subject"] == "Obama" and by_side[1]["subjects"][0]["subject"] == "Biden"
    assert [s["subject"] for s in by_side[0]["subjects"]] == ["Obama", "Obama"]  # examples, not subjects
    assert by_side[1]["subjects"][0]["similarity"] > 0.9 > by_side[1]["subjects"][1]["similarity"]
    for face in result:
        assert face["subjects"][0]["similarity"] > 0.9
        assert face["gender"]["value"] == "male" and "execution_time" in face

    verify = out["verify"]["result"]
    assert verify[0]["subject"] == "Obama" and verify[0]["similarity"] > 0.9

    assert sorted(out["subjects_list"]["subjects"]) == ["Biden", "Obama"]
    assert out["subjects_add"] == {"subject": "Nobody"}
    assert out["subjects_rename"] == {"updated": True}
    assert sorted(out["subjects_after_rename"]["subjects"]) == ["Joe", "Nobody", "Obama"]
    assert out["subjects_delete"] == {"subject": "Nobody"}
    assert out["delete_one"] == {"image_id": out["add"][1]["image_id"], "subject": "Obama"}

    detected = out["detect"]["result"]
    assert len(detected) == 1 and len(detected[0]["landmarks"]) == 5
    assert (
        detected[0]["gender"]["value"] == "male"
        and 20 <= detected[0]["age"]["low"] <= detected[0]["age"]["high"]
    )
    assert set(out["detect"]["plugins_versions"]) >= {"detector", "age", "gender", "landmarks"}

    matches = out["verification"]["result"][0]["face_matches"]
    assert len(matches) == 2 and matches[0]["similarity"] > 0.9 > matches[1]["similarity"]
    assert "box" in out["verification"]["result"][0]["source_image_face"]

    assert out["delete_all"] == {"deleted": 1}
    assert [f["subject"] for f in out["list_after"]["faces"]] == ["Joe"]
    assert out["subjects_delete_all"] == {"deleted": 2}
    assert out["subjects_final"] == {"subjects": []}


def test_concurrent_writers_lose_nothing_and_restart_keeps_collections(
    server: LiveServer, shared: Path
) -> None:
    examples = shared / EXAMPLES
    photos = [(examples / n).read_bytes() for n in ("obama-240p.jpg", "obama_small.jpg", "obama-480p.jpg")]
    key = {"x-api-key": server.keys["recognition"]}  # type: ignore[attr-defined]
    url = server.url + "/api/v1/recognition"
    added: dict[str, str] = {}
    deleted: set[str] = set()
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 30

    def worker(n: int) -> None:
        rng = random.Random(n)
        mine: list[str] = []
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop_at:
                if mine and rng.random() < 0.4:
                    image_id = mine.pop(rng.randrange(len(mine)))
                    r = client.delete(f"{url}/faces/{image_id}", headers=key)
                    with lock:
                        if r.status_code == 200 and r.json()["image_id"] == image_id:
                            deleted.add(image_id)
                        else:
                            failures.append(f"delete {r.status_code} {r.text}")
                else:
                    subject = f"worker{n}"
                    r = client.post(
                        f"{url}/faces?subject={subject}",
                        files={"file": ("f.jpg", rng.choice(photos), "image/jpeg")},
                        headers=key,
                    )
                    with lock:
                        if r.status_code == 201:
                            added[r.json()["image_id"]] = subject
                            mine.append(r.json()["image_id"])
                        else:
                            failures.append(f"add {r.status_code} {r.text}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    expected = {image_id: s for image_id, s in added.items() if image_id not in deleted}
    assert len(added) > 50 and deleted
    print(f"16 writers: {len(added)} faces added, {len(deleted)} deleted, {len(expected)} left")

    def stored(live: LiveServer) -> dict[str, str]:
        page = httpx.get(f"{live.url}/api/v1/recognition/faces?size=100000", headers=key, timeout=30).json()
        return {f["image_id"]: f["subject"] for f in page["faces"]}

    def searchable(live: LiveServer) -> set[str]:
        r = httpx.post(
            f"{live.url}/api/v1/recognition/recognize?prediction_count=-1",
            files={"file": ("f.jpg", photos[0], "image/jpeg")},
            headers=key,
            timeout=30,
        )
        return {s["image_id"] for s in r.json()["result"][0]["subjects"]}

    assert stored(server) == expected
    assert searchable(server) == set(expected)  # the in-memory matrix agrees with the database

    server.stop()
    server.start()
    assert stored(server) == expected
    assert searchable(server) == set(expected)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    url = fresh_postgres_url("live")
    if url is None:
        pytest.skip("FACEATLAS_TEST_POSTGRES is not set (CI sets it)")
    yield url
    drop_postgres_database(url)


def test_two_servers_on_one_postgres_database_see_each_others_writes(
    postgres_url: str, tmp_path: Path, shared: Path
) -> None:
    examples = shared / EXAMPLES
    a = LiveServer(tmp_path / "a", database=postgres_url, extra=("--workers", "2"))
    b = LiveServer(tmp_path / "b", database=postgres_url)
    key = {"x-api-key": a.create_service("shared", "recognition")}
    photo = {"file": ("obama2.jpg", (examples / "obama2.jpg").read_bytes(), "image/jpeg")}

    def top(live: LiveServer) -> list[dict]:
        r = httpx.post(f"{live.url}/api/v1/recognition/recognize", files=photo, headers=key, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["result"][0]["subjects"]

    with a, b:
        assert top(b) == []
        r = httpx.post(
            f"{a.url}/api/v1/recognition/faces?subject=obama",
            files={"file": ("obama.jpg", (examples / "obama.jpg").read_bytes(), "image/jpeg")},
            headers=key,
            timeout=30,
        )
        assert r.status_code == 201
        image_id = r.json()["image_id"]
        # B polls the version log at most every 0.2 s, so one second later any request there sees the face
        time.sleep(1.0)
        found = top(b)
        assert found[0]["image_id"] == image_id and found[0]["similarity"] > 0.9
        # and back: a delete through B disappears from both of A's worker processes
        assert httpx.delete(f"{b.url}/api/v1/recognition/faces/{image_id}", headers=key).status_code == 200
        time.sleep(1.0)
        assert all(top(a) == [] for _ in range(4))


def test_serve_prints_how_to_get_started(tmp_path: Path) -> None:
    live = LiveServer(tmp_path)
    with live:
        pass
    text = live.log.read_text()
    assert f"http://127.0.0.1:{live.port}/api/v1" in text
    assert "faceatlas services create --name NAME --type recognition" in text
    env = subprocess_env()
    assert env["PYTHONPATH"]
