"""The service console in a real browser (Playwright + Debian's chromium) against a live ``faceatlas serve``.

One server and one browser tab for the module (a key shown at creation is remembered by that tab, as
for a user); the tests run in order: log in, create a recognition service and copy its key, upload photos
of two subjects, try it, rotate the key, detection try it with age/gender/mask, status. Every request to a
host other than the test server is aborted and fails the test. Screenshots go to $FACEATLAS_ARTIFACTS
(default tests/artifacts/console).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from faceatlas.evaluation.masks import MASK_COLOURS, draw_mask
from tests.api_helpers import EXAMPLES, REPO, LiveServer
from tests.web_helpers import TOKEN, chromium_context, collect_page_errors, refuse_outside_requests

ARTIFACTS = Path(os.environ.get("FACEATLAS_ARTIFACTS", REPO / "tests" / "artifacts")) / "console"
FACTS: dict[str, Any] = {}  # what one test leaves for the next (keys, ids)


@pytest.fixture(scope="module")
def server(engine, shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    """A server whose default library holds one named person (Hugo Chavez, 6 photos)."""
    from faceatlas.library.clustering import ClusterOptions, cluster_library
    from faceatlas.library.people import list_people, rename_person
    from faceatlas.library.pipeline import index_library
    from faceatlas.library.store import open_library

    data = tmp_path_factory.mktemp("console")
    photos = tmp_path_factory.mktemp("console-photos")
    for image in sorted((shared / "data" / "lfw-dev" / "images" / "Hugo_Chavez").glob("*.jpg"))[:6]:
        (photos / image.name).symlink_to(image)
    library = open_library(data)
    index_library(library, engine, [photos])
    cluster_library(library, engine.pack.id, ClusterOptions(threshold=engine.pack.threshold))
    FACTS["person"] = rename_person(library, list_people(library)[0].id, "Hugo Chavez").id
    library.dispose()
    with LiveServer(data) as live:
        yield live


@pytest.fixture(scope="module")
def tab(server: LiveServer) -> Iterator[Any]:
    """One tab whose requests may only go to the test server; page errors are collected."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_context(server.url, permissions=["clipboard-read", "clipboard-write"]) as context:
        context.set_default_timeout(30_000)
        outside = refuse_outside_requests(context, server.url)
        page = context.new_page()
        errors = collect_page_errors(page)
        page.outside = outside
        page.errors = errors
        yield page


@pytest.fixture(autouse=True)
def no_outside_requests(tab: Any) -> Iterator[None]:
    yield
    assert tab.outside == [], f"requests outside the server: {tab.outside}"
    assert tab.errors == [], f"errors in the page: {tab.errors}"


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def images_render(page: Any) -> list[int]:
    page.wait_for_function(
        "() => [...document.images].every((img) => img.complete && img.naturalWidth > 0)", timeout=30_000
    )
    return page.evaluate("[...document.images].map((img) => img.naturalWidth)")


def create_service(page: Any, name: str, kind: str) -> str:
    """Create a service through the form; returns the key the page shows once."""
    page.goto("/console/services")
    page.fill("#create-service input[name=name]", name)
    page.select_option("#create-service select[name=type]", kind)
    page.click("#create-service button[type=submit]")
    page.wait_for_selector("#key-panel:not([hidden])")
    key = page.locator("#key-value").inner_text().strip()
    assert page.locator(f"tr[data-name='{name}']").is_visible()
    return key


def open_service_page(page: Any, name: str) -> None:
    """Follow a service's link from the services page and wait for the page's script to have run (its
    elements exist before that: a file set or a click in between would meet no listener)."""
    page.click(f"tr[data-name='{name}'] a.service-link")
    page.wait_for_url(re.compile(r"/console/services/\d+$"))  # waits for the load event
    page.wait_for_function("() => document.getElementById('try-key').value !== ''")  # filled by the script


def test_create_service_and_copy_its_key(tab: Any, server: LiveServer) -> None:
    tab.goto("/console/services")
    assert "/login" in tab.url
    tab.fill("input[name=secret]", TOKEN)
    tab.click("button[type=submit]")
    tab.wait_for_url(re.compile(r"/console/services"))
    key = create_service(tab, "front door", "recognition")
    uuid.UUID(key)
    tab.click("#key-copy")
    tab.wait_for_selector("text=Key copied")
    assert tab.evaluate("navigator.clipboard.readText()") == key
    shot(tab, "01-services-key-shown")
    # shown once: a reload no longer shows it anywhere on the page
    tab.reload()
    assert tab.locator("#key-panel").is_hidden() and key not in tab.content()
    row = tab.locator("tr[data-name='front door']")
    assert "recognition" in row.inner_text() and "sface" in row.inner_text()
    FACTS["key"] = key
    FACTS["service"] = int(row.get_attribute("data-service"))


def test_upload_three_photos_for_two_subjects(tab: Any, shared: Path) -> None:
    tab.click("tr[data-name='front door'] a.service-link")
    tab.wait_for_url(re.compile(r"/console/services/\d+$"))
    examples = shared / EXAMPLES
    for subject, files in (("Obama", ["obama.jpg", "obama2.jpg"]), ("Biden", ["biden.jpg"])):
        tab.fill("#upload input[name=subject]", subject)
        tab.set_input_files("#upload-files", [str(examples / f) for f in files])
        tab.wait_for_function(
            "(n) => document.querySelectorAll('#upload-results li.ok').length === n", arg=len(files)
        )
        tab.wait_for_load_state("load")
        tab.wait_for_timeout(1500)  # the page reloads to show the new subject
    # a bad file gets its own error line, the good ones still go in
    tab.fill("#upload input[name=subject]", "Obama")
    tab.set_input_files(
        "#upload-files",
        [
            {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not an image"},
            {
                "name": "two_people.jpg",
                "mimeType": "image/jpeg",
                "buffer": (examples / "two_people.jpg").read_bytes(),
            },
        ],
    )
    tab.wait_for_function("() => document.querySelectorAll('#upload-results li.error').length === 2")
    errors = tab.locator("#upload-results").inner_text()
    assert "notes.jpg: not a usable image" in errors and "two_people.jpg: more than one face" in errors
    tab.reload()
    tiles = tab.locator(".subject-tile")
    assert tiles.count() == 2
    assert sorted(tiles.evaluate_all("ts => ts.map(t => t.dataset.subject)")) == ["Biden", "Obama"]
    assert "2 images" in tab.locator(".subject-tile[data-subject=Obama]").inner_text()
    assert "1 image" in tab.locator(".subject-tile[data-subject=Biden]").inner_text()
    assert all(w > 0 for w in images_render(tab))
    shot(tab, "02-collection")
    tab.click(".subject-tile[data-subject=Obama]")
    tab.wait_for_selector(".image-tile")
    assert tab.locator(".image-tile").count() == 2
    images_render(tab)
    widths = tab.locator(".image-tile img").evaluate_all("imgs => imgs.map((img) => img.naturalWidth)")
    assert widths == [160, 160]
    shot(tab, "03-subject")


def test_try_it_names_both_people(tab: Any, shared: Path) -> None:
    tab.goto(f"/console/services/{FACTS['service']}")
    assert tab.input_value("#try-key") == FACTS["key"]  # remembered by this tab since creation
    tab.set_input_files("#try-file", str(shared / EXAMPLES / "two_people.jpg"))
    tab.wait_for_selector("#try-result:not([hidden]) canvas")
    labels = tab.locator(".try-label").all_inner_texts()
    assert len(labels) == 2
    assert {label.split(" ")[0] for label in labels} == {"Obama", "Biden"}
    answer = json.loads(tab.locator("#try-json").inner_text())
    assert sorted(face["subjects"][0]["subject"] for face in answer["result"]) == ["Biden", "Obama"]
    curl = tab.locator("#try-curl").inner_text()
    assert FACTS["key"] in curl and "two_people.jpg" in curl and "/api/v1/recognition/recognize" in curl
    # the canvas really carries the drawing: its pixels differ from the bare photo inside a face box
    painted = tab.evaluate(
        """() => { const c = document.querySelector('.try-canvas');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let yellow = 0; for (let i = 0; i < d.length; i += 4)
                     if (d[i] > 240 && d[i + 1] > 200 && d[i + 2] < 20) yellow++;
                   return yellow; }"""
    )
    assert painted > 500
    shot(tab, "04-try-it-recognition")


def test_try_it_takes_a_photo_chosen_before_its_script_ran(tab: Any, shared: Path) -> None:
    """On a slow link the page is usable before console.js has run: a photo chosen then is not lost."""
    held: list[Any] = []

    def hold(route: Any) -> None:  # the script is not served until the photo has been chosen
        held.append(route)

    tab.route("**/console/console.js", hold)
    try:
        tab.goto(f"/console/services/{FACTS['service']}", wait_until="commit")
        tab.wait_for_selector("#try-file", state="attached")
        tab.set_input_files("#try-file", str(shared / EXAMPLES / "obama.jpg"))
        for _ in range(200):
            if held:
                break
            tab.wait_for_timeout(50)
        assert held, "the page never asked for console.js"
        assert tab.locator("#try-result").is_hidden()  # nothing ran yet
        held[0].continue_()
    finally:
        tab.unroute("**/console/console.js")
    tab.wait_for_selector("#try-result:not([hidden]) canvas")
    assert tab.locator(".try-label").first.inner_text().startswith("Obama")


def test_rotate_key_refuses_the_old_one(tab: Any, server: LiveServer, shared: Path) -> None:
    old = FACTS["key"]
    tab.goto("/console/services")
    tab.once("dialog", lambda dialog: dialog.accept())
    tab.click("tr[data-name='front door'] [data-action=rotate]")
    tab.wait_for_selector("#key-panel:not([hidden])")
    new = tab.locator("#key-value").inner_text().strip()
    assert new != old
    shot(tab, "05-rotated")
    photo = (shared / EXAMPLES / "obama.jpg").read_bytes()

    def recognize(key: str) -> httpx.Response:
        return httpx.post(
            server.url + "/api/v1/recognition/recognize",
            headers={"x-api-key": key},
            files={"file": ("obama.jpg", photo, "image/jpeg")},
            timeout=60,
        )

    refused = recognize(old)
    assert refused.status_code == 404 and refused.json()["code"] == 10
    accepted = recognize(new)
    assert accepted.status_code == 200 and accepted.json()["result"][0]["subjects"][0]["subject"] == "Obama"
    FACTS["key"] = new


def test_detection_try_it_with_age_gender_mask(tab: Any, engine, shared: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    decoded = engine.decode(shared / EXAMPLES / "obama.jpg")
    face = engine.analyze(decoded, embed=False, limit=1)[0]
    masked = tmp_path / "obama_masked.jpg"
    Image.fromarray(draw_mask(decoded.rgb, face.landmarks / decoded.scale, "cloth", MASK_COLOURS[3])).save(
        masked, quality=92
    )
    create_service(tab, "doorbell detect", "detection")
    open_service_page(tab, "doorbell detect")
    assert tab.locator("#upload").count() == 0  # a detection service has no collection
    for plugin in ("age", "gender", "mask"):
        tab.check(f"input[name=plugin][value={plugin}]")
    tab.set_input_files("#try-file", str(masked))
    tab.wait_for_selector("#try-result:not([hidden]) canvas")
    label = tab.locator(".try-label").first.inner_text()
    assert "age" in label and "male" in label and "with mask" in label, label
    answer = json.loads(tab.locator("#try-json").inner_text())["result"][0]
    assert answer["mask"]["value"] == "with_mask" and answer["gender"]["value"] == "male"
    assert set(answer["age"]) == {"probability", "high", "low"}
    assert "face_plugins=age%2Cgender%2Cmask" in tab.locator("#try-curl").inner_text()
    shot(tab, "06-try-it-detection-mask")
    tab.set_input_files("#try-file", str(shared / EXAMPLES / "obama.jpg"))
    tab.wait_for_function("() => document.querySelector('.try-label')?.textContent.includes('without mask')")


def test_subject_rename_merge_and_delete_image(tab: Any) -> None:
    tab.goto(f"/console/services/{FACTS['service']}")
    tab.click(".subject-tile[data-subject=Biden]")
    tab.wait_for_selector("#subject")
    biden_page = tab.url
    tab.fill("#subject-name", "Obama")  # onto an existing subject: merged, as in CompreFace
    tab.click("#subject-rename")
    tab.wait_for_url(lambda url: url != biden_page and re.search(r"/subjects/\d+$", url) is not None)
    tab.wait_for_selector(".image-tile")
    assert tab.locator(".image-tile").count() == 3
    tab.once("dialog", lambda dialog: dialog.accept())
    tab.locator("[data-delete-image]").first.click()
    tab.wait_for_function("() => document.querySelectorAll('.image-tile').length === 2")
    tab.goto(f"/console/services/{FACTS['service']}")
    assert tab.locator(".subject-tile").count() == 1
    assert "2 images" in tab.locator(".subject-tile").inner_text()


def test_status_shows_pack_models_and_similarity_table(tab: Any) -> None:
    tab.goto("/console/status")
    rows = tab.locator("#similarity-table tbody tr")
    assert rows.count() == 5
    assert [r.split("\t")[0].strip() for r in rows.all_inner_texts()] == ["0.5", "0.6", "0.8", "0.9", "0.99"]
    models = tab.locator("#models").inner_text()
    assert "yunet" in models and "SFace" in models and "face_mask_detector" in models
    assert "CPUExecutionProvider" in tab.locator("main").inner_text()
    assert "mask" in tab.locator("#plugins").inner_text()
    shot(tab, "07-status")


def test_verification_try_it_compares_two_images(tab: Any, shared: Path) -> None:
    create_service(tab, "gate verify", "verification")
    open_service_page(tab, "gate verify")
    tab.set_input_files("[data-try-file=source_image]", str(shared / EXAMPLES / "obama.jpg"))
    tab.set_input_files("[data-try-file=target_image]", str(shared / EXAMPLES / "two_people.jpg"))
    tab.click("#try-run")
    # two images analysed on a busy CI core can take a while
    tab.wait_for_function("() => document.querySelectorAll('.try-canvas').length === 2", timeout=90_000)
    answer = json.loads(tab.locator("#try-json").inner_text())["result"][0]
    best = max(answer["face_matches"], key=lambda face: face["similarity"])
    assert best["similarity"] > 0.9 and len(answer["face_matches"]) == 2
    labels = tab.locator(".try-label").all_inner_texts()
    assert any(label.startswith("similarity 0.9") or label.startswith("similarity 1.0") for label in labels)
    curl = tab.locator("#try-curl").inner_text()
    assert '-F "source_image=@obama.jpg" -F "target_image=@two_people.jpg"' in curl
    shot(tab, "09-try-it-verification")
    tab.goto("/console/services")
    tab.once("dialog", lambda dialog: dialog.accept())
    tab.click("tr[data-name='gate verify'] [data-action=delete]")
    tab.wait_for_selector("tr[data-name='gate verify']", state="detached")


def test_delete_service_asks_first(tab: Any, server: LiveServer) -> None:
    create_service(tab, "temporary", "verification")
    tab.reload()
    tab.once("dialog", lambda dialog: dialog.dismiss())
    tab.click("tr[data-name='temporary'] [data-action=delete]")
    tab.wait_for_timeout(300)
    assert tab.locator("tr[data-name='temporary']").count() == 1  # dismissed: nothing happened
    tab.once("dialog", lambda dialog: dialog.accept())
    tab.click("tr[data-name='temporary'] [data-action=delete]")
    tab.wait_for_selector("tr[data-name='temporary']", state="detached")
    listed = httpx.get(
        server.url + "/api/console/v1/services", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ).json()["services"]
    names = [s["name"] for s in listed]
    # the services earlier tests made stay; the dismissed-then-accepted one is gone
    assert "temporary" not in names and {"front door", "doorbell detect"} <= set(names)


def test_publish_a_person_from_the_person_page(tab: Any) -> None:
    tab.goto(f"/l/default/people/{FACTS['person']}")
    tab.wait_for_selector("#publish:not([hidden])")
    assert tab.locator("#publish-service option").all_inner_texts() == ["front door"]
    tab.click("#publish-run")
    tab.wait_for_function("() => document.getElementById('publish-result').textContent.includes('faces')")
    assert "subject Hugo Chavez: +5" in tab.locator("#publish-result").inner_text()
    shot(tab, "08-person-publish")
    tab.click("#publish-run")  # again: nothing changes
    tab.wait_for_function("() => document.getElementById('publish-result').textContent.includes('+0 −0')")
    tab.goto(f"/console/services/{FACTS['service']}")
    assert "5 images" in tab.locator(".subject-tile[data-subject='Hugo Chavez']").inner_text()
