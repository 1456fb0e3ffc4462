"""Reading a library page by page: counts, people cards, photos, the review queue, closest people.

Everything here is read-only and shared by the web app, its REST API and the command line.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from faceatlas.errors import FaceAtlasError
from faceatlas.library.people import FaceNotFoundError, resolve_person
from faceatlas.library.tables import STATUS_ERROR, Decision, Face, Person, Photo
from faceatlas.storage import Database
from faceatlas.vectors import normalize_rows


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


class PhotoNotFoundError(FaceAtlasError, LookupError):
    """No photo with that id."""


#: Sort orders and filters of :func:`people_page`.
PEOPLE_SORTS = ("faces", "name")
PEOPLE_SHOWS = ("all", "named", "unnamed", "hidden")
PHOTO_SORTS = ("date", "path")


@dataclass(frozen=True, slots=True)
class PersonCard:
    id: int
    name: str | None
    faces: int
    photos: int
    cover_face_id: int | None
    hidden: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FaceCard:
    id: int
    photo_id: int
    box: tuple[float, float, float, float]  # original-photo pixels
    score: float
    person_id: int | None
    source: str | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "box": [round(v, 1) for v in self.box], "score": round(self.score, 4)}


@dataclass(frozen=True, slots=True)
class PhotoCard:
    id: int
    path: str
    taken_at: datetime | None
    width: int | None
    height: int | None
    face_count: int
    status: str
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["taken_at"] = self.taken_at.isoformat() if self.taken_at else None
        data["name"] = os.path.basename(self.path)
        data["folder"] = os.path.dirname(self.path)
        return data


@dataclass(frozen=True, slots=True)
class Suggestion:
    person_id: int
    name: str | None
    similarity: float  # cosine similarity to the person's mean face
    match: bool  # at least the pack's same-person threshold
    cover_face_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "similarity": round(self.similarity, 4)}


def _face_card(row: Any) -> FaceCard:
    fid, photo_id, x0, y0, x1, y1, score, person_id, source = row
    return FaceCard(int(fid), int(photo_id), (x0, y0, x1, y1), float(score), person_id, source)


_FACE_COLUMNS = (
    Face.id,
    Face.photo_id,
    Face.x_min,
    Face.y_min,
    Face.x_max,
    Face.y_max,
    Face.score,
    Face.person_id,
    Face.source,
)
_PHOTO_COLUMNS = (
    Photo.id,
    Photo.path,
    Photo.taken_at,
    Photo.width,
    Photo.height,
    Photo.face_count,
    Photo.status,
    Photo.error,
)


_COVER_SCORE = (Face.x_max - Face.x_min) * (Face.y_max - Face.y_min) * Face.score


def cover_faces(
    session: Session, people: dict[int, int | None], best: dict[int, int] | None = None
) -> dict[int, int | None]:
    """Person id -> the face that shows them: the chosen cover if still theirs, else their best face
    (largest box, weighted by detection score; taken from ``best`` when given, else looked up)."""
    if not people:
        return {}
    chosen = {pid: fid for pid, fid in people.items() if fid is not None}
    valid = set()
    if chosen:
        valid = {
            (int(f), int(p))
            for f, p in session.execute(
                select(Face.id, Face.person_id).where(Face.id.in_(list(chosen.values())))
            ).all()
            if p is not None
        }
    result: dict[int, int | None] = {}
    missing = []
    for pid in people:
        cover = chosen.get(pid)
        if cover is not None and (cover, pid) in valid:
            result[pid] = cover
        else:
            missing.append(pid)
    if best is not None:
        for pid in missing:
            result[pid] = best.get(pid)
    elif missing:
        found: dict[int, tuple[float, int]] = {}
        for fid, pid, value in session.execute(
            select(Face.id, Face.person_id, _COVER_SCORE).where(Face.person_id.in_(missing))
        ).all():
            # the highest score wins; ties go to the oldest face (as in people_centroids)
            if pid not in found or (float(value), -int(fid)) > (found[pid][0], -found[pid][1]):
                found[pid] = (float(value), int(fid))
        for pid in missing:
            result[pid] = found[pid][1] if pid in found else None
    return result


def people_page(
    db: Database,
    *,
    offset: int = 0,
    limit: int = 60,
    sort: str = "faces",
    show: str = "all",
    query: str | None = None,
    pack: str | None = None,
) -> tuple[int, list[PersonCard]]:
    """(number of matching people, one page of them). ``show``: all (not hidden), named, unnamed, hidden;
    ``sort``: faces (most first) or name (unnamed last); ``query``: part of the name, any case. With
    ``pack``, default covers come from the cached :func:`people_centroids` instead of a query."""
    if sort not in PEOPLE_SORTS:
        raise ValueError(f"sort must be one of {', '.join(PEOPLE_SORTS)}")
    if show not in PEOPLE_SHOWS:
        raise ValueError(f"show must be one of {', '.join(PEOPLE_SHOWS)}")
    snapshot = people_snapshot(db)
    needle = query.strip().lower() if query else None
    hidden_wanted = show == "hidden"
    matching = [
        person
        for person in snapshot.people
        if person[3] == hidden_wanted
        and (show != "named" or person[1] is not None)
        and (show != "unnamed" or person[1] is None)
        and (needle is None or (person[1] is not None and needle in person[1].lower()))
    ]
    counts = snapshot.counts
    zero = (0, 0)
    # the person id (unique) ends each sort key, so the person tuple after it is never compared
    keyed: list[tuple[Any, ...]]
    if sort == "faces":  # most faces first, then the oldest person
        keyed = [(-counts.get(p[0], zero)[0], p[0], p) for p in matching]
    else:  # by name, unnamed last
        keyed = [(p[1] is None, (p[1] or "").lower(), p[0], p) for p in matching]
    keyed.sort()
    start = max(offset, 0)
    page = [k[-1] for k in keyed[start : start + max(min(limit, 500), 1)]]
    best = people_centroids(db, pack).best_faces if pack else None
    with db.session() as session:
        covers = cover_faces(session, {pid: cover for pid, _n, cover, _h in page}, best)
    total = len(matching)
    cards = [
        PersonCard(pid, name, *counts.get(pid, zero), covers.get(pid), hidden)
        for pid, name, _c, hidden in page
    ]
    return int(total), cards


def person_card(db: Database, ref: str | int) -> PersonCard:
    with db.session() as session:
        person = resolve_person(session, ref)
        nf, nph = session.execute(
            select(func.count(), func.count(func.distinct(Face.photo_id))).where(Face.person_id == person.id)
        ).one()
        cover = cover_faces(session, {person.id: person.cover_face_id})[person.id]
        return PersonCard(person.id, person.name, int(nf), int(nph), cover, bool(person.hidden))


def person_faces_page(
    db: Database, ref: str | int, *, offset: int = 0, limit: int = 200
) -> tuple[int, list[FaceCard]]:
    with db.session() as session:
        person = resolve_person(session, ref)
        total = session.scalar(select(func.count()).where(Face.person_id == person.id)) or 0
        rows = session.execute(
            select(*_FACE_COLUMNS)
            .where(Face.person_id == person.id)
            .order_by(Face.photo_id, Face.id)
            .offset(max(offset, 0))
            .limit(max(min(limit, 1000), 1))
        ).all()
    return int(total), [_face_card(r) for r in rows]


def face_card(db: Database, face_id: int) -> FaceCard:
    with db.session() as session:
        row = session.execute(select(*_FACE_COLUMNS).where(Face.id == face_id)).first()
    if row is None:
        raise FaceNotFoundError(f"no face {face_id}")
    return _face_card(row)


def photos_page(
    db: Database,
    *,
    person: str | int | None = None,
    folder: str | None = None,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    sort: str = "date",
    offset: int = 0,
    limit: int = 60,
) -> tuple[int, list[PhotoCard]]:
    """Readable photos, newest first (``sort="date"``, undated last) or by path; of one person, under one
    folder, taken in a date range."""
    if sort not in PHOTO_SORTS:
        raise ValueError(f"sort must be one of {', '.join(PHOTO_SORTS)}")
    conditions: list[Any] = [Photo.status != STATUS_ERROR]
    with db.session() as session:
        if person is not None:
            pid = resolve_person(session, person).id
            conditions.append(Photo.id.in_(select(Face.photo_id).where(Face.person_id == pid)))
        if folder:
            prefix = folder.rstrip("/") + "/"
            conditions.append(Photo.path.startswith(prefix, autoescape=True))
        if date_from is not None:
            conditions.append(Photo.taken_at >= date_from)
        if date_to is not None:
            conditions.append(Photo.taken_at <= date_to)
        order = (
            [Photo.taken_at.is_(None), Photo.taken_at.desc(), Photo.path] if sort == "date" else [Photo.path]
        )
        total = session.scalar(select(func.count()).select_from(Photo).where(*conditions)) or 0
        rows = session.execute(
            select(*_PHOTO_COLUMNS)
            .where(*conditions)
            .order_by(*order)
            .offset(max(offset, 0))
            .limit(max(min(limit, 500), 1))
        ).all()
    return int(total), [PhotoCard(*r) for r in rows]


@dataclass(frozen=True, slots=True)
class PhotoFace:
    face: FaceCard
    person_name: str | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.face.to_dict(), "person_name": self.person_name}


def photo_detail(db: Database, photo_id: int) -> tuple[PhotoCard, list[PhotoFace]]:
    with db.session() as session:
        row = session.execute(select(*_PHOTO_COLUMNS).where(Photo.id == photo_id)).first()
        if row is None:
            raise PhotoNotFoundError(f"no photo {photo_id}")
        faces = session.execute(
            select(*_FACE_COLUMNS, Person.name)
            .outerjoin(Person, Person.id == Face.person_id)
            .where(Face.photo_id == photo_id)
            .order_by(Face.x_min)
        ).all()
    return PhotoCard(*row), [PhotoFace(_face_card(f[:-1]), f[-1]) for f in faces]


def unreadable_photos(db: Database, *, limit: int = 500) -> list[tuple[str, str | None]]:
    with db.session() as session:
        return [
            (p, e)
            for p, e in session.execute(
                select(Photo.path, Photo.error)
                .where(Photo.status == STATUS_ERROR)
                .order_by(Photo.path)
                .limit(limit)
            ).all()
        ]


# --- people as mean faces: review suggestions and merge suggestions --------------------------------


@dataclass(frozen=True, slots=True)
class Centroids:
    person_ids: np.ndarray  # (p,)
    vectors: np.ndarray  # (p, d), unit rows: each person's normalised mean face
    best_faces: dict[int, int]  # person id -> their largest, most confident face (the default cover)


_CENTROIDS: dict[tuple[str, str], tuple[tuple[object, ...], Centroids]] = {}
_CENTROIDS_LOCK = threading.Lock()


def _assignment_version(session: Session) -> tuple[int, int]:
    """Changes whenever a face moves between people. No filter on the pack, so the aggregate reads
    only the (person_id, photo_id) index, never the face rows (still a scan: see VERSION_TTL)."""
    row = session.execute(
        select(func.count(Face.person_id), func.coalesce(func.sum(Face.person_id), 0))
    ).one()
    return (int(row[0] or 0), int(row[1] or 0))


#: Seconds the face-assignment part of a library's version is trusted before it is read again. Every
#: user decision adds a decision row and every new face a face row, which the cheap part of the version
#: sees at once; only faces moved by clustering in another process show up to this late.
VERSION_TTL = 2.0
_VERSIONS: dict[str, tuple[float, tuple[int, int]]] = {}


def library_version(db: Database) -> tuple[int, ...]:
    """A value that changes when the library's people, faces or decisions change."""
    now = time.monotonic()
    with db.session() as session:
        newest_face = session.scalar(select(func.max(Face.id))) or 0
        newest_decision, decisions = session.execute(
            select(func.max(Decision.id), func.count(Decision.id))
        ).one()
        with _CENTROIDS_LOCK:
            known = _VERSIONS.get(db.url)
        if known is None or now - known[0] >= VERSION_TTL:
            known = (now, _assignment_version(session))
            with _CENTROIDS_LOCK:
                _VERSIONS[db.url] = known
    return (int(newest_face), int(newest_decision or 0), int(decisions or 0), *known[1])


def forget(db: Database) -> None:
    """Drop what is cached about ``db`` (call after changing its people or faces)."""
    with _CENTROIDS_LOCK:
        _VERSIONS.pop(db.url, None)
        _SNAPSHOTS.pop(db.url, None)
        for key in [k for k in _CENTROIDS if k[0] == db.url]:
            del _CENTROIDS[key]


@dataclass(frozen=True, slots=True)
class PeopleSnapshot:
    """Every live person (id, name, chosen cover, hidden) with their face and photo counts."""

    people: list[tuple[int, str | None, int | None, bool]]
    counts: dict[int, tuple[int, int]]  # person id -> (faces, photos)


_SNAPSHOTS: dict[str, tuple[tuple[int, ...], PeopleSnapshot]] = {}


def people_snapshot(db: Database) -> PeopleSnapshot:
    """The people table and the counts from the (person_id, photo_id) index, cached per version."""
    version = library_version(db)
    with _CENTROIDS_LOCK:
        cached = _SNAPSHOTS.get(db.url)
    if cached is not None and cached[0] == version:
        return cached[1]
    with db.session() as session:
        people = [
            (int(pid), name, cover, bool(hidden))
            for pid, name, cover, hidden in session.execute(
                select(Person.id, Person.name, Person.cover_face_id, Person.hidden)
                .where(Person.merged_into.is_(None))
                .order_by(Person.id)
            ).tuples()
        ]
        counts = {
            int(pid): (int(nf), int(nph))
            for pid, nf, nph in session.execute(
                select(Face.person_id, func.count(), func.count(func.distinct(Face.photo_id)))
                .where(Face.person_id.is_not(None))
                .group_by(Face.person_id)
            ).tuples()
        }
    snapshot = PeopleSnapshot(people, counts)
    with _CENTROIDS_LOCK:
        _SNAPSHOTS[db.url] = (version, snapshot)
    return snapshot


def people_centroids(db: Database, pack: str) -> Centroids:
    """Every live person's mean face (of ``pack``), cached until faces are added or reassigned."""
    version = (pack, *library_version(db))
    key = (db.url, pack)
    with _CENTROIDS_LOCK:
        cached = _CENTROIDS.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    with db.session() as session:
        rows = session.execute(
            select(Face.person_id, Face.embedding, Face.id, _COVER_SCORE).where(
                Face.pack == pack, Face.person_id.is_not(None), Face.embedding.is_not(None)
            )
        ).all()
    if not rows:
        centroids = Centroids(np.empty(0, np.int64), np.empty((0, 0), np.float32), {})
    else:
        owners = np.asarray([r[0] for r in rows], np.int64)
        vectors = normalize_rows(
            np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1)
        )
        ids, inverse = np.unique(owners, return_inverse=True)
        sums = np.zeros((len(ids), vectors.shape[1]), np.float32)
        np.add.at(sums, inverse, vectors)
        # best face per person: sort by (person, score, oldest) and keep each person's last row
        face_ids = np.asarray([r[2] for r in rows], np.int64)
        scores = np.asarray([r[3] for r in rows], np.float64)
        order = np.lexsort((-face_ids, scores, owners))
        last = np.r_[owners[order][1:] != owners[order][:-1], True]
        best = dict(zip(owners[order][last].tolist(), face_ids[order][last].tolist(), strict=True))
        centroids = Centroids(ids, normalize_rows(sums), best)
    with _CENTROIDS_LOCK:
        _CENTROIDS[key] = (version, centroids)
    return centroids


def _suggest(
    session: Session,
    centroids: Centroids,
    queries: np.ndarray,
    *,
    top: int,
    threshold: float,
    exclude: list[set[int]],
) -> list[list[Suggestion]]:
    if centroids.person_ids.size == 0 or queries.size == 0:
        return [[] for _ in range(len(queries))]
    sims = normalize_rows(queries) @ centroids.vectors.T
    # at most len(exclude[i]) candidates are dropped, so that many more than `top` are enough
    k = min(top + max((len(e) for e in exclude), default=0), sims.shape[1])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(part, np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1), axis=1)
    wanted = {int(centroids.person_ids[j]) for row in order for j in row}
    info = {
        int(pid): (name, cover)
        for pid, name, cover in session.execute(
            select(Person.id, Person.name, Person.cover_face_id).where(Person.id.in_(wanted))
        ).all()
    }
    covers = cover_faces(session, {pid: c for pid, (_n, c) in info.items()}, centroids.best_faces)
    results = []
    for i, row in enumerate(order):
        picks = []
        for j in row:
            pid = int(centroids.person_ids[j])
            if pid in exclude[i] or pid not in info:
                continue
            sim = float(sims[i, j])
            picks.append(Suggestion(pid, info[pid][0], sim, sim >= threshold, covers.get(pid)))
            if len(picks) == top:
                break
        results.append(picks)
    return results


def closest_people(
    db: Database, ref: str | int, *, pack: str, threshold: float, top: int = 8
) -> list[Suggestion]:
    """The people whose mean face is closest to this person's: merge candidates, best first."""
    centroids = people_centroids(db, pack)
    with db.session() as session:
        person = resolve_person(session, ref)
        where = np.flatnonzero(centroids.person_ids == person.id)
        if where.size == 0:
            return []
        return _suggest(
            session, centroids, centroids.vectors[where], top=top, threshold=threshold, exclude=[{person.id}]
        )[0]


@dataclass(frozen=True, slots=True)
class ReviewItem:
    face: FaceCard
    suggestions: list[Suggestion]

    def to_dict(self) -> dict[str, Any]:
        return {"face": self.face.to_dict(), "suggestions": [s.to_dict() for s in self.suggestions]}


def review_queue(
    db: Database,
    *,
    pack: str,
    threshold: float,
    offset: int = 0,
    limit: int = 20,
    min_face_size: float = 24.0,
    top: int = 3,
) -> tuple[int, list[ReviewItem]]:
    """Unassigned faces (large enough, not ignored), each with the closest people (never one the user
    said it is not)."""
    centroids = people_centroids(db, pack)
    ignored = select(Decision.face_id).where(Decision.kind == "ignore", Decision.face_id.is_not(None))
    conditions = [
        Face.person_id.is_(None),
        # coalesce(): keeps the planner on the person_id index (few unassigned faces) rather than the
        # pack index, which would read every face row with its embedding
        func.coalesce(Face.pack, "") == pack,
        Face.embedding.is_not(None),
        func.min(Face.x_max - Face.x_min, Face.y_max - Face.y_min) >= min_face_size
        if db.is_sqlite
        else func.least(Face.x_max - Face.x_min, Face.y_max - Face.y_min) >= min_face_size,
        Face.id.not_in(ignored),
    ]
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(Face).where(*conditions)) or 0
        rows = session.execute(
            select(*_FACE_COLUMNS, Face.embedding)
            .where(*conditions)
            .order_by(Face.id)  # the person_id index's own order: no sort of every unassigned face
            .offset(max(offset, 0))
            .limit(max(min(limit, 200), 1))
        ).all()
        if not rows:
            return int(total), []
        cards = [_face_card(r[:-1]) for r in rows]
        queries = np.frombuffer(b"".join(r[-1] for r in rows), np.float32).reshape(len(rows), -1)
        rejected: dict[int, set[int]] = {c.id: set() for c in cards}
        for fid, pid in session.execute(
            select(Decision.face_id, Decision.person_id).where(
                Decision.kind == "reject", Decision.face_id.in_(list(rejected))
            )
        ).all():
            rejected[int(fid)].add(int(pid))
        # a photo's other faces' people are no candidates either (two faces of one photo are two people)
        photo_people: dict[int, set[int]] = {}
        for photo_id, pid in session.execute(
            select(Face.photo_id, Face.person_id).where(
                Face.photo_id.in_({c.photo_id for c in cards}), Face.person_id.is_not(None)
            )
        ).all():
            photo_people.setdefault(int(photo_id), set()).add(int(pid))
        exclude = [rejected[c.id] | photo_people.get(c.photo_id, set()) for c in cards]
        suggestions = _suggest(session, centroids, queries, top=top, threshold=threshold, exclude=exclude)
    return int(total), [ReviewItem(c, s) for c, s in zip(cards, suggestions, strict=True)]
