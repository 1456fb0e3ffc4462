"""Grouping a library's faces into people (incremental clustering) within the user's decisions.

Rules a clustering run follows (the algorithm is :func:`faceatlas.clustering.cluster_incremental`):

* only faces of one pack are compared (embeddings of different packs are never mixed);
* faces smaller than ``min_face_size``, with a detection score below ``min_score`` or a quality
  below ``min_quality`` never create or join a person automatically (they can be assigned by hand);
* a person is earned: a new person needs ``min_faces`` mutually consistent faces;
* a face assigned by the user (``source == "user"``) is never moved, and votes for its person;
* a face is never given to a person the user said it is not (a ``reject`` decision);
* two faces of one photo never belong to the same person;
* the same-person threshold is the pack's calibrated 1:1 threshold corrected for the number of
  faces compared (``docs/clustering.md``);
* existing people keep their ids: new faces join them by a k-NN vote with a margin, and
  ``rebuild`` maps every new cluster back to the person most of its faces belonged to (so names,
  merges, hidden people and splits survive);
* a face that a run looked at and left unassigned is marked ``seen``: the next run clusters only
  the new faces and their neighbourhood, so it costs in proportion to the new faces.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import case, delete, func, select, union, update
from sqlalchemy.orm import Session

from faceatlas.clustering import (
    DEFAULT_K,
    cluster_incremental,
    impostor_spread,
    one_to_n_threshold,
)
from faceatlas.library.tables import SOURCE_AUTO, SOURCE_SEEN, SOURCE_USER, Decision, Face, Person
from faceatlas.storage import Database
from faceatlas.vectors import normalize_rows

#: FAR of the packs' calibrated thresholds (``faceatlas eval lfw --far`` default).
CALIBRATION_FAR = 1e-3


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    threshold: float  # cosine similarity for "same person" in a 1:1 decision (the pack's calibration)
    min_face_size: float = 24.0  # pixels, shorter box side in the original photo
    min_score: float = 0.0
    min_quality: float = 0.0  # faceatlas.quality gate
    min_faces: int = 3  # a new person needs this many mutually consistent faces
    knn: int = DEFAULT_K
    min_votes: int = 3
    margin: float = 0.05  # a joined person must beat the next-best person by this cosine
    #: Correct ``threshold`` for the number of faces compared (False: use it as given).
    correct_for_faces: bool = True
    far: float = CALIBRATION_FAR

    @classmethod
    def for_pack(cls, pack: str, **overrides: Any) -> ClusterOptions:
        from faceatlas.models.packs import get_pack

        return cls(threshold=get_pack(pack).calibration().threshold, **overrides)


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
    threshold: float = 0.0  # the corrected threshold the run used
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
            Face.quality,
        )
        .where(Face.pack == pack, Face.embedding.is_not(None))
        .order_by(Face.id)
    ).all()
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        return FaceSet(
            empty, empty, np.empty((0, 0), np.float32), empty, np.empty(0, object), np.empty(0, bool)
        )
    ids, photo_ids, blobs, person_ids, sources, widths, heights, scores, qualities = zip(*rows, strict=True)
    embeddings = normalize_rows(np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), -1))
    eligible = np.ones(len(rows), dtype=bool)
    if options is not None:
        side = np.minimum(np.asarray(widths, float), np.asarray(heights, float))
        # Faces indexed before quality was measured (NULL) pass the quality gate.
        quality = np.asarray([1.0 if q is None else q for q in qualities], float)
        eligible = (
            (side >= options.min_face_size)
            & (np.asarray(scores, float) >= options.min_score)
            & (quality >= options.min_quality)
        )
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
    rows = session.execute(select(Person.id, Person.merged_into).where(Person.merged_into.is_not(None)))
    parent: dict[int, int] = {int(pid): int(into) for pid, into in rows if into is not None}
    resolved: dict[int, int] = {}
    for pid in parent:
        target: int = pid
        seen: set[int] = set()
        while target in parent and target not in seen:
            seen.add(target)
            target = parent[target]
        resolved[pid] = target
    return resolved


def run_threshold(options: ClusterOptions, embeddings: np.ndarray) -> float:
    """The threshold of a run over ``embeddings``: the 1:1 threshold corrected for their number."""
    if not options.correct_for_faces:
        return options.threshold
    return one_to_n_threshold(
        options.threshold, len(embeddings), far=options.far, spread=impostor_spread(embeddings)
    )


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
        merged = survivor_map(session)
        live = set(session.scalars(select(Person.id).where(Person.merged_into.is_(None))))
        people = np.asarray([merged.get(int(p), int(p)) for p in faces.person_ids], np.int64)
        people[(people >= 0) & ~np.isin(people, list(live))] = -1
        previous = people.copy()
        is_user = faces.sources == SOURCE_USER
        if rebuild:
            people[~is_user] = -1
        # Faces that lost eligibility (never user-confirmed ones) are released.
        people[~faces.eligible & ~is_user] = -1
        row_of = {int(face_id): row for row, face_id in enumerate(faces.ids)}
        forbidden: dict[int, set[int]] = defaultdict(set)
        for face_id, person in rejections(session):
            if face_id in row_of:
                forbidden[row_of[face_id]].add(merged.get(person, person))
        seen = (faces.sources == SOURCE_SEEN) & (people < 0)
        threshold = run_threshold(options, faces.embeddings[faces.eligible | (people >= 0)])
        report.threshold = threshold
        existing = set(int(p) for p in people[people >= 0])
        result = cluster_incremental(
            faces.embeddings,
            people,
            threshold=threshold,
            photo_ids=faces.photo_ids,
            eligible=faces.eligible,
            min_faces=options.min_faces,
            k=options.knn,
            min_votes=options.min_votes,
            margin=options.margin,
            forbidden=dict(forbidden),
            new=None if rebuild else ~seen,
        )
        labels = result.labels
        report.joined_existing = result.joined_existing
        _name_new_people(
            session, faces, labels, existing, previous if rebuild else None, live, forbidden, report
        )
        changed = np.flatnonzero((labels != faces.person_ids) & ~is_user)
        _store(session, faces, labels, changed)
        # Looked at and left unassigned: the next run only revisits them near new faces.
        unseen = np.flatnonzero((labels < 0) & faces.eligible & (faces.sources != SOURCE_SEEN) & ~is_user)
        _mark_seen(session, faces.ids[unseen])
        report.unassigned = int((labels < 0).sum())
        report.removed_people = drop_empty_people(session)
        live_people = select(func.count()).select_from(Person).where(Person.merged_into.is_(None))
        report.people = int(session.scalar(live_people) or 0)
    return report


def _name_new_people(
    session: Session,
    faces: FaceSet,
    labels: np.ndarray,
    existing: set[int],
    previous: np.ndarray | None,
    live: set[int],
    forbidden: dict[int, set[int]],
    report: ClusterReport,
) -> None:
    """Give each cluster the run created a person id: its previous owner after a rebuild, else a new row."""
    occupied = {
        (int(ph), int(p)) for ph, p in zip(faces.photo_ids, labels, strict=True) if int(p) in existing
    }
    new_labels = sorted(set(int(p) for p in labels[labels >= 0]) - existing)
    # Members first: new person ids may coincide with the run's provisional labels.
    groups = [np.flatnonzero(labels == label) for label in new_labels]
    for members in groups:
        person = _previous_owner(members, previous, live) if previous is not None else -1
        if person < 0:
            new = Person()
            session.add(new)
            session.flush()
            person = new.id
            live.add(person)
            report.new_people += 1
            report.clustered += members.size
        else:
            report.joined_existing += members.size
        for face in members:
            key = (int(faces.photo_ids[face]), person)
            if key in occupied or person in forbidden.get(int(face), ()):
                labels[face] = -1
                continue
            labels[face] = person
            occupied.add(key)


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


def _mark_seen(session: Session, face_ids: np.ndarray) -> None:
    ids = [int(f) for f in face_ids]
    for start in range(0, len(ids), 500):
        session.execute(update(Face).where(Face.id.in_(ids[start : start + 500])).values(source=SOURCE_SEEN))


def drop_empty_people(session: Session) -> int:
    """Delete unnamed people that lost all their faces.

    Kept: people another person was merged into and people a person-level decision (merge, hide,
    ...) refers to. Face-level decisions ("not this person", manual assignments, covers) do not keep an
    empty person alive: their faces are gone (pruned photos) or elsewhere, and they go with it.
    """
    has_faces = select(Face.person_id).where(Face.person_id.is_not(None)).distinct()
    face_level = ("reject", "assign", "cover")
    in_decisions = union(
        select(Decision.person_id).where(Decision.person_id.is_not(None), Decision.kind.not_in(face_level)),
        select(Decision.other_person_id).where(Decision.other_person_id.is_not(None)),
        select(Person.merged_into).where(Person.merged_into.is_not(None)),
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


@dataclass(frozen=True, slots=True)
class FaceSummary:
    face_id: int
    photo_path: str
    person_id: int | None
    person_name: str | None
    quality: float | None
    size: float  # shorter box side, pixels
    source: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "face_id": self.face_id,
            "photo": self.photo_path,
            "person_id": self.person_id,
            "person": self.person_name,
            "quality": None if self.quality is None else round(self.quality, 3),
            "size": round(self.size, 1),
            "source": self.source,
        }


def list_faces(db: Database, *, unassigned: bool = False, limit: int = 0) -> list[FaceSummary]:
    """Faces by photo; ``unassigned``: only those no person has (what review pages show)."""
    from faceatlas.library.tables import Photo

    width, height = Face.x_max - Face.x_min, Face.y_max - Face.y_min
    query = (
        select(
            Face.id,
            Photo.path,
            Face.person_id,
            Person.name,
            Face.quality,
            case((width < height, width), else_=height),
            Face.source,
        )
        .join(Photo, Photo.id == Face.photo_id)
        .outerjoin(Person, Person.id == Face.person_id)
        .order_by(Photo.path, Face.id)
    )
    if unassigned:
        query = query.where(Face.person_id.is_(None))
    if limit > 0:
        query = query.limit(limit)
    with db.session() as session:
        return [
            FaceSummary(int(f), p, pid, name, q, float(size), src)
            for f, p, pid, name, q, size, src in session.execute(query)
        ]
