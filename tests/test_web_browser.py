"""The web app in a real browser (Playwright + Debian's chromium) against a live ``faceatlas serve``.

One server and one browser for the module; the tests run in order on one library: the first ones log in
and index the photo folder through the UI, the others use what that built. Every request to a host other
than the test server is aborted and fails the test. Screenshots go to $FACEATLAS_ARTIFACTS (default
tests/artifacts/web).
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import REPO, LiveServer, faceatlas_cli
from tests.web_helpers import (
    PHOTOS_PER_PERSON,
    SELFIE_PERSON,
    TOKEN,
    build_photo_tree,
    chromium_context,
    collect_page_errors,
    refuse_outside_requests,
    selfie,
)

API = "/api/library/v1/libraries/default"
ARTIFACTS = Path(os.environ.get("FACEATLAS_ARTIFACTS", REPO / "tests" / "artifacts")) / "web"


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared):
    base = tmp_path_factory.mktemp("webui")
    photos = build_photo_tree(shared, base / "photos")
    data = base / "data"
    os.environ["FACEATLAS_CACHE"] = str(base / "cache")  # previews and thumbnails of this run only
    live = LiveServer(data, extra=("--photos-root", str(photos)))
    with live:
        live.photos = photos  # type: ignore[attr-defined]
        live.api = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        yield live
        live.api.close()
    os.environ.pop("FACEATLAS_CACHE", None)


@pytest.fixture(scope="module")
def browser_context(server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_context(server.url) as context:
        context.set_default_timeout(20_000)
        yield context


@pytest.fixture()
def page(browser_context, server):
    """A page whose requests may only go to the test server; console errors fail the test too."""
    outside = refuse_outside_requests(browser_context, server.url)
    tab = browser_context.new_page()
    errors = collect_page_errors(tab)
    tab.console_errors = errors  # type: ignore[attr-defined]  (a test may take out the errors it caused)
    yield tab
    tab.close()
    browser_context.unroute("**/*")
    assert outside == [], f"requests outside the server: {outside}"
    assert errors == [], f"errors in the page: {errors}"


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def person_of(server, folder: str) -> int:
    """The person of most faces in the photos of ``lfw/<folder>``."""
    found = server.api.get(f"{API}/photos", params={"folder": str(server.photos / "lfw" / folder)}).json()
    owners: dict[int, int] = {}
    for photo in found["photos"]:
        for face in server.api.get(f"{API}/photos/{photo['id']}").json()["faces"]:
            if face["person_id"]:
                owners[face["person_id"]] = owners.get(face["person_id"], 0) + 1
    return max(owners, key=owners.__getitem__)


def drop_files(page, selector: str, files: list[tuple[str, bytes, str]]) -> None:
    """Drag and drop files onto ``selector`` as a user would from a file manager."""
    payload = [{"name": n, "data": base64.b64encode(d).decode(), "type": t} for n, d, t in files]
    transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, { type: f.type }));
            }
            return dt;
        }""",
        payload,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def wait_job_done(page, previous: str | None = None, timeout: float = 240_000) -> None:
    """Wait for the page to show a job other than ``previous`` finished."""
    page.wait_for_function(
        """(previous) => {
            const job = document.getElementById('job');
            return job && job.dataset.job && job.dataset.job !== previous
                && ['done', 'failed', 'cancelled'].includes(job.dataset.state);
        }""",
        arg=previous,
        timeout=timeout,
    )
    assert page.locator("#job").get_attribute("data-state") == "done", page.locator("#job").inner_text()


# --- the tests, in order ---------------------------------------------------------------------------


def test_login(page, server):
    page.goto("/")
    assert "/login" in page.url
    page.fill("input[name=secret]", "wrong token")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Wrong password or admin token.")
    assert page.console_errors == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]
    page.console_errors.clear()
    shot(page, "01-login")
    page.fill("input[name=secret]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/l/default/people"))
    assert page.locator("text=No people yet").is_visible()


def test_index_folder_and_watch_progress(page, server):
    page.goto("/l/default/library")
    page.fill("#folder-input", str(server.photos))
    page.click("#folder-form button[type=submit]")
    page.wait_for_selector("#job:not([hidden])")
    seen: set[float] = set()
    page.wait_for_function(
        "() => document.getElementById('job').dataset.state === 'indexing'"
        " && Number(document.getElementById('job-progress').value) > 0",
        timeout=240_000,
    )
    seen.add(float(page.locator("#job-progress").get_attribute("value") or 0))
    wait_job_done(page)
    assert page.locator("#job-percent").inner_text() == "100"
    assert float(page.locator("#job-progress").evaluate("p => p.value")) == 100
    assert min(seen) < 100  # the progress was watched on its way up
    report = page.locator("#job-report")
    assert report.get_by_role("heading", name="Stages").is_visible()
    assert "broken.jpg" in report.inner_text()
    page.reload()
    assert "broken.jpg" in page.locator("table").last.inner_text()
    shot(page, "02-library-indexed")


def test_people_page_covers_render(page, server):
    page.goto("/l/default/people")
    tiles = page.locator(".person-tile")
    assert tiles.count() >= 7
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function(
        "() => [...document.images].every((img) => img.complete && img.naturalWidth > 0)", timeout=30_000
    )
    widths = page.evaluate("[...document.images].map((img) => img.naturalWidth)")
    assert len(widths) >= 8 and all(w > 0 for w in widths)
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "03-people")
    phone = page.context.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.goto("/l/default/people")
    assert phone.locator(".nav-burger").is_visible() and not phone.locator(".nav").is_visible()
    phone.click(".nav-burger")
    assert phone.locator(".nav a", has_text="Review").is_visible()
    phone.screenshot(path=str(ARTIFACTS / "03-people-phone.png"))
    phone.close()


def test_rename_in_place(page, server):
    pid = person_of(server, SELFIE_PERSON)
    page.goto("/l/default/people")
    field = page.locator(f"input[data-rename='{pid}']")
    field.fill("Tony Blair")
    field.press("Enter")
    page.wait_for_selector("#toast.show >> text=Named Tony Blair")
    page.reload()
    assert page.locator(f"input[data-rename='{pid}']").input_value() == "Tony Blair"
    assert server.api.get(f"{API}/people/{pid}").json()["name"] == "Tony Blair"


def test_split_then_merge_back(page, server):
    pid = person_of(server, "Lleyton_Hewitt")
    before = server.api.get(f"{API}/people/{pid}").json()["faces"]
    page.goto(f"/l/default/people/{pid}")
    tiles = page.locator("#faces .face-tile")
    for i in range(3):
        tiles.nth(i).locator("img").click()
    assert page.locator("#selected-count").inner_text() == "3 selected"
    shot(page, "04-person-selected")
    page.once("dialog", lambda dialog: dialog.accept("Hewitt twin"))
    page.click("[data-action=split]")
    page.wait_for_url(re.compile(rf"/l/default/people/(?!{pid}$)\d+$"))
    new_id = int(page.url.rsplit("/", 1)[1])
    assert page.locator("#faces .face-tile").count() == 3
    assert page.locator("input[data-rename]").input_value() == "Hewitt twin"
    assert server.api.get(f"{API}/people/{pid}").json()["faces"] == before - 3
    # merge back: the person it came from is the closest suggestion
    first = page.locator("#suggestions .suggestion").first
    first.wait_for()
    assert first.get_attribute("data-merge") == str(pid)
    shot(page, "05-person-merge-suggestions")
    page.once("dialog", lambda dialog: dialog.accept())
    first.click()
    page.wait_for_selector("#toast.show")
    page.wait_for_load_state("load")
    merged = server.api.get(f"{API}/people/{new_id}").json()
    assert merged["faces"] == before and merged["name"] == "Hewitt twin"


def test_remove_face_stays_removed_after_reclustering(page, server):
    pid = person_of(server, "Jennifer_Capriati")
    page.goto(f"/l/default/people/{pid}")
    victim = int(page.locator("#faces .face-tile").first.get_attribute("data-face"))
    page.locator("#faces .face-tile").first.locator("img").click()
    page.click("[data-action=remove]")
    page.wait_for_selector("#toast.show >> text=removed")
    page.wait_for_function(
        f"() => !document.querySelector(\"#faces [data-face='{victim}']\")", timeout=10_000
    )
    faceatlas_cli("cluster", "--rebuild", "--library", str(server.data_dir))
    page.reload()
    assert page.locator(f"#faces [data-face='{victim}']").count() == 0
    assert server.api.get(f"{API}/faces/{victim}").json()["person_id"] != pid
    # the split-then-merged person of the test before stays one person after the rebuild
    twin = server.api.get(f"{API}/people", params={"q": "Hewitt twin"}).json()["people"]
    assert [p["faces"] for p in twin] == [PHOTOS_PER_PERSON]


def test_review_and_assign(page, server):
    page.goto("/l/default/review")
    total = int(page.locator("#review-total").inner_text())
    assert total >= 1
    page.wait_for_selector("#review-context img")
    page.wait_for_function("() => document.getElementById('review-face').naturalWidth > 0")
    shot(page, "06-review")
    face_id = int(page.locator("#review-face").get_attribute("data-face"))
    if total > 1:  # the keyboard moves through the queue
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => document.getElementById('review-face').dataset.face !== '{face_id}'")
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(f"() => document.getElementById('review-face').dataset.face === '{face_id}'")
    page.once("dialog", lambda dialog: dialog.accept("Reviewed stranger"))
    page.keyboard.press("n")
    page.wait_for_selector("#toast.show >> text=New person")
    page.wait_for_function(f"() => document.getElementById('review-total')?.textContent === '{total - 1}'")
    face = server.api.get(f"{API}/faces/{face_id}").json()
    assert face["source"] == "user"
    assert server.api.get(f"{API}/people/{face['person_id']}").json()["name"] == "Reviewed stranger"


def test_photo_boxes_open_the_person(page, server):
    folder = str(server.photos / "groups")
    photos = server.api.get(f"{API}/photos", params={"folder": folder}).json()["photos"]
    two = next(p for p in photos if p["name"] == "two_people.jpg")
    detail = server.api.get(f"{API}/photos/{two['id']}").json()
    assert len(detail["faces"]) == 2
    page.goto(f"/l/default/photos/{two['id']}")
    page.wait_for_function("() => document.getElementById('photo-img').naturalWidth > 0")
    boxes = page.locator("#photo-view .box")
    assert boxes.count() == 2
    for i in range(2):
        box = boxes.nth(i).bounding_box()
        assert box and box["width"] > 20 and box["height"] > 20
    shot(page, "07-photo")
    target = boxes.first.get_attribute("href")
    boxes.first.click()
    page.wait_for_url(re.compile(re.escape(target) + "$"))


def test_search_with_a_selfie(page, server, shared):
    pid = person_of(server, SELFIE_PERSON)
    page.goto("/l/default/search")
    drop_files(page, "#search-drop", [("selfie.jpg", selfie(shared).read_bytes(), "image/jpeg")])
    page.wait_for_selector("#search-hits .tile")
    hits = page.locator("#search-hits .tile")
    assert hits.first.get_attribute("data-person") == str(pid)
    assert "Tony Blair" in hits.first.inner_text() and "match" in hits.first.inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#search-hits img')].slice(0, 6)"
        ".every((i) => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "08-search")


def test_upload_by_drag_and_drop(page, server, shared):
    before = server.api.get(API).json()["photos"]
    examples = shared / "data/photos/face_recognition_examples/examples/knn_examples"
    files = [
        ("obama1.jpg", (examples / "test/obama1.jpg").read_bytes(), "image/jpeg"),
        ("kit_with_rose.jpg", (examples / "test/kit_with_rose.jpg").read_bytes(), "image/jpeg"),
        ("notes.txt", b"not a photo", "text/plain"),
    ]
    page.goto("/l/default/library")
    page.wait_for_selector("#job[data-job]")
    previous = page.locator("#job").get_attribute("data-job")
    drop_files(page, "#upload-drop", files)
    wait_job_done(page, previous)
    assert "notes.txt" in page.locator("#job-report").inner_text()
    assert server.api.get(API).json()["photos"] == before + 2
    shot(page, "09-upload")


def test_every_page_screenshot(page, server):
    """The remaining pages, for a look at the layout."""
    page.goto("/l/default/photos")
    page.wait_for_function(
        "() => [...document.images].slice(0, 8).every((i) => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "10-photos")
    pid = person_of(server, SELFIE_PERSON)
    page.goto(f"/l/default/people/{pid}")
    page.wait_for_selector("#suggestions .suggestion")
    shot(page, "11-person")
    page.goto("/docs")
    page.wait_for_selector(".swagger-ui .info")
    shot(page, "12-docs")
    # the README's picture: the people page with a few names
    for folder, name in (
        ("Colin_Powell", "Colin Powell"),
        ("Laura_Bush", "Laura Bush"),
        ("Hugo_Chavez", "Hugo Chávez"),
    ):
        server.api.patch(f"{API}/people/{person_of(server, folder)}", json={"name": name}).raise_for_status()
    page.set_viewport_size({"width": 1100, "height": 620})
    page.goto("/l/default/people")
    page.wait_for_function("() => [...document.images].every((i) => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(ARTIFACTS / "readme-people.png"))
