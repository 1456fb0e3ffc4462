"""Exporting the library: people, their photos and faces as JSON or CSV, and albums of links."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from sqlalchemy import select

from faceatlas.library.tables import STATUS_OK, Face, Person, Photo
from faceatlas.storage import Database

CSV_COLUMNS = (
    "photo_path",
    "photo_id",
    "taken_at",
    "face_id",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "score",
    "person_id",
    "person_name",
    "source",
    "age",
    "gender",
    "quality",
)


def face_records(db: Database) -> list[dict[str, Any]]:
    """One record per face of every readable photo, with its person (if any)."""
    with db.session() as session:
        rows = session.execute(
            select(
                Photo.path,
                Photo.id,
                Photo.taken_at,
                Face.id,
                Face.x_min,
                Face.y_min,
                Face.x_max,
                Face.y_max,
                Face.score,
                Face.person_id,
                Person.name,
                Face.source,
                Face.age,
                Face.gender,
                Face.quality,
            )
            .join(Face, Face.photo_id == Photo.id)
            .outerjoin(Person, Person.id == Face.person_id)
            .where(Photo.status == STATUS_OK)
            .order_by(Photo.path, Face.id)
        ).all()
    records = []
    for row in rows:
        record = dict(zip(CSV_COLUMNS, row, strict=True))
        record["taken_at"] = record["taken_at"].isoformat() if record["taken_at"] else None
        for key in ("x_min", "y_min", "x_max", "y_max"):
            record[key] = round(record[key], 1)
        record["score"] = round(record["score"], 4)
        if record["age"] is not None:
            record["age"] = round(record["age"], 1)
        if record["quality"] is not None:
            record["quality"] = round(record["quality"], 3)
        records.append(record)
    return records


def export_json(db: Database) -> str:
    """People with their photos and faces, plus photos that failed to index."""
    people: dict[int, dict[str, Any]] = {}
    unassigned = []
    for rec in face_records(db):
        face = {
            k: rec[k]
            for k in (
                "face_id",
                "x_min",
                "y_min",
                "x_max",
                "y_max",
                "score",
                "source",
                "age",
                "gender",
                "quality",
            )
        }
        face["photo"] = rec["photo_path"]
        if rec["person_id"] is None:
            unassigned.append(face)
            continue
        person = people.setdefault(
            rec["person_id"], {"id": rec["person_id"], "name": rec["person_name"], "photos": [], "faces": []}
        )
        person["faces"].append(face)
        if not person["photos"] or person["photos"][-1] != rec["photo_path"]:
            person["photos"].append(rec["photo_path"])
    with db.session() as session:
        errors = [
            {"path": p, "error": e}
            for p, e in session.execute(
                select(Photo.path, Photo.error).where(Photo.status != STATUS_OK).order_by(Photo.path)
            )
        ]
        photo_count = session.query(Photo).count()
    payload = {
        "photos": photo_count,
        "people": sorted(people.values(), key=lambda p: (-len(p["faces"]), p["id"])),
        "unassigned_faces": unassigned,
        "errors": errors,
    }
    return json.dumps(payload, indent=2, ensure_ascii=False)


def export_csv(db: Database) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(face_records(db))
    return out.getvalue()


def album_name(person_id: int, name: str | None) -> str:
    """A safe folder name for a person."""
    if not name:
        return f"person-{person_id}"
    safe = re.sub(r"[^\w .,'()-]+", "_", name).strip(" .") or f"person-{person_id}"
    return safe


def export_albums(db: Database, target: str | os.PathLike[str]) -> dict[str, int]:
    """A folder per person holding symbolic links to that person's photos. Returns album -> link count."""
    root = Path(target)
    root.mkdir(parents=True, exist_ok=True)
    albums: dict[str, set[tuple[int, str]]] = {}
    with db.session() as session:
        rows = session.execute(
            select(Person.id, Person.name, Photo.id, Photo.path)
            .join(Face, Face.person_id == Person.id)
            .join(Photo, Photo.id == Face.photo_id)
            .where(Person.merged_into.is_(None))
        ).all()
    for person_id, name, photo_id, path in rows:
        albums.setdefault(album_name(person_id, name), set()).add((photo_id, path))
    counts = {}
    for album, photos in albums.items():
        folder = root / album
        folder.mkdir(exist_ok=True)
        for photo_id, path in sorted(photos):
            # The photo id prefix keeps two "IMG_0001.jpg" from different folders apart.
            link = folder / f"{photo_id}_{Path(path).name}"
            if link.is_symlink() or link.exists():
                if link.is_symlink() and os.readlink(link) == path:
                    continue
                link.unlink()
            link.symlink_to(path)
        counts[album] = len(photos)
    return counts
