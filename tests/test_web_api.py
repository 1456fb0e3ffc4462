"""The library REST API on a real library (LFW people + group photos, the bundled sface engine)."""

from __future__ import annotations

import io
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from faceatlas.api.app import create_app
from faceatlas.api.settings import Settings
from faceatlas.library.clustering import ClusterOptions, cluster_library
from faceatlas.library.pipeline import IndexOptions, index_library
from faceatlas.library.store import open_library
from faceatlas.library.tables import Decision, Face, Photo
from faceatlas.web.auth import SESSION_COOKIE
from faceatlas.web.context import PHOTOS_ROOTS_ENV
from tests.web_helpers import SELFIE_PERSON, build_photo_tree, selfie

TOKEN = "web-api-test-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
API = "/api/library/v1/libraries/default"


@pytest.fixture(scope="module")
def site(tmp_path_factory, shared, engine):
    """A data folder whose default library holds the indexed, clustered photo tree; a served app."""
    base = tmp_path_factory.mktemp("webapi")
    root = build_photo_tree(shared, base / "photos")
    shutil.copyfile(
        shared / "data/photos/exif-orientation-faces/obama_orientation6.jpg", root / "groups/rotated.jpg"
    )
    outside = base / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    data = base / "data"
    db = open_library(data)
    index_library(db, engine, [root], options=IndexOptions(workers=1))
    cluster_library(db, engine.pack.id, ClusterOptions(threshold=engine.pack.threshold))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PHOTOS_ROOTS_ENV, f'["{root}"]')
        patch.setenv("FACEATLAS_CACHE", str(base / "cache"))
        app = create_app(Settings(data_dir=data, admin_token=TOKEN), engine=engine)
        with TestClient(app) as client:
            yield {"client": client, "db": db, "root": root, "data": data, "outside": outside}
    db.dispose()


def owner_of(db, folder: str) -> int:
    """The person most faces of ``lfw/<folder>`` photos belong to."""
    with db.session() as session:
        rows = session.execute(
            select(Face.person_id)
            .join(Photo, Photo.id == Face.photo_id)
            .where(Photo.path.contains(f"/{folder}/"))
        ).all()
    counts = Counter(p for (p,) in rows if p is not None)
    return counts.most_common(1)[0][0]


def get(site, path: str, **kwargs):
    return site["client"].get(path, headers=BEARER, **kwargs)


def send(site, method: str, path: str, **kwargs):
    return site["client"].request(method, path, headers=BEARER, **kwargs)


def assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and body["message"]
    return body


# --- access --------------------------------------------------------------------------------------


def test_nothing_without_a_login(site):
    client: TestClient = site["client"]
    client.cookies.clear()
    face_id = get(site, f"{API}/people").json()["people"][0]["cover_face_id"]
    photo_id = get(site, f"{API}/photos").json()["photos"][0]["id"]
    for path in (
        "/api/library/v1/libraries",
        API,
        f"{API}/people",
        f"{API}/people/1",
        f"{API}/faces/{face_id}/thumbnail",
        f"{API}/photos",
        f"{API}/photos/{photo_id}",
        f"{API}/photos/{photo_id}/preview",
        f"{API}/photos/unreadable",
        f"{API}/review",
        f"{API}/jobs/current",
    ):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["content-type"].startswith("application/json")
        assert str(site["root"]) not in response.text and "Blair" not in response.text
    assert client.post(f"{API}/search", files={"file": ("a.jpg", b"x")}).status_code == 401
    assert client.get(f"{API}/people", headers={"Authorization": "Bearer wrong"}).status_code == 401
    page = client.get("/l/default/people", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    # the CompreFace API keeps its own x-api-key answers
    legacy = client.get("/api/v1/recognition/subjects")
    assert legacy.status_code == 400 and legacy.json()["code"] == 20


def test_login_cookie_and_csrf(site):
    client: TestClient = site["client"]
    client.cookies.clear()
    assert client.post("/login", data={"secret": "nope"}).status_code == 401
    response = client.post(
        "/login", data={"secret": TOKEN, "next": "//evil.example/"}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Max-Age=" in cookie
    page = client.get("/l/default/people")
    assert page.status_code == 200
    csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    assert len(csrf) > 20
    people = client.get(f"{API}/people").json()["people"]
    target = people[-1]["id"]
    refused = client.patch(f"{API}/people/{target}", json={"hidden": False})
    assert_error(refused, 403)
    wrong = client.patch(f"{API}/people/{target}", json={"hidden": False}, headers={"X-CSRF-Token": "x" * 32})
    assert_error(wrong, 403)
    ok = client.patch(f"{API}/people/{target}", json={"hidden": False}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200, ok.text
    # a forged or expired cookie is no login
    client.cookies.set(SESSION_COOKIE, client.cookies[SESSION_COOKIE][:-3] + "abc")
    assert client.get(f"{API}/people").status_code == 401
    client.cookies.clear()


def test_password_login(site):
    from faceatlas.cli.main import cli

    result = CliRunner().invoke(
        cli, ["web", "set-password", "--data-dir", str(site["data"]), "--password", "correct horse"]
    )
    assert result.exit_code == 0, result.output
    stored = (site["data"] / "web-password").read_text()
    assert "correct horse" not in stored and stored.startswith("scrypt$")
    assert oct((site["data"] / "web-password").stat().st_mode & 0o777) == "0o600"
    short = CliRunner().invoke(
        cli, ["web", "set-password", "--data-dir", str(site["data"]), "--password", "short"]
    )
    assert short.exit_code != 0 and "at least" in short.output
    client: TestClient = site["client"]
    client.cookies.clear()
    assert client.post("/login", data={"secret": "correct horsE"}).status_code == 401
    assert client.post("/login", data={"secret": "correct horse"}, follow_redirects=False).status_code == 303
    assert client.get(f"{API}/people").status_code == 200
    client.cookies.clear()


# --- libraries, people -----------------------------------------------------------------------------


def test_libraries_and_counts(site):
    libraries = get(site, "/api/library/v1/libraries").json()["libraries"]
    assert [lib["id"] for lib in libraries] == ["default"]
    counts = libraries[0]
    files = [p for p in site["root"].rglob("*.jpg") if "escape" not in p.parts]
    assert counts["photos"] == len(files)
    assert counts["unreadable"] == 1
    assert counts["people"] >= 7 and counts["faces"] > counts["people"]
    info = get(site, API).json()
    assert info["photos_roots"] == [str(site["root"])]
    assert_error(get(site, "/api/library/v1/libraries/nope/people"), 404)
    bad = get(site, f"{API}/photos/unreadable").json()["photos"]
    assert [Path(p["path"]).name for p in bad] == ["broken.jpg"] and bad[0]["reason"]


def test_people_listing(site):
    page = get(site, f"{API}/people", params={"limit": 3}).json()
    assert len(page["people"]) == 3 and page["total"] >= 7
    counts = [p["faces"] for p in page["people"]]
    assert counts == sorted(counts, reverse=True)
    assert all(p["cover_face_id"] for p in page["people"])
    rest = get(site, f"{API}/people", params={"limit": 3, "offset": 3}).json()["people"]
    assert not {p["id"] for p in rest} & {p["id"] for p in page["people"]}
    unnamed = get(site, f"{API}/people", params={"show": "unnamed"}).json()
    assert unnamed["total"] == page["total"] and all(p["name"] is None for p in unnamed["people"])
    assert get(site, f"{API}/people", params={"show": "named"}).json()["total"] == 0
    assert_error(get(site, f"{API}/people", params={"sort": "age"}), 400)
    assert_error(get(site, f"{API}/people", params={"show": "everyone"}), 400)
    assert get(site, f"{API}/people", params={"limit": 0}).status_code == 400


def test_person_rename_hide_cover(site):
    db = site["db"]
    pid = owner_of(db, "Colin_Powell")
    person = get(site, f"{API}/people/{pid}").json()
    assert person["faces"] >= 6 and len(person["face_page"]["faces"]) == person["faces"]
    assert_error(get(site, f"{API}/people/99999"), 404)
    assert (
        send(site, "PATCH", f"{API}/people/{pid}", json={"name": "Colin Powell"}).json()["name"]
        == "Colin Powell"
    )
    assert get(site, f"{API}/people/Colin Powell").json()["id"] == pid
    found = get(site, f"{API}/people", params={"q": "powell"}).json()["people"]
    assert [p["id"] for p in found] == [pid]
    other = owner_of(db, "Laura_Bush")
    assert_error(send(site, "PATCH", f"{API}/people/{other}", json={"name": "Colin Powell"}), 400)
    assert_error(send(site, "PATCH", f"{API}/people/{other}", json={"name": "  "}), 400)
    assert_error(send(site, "PATCH", f"{API}/people/99999", json={"name": "X"}), 404)
    # hide: out of the default list, in the hidden one
    send(site, "PATCH", f"{API}/people/{other}", json={"hidden": True})
    assert other not in [p["id"] for p in get(site, f"{API}/people", params={"limit": 500}).json()["people"]]
    hidden = get(site, f"{API}/people", params={"show": "hidden"}).json()["people"]
    assert [p["id"] for p in hidden] == [other] and hidden[0]["hidden"]
    send(site, "PATCH", f"{API}/people/{other}", json={"hidden": False})
    # cover: one of the person's faces; a face of someone else is refused
    faces = [f["id"] for f in person["face_page"]["faces"]]
    changed = send(site, "PATCH", f"{API}/people/{pid}", json={"cover_face_id": faces[-1]}).json()
    assert changed["cover_face_id"] == faces[-1]
    foreign = get(site, f"{API}/people/{other}").json()["face_page"]["faces"][0]["id"]
    assert_error(send(site, "PATCH", f"{API}/people/{pid}", json={"cover_face_id": foreign}), 404)


def test_thumbnails_are_cached_jpegs(site):
    face = get(site, f"{API}/people").json()["people"][0]["cover_face_id"]
    response = get(site, f"{API}/faces/{face}/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert "private" in response.headers["cache-control"]
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (160, 160)
    pixels = np.asarray(image)
    assert pixels.std() > 10  # a real crop, not a blank square
    again = site["client"].get(
        f"{API}/faces/{face}/thumbnail", headers={**BEARER, "If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304
    assert_error(get(site, f"{API}/faces/999999/thumbnail"), 404)


# --- photos ------------------------------------------------------------------------------------


def test_photos_by_person_folder_and_preview(site):
    db = site["db"]
    pid = owner_of(db, "Hugo_Chavez")
    photos = get(site, f"{API}/photos", params={"person": pid, "limit": 500}).json()
    assert photos["total"] >= 6
    with db.session() as session:
        for photo in photos["photos"]:
            people = set(session.scalars(select(Face.person_id).where(Face.photo_id == photo["id"])))
            assert pid in people
    folder = str(site["root"] / "groups")
    in_folder = get(site, f"{API}/photos", params={"folder": folder, "limit": 500}).json()["photos"]
    assert in_folder and all(p["folder"] == folder for p in in_folder)
    assert "broken.jpg" not in [p["name"] for p in in_folder]  # unreadable files are listed apart
    rotated = next(p for p in in_folder if p["name"] == "rotated.jpg")
    detail = get(site, f"{API}/photos/{rotated['id']}").json()
    assert detail["faces"] and detail["faces"][0]["box"][2] > detail["faces"][0]["box"][0]
    preview = get(site, f"{API}/photos/{rotated['id']}/preview", params={"size": 320})
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(preview.content))
    assert max(image.size) <= 320
    # EXIF orientation applied: the preview has the upright photo's shape
    assert (image.size[0] > image.size[1]) == (detail["width"] > detail["height"])
    big = next(p for p in in_folder if p["name"] == "t1.jpg")
    assert max(Image.open(io.BytesIO(get(site, f"{API}/photos/{big['id']}/preview").content)).size) <= 1280
    original = get(site, f"{API}/photos/{big['id']}/preview", params={"original": "true"})
    assert original.content == (site["root"] / "groups/t1.jpg").read_bytes()
    assert_error(get(site, f"{API}/photos/999999"), 404)
    assert_error(get(site, f"{API}/photos/999999/preview"), 404)
    assert_error(get(site, f"{API}/photos", params={"person": 99999}), 404)


# --- decisions -----------------------------------------------------------------------------------


def test_merge_split_remove(site, engine):
    db = site["db"]
    a, b = owner_of(db, "Jacques_Chirac"), owner_of(db, "Lleyton_Hewitt")
    faces_a = get(site, f"{API}/people/{a}").json()["faces"]
    faces_b = get(site, f"{API}/people/{b}").json()["faces"]
    merged = send(site, "POST", f"{API}/people/{a}/merge", json={"other": b}).json()
    assert merged["person"]["id"] == a and merged["person"]["faces"] == faces_a + faces_b
    assert merged["left_behind"] == [] and merged["reason"] is None
    assert get(site, f"{API}/people/{b}").json()["id"] == a  # the merged id resolves to the survivor
    assert_error(send(site, "POST", f"{API}/people/{a}/merge", json={"other": a}), 400)
    assert_error(send(site, "POST", f"{API}/people/{a}/merge", json={"other": 99999}), 404)
    # split the Hewitt faces back out
    with db.session() as session:
        hewitt = list(
            session.scalars(
                select(Face.id)
                .join(Photo, Photo.id == Face.photo_id)
                .where(Photo.path.contains("/Lleyton_Hewitt/"), Face.person_id == a)
            )
        )
    new = send(site, "POST", f"{API}/people/{a}/split", json={"face_ids": hewitt, "name": "Lleyton"}).json()
    assert new["name"] == "Lleyton" and new["faces"] == len(hewitt)
    assert_error(send(site, "POST", f"{API}/people/{a}/split", json={"face_ids": [hewitt[0]]}), 404)
    assert send(site, "POST", f"{API}/people/{a}/split", json={"face_ids": []}).status_code == 400
    # remove a face; it stays removed after re-clustering from scratch
    victim = get(site, f"{API}/people/{a}").json()["face_page"]["faces"][0]["id"]
    after = send(site, "POST", f"{API}/people/{a}/remove-faces", json={"face_ids": [victim]}).json()
    assert after["faces"] == faces_a - 1
    cluster_library(db, engine.pack.id, ClusterOptions(threshold=engine.pack.threshold), rebuild=True)
    assert get(site, f"{API}/faces/{victim}").json()["person_id"] != a
    assert_error(send(site, "POST", f"{API}/people/{a}/remove-faces", json={"face_ids": [victim]}), 404)


def test_review_assign_ignore(site):
    db = site["db"]
    queue = get(site, f"{API}/review", params={"limit": 50}).json()
    assert queue["total"] >= 1 and queue["faces"]
    for item in queue["faces"]:
        sims = [s["similarity"] for s in item["suggestions"]]
        assert sims == sorted(sims, reverse=True)
    first = queue["faces"][0]
    target = owner_of(db, "Jennifer_Capriati")
    done = send(site, "POST", f"{API}/faces/{first['face']['id']}/assign", json={"person": target})
    if done.status_code == 400:  # its photo already shows that person: assign to a new person instead
        done = send(site, "POST", f"{API}/faces/{first['face']['id']}/assign", json={"name": "Someone"})
    assert done.status_code == 200, done.text
    assigned_to = done.json()["person_id"]
    assert get(site, f"{API}/faces/{first['face']['id']}").json()["person_id"] == assigned_to
    with db.session() as session:
        face = session.get(Face, first["face"]["id"])
        assert face.person_id == assigned_to and face.source == "user"
        assert session.scalar(
            select(Decision.id).where(Decision.kind == "assign", Decision.face_id == face.id)
        )
    remaining = get(site, f"{API}/review", params={"limit": 200}).json()
    assert first["face"]["id"] not in [i["face"]["id"] for i in remaining["faces"]]
    assert remaining["total"] == queue["total"] - 1
    if remaining["faces"]:
        skip = remaining["faces"][0]["face"]["id"]
        assert send(site, "POST", f"{API}/faces/{skip}/ignore").json()["ignored"]
        assert get(site, f"{API}/review", params={"limit": 200}).json()["total"] == remaining["total"] - 1
    assert_error(send(site, "POST", f"{API}/faces/999999/assign", json={"person": target}), 404)
    assert_error(send(site, "POST", f"{API}/faces/999999/ignore"), 404)
    assert_error(send(site, "POST", f"{API}/faces/{first['face']['id']}/assign", json={"person": 99999}), 404)


def test_merge_suggestions_rank_by_similarity(site):
    pid = owner_of(site["db"], "Tony_Blair")
    found = get(site, f"{API}/people/{pid}/suggestions").json()["suggestions"]
    assert found and pid not in [s["person_id"] for s in found]
    sims = [s["similarity"] for s in found]
    assert sims == sorted(sims, reverse=True)


# --- search ------------------------------------------------------------------------------------


def test_search_by_selfie(site, shared):
    pid = owner_of(site["db"], SELFIE_PERSON)
    with open(selfie(shared), "rb") as handle:
        result = send(site, "POST", f"{API}/search", files={"file": ("me.jpg", handle, "image/jpeg")}).json()
    hits = result["hits"]
    assert hits[0]["person_id"] == pid and hits[0]["match"]
    matches = [h for h in hits if h["match"]]
    assert len(matches) >= 6 and all(h["person_id"] == pid for h in matches[:6])
    sims = [h["similarity"] for h in hits]
    assert sims == sorted(sims, reverse=True)
    by_face = send(site, "POST", f"{API}/search", params={"face_id": hits[0]["face_id"]}).json()["hits"]
    assert by_face[0]["face_id"] == hits[0]["face_id"]
    assert_error(send(site, "POST", f"{API}/search", files={"file": ("a.txt", b"hello", "text/plain")}), 400)
    assert_error(send(site, "POST", f"{API}/search"), 400)
    assert_error(send(site, "POST", f"{API}/search", params={"face_id": 999999}), 404)


# --- jobs ------------------------------------------------------------------------------------------


def wait_job(site, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get(site, f"{API}/jobs/current").json()["job"]
        if job and not job["active"]:
            return job
        time.sleep(0.3)
    raise AssertionError("the job did not finish")


def test_folder_jobs_only_under_roots(site):
    root, outside = site["root"], site["outside"]
    for folder in (str(outside), str(root / ".." / "outside"), str(root / "escape"), "/etc", "../outside"):
        assert_error(send(site, "POST", f"{API}/jobs", json={"folder": folder}), 403)
    assert_error(send(site, "POST", f"{API}/jobs", json={"folder": str(root / "missing")}), 400)
    started = send(site, "POST", f"{API}/jobs", json={"folder": str(root / "lfw" / "Laura_Bush")})
    assert started.status_code == 202, started.text
    job = wait_job(site)
    assert job["state"] == "done" and job["percent"] == 100.0
    assert job["found"] == 8 and job["skipped"] == 8  # indexed already: nothing twice


def test_upload_photos_and_a_non_image(site, shared):
    photo = shared / "data/photos/face_recognition_examples/examples/knn_examples/test/obama1.jpg"
    files = [
        ("files", ("obama1.jpg", photo.read_bytes(), "image/jpeg")),
        ("files", ("notes.txt", b"not a photo", "text/plain")),
        ("files", ("fake.jpg", b"not a jpeg either", "image/jpeg")),
    ]
    before = get(site, API).json()["photos"]
    started = send(site, "POST", f"{API}/uploads", files=files)
    assert started.status_code == 202, started.text
    assert started.json()["saved"] == 2
    again = send(site, "POST", f"{API}/uploads", files=[files[0]])
    assert_error(again, 409)  # one job per library at a time
    job = wait_job(site)
    assert job["state"] == "done", job
    assert [r["path"] for r in job["rejected"]] == ["notes.txt"]
    assert [Path(e["path"]).name for e in job["errors"]] == ["fake.jpg"] and job["errors"][0]["reason"]
    assert job["faces"] >= 1
    assert get(site, API).json()["photos"] == before + 2
    stored = list((site["data"] / "uploads" / "default").rglob("obama1.jpg"))
    assert len(stored) == 1 and os.path.getsize(stored[0]) == photo.stat().st_size


def test_offline_docs(site):
    client: TestClient = site["client"]
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn" not in html.lower() and "googleapis" not in html
        for asset in [part.split('"')[0] for part in html.split('src="')[1:]]:
            assert asset.startswith("/web/"), asset
            assert client.get(asset).status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/library/v1/libraries/{library}/people" in paths
    assert "/api/v1/recognition/recognize" in paths


def test_pages_render_for_the_owner_only(site):
    client: TestClient = site["client"]
    client.cookies.clear()
    pid = owner_of(site["db"], "Tony_Blair")
    photo = get(site, f"{API}/photos").json()["photos"][0]["id"]
    pages = [
        "/l/default/people",
        "/l/default/people?show=unnamed&sort=name&q=a",
        f"/l/default/people/{pid}",
        "/l/default/review",
        "/l/default/photos",
        f"/l/default/photos?person={pid}&sort=path&offset=48",
        f"/l/default/photos/{photo}",
        "/l/default/search",
        "/l/default/library",
    ]
    for page in pages:
        assert client.get(page, follow_redirects=False).status_code == 303, page
    client.post("/login", data={"secret": TOKEN})
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, (page, response.text[:500])
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
        assert "http://" not in response.text and "https://" not in response.text, page
    assert client.get("/l/nope/people").status_code == 404
    assert client.get("/l/default/people/99999").status_code == 404
    assert client.get("/l/default/photos/99999").status_code == 404
    client.cookies.clear()
