"""One gallery: publish the named people of a photo library as subjects of a recognition service.

Each named person becomes (or updates) a subject holding its ``faces_per_person`` best faces — large,
sharp, frontal and as different from each other as possible — stored with their library embeddings and a
crop of the photo around the face (the service keeps original images, so the crop can be re-embedded by
``/migrate`` and shown by the console). What the import made is recorded (``storage.link_tables``), so a
re-run changes only what changed in the library: new best faces are added, faces no longer chosen (or no
longer the person's) are removed, a renamed person renames its subject, a person no longer named loses
its subject. Subjects the import did not create are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from faceatlas.errors import FaceAtlasError
from faceatlas.images import decode_image
from faceatlas.library.people import resolve_person
from faceatlas.library.tables import STATUS_OK, Face, Person, Photo
from faceatlas.library.thumbnails import crop_face
from faceatlas.storage import Database
from faceatlas.storage.link_tables import LibraryFaceLink, LibrarySubjectLink
from faceatlas.storage.service_tables import ServiceSubject
from faceatlas.storage.services import ServiceRecord, ServiceStore

DEFAULT_FACES_PER_PERSON = 5
# Stored crops: the face box plus this share of its size on every side (room for re-detection), at most
# STORED_SIDE pixels square.
STORED_MARGIN = 0.6
STORED_SIDE = 480
# How many of a person's faces (ranked by size and frontality, no decoding) are decoded to judge sharpness.
CANDIDATES_PER_PICK = 4
# Photos are decoded at most this large (DCT-reduced) to judge sharpness and cut the stored crop.
DECODE_SIDE = 1600
# Greedy diversity: a candidate's quality minus this times its highest cosine to the faces already chosen.
DIVERSITY_WEIGHT = 0.5


class PublishError(FaceAtlasError, ValueError):
    """The library cannot be published into that service (wrong type, packs differ, unnamed person...)."""


class PackMismatchError(PublishError):
    """The library's faces were embedded by another pack than the service compares with."""


@dataclass(slots=True)
class PersonResult:
    person_id: int
    name: str
    subject: str | None = None
    added: int = 0
    removed: int = 0
    renamed_from: str | None = None
    skipped: str | None = None  # why nothing was done for this person

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.renamed_from)


@dataclass(slots=True)
class PublishReport:
    service: str
    library: str
    people: list[PersonResult] = field(default_factory=list)
    deleted_subjects: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.deleted_subjects) or any(p.changed for p in self.people)

    def to_dict(self) -> dict[str, object]:
        return {
            "service": self.service,
            "library": self.library,
            "people": [
                {
                    "person_id": p.person_id,
                    "name": p.name,
                    "subject": p.subject,
                    "added": p.added,
                    "removed": p.removed,
                    "renamed_from": p.renamed_from,
                    "skipped": p.skipped,
                }
                for p in self.people
            ],
            "deleted_subjects": self.deleted_subjects,
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    face_id: int
    path: str
    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None
    embedding: np.ndarray
    score: float


def library_key(db: Database) -> str:
    """How a library is named in the link table: its database URL without the password."""
    return make_url(db.url).render_as_string(hide_password=True)


def publish_library(
    library: Database,
    store: ServiceStore,
    service: str | int,
    *,
    people: Sequence[str | int] | None = None,
    faces_per_person: int = DEFAULT_FACES_PER_PERSON,
) -> PublishReport:
    """Make the named people of ``library`` (all of them, or ``people``) subjects of ``service``."""
    if faces_per_person < 1:
        raise PublishError("faces per person must be at least 1")
    record = store.get_service(service)
    if record.type != "recognition":
        raise PublishError(
            f"service {record.name!r} is a {record.type} service; only recognition services hold faces"
        )
    key = library_key(library)
    report = PublishReport(record.name, key)
    with library.session() as session:
        _check_pack(session, record)
        chosen = _chosen_people(session, people)
        selections = {
            person.id: (person.name or "", _best_faces(session, person.id, record.pack, faces_per_person))
            for person in chosen
        }
    links = _links(store, record.id, key)
    for person_id, (name, faces) in selections.items():
        report.people.append(
            _publish_person(store, record, key, person_id, name, faces, links.get(person_id))
        )
    if people is None:
        # a person that is no longer named (or merged away, or gone) no longer has a subject of ours
        for person_id, subject_id in links.items():
            if person_id not in selections:
                deleted = _delete_linked_subject(store, record.id, subject_id)
                if deleted:
                    report.deleted_subjects.append(deleted)
    return report


# ------------------------------------------------------------------------------------------- choosing


def _check_pack(session: Session, record: ServiceRecord) -> None:
    packs = sorted(
        p for p in session.scalars(select(Face.pack).where(Face.person_id.is_not(None)).distinct()) if p
    )
    if packs and record.pack not in packs:
        raise PackMismatchError(
            f"the library's faces were embedded with pack {', '.join(packs)} but service {record.name!r} "
            f"compares faces of pack {record.pack!r}; embeddings of different packs cannot be compared. "
            f"Create a service with --pack {packs[0]}, or index the library again with pack {record.pack}"
        )


def _chosen_people(session: Session, people: Sequence[str | int] | None) -> list[Person]:
    if people is None:
        return list(
            session.scalars(
                select(Person)
                .where(Person.name.is_not(None), Person.merged_into.is_(None))
                .order_by(Person.id)
            )
        )
    chosen: dict[int, Person] = {}
    for ref in people:
        person = resolve_person(session, ref)
        if not person.name:
            raise PublishError(f"person {person.id} has no name; name it before publishing it")
        chosen[person.id] = person
    return list(chosen.values())


def _frontality(landmarks: np.ndarray | None) -> float:
    """1 for a frontal face, towards 0 as the nose moves off the eyes' and mouth's midline (yaw)."""
    if landmarks is None:
        return 0.5
    left_eye, right_eye, nose, mouth_left, mouth_right = landmarks.astype(np.float64)
    eye_distance = float(np.linalg.norm(right_eye - left_eye)) or 1.0
    axis = (right_eye - left_eye) / eye_distance
    midline = ((left_eye + right_eye) / 2 + (mouth_left + mouth_right) / 2) / 2
    offset = abs(float((nose - midline) @ axis)) / eye_distance
    return float(np.clip(1.0 - 2.0 * offset, 0.0, 1.0))


def _size_term(box: tuple[float, float, float, float]) -> float:
    side = min(box[2] - box[0], box[3] - box[1])
    return float(np.clip(np.log(max(side, 1.0) / 24.0) / np.log(400.0 / 24.0), 0.0, 1.0))


def _sharpness(rgb: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Laplacian variance of the face at a fixed 112 px scale, mapped to 0..1 (log scale)."""
    crop = crop_face(rgb, box, size=112, margin=0.0)
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    variance = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    return float(np.clip(np.log1p(variance) / np.log1p(2000.0), 0.0, 1.0))


def _best_faces(session: Session, person_id: int, pack: str, count: int) -> list[tuple[Candidate, bytes]]:
    """The person's ``count`` best faces of ``pack`` with their stored crops, best first."""
    rows = session.execute(
        select(
            Face.id,
            Photo.path,
            Face.x_min,
            Face.y_min,
            Face.x_max,
            Face.y_max,
            Face.landmarks,
            Face.embedding,
            Face.score,
        )
        .join(Photo, Photo.id == Face.photo_id)
        .where(
            Face.person_id == person_id,
            Face.pack == pack,
            Face.embedding.is_not(None),
            Photo.status == STATUS_OK,
        )
        .order_by(Face.id)
    ).all()
    candidates = [
        Candidate(
            int(r[0]),
            r[1],
            (float(r[2]), float(r[3]), float(r[4]), float(r[5])),
            None if r[6] is None else np.frombuffer(r[6], np.float32).reshape(5, 2),
            np.frombuffer(r[7] or b"", np.float32),  # never empty: the query asks for embeddings
            float(r[8]),
        )
        for r in rows
    ]
    # Cheap ranking first (no decoding); only the leaders are decoded to measure sharpness.
    candidates.sort(key=lambda c: (-(_size_term(c.box) + _frontality(c.landmarks)), c.face_id))
    judged: list[tuple[Candidate, float, bytes]] = []
    for candidate in candidates:
        if len(judged) >= max(count * CANDIDATES_PER_PICK, count):
            break
        try:
            decoded = decode_image(candidate.path, target_size=DECODE_SIDE)
        except (FaceAtlasError, OSError):
            continue  # the photo moved or broke since indexing: skip it, keep the others
        x0, y0, x1, y1 = (float(v) for v in np.asarray(candidate.box) / decoded.scale)
        box = (x0, y0, x1, y1)
        quality = (
            0.35 * _size_term(candidate.box)
            + 0.3 * _frontality(candidate.landmarks)
            + 0.25 * _sharpness(decoded.rgb, box)
            + 0.1 * candidate.score
        )
        judged.append((candidate, quality, _stored_crop(decoded.rgb, box)))
    chosen: list[tuple[Candidate, float, bytes]] = []
    while judged and len(chosen) < count:

        def gain(item: tuple[Candidate, float, bytes]) -> float:
            if not chosen:
                return item[1]
            closest = max(float(item[0].embedding @ c[0].embedding) for c in chosen)
            return item[1] - DIVERSITY_WEIGHT * closest

        best = max(judged, key=lambda item: (gain(item), -item[0].face_id))
        chosen.append(best)
        judged.remove(best)
    return [(candidate, crop) for candidate, _quality, crop in chosen]


def _stored_crop(rgb: np.ndarray, box: tuple[float, float, float, float]) -> bytes:
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * STORED_MARGIN)
    size = int(min(STORED_SIDE, max(side, 64)))
    crop = crop_face(rgb, box, size=size, margin=STORED_MARGIN)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise PublishError("could not encode a face crop as JPEG")
    return encoded.tobytes()


# ------------------------------------------------------------------------------------------- writing


def _links(store: ServiceStore, service_id: int, key: str) -> dict[int, int]:
    """person id -> subject id of the subjects this library published into the service."""
    with store.db.session() as s:
        rows = s.execute(
            select(LibrarySubjectLink.person_id, LibrarySubjectLink.subject_id).where(
                LibrarySubjectLink.service_id == service_id, LibrarySubjectLink.library == key
            )
        ).all()
    return {int(person): int(subject) for person, subject in rows}


def _subject_state(store: ServiceStore, subject_id: int) -> tuple[str, dict[int, str]] | None:
    """(subject name, library face id -> stored image id) of a linked subject; None if it is gone."""
    with store.db.session() as s:
        name = s.scalar(select(ServiceSubject.name).where(ServiceSubject.id == subject_id))
        if name is None:
            return None
        rows = s.execute(
            select(LibraryFaceLink.library_face_id, LibraryFaceLink.face_id).where(
                LibraryFaceLink.subject_id == subject_id
            )
        ).all()
    return name, {int(library_face): face for library_face, face in rows}


def _subject_owner(store: ServiceStore, service_id: int, name: str) -> tuple[int, bool] | None:
    """(subject id, made by an import) of the subject called ``name`` (case-insensitive), if any."""
    with store.db.session() as s:
        subject_id = s.scalar(
            select(ServiceSubject.id).where(
                ServiceSubject.service_id == service_id, ServiceSubject.name_key == name.lower()
            )
        )
        if subject_id is None:
            return None
        linked = s.scalar(
            select(LibrarySubjectLink.subject_id).where(LibrarySubjectLink.subject_id == subject_id)
        )
    return int(subject_id), linked is not None


def _publish_person(
    store: ServiceStore,
    record: ServiceRecord,
    key: str,
    person_id: int,
    name: str,
    faces: list[tuple[Candidate, bytes]],
    subject_id: int | None,
) -> PersonResult:
    result = PersonResult(person_id, name)
    state = _subject_state(store, subject_id) if subject_id is not None else None
    owner = _subject_owner(store, record.id, name)
    if state is None:
        if owner is not None:
            result.skipped = f"subject {name!r} exists and was not created by this import; left untouched"
            return result
        if not faces:
            result.skipped = f"no usable face of pack {record.pack!r}"
            return result
        subject_id = None
    else:
        assert subject_id is not None
        current_name, _ = state
        if current_name != name:
            if owner is not None and owner[0] != subject_id:
                result.subject = current_name
                result.skipped = f"cannot rename {current_name!r} to {name!r}: that subject already exists"
                return result
            store.rename_subject(record.id, current_name, name)
            result.renamed_from = current_name
    result.subject = name
    linked = state[1] if state is not None else {}
    wanted = {candidate.face_id for candidate, _crop in faces}
    stale = [image_id for library_face, image_id in linked.items() if library_face not in wanted]
    if stale:
        result.removed = len(store.delete_faces(record.id, stale))
    for candidate, crop in faces:
        if candidate.face_id in linked:
            continue
        store.add_face(
            record.id,
            name,
            candidate.embedding,
            record.pack,
            crop,
            also=_recorder(record.id, key, person_id, candidate.face_id),
        )
        result.added += 1
    return result


def _recorder(
    service_id: int, key: str, person_id: int, library_face_id: int
) -> Callable[[Session, str, int], None]:
    """Records, in the face's own transaction, which library face it is (and the subject's origin)."""

    def record(session: Session, image_id: str, subject_id: int) -> None:
        if session.get(LibrarySubjectLink, subject_id) is None:
            session.add(
                LibrarySubjectLink(
                    subject_id=subject_id, service_id=service_id, library=key, person_id=person_id
                )
            )
        session.add(LibraryFaceLink(face_id=image_id, subject_id=subject_id, library_face_id=library_face_id))

    return record


def _delete_linked_subject(store: ServiceStore, service_id: int, subject_id: int) -> str | None:
    with store.db.session() as s:
        name = s.scalar(select(ServiceSubject.name).where(ServiceSubject.id == subject_id))
    if name is None:
        return None
    store.delete_subject(service_id, name)
    return name


__all__ = [
    "DEFAULT_FACES_PER_PERSON",
    "PackMismatchError",
    "PersonResult",
    "PublishError",
    "PublishReport",
    "library_key",
    "publish_library",
]
