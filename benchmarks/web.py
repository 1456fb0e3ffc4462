"""Server time of the web app's pages on a large synthetic library, and what the people page downloads.

Builds a SQLite library of 100 000 faces / 5 000 people (plus unassigned faces to review) whose photos
are links to real LFW images (and a few 12 MP JPEGs made from a real photo), serves it in-process with
the real app (bundled sface engine) and measures, sequentially, with warm caches unless said:

* the people page's first screen (server-rendered HTML with 60 cover faces), a person page, the review
  page and the review queue it fetches, the merge suggestions, a 1280 px preview of a 12 MP photo (cold
  and cached), a face thumbnail from the cache;
* the bytes the first screen of the people page downloads (HTML, CSS, JS, icon, 60 thumbnails).

Times are server times: from the request entering the ASGI app to its last response byte (in process,
no network), sequential, so they show the cost of one request on an idle server.
Writes ``benchmarks/results/web.json``. Usage: ``python benchmarks/web.py [--faces 100000] [--people 5000]``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED, machine, summary, write_result  # noqa: E402

TOKEN = "benchmark-token-0123456789"


def build_library(folder: Path, faces: int, people: int, dim: int, pack: str) -> dict[str, int]:
    """Bulk-insert the synthetic library; returns ids to query."""
    from sqlalchemy import insert

    from faceatlas.library.store import open_library
    from faceatlas.library.tables import Face, Person, Photo

    rng = np.random.default_rng(0)
    lfw = sorted((SHARED / "data/lfw-dev/images").glob("*/*.jpg"))[:2000]
    links = folder / "photos"
    links.mkdir(parents=True)
    big_source = cv2.imread(str(SHARED / "data/photos/face_recognition_examples/examples/two_people.jpg"))
    big = cv2.resize(big_source, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    big_paths = []
    for i in range(5):
        path = links / f"big-{i}.jpg"
        cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
        big_paths.append(path)
    db = open_library(folder / "library")
    photos = faces // 2  # two faces per photo on average
    centres = rng.normal(size=(people, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    with db.session() as session:
        session.execute(
            insert(Person),
            [{"id": p + 1, "name": None if p % 3 else f"Person {p:05d}"} for p in range(people)],
        )
        rows = []
        for i in range(photos):
            path = links / f"p{i:06d}.jpg"
            os.symlink(lfw[i % len(lfw)], path)
            rows.append(
                {
                    "id": i + 1,
                    "path": str(path),
                    "size": 15_000,
                    "mtime": 1.0,
                    "content_hash": f"{i:064x}",
                    "width": 250,
                    "height": 250,
                    "status": "ok",
                    "pack": pack,
                    "face_count": 2,
                }
            )
        for j, path in enumerate(big_paths):
            rows.append(
                {
                    "id": photos + j + 1,
                    "path": str(path),
                    "size": path.stat().st_size,
                    "mtime": 1.0,
                    "content_hash": f"big{j:061x}",
                    "width": 4000,
                    "height": 3000,
                    "status": "ok",
                    "pack": pack,
                    "face_count": 0,
                }
            )
        session.execute(insert(Photo), rows)
    unassigned = faces // 20
    chunk = 10_000
    owners = rng.integers(0, people, size=faces)
    with db.session() as session:
        for start in range(0, faces, chunk):
            batch = []
            for k in range(start, min(start + chunk, faces)):
                vector = centres[owners[k]] + rng.normal(scale=0.6 / np.sqrt(dim), size=dim).astype(
                    np.float32
                )
                vector /= np.linalg.norm(vector)
                left = 20.0 if k % 2 == 0 else 130.0
                batch.append(
                    {
                        "id": k + 1,
                        "photo_id": k // 2 + 1,
                        "x_min": left + 50,
                        "y_min": 60.0,
                        "x_max": left + 150,
                        "y_max": 180.0,
                        "score": 0.9,
                        "embedding": vector.astype(np.float32).tobytes(),
                        "pack": pack,
                        "person_id": None if k < unassigned else int(owners[k]) + 1,
                        "source": None if k < unassigned else "auto",
                    }
                )
            session.execute(insert(Face), batch)
    db.dispose()
    return {"person": int(owners[faces - 1]) + 1, "big_photo": photos + 1, "face": faces}


class ServerTimer:
    """ASGI wrapper: the time from the request reaching the app to the last byte of its response."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.last_ms = 0.0

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        await self.app(scope, receive, send)
        self.last_ms = (time.perf_counter() - start) * 1000


def timed(client, timer: ServerTimer, url: str, repeat: int) -> tuple[list[float], int]:
    """Server times (ms) of ``repeat`` GETs of ``url`` and the response size."""
    times = []
    size = 0
    for _ in range(repeat):
        response = client.get(url)
        times.append(timer.last_ms)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
        size = len(response.content)
    return times, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--people", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from faceatlas.api.app import create_app
    from faceatlas.api.settings import Settings
    from faceatlas.engine import Engine

    engine = Engine("sface")
    work = Path(tempfile.mkdtemp(prefix="faceatlas-web-bench-"))
    os.environ["FACEATLAS_CACHE"] = str(work / "cache")
    started = time.perf_counter()
    ids = build_library(work, args.faces, args.people, engine.pack.embedding_size, engine.pack.id)
    build_seconds = time.perf_counter() - started
    os.environ["FACEATLAS_WEB_LIBRARIES"] = f'["{work / "library"}"]'
    app = create_app(Settings(data_dir=work / "data", admin_token=TOKEN), engine=engine)
    result: dict[str, object] = {
        "machine": machine(),
        "faces": args.faces,
        "people": args.people,
        "build_seconds": round(build_seconds, 1),
    }
    timer = ServerTimer(app)
    with TestClient(timer) as client:
        client.post("/login", data={"secret": TOKEN})
        lib = "/l/library"
        api = "/api/library/v1/libraries/library"
        first = time.perf_counter()
        client.get(f"{api}/review?limit=50")
        result["review_first_call_ms"] = round(
            (time.perf_counter() - first) * 1000, 1
        )  # builds the mean faces
        pages = {
            "people_first_screen": f"{lib}/people",
            "people_api_page": f"{api}/people?limit=60",
            "person_page": f"{lib}/people/{ids['person']}",
            "person_suggestions": f"{api}/people/{ids['person']}/suggestions",
            "review_page": f"{lib}/review",
            "review_queue_api": f"{api}/review?limit=50",
            "photo_page": f"{lib}/photos/{ids['big_photo']}",
        }
        for name, url in pages.items():
            timed(client, timer, url, 2)  # warm
            times, size = timed(client, timer, url, args.repeat)
            result[name] = {**summary(times), "bytes": size}
        # a 12 MP photo: the first preview decodes it (DCT-reduced), later ones come from the cache
        cold = []
        for j in range(5):
            response = client.get(f"{api}/photos/{ids['big_photo'] + j}/preview?size=1280")
            cold.append(timer.last_ms)
            assert response.status_code == 200
        result["preview_12mp_cold"] = summary(cold)
        times, size = timed(client, timer, f"{api}/photos/{ids['big_photo']}/preview?size=1280", args.repeat)
        result["preview_12mp_cached"] = {**summary(times), "bytes": size}
        # the first screen's download: the HTML, its assets, its 60 cover thumbnails
        html = client.get(f"{lib}/people").text
        assets = re.findall(r'(?:src|href)="(/web/static/[^"]+)"', html)
        thumbs = re.findall(r'src="(/api/library/v1/[^"]+/thumbnail)"', html)
        total = len(html.encode())
        for url in dict.fromkeys(assets):
            total += len(client.get(url).content)
        for url in thumbs:
            total += len(client.get(url).content)
        result["people_first_screen_download"] = {
            "bytes": total,
            "kilobytes": round(total / 1024, 1),
            "thumbnails": len(thumbs),
            "assets": sorted(set(assets)),
        }
        times, size = timed(client, timer, thumbs[0], args.repeat * 3)
        result["thumbnail_cached"] = {**summary(times), "bytes": size}
    checks = {
        "people_first_screen_p50_le_50ms": result["people_first_screen"]["p50"] <= 50,  # type: ignore[index]
        "person_page_p50_le_50ms": result["person_page"]["p50"] <= 50,  # type: ignore[index]
        "review_page_p50_le_50ms": result["review_page"]["p50"] <= 50,  # type: ignore[index]
        "review_queue_p50_le_50ms": result["review_queue_api"]["p50"] <= 50,  # type: ignore[index]
        "preview_cached_p50_le_50ms": result["preview_12mp_cached"]["p50"] <= 50,  # type: ignore[index]
        "thumbnail_cached_p50_le_5ms": result["thumbnail_cached"]["p50"] <= 5,  # type: ignore[index]
        "first_screen_le_500KB": total <= 500 * 1024,
    }
    result["checks"] = checks
    path = write_result("web", result)
    print(path.read_text())


if __name__ == "__main__":
    main()
