"""A small real photo library for the web tests: LFW people, group photos and one unreadable file."""

from __future__ import annotations

import shutil
from pathlib import Path

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
