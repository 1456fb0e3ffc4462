"""Raw-HTTP behaviour of the CompreFace API with the real engine (FastAPI TestClient, in process):
Double Take's calls, base64 input, bulk delete, image downloads, extensions beyond CompreFace and
every applicable error row of compreface-api.md §1.5."""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from faceatlas.api.app import create_app
from faceatlas.api.settings import MB, Settings
from faceatlas.engine import Engine
from tests.api_helpers import EXAMPLES, drop_postgres_database, fresh_postgres_url

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture(scope="module")
def images(shared: Path) -> dict[str, bytes]:
    examples = shared / EXAMPLES
    return {
        "obama": (examples / "obama.jpg").read_bytes(),
        "obama2": (examples / "obama2.jpg").read_bytes(),
        "biden": (examples / "biden.jpg").read_bytes(),
        "two": (examples / "two_people.jpg").read_bytes(),
        "noface": (shared / "data/photos/exif-orientation/Landscape_1.jpg").read_bytes(),
    }


@pytest.fixture(scope="module", params=["exact", "hnsw", "pgvector"])
def client(
    request: pytest.FixtureRequest, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """The conformance suite runs once per face-index backend (pgvector on PostgreSQL 18 + pgvector)."""
    database = None
    if request.param == "pgvector":
        database = fresh_postgres_url("api", "FACEATLAS_TEST_PGVECTOR")
        if database is None:
            pytest.skip("FACEATLAS_TEST_PGVECTOR is not set (CI sets it)")
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("api-http"),
        admin_token="admin-secret",
        max_file_size=1 * MB,
        index=request.param,
        database=database,
    )
    try:
        with TestClient(create_app(settings, engine=engine)) as client:
            yield client
    finally:
        if database is not None:
            drop_postgres_database(database, "FACEATLAS_TEST_PGVECTOR")


def new_service(client: TestClient, type_: str = "recognition") -> dict[str, str]:
    r = client.post(
        "/admin/services", json={"name": f"{type_}-{uuid.uuid4().hex[:8]}", "type": type_}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    return {"x-api-key": r.json()["api_key"]}


@pytest.fixture
def rec(client: TestClient) -> dict[str, str]:
    return new_service(client)


def upload(data: bytes, name: str = "image.jpg", field: str = "file") -> dict:
    return {field: (name, data, "image/jpeg")}


def add(client: TestClient, key: dict, subject: str, data: bytes) -> str:
    r = client.post(f"/api/v1/recognition/faces?subject={subject}", files=upload(data), headers=key)
    assert r.status_code == 201, r.text
    assert r.json()["subject"] == subject
    return r.json()["image_id"]


def error(response, status: int, code: int) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"message", "code"} and body["code"] == code, body
    return body["message"]


# ------------------------------------------------------------------------------------ Double Take
def test_double_take_calls(client: TestClient, rec: dict, images: dict[str, bytes]) -> None:
    recognize = "/api/v1/recognition/recognize?face_plugins=undefined&det_prob_threshold=0.8"
    r = client.post(recognize, files=upload(images["obama"], "lenna.jpg"), headers=rec)
    assert r.status_code == 200
    assert r.json()["result"][0]["subjects"] == []  # empty collection: an empty array, not missing
    error(client.post(recognize, files=upload(images["noface"], "cam.jpg"), headers=rec), 400, 28)
    add(client, rec, "barack", images["obama"])
    r = client.post(recognize, files=upload(images["obama2"], "cam.jpg"), headers=rec).json()
    face = r["result"][0]
    assert set(face) == {"box", "subjects"}
    assert face["subjects"][0]["subject"] == "barack" and face["subjects"][0]["similarity"] > 0.9
    assert {"x_min", "x_max", "y_min", "y_max", "probability"} == set(face["box"])
    assert client.delete("/api/v1/recognition/faces?subject=barack", headers=rec).json() == {"deleted": 1}


# ------------------------------------------------------------------------------------ input forms
def test_base64_json_input(client: TestClient, rec: dict, images: dict[str, bytes]) -> None:
    b64 = base64.b64encode(images["obama"]).decode()
    r = client.post("/api/v1/recognition/faces?subject=obama", json={"file": b64}, headers=rec)
    assert r.status_code == 201
    r = client.post(
        "/api/v1/recognition/recognize",
        json={"file": base64.b64encode(images["obama2"]).decode(), "api_endpoint": "ignored"},
        headers=rec,
    )
    assert r.json()["result"][0]["subjects"][0]["subject"] == "obama"
    verify = new_service(client, "verification")
    r = client.post(
        "/api/v1/verification/verify",
        json={"source_image": b64, "target_image": base64.b64encode(images["two"]).decode()},
        headers=verify,
    )
    matches = r.json()["result"][0]["face_matches"]
    assert len(matches) == 2 and matches[0]["similarity"] > 0.9 > matches[1]["similarity"]
    error(
        client.post(
            "/api/v1/recognition/recognize", json={"file": "data:image/jpeg;base64," + b64}, headers=rec
        ),
        400,
        21,
    )
    error(client.post("/api/v1/recognition/recognize", json={"file": "%%%"}, headers=rec), 400, 21)
    error(client.post("/api/v1/recognition/recognize", json={}, headers=rec), 400, 5)


def test_lenient_query_parsing(client: TestClient, rec: dict, images: dict[str, bytes]) -> None:
    add(client, rec, "obama", images["obama"])
    url = (
        "/api/v1/recognition/recognize?&limit=&det_prob_threshold=&prediction_count=&face_plugins="
        "&status=True&threshold=&unknown=1"
    )
    body = client.post(url, files=upload(images["obama2"]), headers=rec).json()
    assert "execution_time" in body["result"][0] and "plugins_versions" in body
    assert body["plugins_versions"]["calculator"] == "faceatlas.Calculator@sface"
    body = client.post(
        "/api/v1/recognition/recognize?status=FALSE&face_plugins=calculator, bogus,age",
        files=upload(images["obama2"]),
        headers=rec,
    ).json()
    face = body["result"][0]
    assert "plugins_versions" not in body and "execution_time" not in face
    assert len(face["embedding"]) == 128 and set(face["age"]) == {"probability", "high", "low"}


def test_extensions_min_similarity_image_id_and_unique_subjects(
    client: TestClient, rec: dict, images: dict[str, bytes]
) -> None:
    obama = [add(client, rec, "obama", images[n]) for n in ("obama", "obama2")]
    add(client, rec, "biden", images["biden"])
    url = "/api/v1/recognition/recognize?prediction_count=3"
    subjects = client.post(url, files=upload(images["obama"]), headers=rec).json()["result"][0]["subjects"]
    assert [s["subject"] for s in subjects] == ["obama", "obama", "biden"]  # examples, as CompreFace
    assert subjects[0]["image_id"] == obama[0] and subjects[0]["similarity"] > 0.9999
    subjects = client.post(url + "&unique_subjects=true", files=upload(images["obama"]), headers=rec).json()
    assert [s["subject"] for s in subjects["result"][0]["subjects"]] == ["obama", "biden"]
    subjects = client.post(url + "&min_similarity=0.5", files=upload(images["obama"]), headers=rec).json()
    assert [s["subject"] for s in subjects["result"][0]["subjects"]] == ["obama", "obama"]


def test_detect_faces_false_uses_the_whole_image(
    client: TestClient, rec: dict, images: dict[str, bytes]
) -> None:
    add(client, rec, "obama", images["obama"])
    r = client.post(
        "/api/v1/recognition/recognize?detect_faces=false&face_plugins=pose",
        files=upload(images["obama_small"] if "obama_small" in images else images["obama"]),
        headers=rec,
    )
    face = r.json()["result"][0]
    assert face["box"]["probability"] == 1.0 and face["box"]["x_min"] == 0 and face["box"]["y_min"] == 0
    assert "pose" not in face and face["subjects"][0]["subject"] == "obama"


# ------------------------------------------------------------------------------------ collection
def test_faces_listing_bulk_delete_and_downloads(
    client: TestClient, rec: dict, images: dict[str, bytes]
) -> None:
    ids = [add(client, rec, name.rstrip("2"), images[name]) for name in ("obama", "obama2", "biden")]
    page = client.get("/api/v1/recognition/faces?page=1&size=2", headers=rec).json()
    assert page["total_elements"] == 3 and page["total_pages"] == 2 and page["page_size"] == 2
    assert page["page_number"] == 1 and len(page["faces"]) == 1
    listed = client.get("/api/v1/recognition/faces?subject=OBAMA", headers=rec).json()
    assert {f["image_id"] for f in listed["faces"]} == set(ids[:2])

    r = client.get(f"/api/v1/recognition/faces/{ids[2]}/img", headers=rec)
    assert r.content == images["biden"] and r.headers["cache-control"] == "public, max-age=31536000"
    key = rec["x-api-key"]
    assert client.get(f"/api/v1/static/{key}/images/{ids[0]}").content == images["obama"]
    assert client.get(f"/api/v1/static/{key}/images/{uuid.uuid4()}").content == b""

    r = client.post("/api/v1/recognition/faces/delete", json=[ids[0], str(uuid.uuid4()), ids[2]], headers=rec)
    assert r.json() == [{"image_id": ids[0], "subject": "obama"}, {"image_id": ids[2], "subject": "biden"}]
    assert client.delete(f"/api/v1/recognition/faces/{ids[1]}", headers=rec).json() == {
        "image_id": ids[1],
        "subject": "obama",
    }
    assert client.get("/api/v1/recognition/faces", headers=rec).json()["total_elements"] == 0
    assert client.get(f"/api/v1/recognition/faces/{ids[1]}/img", headers=rec).content == b""


def test_verify_against_stored_image(client: TestClient, rec: dict, images: dict[str, bytes]) -> None:
    obama = add(client, rec, "obama", images["obama"])
    r = client.post(
        f"/api/v1/recognition/faces/{obama}/verify?status=true", files=upload(images["two"]), headers=rec
    )
    body = r.json()
    assert [f["subject"] for f in body["result"]] == ["obama", "obama"] and "plugins_versions" in body
    sims = [f["similarity"] for f in body["result"]]
    assert sims[0] > 0.9 > sims[1]


def test_subjects_crud(client: TestClient, rec: dict, images: dict[str, bytes]) -> None:
    base = "/api/v1/recognition/subjects"
    r = client.post(base, json={"subject": "Ann"}, headers=rec)
    assert r.status_code == 201 and r.json() == {"subject": "Ann"}
    add(client, rec, "bob", images["biden"])
    assert client.get(base, headers=rec).json() == {"subjects": ["Ann", "bob"]}
    assert client.put(f"{base}/bob", json={"subject": "Bobby", "api_endpoint": "x"}, headers=rec).json() == {
        "updated": True
    }
    assert client.put(f"{base}/Bobby", json={"subject": ""}, headers=rec).json() == {"updated": False}
    assert client.put(f"{base}/Bobby", json={"subject": "ann"}, headers=rec).json() == {"updated": True}
    assert client.get(base, headers=rec).json() == {"subjects": ["Ann"]}
    r = client.post("/api/v1/recognition/recognize", files=upload(images["biden"]), headers=rec)
    assert r.json()["result"][0]["subjects"][0]["subject"] == "Ann"  # the merged face moved
    assert client.delete(f"{base}/ann", headers=rec).json() == {"subject": "ann"}
    client.post(base, json={"subject": "x"}, headers=rec)
    client.post(base, json={"subject": "y"}, headers=rec)
    assert client.delete(base, headers=rec).json() == {"deleted": 2}


# ------------------------------------------------------------------------------------ detection
def test_detection_with_plugins(client: TestClient, images: dict[str, bytes]) -> None:
    key = new_service(client, "detection")
    r = client.post(
        "/api/v1/detection/detect?face_plugins=age,gender,landmarks,pose&status=true",
        files=upload(images["two"]),
        headers=key,
    )
    body = r.json()
    assert len(body["result"]) == 2 and "plugins_versions" in body
    for face in body["result"]:
        assert face["gender"]["value"] in ("male", "female") and len(face["landmarks"]) == 5
        assert face["age"]["low"] <= face["age"]["high"] and set(face["pose"]) == {"pitch", "roll", "yaw"}
        assert all(isinstance(face["box"][k], int) for k in ("x_min", "y_min", "x_max", "y_max"))
    error(client.post("/api/v1/detection/detect", files=upload(images["noface"]), headers=key), 400, 28)


# ------------------------------------------------------------------------------------ embeddings
def test_embedding_endpoints(client: TestClient, rec: dict, engine: Engine, images: dict[str, bytes]) -> None:
    image_id = add(client, rec, "obama", images["obama"])
    add(client, rec, "biden", images["biden"])
    obama2 = engine.embed(images["obama2"])[0]
    vector = (obama2 * 3).tolist()  # echoed un-normalised, normalised internally
    r = client.post(
        "/api/v1/recognition/embeddings/recognize?prediction_count=2",
        json={"embeddings": [vector]},
        headers=rec,
    )
    result = r.json()["result"][0]
    assert result["embedding"] == vector
    assert [s["subject"] for s in result["similarities"]] == ["obama", "biden"]
    assert result["similarities"][0]["similarity"] > 0.9
    biden = engine.embed(images["biden"])[0].tolist()
    r = client.post(
        f"/api/v1/recognition/embeddings/faces/{image_id}/verify",
        json={"embeddings": [biden, vector]},
        headers=rec,
    )
    assert [x["embedding"] for x in r.json()["result"]] == [vector, biden]  # sorted by similarity
    verify = new_service(client, "verification")
    r = client.post(
        "/api/v1/verification/embeddings/verify",
        json={"source": vector, "targets": [biden, vector]},
        headers=verify,
    )
    sims = [x["similarity"] for x in r.json()["result"]]
    assert sims[0] > 0.9999 and sims[1] < 0.5

    msg = error(
        client.post(
            "/api/v1/recognition/embeddings/recognize", json={"embeddings": [[0.1] * 512]}, headers=rec
        ),
        400,
        0,
    )
    assert "128" in msg and "512" in msg
    error(
        client.post("/api/v1/recognition/embeddings/recognize", json={"embeddings": []}, headers=rec), 400, 5
    )
    error(
        client.post(f"/api/v1/recognition/embeddings/faces/{image_id}/verify", json={}, headers=rec), 400, 5
    )
    error(
        client.post(
            "/api/v1/verification/embeddings/verify", json={"source": vector, "targets": []}, headers=verify
        ),
        400,
        37,
    )
    error(
        client.post("/api/v1/verification/embeddings/verify", json={"targets": [vector]}, headers=verify),
        400,
        5,
    )


# ------------------------------------------------------------------------------------ §1.5 errors
def test_api_key_errors(client: TestClient, images: dict[str, bytes]) -> None:
    url = "/api/v1/recognition/faces"
    assert error(client.get(url), 400, 20) == "Missing header: x-api-key"
    assert (
        error(client.get(url, headers={"x-api-key": "not-a-uuid"}), 400, 26)
        == "Service API key should be UUID"
    )
    unknown = str(uuid.uuid4())
    assert error(client.get(url, headers={"x-api-key": unknown}), 404, 10) == (
        f"Recognition service with API Key {unknown} not found"
    )
    detection = new_service(client, "detection")
    error(client.get(url, headers=detection), 404, 10)
    msg = error(client.post("/api/v1/verification/verify", headers=detection), 404, 10)
    assert msg.startswith("Verification service")
    # the endpoints without a key check
    assert client.get("/api/v1/config").json() == {"clientMaxFileSize": 1 * MB, "clientMaxBodySize": 10 * MB}


def test_input_errors(client: TestClient, rec: dict, images: dict[str, bytes]) -> None:
    faces = "/api/v1/recognition/faces"
    msg = error(
        client.post(f"{faces}?subject=a", files=upload(images["obama"], "face.txt"), headers=rec), 400, 21
    )
    assert msg == "File [face.txt] has an unavailable extension"
    assert (
        client.post(f"{faces}?subject=a", files=upload(images["obama"], "FACE.JPEG"), headers=rec).status_code
        == 201
    )
    error(client.post(f"{faces}?subject=a", files=upload(images["noface"]), headers=rec), 400, 28)
    error(client.post(f"{faces}?subject=a", files=upload(b"not an image at all"), headers=rec), 400, 28)
    error(client.post(f"{faces}?subject=a", files=upload(images["two"]), headers=rec), 400, 31)
    error(client.post(faces, files=upload(images["obama"]), headers=rec), 400, 33)
    error(client.post(f"{faces}?subject=%20", files=upload(images["obama"]), headers=rec), 400, 26)
    error(
        client.post(f"{faces}?subject=a", files=upload(images["obama"], field="image"), headers=rec), 400, 34
    )
    error(client.post(f"{faces}?subject=a", files=upload(b"\xff" * (1 * MB + 10)), headers=rec), 413, 0)
    recognize = "/api/v1/recognition/recognize"
    error(client.post(f"{recognize}?limit=-1", files=upload(images["obama"]), headers=rec), 400, 26)
    error(client.post(f"{recognize}?prediction_count=0", files=upload(images["obama"]), headers=rec), 400, 26)
    error(
        client.post(f"{recognize}?det_prob_threshold=2", files=upload(images["obama"]), headers=rec), 400, 28
    )
    verify = new_service(client, "verification")
    error(
        client.post(
            "/api/v1/verification/verify",
            files={
                **upload(images["two"], field="source_image"),
                **upload(images["obama"], field="target_image"),
            },
            headers=verify,
        ),
        400,
        31,
    )


def test_subject_and_image_errors(client: TestClient, rec: dict, images: dict[str, bytes]) -> None:
    base = "/api/v1/recognition/subjects"
    client.post(base, json={"subject": "Ann"}, headers=rec)
    assert error(client.post(base, json={"subject": "ANN"}, headers=rec), 400, 43) == "Subject already exists"
    error(client.post(base, json={"subject": "a/b"}, headers=rec), 400, 36)
    error(client.post(base, json={"subject": "semi;colon"}, headers=rec), 400, 36)
    error(client.post(base, json={"subject": "x" * 51}, headers=rec), 400, 26)
    error(client.post(base, json={"subject": ""}, headers=rec), 400, 26)
    error(client.post(base, json={}, headers=rec), 400, 5)
    error(client.put(f"{base}/Ann", json={"subject": "back\\slash"}, headers=rec), 400, 36)
    assert error(client.delete(f"{base}/nobody", headers=rec), 404, 42) == "Subject nobody not found"
    error(client.put(f"{base}/nobody", json={"subject": "x"}, headers=rec), 404, 42)
    missing = str(uuid.uuid4())
    assert error(client.delete(f"/api/v1/recognition/faces/{missing}", headers=rec), 404, 44) == (
        f"Image {missing} not found"
    )
    msg = error(
        client.post(
            f"/api/v1/recognition/faces/{missing}/verify", files=upload(images["obama"]), headers=rec
        ),
        404,
        44,
    )
    assert msg == "Image Id is incorrect"
    assert client.delete("/api/v1/recognition/faces?subject=nobody", headers=rec).json() == {"deleted": 0}
    error(client.get("/api/v1/recognition/nowhere", headers=rec), 404, 0)


# ------------------------------------------------------------------------------------ service endpoints
def test_status_consistency_and_migration(
    client: TestClient, rec: dict, engine: Engine, images: dict[str, bytes]
) -> None:
    status = client.get("/status").json()
    assert status["calculator_version"] == "sface" and status["similarity_coefficients"] == [
        engine.pack.c0,
        engine.pack.c1,
    ]
    setting = client.app.state.faceatlas.settings.index
    assert status["index"]["setting"] == setting
    assert status["index"]["services"] and {s["backend"] for s in status["index"]["services"]} == {setting}
    assert client.get("/healthcheck").json() == {"status": "OK"}
    paths = client.get("/api/v2/api-docs").json()["paths"]  # CompreFace's spec path redirects to OpenAPI
    assert "/api/v1/recognition/recognize" in paths and "/admin/services" in paths
    consistence = client.get("/api/v1/consistence/status").json()
    assert consistence == {
        "demoFaceCollectionIsInconsistent": False,
        "dbIsInconsistent": False,
        "saveImagesToDB": True,
        "status": "OK",
    }

    state = client.app.state.faceatlas
    service = state.service_for_key(rec["x-api-key"])
    stale = np.random.default_rng(1).normal(size=64).astype(np.float32)
    state.store.add_face(service.id, "obama", stale, "old-pack", images["obama"])
    assert client.get("/api/v1/consistence/status").json()["dbIsInconsistent"] is True
    recognize = "/api/v1/recognition/recognize"
    assert (
        client.post(recognize, files=upload(images["obama2"]), headers=rec).json()["result"][0]["subjects"]
        == []
    )

    state.migration.running = True  # as if a migration were under way
    try:
        error(client.post("/api/v1/migrate", headers=ADMIN), 400, 27)
        msg = error(
            client.post("/api/v1/recognition/faces?subject=x", files=upload(images["obama"]), headers=rec),
            405,
            32,
        )
        assert msg == "Write operations during migration aren't allowed"
        error(client.delete("/api/v1/recognition/faces?subject=x", headers=rec), 405, 32)
    finally:
        state.migration.running = False
    r = client.post("/api/v1/migrate", headers=ADMIN)
    assert r.status_code == 200 and r.text == "Migration started"
    state.migration.join(timeout=60)
    assert state.migration.migrated == 1 and state.migration.failed == 0
    assert client.get("/api/v1/consistence/status").json()["dbIsInconsistent"] is False
    subjects = client.post(recognize, files=upload(images["obama2"]), headers=rec).json()["result"][0][
        "subjects"
    ]
    assert subjects[0]["subject"] == "obama" and subjects[0]["similarity"] > 0.9


def test_admin_api(client: TestClient) -> None:
    assert client.get("/admin/services").status_code == 401
    assert client.get("/admin/services", headers={"x-admin-token": "wrong"}).status_code == 401
    created = client.post(
        "/admin/services", json={"name": "admin-test", "type": "verify"}, headers=ADMIN
    ).json()
    assert created["type"] == "verification"
    assert client.post("/admin/services", json={"name": "admin-test"}, headers=ADMIN).status_code == 400
    names = [s["name"] for s in client.get("/admin/services", headers=ADMIN).json()["services"]]
    assert "admin-test" in names
    rotated = client.post("/admin/services/admin-test/rotate-key", headers=ADMIN).json()
    assert rotated["api_key"] != created["api_key"]
    error(
        client.post(
            "/api/v1/verification/embeddings/verify", json={}, headers={"x-api-key": created["api_key"]}
        ),
        404,
        10,
    )
    assert client.delete(f"/admin/services/{created['id']}", headers=ADMIN).json()["name"] == "admin-test"
    assert client.get("/admin/services/admin-test", headers=ADMIN).status_code == 404


def test_images_are_not_kept_when_told(engine: Engine, tmp_path: Path, images: dict[str, bytes]) -> None:
    settings = Settings(data_dir=tmp_path, admin_token="admin-secret", keep_images=False)
    with TestClient(create_app(settings, engine=engine)) as client:
        key = new_service(client)
        image_id = add(client, key, "obama", images["obama"])
        assert client.get(f"/api/v1/recognition/faces/{image_id}/img", headers=key).content == b""
        assert client.get("/api/v1/consistence/status").json()["saveImagesToDB"] is False
        r = client.post("/api/v1/recognition/recognize", files=upload(images["obama2"]), headers=key)
        assert r.json()["result"][0]["subjects"][0]["image_id"] == image_id


class GatedEngine:
    """The real engine behind a gate: analyze() waits until the test opens it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.pack = engine.pack
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> object:  # everything else (decode_size, ...) is the engine's
        return getattr(self._engine, name)

    def analyze(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.entered.set()
        self.gate.wait(60)
        return self._engine.analyze(*args, **kwargs)


def test_inference_runs_off_the_event_loop(engine: Engine, tmp_path: Path, images: dict[str, bytes]) -> None:
    gated = GatedEngine(engine)
    settings = Settings(data_dir=tmp_path, admin_token="admin-secret")
    with TestClient(create_app(settings, engine=gated)) as client:  # type: ignore[arg-type]
        key = new_service(client, "detection")
        answers: dict[str, int] = {}

        def call(name: str, send) -> None:  # type: ignore[no-untyped-def]
            answers[name] = send().status_code

        detect = threading.Thread(
            target=call,
            args=(
                "detect",
                lambda: client.post("/api/v1/detection/detect", files=upload(images["obama"]), headers=key),
            ),
        )
        detect.start()
        assert gated.entered.wait(30)
        # the engine is busy (blocked) on the detection; the server must still answer
        health = threading.Thread(target=call, args=("health", lambda: client.get("/healthcheck")))
        health.start()
        health.join(timeout=20)
        finished_while_busy = not health.is_alive() and "detect" not in answers
        gated.gate.set()
        detect.join(timeout=60)
        health.join(timeout=20)
        assert finished_while_busy and answers == {"health": 200, "detect": 200}
