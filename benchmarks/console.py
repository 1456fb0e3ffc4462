"""Service console benchmark: server time of the console's collection queries on a large collection.

    python benchmarks/console.py [--faces 100000] [--subjects 5000] [--runs 30]

Writes benchmarks/results/console.json: p50/p90 ms of the services list (with counts), the first and the
last page of subjects (counts and covers), a name search, and one subject's images — on SQLite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, summary, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--subjects", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    from faceatlas.storage.db import Database
    from faceatlas.storage.services import ServiceStore
    from faceatlas.web import console_store

    with tempfile.TemporaryDirectory() as tmp:
        store = ServiceStore(Database.open(data_dir=Path(tmp)))
        service = store.create_service("big", "recognition", "sface")
        per = args.faces // args.subjects
        names = [f"person {i:05d}" for i in range(args.subjects) for _ in range(per)]
        vectors = np.random.default_rng(0).normal(size=(len(names), 128)).astype(np.float32)
        started = time.perf_counter()
        store.add_faces_bulk(service.id, names, vectors, "sface")
        load_s = time.perf_counter() - started
        db = store.db
        subject_id = console_store.subjects_page(db, service.id, offset=0, limit=1)[1][0].id
        cases = {
            "services_with_counts": lambda: console_store.service_summaries(db),
            "subjects_first_page": lambda: console_store.subjects_page(db, service.id, offset=0, limit=60),
            "subjects_last_page": lambda: console_store.subjects_page(
                db, service.id, offset=args.subjects - 60, limit=60
            ),
            "subjects_search": lambda: console_store.subjects_page(
                db, service.id, offset=0, limit=60, query="person 012"
            ),
            "subject_images": lambda: console_store.subject_images(
                db, service.id, subject_id, offset=0, limit=60
            ),
        }
        result: dict[str, object] = {
            "machine": machine(),
            "faces": len(names),
            "subjects": args.subjects,
            "bulk_insert_s": round(load_s, 2),
        }
        for name, call in cases.items():
            call()
            samples = []
            for _ in range(args.runs):
                t = time.perf_counter()
                call()
                samples.append((time.perf_counter() - t) * 1000)
            result[f"{name}_ms"] = summary(samples)
        db.dispose()
    path = write_result("console", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
