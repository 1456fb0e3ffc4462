"""People: the user decisions that clustering respects (rename, merge, "not this person", split).

Clustering itself (grouping faces into people, incremental runs, rebuilds) lives in
:mod:`faceatlas.library.clustering`; it reads the decisions recorded here and never undoes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from faceatlas.errors import DecisionError, FaceNotFoundError, PersonNotFoundError
from faceatlas.library.tables import SOURCE_USER, Decision, Face, Person, Photo
from faceatlas.storage import Database

# --- user decisions -------------------------------------------------------------------------------


def resolve_person(session: Session, ref: str | int) -> Person:
    """A live person by id or name, case-insensitively (a merged person resolves to its survivor)."""
    person: Person | None = None
    text = str(ref)
    person = session.scalar(select(Person).where(func.lower(Person.name) == text.strip().lower()))
    if person is None and text.isdigit():
        person = session.get(Person, int(text))
    if person is None:
        raise PersonNotFoundError(f"no person named or numbered {text!r}")
    seen = set()
    while person.merged_into is not None and person.id not in seen:
        seen.add(person.id)
        person = session.get(Person, person.merged_into)
        if person is None:
            raise PersonNotFoundError(f"person {text!r} was merged into a person that no longer exists")
    return person


def rename_person(db: Database, ref: str | int, new_name: str) -> Person:
    new_name = new_name.strip()
    if not new_name or new_name.isdigit():
        raise DecisionError("a person's name must be non-empty and not a number")
    with db.session() as session:
        person = resolve_person(session, ref)
        clash = session.scalar(
            select(Person).where(func.lower(Person.name) == new_name.lower(), Person.id != person.id)
        )
        if clash is not None:
            raise DecisionError(f"the name {new_name!r} is taken by person {clash.id}; merge them instead")
        person.name = new_name
        session.add(Decision(kind="rename", person_id=person.id, name=new_name))
        return person


@dataclass(frozen=True, slots=True)
class BlockedFace:
    """A face a merge could not move, and why."""

    face_id: int
    photo_path: str
    conflicting_face_id: int  # the face of the surviving person in the same photo

    @property
    def reason(self) -> str:
        return (
            f"photo {self.photo_path} already shows this person as face {self.conflicting_face_id}, "
            "and two faces of one photo are never one person"
        )


@dataclass(frozen=True, slots=True)
class MergeResult:
    person_id: int
    name: str | None
    moved: int  # faces moved to the surviving person
    blocked: tuple[BlockedFace, ...]  # faces left unassigned instead (cannot-link)

    @property
    def left_behind(self) -> list[int]:
        return [face.face_id for face in self.blocked]

    @property
    def reason(self) -> str | None:
        """One sentence for the user when faces could not follow the merge."""
        if not self.blocked:
            return None
        return (
            f"{len(self.blocked)} face(s) stayed unassigned: their photos already show this person, "
            "and two faces of one photo cannot be one person"
        )


def merge_people(db: Database, ref: str | int, other_ref: str | int) -> MergeResult:
    """Move every face of ``other`` to ``person``; ``other`` stays resolvable and points at ``person``.

    Faces of ``other`` in a photo where ``person`` already has a face cannot move (two faces of
    one photo are never one person): they are left unassigned and listed in the result.
    """
    with db.session() as session:
        person = resolve_person(session, ref)
        other = resolve_person(session, other_ref)
        if person.id == other.id:
            raise DecisionError("cannot merge a person into itself")
        survivor_faces = {
            int(photo): int(face)
            for face, photo in session.execute(
                select(Face.id, Face.photo_id).where(Face.person_id == person.id).order_by(Face.id)
            )
        }
        rows = session.execute(
            select(Face.id, Face.photo_id, Photo.path)
            .join(Photo, Photo.id == Face.photo_id)
            .where(Face.person_id == other.id)
            .order_by(Face.id)
        ).all()
        blocked = tuple(
            BlockedFace(int(face), path, survivor_faces[int(photo)])
            for face, photo, path in rows
            if int(photo) in survivor_faces
        )
        if blocked:
            session.execute(
                update(Face)
                .where(Face.id.in_([b.face_id for b in blocked]))
                .values(person_id=None, source=None)
            )
        # Merging says these are one person: an earlier "not this person" between them (a split) goes,
        # or re-clustering would split them again.
        moving = select(Face.id).where(Face.person_id == other.id)
        session.execute(
            delete(Decision).where(
                Decision.kind == "reject", Decision.person_id == person.id, Decision.face_id.in_(moving)
            )
        )
        session.execute(update(Face).where(Face.person_id == other.id).values(person_id=person.id))
        if person.name is None and other.name is not None:
            name, other.name = other.name, None
            session.flush()
            person.name = name
        else:
            other.name = None
        other.merged_into = person.id
        session.execute(update(Person).where(Person.merged_into == other.id).values(merged_into=person.id))
        session.add(Decision(kind="merge", person_id=person.id, other_person_id=other.id))
        return MergeResult(person.id, person.name, len(rows) - len(blocked), blocked)


def remove_face(db: Database, ref: str | int, face_id: int) -> None:
    """ "Not this person": unassign the face and never give it to this person again."""
    with db.session() as session:
        person = resolve_person(session, ref)
        face = session.get(Face, face_id)
        if face is None or face.person_id != person.id:
            raise FaceNotFoundError(f"face {face_id} does not belong to person {person.id}")
        face.person_id = None
        face.source = None
        exists = session.scalar(
            select(Decision.id).where(
                Decision.kind == "reject", Decision.face_id == face_id, Decision.person_id == person.id
            )
        )
        if exists is None:
            session.add(Decision(kind="reject", face_id=face_id, person_id=person.id))


def split_faces(db: Database, ref: str | int, face_ids: list[int], name: str | None = None) -> Person:
    """Move ``face_ids`` out of a person into a new person, as user-confirmed assignments."""
    with db.session() as session:
        person = resolve_person(session, ref)
        faces = session.scalars(select(Face).where(Face.id.in_(face_ids))).all()
        if len(faces) != len(set(face_ids)) or any(f.person_id != person.id for f in faces):
            raise FaceNotFoundError(f"not all of {face_ids} belong to person {person.id}")
        taken = select(Person.id).where(func.lower(Person.name) == (name or "").lower())
        if name is not None and session.scalar(taken) is not None:
            raise DecisionError(f"the name {name!r} is taken")
        new = Person(name=name)
        session.add(new)
        session.flush()
        for face in faces:
            face.person_id = new.id
            face.source = SOURCE_USER
            session.add(Decision(kind="reject", face_id=face.id, person_id=person.id))
            session.add(Decision(kind="assign", face_id=face.id, person_id=new.id))
        # A split says both ways that these are two people: the faces left behind never join the new one.
        staying = select(Face.id).where(Face.person_id == person.id, Face.id.not_in(face_ids))
        for face_id in list(session.scalars(staying)):
            session.add(Decision(kind="reject", face_id=face_id, person_id=new.id))
        return new


@dataclass(frozen=True, slots=True)
class PersonSummary:
    id: int
    name: str | None
    faces: int
    photos: int


def list_people(db: Database) -> list[PersonSummary]:
    """Live people, most faces first."""
    with db.session() as session:
        rows = session.execute(
            select(Person.id, Person.name, func.count(Face.id), func.count(func.distinct(Face.photo_id)))
            .outerjoin(Face, Face.person_id == Person.id)
            .where(Person.merged_into.is_(None))
            .group_by(Person.id, Person.name)
            .order_by(func.count(Face.id).desc(), Person.id)
        ).all()
    return [PersonSummary(pid, name, faces, photos) for pid, name, faces, photos in rows]


def person_photos(db: Database, ref: str | int) -> list[str]:
    with db.session() as session:
        person = resolve_person(session, ref)
        return list(
            session.scalars(
                select(Photo.path)
                .join(Face, Face.photo_id == Photo.id)
                .where(Face.person_id == person.id)
                .distinct()
                .order_by(Photo.path)
            )
        )


def person_faces(db: Database, ref: str | int) -> list[tuple[int, str]]:
    """(face id, photo path) of every face of a person, by photo."""
    with db.session() as session:
        person = resolve_person(session, ref)
        rows = session.execute(
            select(Face.id, Photo.path)
            .join(Photo, Photo.id == Face.photo_id)
            .where(Face.person_id == person.id)
            .order_by(Photo.path, Face.id)
        )
        return [(int(face_id), path) for face_id, path in rows]


# --- decisions of the web app's person and review pages ----------------------------------------


def hide_person(db: Database, ref: str | int, hidden: bool = True) -> Person:
    """Hide a person from the people list (or show them again); their faces stay theirs."""
    with db.session() as session:
        person = resolve_person(session, ref)
        person.hidden = hidden
        session.add(Decision(kind="hide" if hidden else "unhide", person_id=person.id))
        return person


def set_cover_face(db: Database, ref: str | int, face_id: int) -> Person:
    """Show the person with this face (one of theirs) in every list."""
    with db.session() as session:
        person = resolve_person(session, ref)
        face = session.get(Face, face_id)
        if face is None or face.person_id != person.id:
            raise FaceNotFoundError(f"face {face_id} does not belong to person {person.id}")
        person.cover_face_id = face_id
        session.add(Decision(kind="cover", face_id=face_id, person_id=person.id))
        return person


def assign_face(
    db: Database, face_id: int, ref: str | int | None = None, *, name: str | None = None
) -> Person:
    """The user says whose face this is: person ``ref``, or a new person (named ``name`` if given).

    Recorded as an ``assign`` decision (clustering never moves the face again); the person it leaves,
    if any, gets a ``reject`` so it is not given back. Refused when the photo already has a face of
    that person (two faces of one photo are never one person).
    """
    with db.session() as session:
        face = session.get(Face, face_id)
        if face is None:
            raise FaceNotFoundError(f"no face {face_id}")
        if ref is None:
            if name is not None:
                name = name.strip()
                if not name or name.isdigit():
                    raise DecisionError("a person's name must be non-empty and not a number")
                taken = select(Person.id).where(func.lower(Person.name) == name.lower())
                if session.scalar(taken) is not None:
                    raise DecisionError(f"the name {name!r} is taken; assign the face to that person")
            person = Person(name=name)
            session.add(person)
            session.flush()
        else:
            person = resolve_person(session, ref)
            clash = session.scalar(
                select(Face.id).where(
                    Face.photo_id == face.photo_id, Face.person_id == person.id, Face.id != face.id
                )
            )
            if clash is not None:
                raise DecisionError(
                    f"face {clash} of the same photo is already person {person.id}; "
                    "two faces of one photo cannot be one person"
                )
        previous = face.person_id
        if previous is not None and previous != person.id:
            _add_decision_once(session, "reject", face.id, previous)
        face.person_id = person.id
        face.source = SOURCE_USER
        session.execute(
            delete(Decision).where(
                Decision.kind == "reject", Decision.face_id == face.id, Decision.person_id == person.id
            )
        )
        _add_decision_once(session, "assign", face.id, person.id)
        return person


def ignore_face(db: Database, face_id: int) -> None:
    """Leave a face out of the review queue (a stranger, a poster); it stays unassigned."""
    with db.session() as session:
        if session.get(Face, face_id) is None:
            raise FaceNotFoundError(f"no face {face_id}")
        exists = session.scalar(
            select(Decision.id).where(Decision.kind == "ignore", Decision.face_id == face_id)
        )
        if exists is None:
            session.add(Decision(kind="ignore", face_id=face_id))


def _add_decision_once(session: Session, kind: str, face_id: int, person_id: int) -> None:
    exists = session.scalar(
        select(Decision.id).where(
            Decision.kind == kind, Decision.face_id == face_id, Decision.person_id == person_id
        )
    )
    if exists is None:
        session.add(Decision(kind=kind, face_id=face_id, person_id=person_id))
