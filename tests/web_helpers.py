"""A small real photo library for the web tests: LFW people, group photos and one unreadable file."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LFW_PEOPLE = (
    "Colin_Powell",
    "Tony_Blair",
    "Hugo_Chavez",
    "Jacques_Chirac",
    "Jennifer_Capriati",
    "Lleyton_Hewitt",
    "Laura_Bush",
)
PHOTOS_PER_PERSON = 8
EXAMPLES = "data/photos/face_recognition_examples/examples"
GROUP_PHOTOS = (
    f"{EXAMPLES}/two_people.jpg",
    f"{EXAMPLES}/obama.jpg",
    f"{EXAMPLES}/obama2.jpg",
    f"{EXAMPLES}/obama-480p.jpg",
    f"{EXAMPLES}/biden.jpg",
    f"{EXAMPLES}/knn_examples/test/obama_and_biden.jpg",
    "data/photos/insightface-samples/python-package/insightface/data/images/t1.jpg",
)
#: The person whose held-out photo is the selfie of the search tests.
SELFIE_PERSON = "Tony_Blair"


def lfw_images(shared: Path, person: str) -> list[Path]:
    return sorted((shared / "data" / "lfw-dev" / "images" / person).glob("*.jpg"))


def build_photo_tree(shared: Path, root: Path, *, people: tuple[str, ...] = LFW_PEOPLE) -> Path:
    """Copies (not links: a link out of a photo root is refused) of ~65 photos under ``root``;
    returns ``root``. Layout: ``lfw/<person>/*.jpg``, ``groups/*.jpg``, ``groups/broken.jpg``."""
    for person in people:
        folder = root / "lfw" / person
        folder.mkdir(parents=True, exist_ok=True)
        for image in lfw_images(shared, person)[:PHOTOS_PER_PERSON]:
            shutil.copyfile(image, folder / image.name)
    groups = root / "groups"
    groups.mkdir(parents=True, exist_ok=True)
    for rel in GROUP_PHOTOS:
        source = shared / rel
        shutil.copyfile(source, groups / source.name)
    (groups / "broken.jpg").write_bytes(b"this is not a JPEG file\n" * 10)
    return root


def selfie(shared: Path) -> Path:
    """A photo of SELFIE_PERSON that is not in the library."""
    return lfw_images(shared, SELFIE_PERSON)[PHOTOS_PER_PERSON + 2]


# ---------------------------------------------------------------------------------------------- browser

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); Playwright's download fails here
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "test-admin-token"  # LiveServer's FACEATLAS_ADMIN_TOKEN


@contextmanager
def chromium_context(server_url: str, **options: Any) -> Iterator[Any]:
    """A Playwright browser context on Debian's chromium, its relative URLs on the test server."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server_url, **options)
        try:
            yield context
        finally:
            context.close()
            browser.close()


def refuse_outside_requests(context: Any, server_url: str) -> list[str]:
    """Abort every request to another host than the test server; returns the list of those asked for."""
    own = urlsplit(server_url).netloc
    outside: list[str] = []

    def guard(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).netloc != own and not url.startswith(("data:", "blob:")):
            outside.append(url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", guard)
    return outside


def collect_page_errors(page: Any) -> list[str]:
    """Console errors and uncaught exceptions of ``page``, as they happen."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors
