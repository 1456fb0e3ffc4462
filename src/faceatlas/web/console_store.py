"""Read models of the service console: services with their counts, subjects and images, paged in SQL.

Writes go through :class:`faceatlas.storage.services.ServiceStore` (its version log keeps every server
process's in-memory collection in step); these are the console's own read-only queries, shaped for pages
of collections with 100 000 faces (counts and one page of rows per request, never the whole collection).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from faceatlas.errors import FaceAtlasError
from faceatlas.storage import Database
from faceatlas.storage.service_tables import FaceService, ServiceFace, ServiceImage, ServiceSubject


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    id: int
    name: str
    type: str
    pack: str
    created: datetime
    subjects: int
    faces: int

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "pack": self.pack,
            "created": self.created.isoformat(),
            "subjects": self.subjects,
            "faces": self.faces,
        }


@dataclass(frozen=True, slots=True)
class SubjectSummary:
    id: int
    name: str
    faces: int
    cover_image_id: str | None

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "faces": self.faces, "cover_image_id": self.cover_image_id}


@dataclass(frozen=True, slots=True)
class StoredImage:
    image_id: str
    created: datetime
    has_image: bool

    def to_dict(self) -> dict[str, object]:
        return {"image_id": self.image_id, "created": self.created.isoformat(), "has_image": self.has_image}


def service_summaries(db: Database) -> list[ServiceSummary]:
    subjects = (
        select(ServiceSubject.service_id, func.count().label("n"))
        .group_by(ServiceSubject.service_id)
        .subquery()
    )
    faces = (
        select(ServiceFace.service_id, func.count().label("n")).group_by(ServiceFace.service_id).subquery()
    )
    query = (
        select(
            FaceService.id,
            FaceService.name,
            FaceService.type,
            FaceService.pack,
            FaceService.created,
            func.coalesce(subjects.c.n, 0),
            func.coalesce(faces.c.n, 0),
        )
        .outerjoin(subjects, subjects.c.service_id == FaceService.id)
        .outerjoin(faces, faces.c.service_id == FaceService.id)
        .order_by(FaceService.id)
    )
    with db.session() as s:
        return [
            ServiceSummary(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), int(r[6])) for r in s.execute(query)
        ]


def service_summary(db: Database, service_id: int) -> ServiceSummary | None:
    return next((s for s in service_summaries(db) if s.id == service_id), None)


def subjects_page(
    db: Database, service_id: int, *, offset: int, limit: int, query: str | None = None
) -> tuple[int, list[SubjectSummary]]:
    """(number of matching subjects, one page of them by name) with face counts and a cover image."""
    where = [ServiceSubject.service_id == service_id]
    if query:
        escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(ServiceSubject.name_key.like(f"%{escaped}%", escape="\\"))
    with db.session() as s:
        total = int(s.scalar(select(func.count()).select_from(ServiceSubject).where(*where)) or 0)
        rows = s.execute(
            select(ServiceSubject.id, ServiceSubject.name)
            .where(*where)
            .order_by(ServiceSubject.name_key, ServiceSubject.id)
            .offset(offset)
            .limit(limit)
        ).all()
        # counts and covers of this page's subjects only (the subject index), never of the whole collection
        ids = [int(r[0]) for r in rows]
        counts: dict[int, tuple[int, str | None]] = {}
        if ids:
            for owner, count, first_image in s.execute(
                select(ServiceFace.subject_id, func.count(), func.min(ServiceImage.face_id))
                .outerjoin(ServiceImage, ServiceImage.face_id == ServiceFace.id)
                .where(ServiceFace.subject_id.in_(ids))
                .group_by(ServiceFace.subject_id)
            ):
                counts[int(owner)] = (int(count), first_image)
    page: list[SubjectSummary] = []
    for subject_id, name in rows:
        faces, cover = counts.get(int(subject_id), (0, None))
        page.append(SubjectSummary(int(subject_id), name, faces, cover))
    return total, page


def subject(db: Database, service_id: int, subject_id: int) -> SubjectSummary | None:
    with db.session() as s:
        row = s.execute(
            select(ServiceSubject.id, ServiceSubject.name).where(
                ServiceSubject.service_id == service_id, ServiceSubject.id == subject_id
            )
        ).first()
        if row is None:
            return None
        count = int(s.scalar(select(func.count()).where(ServiceFace.subject_id == subject_id)) or 0)
    return SubjectSummary(int(row[0]), row[1], count, None)


def subject_images(
    db: Database, service_id: int, subject_id: int, *, offset: int, limit: int
) -> list[StoredImage]:
    with db.session() as s:
        rows = s.execute(
            select(ServiceFace.id, ServiceFace.created, ServiceImage.face_id)
            .outerjoin(ServiceImage, ServiceImage.face_id == ServiceFace.id)
            .where(ServiceFace.service_id == service_id, ServiceFace.subject_id == subject_id)
            .order_by(ServiceFace.created, ServiceFace.id)
            .offset(offset)
            .limit(limit)
        ).all()
    return [StoredImage(r[0], r[1], r[2] is not None) for r in rows]


def subject_by_name(db: Database, service_id: int, name: str) -> SubjectSummary | None:
    """The subject called ``name`` (case-insensitive, as CompreFace matches subjects)."""
    with db.session() as s:
        subject_id = s.scalar(
            select(ServiceSubject.id).where(
                ServiceSubject.service_id == service_id, ServiceSubject.name_key == name.lower()
            )
        )
    return None if subject_id is None else subject(db, service_id, int(subject_id))


class ServiceNameTakenError(FaceAtlasError, ValueError):
    """Another service already has that name."""


def rename_service(db: Database, service_id: int, name: str) -> None:
    """Rename a service (ServiceStore has no rename; a name is not part of any collection or key)."""
    name = name.strip()
    try:
        with db.session() as s:
            if s.get(FaceService, service_id) is None:
                raise LookupError(f"no service {service_id}")
            s.execute(update(FaceService).where(FaceService.id == service_id).values(name=name))
    except IntegrityError:
        raise ServiceNameTakenError(f"a service named {name!r} already exists") from None
