"""Grouping a library's faces into people (incremental clustering) within the user's decisions.

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
from faceatlas.library.tables import SOURCE_AUTO, SOURCE_USER, Decision, Face, Person
from faceatlas.storage import Database
from faceatlas.vectors import normalize_rows


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
        report.removed_people = drop_empty_people(session)
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


def drop_empty_people(session: Session) -> int:
    """Delete unnamed people that lost all their faces.

    Kept: people another person was merged into and people a person-level decision (merge, hide,
    ...) refers to. Face-level decisions ("not this person", manual assignments) do not keep an
    empty person alive: their faces are gone (pruned photos) or elsewhere, and they go with it.
    """
    has_faces = select(Face.person_id).where(Face.person_id.is_not(None)).distinct()
    face_level = ("reject", "assign")
    in_decisions = (
        select(Decision.person_id)
        .where(Decision.person_id.is_not(None), Decision.kind.not_in(face_level))
        .union(select(Decision.other_person_id).where(Decision.other_person_id.is_not(None)))
        .union(select(Person.merged_into).where(Person.merged_into.is_not(None)))
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
