"""People: grouping faces (incremental clustering) and the user decisions that clustering respects.

Rules a clustering run follows:

* only faces of one pack are compared (embeddings of different packs are never mixed);
* faces smaller than ``min_face_size`` or with a detection score below ``min_score`` stay unassigned;
* a face assigned by the user (``source == "user"``) is never moved;
* a face is never given to a person the user said it is not (a ``reject`` decision);
* two faces of one photo never belong to the same person;
* existing people keep their ids: new faces join them by a k-NN vote, and ``rebuild`` maps every new
  cluster back to the person most of its faces belonged to (so renames and merges survive).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from faceatlas.clustering import cluster_faces
from faceatlas.errors import FaceAtlasError
from faceatlas.library.tables import SOURCE_AUTO, SOURCE_USER, Decision, Face, Person, Photo
from faceatlas.storage import Database
from faceatlas.vectors import normalize_rows


class PersonNotFoundError(FaceAtlasError, LookupError):
    """No person with that name or id."""


class FaceNotFoundError(FaceAtlasError, LookupError):
    """No face with that id (or it does not belong to the given person)."""


class DecisionError(FaceAtlasError, ValueError):
    """A user decision that cannot be applied (e.g. merging a person into itself, a taken name)."""


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    threshold: float  # cosine similarity for "same person" (the pack's calibrated threshold)
    min_face_size: float = 24.0  # pixels, shorter box side in the original photo
    min_score: float = 0.0
    knn: int = 10
    min_votes: int = 3
    min_cluster_size: int = 2


@dataclass(slots=True)
class ClusterReport:
    faces: int = 0
    eligible: int = 0
    joined_existing: int = 0
    clustered: int = 0
    new_people: int = 0
    unassigned: int = 0
    people: int = 0
    removed_people: int = 0
    details: dict = field(default_factory=dict)


@dataclass(slots=True)
class FaceSet:
    """The faces of one pack as arrays (row i describes one face)."""

    ids: np.ndarray
    photo_ids: np.ndarray
    embeddings: np.ndarray
    person_ids: np.ndarray  # -1 = none
    sources: np.ndarray  # object array of str | None
    eligible: np.ndarray  # bool


def load_faces(session: Session, pack: str, options: ClusterOptions | None = None) -> FaceSet:
    rows = session.execute(
        select(
            Face.id,
            Face.photo_id,
            Face.embedding,
            Face.person_id,
            Face.source,
            Face.x_max - Face.x_min,
            Face.y_max - Face.y_min,
            Face.score,
        )
        .where(Face.pack == pack, Face.embedding.is_not(None))
        .order_by(Face.id)
    ).all()
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        return FaceSet(
            empty, empty, np.empty((0, 0), np.float32), empty, np.empty(0, object), np.empty(0, bool)
        )
    ids, photo_ids, blobs, person_ids, sources, widths, heights, scores = zip(*rows, strict=True)
    embeddings = normalize_rows(np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), -1))
    eligible = np.ones(len(rows), dtype=bool)
    if options is not None:
        side = np.minimum(np.asarray(widths, float), np.asarray(heights, float))
        eligible = (side >= options.min_face_size) & (np.asarray(scores, float) >= options.min_score)
    return FaceSet(
        np.asarray(ids, np.int64),
        np.asarray(photo_ids, np.int64),
        embeddings,
        np.asarray([-1 if p is None else p for p in person_ids], np.int64),
        np.asarray(sources, dtype=object),
        eligible,
    )


def rejections(session: Session) -> set[tuple[int, int]]:
    """(face id, person id) pairs the user said are not the same person."""
    rows = session.execute(
        select(Decision.face_id, Decision.person_id).where(Decision.kind == "reject")
    ).all()
    return {(f, p) for f, p in rows if f is not None and p is not None}


def survivor_map(session: Session) -> dict[int, int]:
    """Merged person id -> the person it was merged into (followed to the end of the chain)."""
    parent = dict(
        session.execute(select(Person.id, Person.merged_into).where(Person.merged_into.is_not(None))).all()
    )
    resolved: dict[int, int] = {}
    for pid in parent:
        target, seen = pid, set()
        while target in parent and target not in seen:
            seen.add(target)
            target = parent[target]
        resolved[pid] = target
    return resolved


def knn_vote(
    queries: np.ndarray,
    reference: np.ndarray,
    reference_person: np.ndarray,
    *,
    threshold: float,
    k: int,
    min_votes: int,
    person_sizes: dict[int, int],
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the person most of its k nearest neighbours above ``threshold`` belong to.

    A person wins with at least ``min(min_votes, that person's face count)`` votes. Returns (person id
    or -1, mean similarity of the winning votes) per query.
    """
    m = queries.shape[0]
    winner = np.full(m, -1, dtype=np.int64)
    strength = np.zeros(m, dtype=np.float32)
    if m == 0 or reference.shape[0] == 0:
        return winner, strength
    k = min(k, reference.shape[0])
    sizes = np.vectorize(lambda p: person_sizes.get(int(p), 0), otypes=[np.int64])
    for start in range(0, m, chunk):
        sims = queries[start : start + chunk] @ reference.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        valid = top_sims >= threshold
        people = np.where(valid, reference_person[top], -1)
        same = (people[:, :, None] == people[:, None, :]) & valid[:, None, :]
        votes = np.where(valid, same.sum(axis=2), 0)
        mean_sim = np.where(valid, (same * top_sims[:, None, :]).sum(axis=2) / np.maximum(votes, 1), 0)
        best = np.argmax(votes * 10.0 + mean_sim, axis=1)
        rows = np.arange(len(top))
        best_person = people[rows, best]
        best_votes = votes[rows, best]
        needed = np.minimum(min_votes, np.maximum(sizes(best_person), 1))
        ok = (best_person >= 0) & (best_votes >= needed)
        winner[start : start + len(top)] = np.where(ok, best_person, -1)
        strength[start : start + len(top)] = np.where(ok, mean_sim[rows, best], 0)
    return winner, strength


def cluster_library(
    db: Database, pack: str, options: ClusterOptions, *, rebuild: bool = False
) -> ClusterReport:
    """Assign faces of ``pack`` to people (incrementally, or from scratch with ``rebuild``)."""
    report = ClusterReport()
    with db.session() as session:
        faces = load_faces(session, pack, options)
        report.faces = len(faces.ids)
        report.eligible = int(faces.eligible.sum())
        if report.faces == 0:
            return report
        rejected = rejections(session)
        merged = survivor_map(session)
        people = faces.person_ids.copy()
        people = np.asarray([merged.get(int(p), int(p)) for p in people], np.int64)
        previous = people.copy()
        is_user = faces.sources == SOURCE_USER
        if rebuild:
            people[~is_user] = -1
        # Faces that lost eligibility (never for user-confirmed ones) are released.
        people[~faces.eligible & ~is_user] = -1
        _assign_by_vote(faces, people, options, rejected, report)
        _cluster_rest(session, faces, people, previous if rebuild else None, options, rejected, report)
        changed = np.flatnonzero((people != faces.person_ids) & ~is_user)
        _store(session, faces, people, changed)
        report.unassigned = int((people < 0).sum())
        report.removed_people = _drop_empty_people(session)
        report.people = int(
            session.scalar(select(func.count()).select_from(Person).where(Person.merged_into.is_(None)))
        )
    return report


def _photo_people(faces: FaceSet, people: np.ndarray) -> set[tuple[int, int]]:
    return {(int(ph), int(p)) for ph, p in zip(faces.photo_ids, people, strict=True) if p >= 0}


def _assign_by_vote(
    faces: FaceSet,
    people: np.ndarray,
    options: ClusterOptions,
    rejected: set[tuple[int, int]],
    report: ClusterReport,
) -> None:
    assigned = np.flatnonzero(people >= 0)
    todo = np.flatnonzero((people < 0) & faces.eligible)
    if assigned.size == 0 or todo.size == 0:
        return
    sizes = Counter(int(p) for p in people[assigned])
    winner, strength = knn_vote(
        faces.embeddings[todo],
        faces.embeddings[assigned],
        people[assigned],
        threshold=options.threshold,
        k=options.knn,
        min_votes=options.min_votes,
        person_sizes=sizes,
    )
    # Average linkage's rule for the winner as a whole: the face must be similar to the person's
    # faces on average, not only to a few look-alike neighbours.
    candidates = np.flatnonzero(winner >= 0)
    if candidates.size:
        person_ids, inverse = np.unique(people[assigned], return_inverse=True)
        sums = np.zeros((person_ids.size, faces.embeddings.shape[1]), np.float64)
        np.add.at(sums, inverse, faces.embeddings[assigned])
        slot = np.searchsorted(person_ids, winner[candidates])
        mean_sim = (
            np.einsum("ij,ij->i", faces.embeddings[todo[candidates]], sums[slot]) / np.bincount(inverse)[slot]
        )
        winner[candidates[mean_sim < options.threshold]] = -1
    occupied = _photo_people(faces, people)
    # Strongest matches first, so when two faces of one photo want the same person the better one wins.
    for idx in np.argsort(-strength, kind="stable"):
        person = int(winner[idx])
        face = int(todo[idx])
        if person < 0:
            continue
        key = (int(faces.photo_ids[face]), person)
        if key in occupied or (int(faces.ids[face]), person) in rejected:
            continue
        people[face] = person
        occupied.add(key)
        report.joined_existing += 1


def _cluster_rest(
    session: Session,
    faces: FaceSet,
    people: np.ndarray,
    previous: np.ndarray | None,
    options: ClusterOptions,
    rejected: set[tuple[int, int]],
    report: ClusterReport,
) -> None:
    rest = np.flatnonzero((people < 0) & faces.eligible)
    if rest.size < options.min_cluster_size:
        return
    labels = cluster_faces(
        faces.embeddings[rest],
        threshold=options.threshold,
        photo_ids=faces.photo_ids[rest],
        min_cluster_size=options.min_cluster_size,
    )
    occupied = _photo_people(faces, people)
    live = set(session.scalars(select(Person.id).where(Person.merged_into.is_(None))))
    for label in range(int(labels.max(initial=-1)) + 1):
        members = rest[labels == label]
        person = _previous_owner(members, previous, live) if previous is not None else -1
        if person < 0:
            new = Person()
            session.add(new)
            session.flush()
            person = new.id
            live.add(person)
            report.new_people += 1
        for face in members:
            key = (int(faces.photo_ids[face]), person)
            if key in occupied or (int(faces.ids[face]), person) in rejected:
                continue
            people[face] = person
            occupied.add(key)
            report.clustered += 1


def _previous_owner(members: np.ndarray, previous: np.ndarray, live: set[int]) -> int:
    """The person most of these faces belonged to before a rebuild (-1 if none of them had one)."""
    owners = Counter(int(p) for p in previous[members] if p >= 0 and int(p) in live)
    if not owners:
        return -1
    person, count = owners.most_common(1)[0]
    return person if count * 2 >= len(members) or count >= 3 else -1


def _store(session: Session, faces: FaceSet, people: np.ndarray, changed: np.ndarray) -> None:
    by_person: dict[int, list[int]] = defaultdict(list)
    for idx in changed:
        by_person[int(people[idx])].append(int(faces.ids[idx]))
    for person, face_ids in by_person.items():
        for start in range(0, len(face_ids), 500):
            chunk = face_ids[start : start + 500]
            values = (
                {"person_id": None, "source": None}
                if person < 0
                else {"person_id": person, "source": SOURCE_AUTO}
            )
            session.execute(update(Face).where(Face.id.in_(chunk)).values(**values))


def _drop_empty_people(session: Session) -> int:
    """Delete unnamed people that lost all their faces and that no decision refers to."""
    has_faces = select(Face.person_id).where(Face.person_id.is_not(None)).distinct()
    in_decisions = (
        select(Decision.person_id)
        .where(Decision.person_id.is_not(None))
        .union(select(Decision.other_person_id).where(Decision.other_person_id.is_not(None)))
    )
    empty = select(Person.id).where(
        Person.name.is_(None),
        Person.merged_into.is_(None),
        Person.id.not_in(has_faces),
        Person.id.not_in(in_decisions),
    )
    ids = list(session.scalars(empty))
    if ids:
        session.execute(delete(Person).where(Person.id.in_(ids)))
    return len(ids)


# --- user decisions -------------------------------------------------------------------------------


def resolve_person(session: Session, ref: str | int) -> Person:
    """A live person by id or exact name (a merged person resolves to its survivor)."""
    person: Person | None = None
    text = str(ref)
    person = session.scalar(select(Person).where(Person.name == text))
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
        clash = session.scalar(select(Person).where(Person.name == new_name, Person.id != person.id))
        if clash is not None:
            raise DecisionError(f"the name {new_name!r} is taken by person {clash.id}; merge them instead")
        person.name = new_name
        session.add(Decision(kind="rename", person_id=person.id, name=new_name))
        return person


def merge_people(db: Database, ref: str | int, other_ref: str | int) -> Person:
    """Move every face of ``other`` to ``person``; ``other`` stays resolvable and points at ``person``."""
    with db.session() as session:
        person = resolve_person(session, ref)
        other = resolve_person(session, other_ref)
        if person.id == other.id:
            raise DecisionError("cannot merge a person into itself")
        # Two faces of one photo cannot be one person: faces of `other` sharing a photo with
        # `person` stay with nobody rather than break that rule.
        taken = select(Face.photo_id).where(Face.person_id == person.id)
        session.execute(
            update(Face)
            .where(Face.person_id == other.id, Face.photo_id.in_(taken))
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
        return person


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
        if name is not None and session.scalar(select(Person.id).where(Person.name == name)) is not None:
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
                if session.scalar(select(Person.id).where(Person.name == name)) is not None:
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


@dataclass(frozen=True, slots=True)
class MergeResult:
    person: Person
    #: Faces of the merged person left unassigned because their photo already shows the survivor.
    left_behind: list[int]

    @property
    def reason(self) -> str | None:
        if not self.left_behind:
            return None
        return (
            f"{len(self.left_behind)} face(s) stayed unassigned: their photos already show this person, "
            "and two faces of one photo cannot be one person"
        )


def merge_people_explained(db: Database, ref: str | int, other_ref: str | int) -> MergeResult:
    """:func:`merge_people`, also saying which faces could not follow (cannot-link: same photo)."""
    with db.session() as session:
        person = resolve_person(session, ref)
        other = resolve_person(session, other_ref)
        taken = select(Face.photo_id).where(Face.person_id == person.id)
        staying = list(
            session.scalars(select(Face.id).where(Face.person_id == other.id, Face.photo_id.in_(taken)))
        )
    return MergeResult(merge_people(db, ref, other_ref), staying)
