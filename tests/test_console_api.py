"""The console's JSON API on a live server: login required, keys only at creation and rotation, bad input,
paging of a large collection, thumbnails, and the stored similarity table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from faceatlas.evaluation.similarity_table import SIMILARITY_LEVELS, load_similarity_table, similarity_table
from faceatlas.storage.db import Database
from faceatlas.storage.services import ServiceStore
from faceatlas.vectors import distance_to_cosine
from tests.api_helpers import EXAMPLES, LiveServer

API = "/api/console/v1"
TOKEN = "test-admin-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("console-api")) as live:
        live.client = httpx.Client(  # type: ignore[attr-defined]
            base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        )
        yield live
        live.client.close()  # type: ignore[attr-defined]


def test_login_required(server: LiveServer) -> None:
    for method, path in (("GET", "/services"), ("POST", "/services"), ("GET", "/status")):
        response = httpx.request(method, server.url + API + path, json={"name": "x"}, timeout=30)
        assert response.status_code == 401 and "api_key" not in response.text
    page = httpx.get(server.url + "/console/services", timeout=30, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_keys_only_at_creation_and_rotation(server: LiveServer) -> None:
    client = server.client  # type: ignore[attr-defined]
    created = client.post(f"{API}/services", json={"name": "keys", "type": "recognition"})
    assert created.status_code == 201 and len(created.json()["api_key"]) == 36
    listed = client.get(f"{API}/services").json()["services"]
    assert created.json()["api_key"] not in str(listed)
    assert {"name", "type", "pack", "subjects", "faces", "created"} <= set(listed[0])
    page = client.get("/console/services")
    assert page.status_code == 200 and created.json()["api_key"] not in page.text
    rotated = client.post(f"{API}/services/{created.json()['id']}/rotate-key").json()
    assert rotated["api_key"] != created.json()["api_key"]


def test_bad_input(server: LiveServer, shared: Path) -> None:
    client = server.client  # type: ignore[attr-defined]
    assert client.post(f"{API}/services", json={"name": "", "type": "recognition"}).status_code == 400
    assert client.post(f"{API}/services", json={"name": "x", "type": "nonsense"}).status_code == 400
    assert client.post(f"{API}/services", json={"name": "a\u0000b"}).status_code == 400
    first = client.post(f"{API}/services", json={"name": "dup"}).json()
    assert client.post(f"{API}/services", json={"name": "dup"}).status_code == 409
    other = client.post(f"{API}/services", json={"name": "dup2"}).json()
    assert client.patch(f"{API}/services/{other['id']}", json={"name": "dup"}).status_code == 409
    assert client.patch(f"{API}/services/{first['id']}", json={"name": "renamed"}).status_code == 200
    for path in ("/services/9999/subjects", "/services/9999/subjects/1", "/services/9999/rotate-key"):
        response = client.request("GET" if path.endswith("subjects") else "POST", API + path)
        assert response.status_code in (404, 405)
    assert client.delete(f"{API}/services/9999").status_code == 404
    sid = first["id"]
    assert (
        client.post(
            f"{API}/services/{sid}/images", data={"subject": ""}, files={"files": ("a.jpg", b"x")}
        ).status_code
        == 400
    )
    assert client.post(f"{API}/services/{sid}/images", data={"subject": "a"}).status_code == 400
    photo = (shared / EXAMPLES / "obama.jpg").read_bytes()
    answer = client.post(
        f"{API}/services/{sid}/images",
        data={"subject": "Obama"},
        files=[("files", ("obama.jpg", photo, "image/jpeg")), ("files", ("empty.jpg", b"", "image/jpeg"))],
    ).json()
    assert answer["added"] == 1 and "error" in answer["results"][1]
    image_id = answer["results"][0]["image_id"]
    assert client.get(f"{API}/services/{sid}/images/{image_id}/thumbnail?size=17").status_code == 400
    assert client.get(f"{API}/services/{sid}/images/../../etc/thumbnail").status_code == 404
    thumb = client.get(f"{API}/services/{sid}/images/{image_id}/thumbnail")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    assert thumb.headers["cache-control"].startswith("private")
    assert client.delete(f"{API}/services/{sid}/images/not-an-id").status_code == 404
    detection = client.post(f"{API}/services", json={"name": "det", "type": "detection"}).json()
    assert client.get(f"{API}/services/{detection['id']}/subjects").status_code == 400


def test_a_large_collection_is_paged(server: LiveServer) -> None:
    """100 000 faces in 5 000 subjects: pages of subjects with counts, in SQL, not the whole collection."""
    client = server.client  # type: ignore[attr-defined]
    sid = client.post(f"{API}/services", json={"name": "big"}).json()["id"]
    store = ServiceStore(Database.open(data_dir=server.data_dir))
    rng = np.random.default_rng(3)
    names = [f"person {i:05d}" for i in range(5_000) for _ in range(20)]
    vectors = rng.normal(size=(len(names), 128)).astype(np.float32)
    store.add_faces_bulk(sid, names, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), "sface")
    store.db.dispose()
    listed = client.get(f"{API}/services/{sid}/subjects", params={"offset": 4_990, "limit": 20}).json()
    assert listed["total"] == 5_000 and len(listed["subjects"]) == 10
    assert listed["subjects"][0] == {"id": listed["subjects"][0]["id"], "name": "person 04990", "faces": 20,
                                     "cover_image_id": None}  # fmt: skip
    found = client.get(f"{API}/services/{sid}/subjects", params={"q": "person 0123"}).json()
    assert [s["name"] for s in found["subjects"]] == [f"person 0123{i}" for i in range(10)]
    page = client.get(f"/console/services/{sid}", params={"page": 84})
    assert page.status_code == 200 and "page 84 of 84" in page.text and "person 04999" in page.text
    summary = next(s for s in client.get(f"{API}/services").json()["services"] if s["id"] == sid)
    assert summary["faces"] == 100_000 and summary["subjects"] == 5_000


def test_status_carries_the_similarity_table(server: LiveServer) -> None:
    status = server.client.get(f"{API}/status").json()  # type: ignore[attr-defined]
    assert status["pack"]["id"] == "sface" and "CPUExecutionProvider" in status["providers"]
    table = status["similarity_table"]
    assert [row["similarity"] for row in table["table"]] == list(SIMILARITY_LEVELS)
    assert table == load_similarity_table("sface")
    fars = [row["far"] for row in table["table"]]
    tars = [row["tar"] for row in table["table"]]
    assert fars == sorted(fars, reverse=True) and tars == sorted(tars, reverse=True)
    # similarity 0.5 is the pack's equal-error point: FAR and 1 - TAR are close there
    assert abs(fars[0] - (1 - tars[0])) < 0.01 and tars[-1] > 0.9


def test_similarity_table_counts() -> None:
    c0, c1 = 1.2, 10.0
    # distances exactly at the similarity levels' boundaries, on either side
    levels_distance = [c0 - np.arctanh(2 * s - 1) / c1 for s in (0.5, 0.9)]
    cosines = distance_to_cosine(np.array([levels_distance[0] + 0.01, levels_distance[0] - 0.01,
                                           levels_distance[1] - 0.01, 1.9]))  # fmt: skip
    same = np.array([False, False, True, True])
    rows = similarity_table(cosines, same, c0, c1, levels=(0.5, 0.9))
    assert rows[0] == {"similarity": 0.5, "far": 0.5, "tar": 0.5, "false_accepts": 1, "true_accepts": 1}
    assert rows[1]["far"] == 0.0 and rows[1]["tar"] == 0.5


def test_import_from_the_default_library(server: LiveServer, engine, shared: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The service page's "import named people" button: the server's default library into a service."""
    from faceatlas.library.clustering import ClusterOptions, cluster_library
    from faceatlas.library.people import list_people, rename_person
    from faceatlas.library.pipeline import index_library
    from faceatlas.library.store import open_library

    folder = tmp_path / "photos"
    folder.mkdir()
    person = shared / "data" / "lfw-dev" / "images" / "Hugo_Chavez"
    for image in sorted(person.glob("*.jpg"))[:6]:
        (folder / image.name).symlink_to(image)
    library = open_library(server.data_dir)
    index_library(library, engine, [folder])
    cluster_library(library, engine.pack.id, ClusterOptions(threshold=engine.pack.threshold))
    rename_person(library, list_people(library)[0].id, "Hugo")
    library.dispose()

    client = server.client  # type: ignore[attr-defined]
    sid = client.post(f"{API}/services", json={"name": "from-library"}).json()["id"]
    first = client.post(f"{API}/services/{sid}/import-library", json={"faces_per_person": 2}).json()
    assert (
        first["changed"] is True and first["people"][0]["name"] == "Hugo" and first["people"][0]["added"] == 2
    )
    again = client.post(f"{API}/services/{sid}/import-library", json={"faces_per_person": 2}).json()
    assert again["changed"] is False
    subjects = client.get(f"{API}/services/{sid}/subjects").json()["subjects"]
    assert [(s["name"], s["faces"]) for s in subjects] == [("Hugo", 2)] and subjects[0]["cover_image_id"]
    assert client.post(f"{API}/services/{sid}/import-library", json={"library": "nope"}).status_code == 404
    missing = client.post(f"{API}/services/{sid}/import-library", json={"people": ["Nobody"]})
    assert missing.status_code == 404
    page = client.get(f"/console/services/{sid}")
    assert 'id="import-library"' in page.text
