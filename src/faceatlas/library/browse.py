"""Reading a library page by page: counts, people cards, photos, the review queue, closest people.

Everything here is read-only and shared by the web app, its REST API and the command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select

from faceatlas.library.tables import STATUS_ERROR, Face, Person, Photo
from faceatlas.storage import Database


@dataclass(frozen=True, slots=True)
class LibraryCounts:
    photos: int
    unreadable: int
    faces: int
    people: int
    named: int
    unassigned: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def library_counts(db: Database) -> LibraryCounts:
    with db.session() as session:
        photos = session.scalar(select(func.count()).select_from(Photo)) or 0
        unreadable = session.scalar(select(func.count()).where(Photo.status == STATUS_ERROR)) or 0
        faces = session.scalar(select(func.count()).select_from(Face)) or 0
        unassigned = session.scalar(select(func.count()).where(Face.person_id.is_(None))) or 0
        people, named = session.execute(
            select(func.count(), func.count(Person.name)).where(Person.merged_into.is_(None))
        ).one()
    return LibraryCounts(photos, unreadable, faces, int(people), int(named), unassigned)
