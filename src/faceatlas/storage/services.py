"""Repository of the REST server's data: face services, subjects, faces and stored images.

Every write to a service's collection first bumps that service's row in ``service_version``. On
PostgreSQL that row lock serialises the writers of one service (so "create the subject if it does
not exist" never races), on SQLite the write lock does the same; and because version numbers are
handed out under that lock, a reader that sees version *v* knows every change up to *v* is committed.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import numpy as np
from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from faceatlas.errors import (
    ServiceExistsError,
    ServiceNotFoundError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from faceatlas.storage.db import Database
from faceatlas.storage.service_tables import (
    SERVICE_TYPES,
    FaceService,
    ServiceChange,
    ServiceFace,
    ServiceImage,
    ServiceSubject,
    ServiceVersion,
)

# keep this many versions of the change log per service; a process further behind reloads everything
CHANGE_LOG_KEEP = 20_000
CHANGE_LOG_PRUNE_EVERY = 1_000


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """A face service. Only its key's hash is stored, so ``api_key`` is set once: in the record
    returned by :meth:`ServiceStore.create_service` and :meth:`ServiceStore.rotate_key`; elsewhere
    ``key_hint`` (the key's last characters) tells keys apart."""

    id: int
    name: str
    type: str
    key_hint: str
    pack: str
    created: datetime
    api_key: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "key_hint": self.key_hint,
            "pack": self.pack,
            "created": self.created.isoformat(),
        }
        if self.api_key is not None:
            out["api_key"] = self.api_key
        return out


@dataclass(frozen=True, slots=True)
class FaceRef:
    image_id: str
    subject: str


@dataclass(frozen=True, slots=True)
class StoredFace:
    image_id: str
    subject: str
    embedding: np.ndarray
    pack: str


@dataclass(slots=True)
class FaceRows:
    """Rows of one collection load: parallel arrays plus the subject names they refer to."""

    ids: list[str]
    subject_ids: np.ndarray  # int64
    embeddings: np.ndarray  # (n, d) float32
    subjects: dict[int, str]


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """What changed: ``added`` holds faces whose last change is an add (to load), ``deleted`` every face
    that was deleted on the way (a re-embedded face is in both)."""

    version: int
    reload: bool
    added: frozenset[str]
    deleted: frozenset[str]


def new_api_key() -> str:
    return str(uuid.uuid4())


def hash_api_key(api_key: str) -> str:
    """What the database keeps of a key: a random UUID has 122 bits, so a plain (unsalted) SHA-256
    cannot be reversed by guessing, and a key is looked up by its hash in one index probe."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


def key_hint(api_key: str) -> str:
    return api_key[-4:]


MAX_SERVICE_NAME = 255


def check_service_name(name: str) -> str:
    """The name as stored: trimmed, 1-255 characters, no NUL (PostgreSQL refuses it; SQLite would not)."""
    name = name.strip()
    if not name:
        raise ValueError("service name must not be empty")
    if len(name) > MAX_SERVICE_NAME:
        raise ValueError(f"service name must be at most {MAX_SERVICE_NAME} characters")
    if "\x00" in name:
        raise ValueError("service name must not contain NUL characters")
    return name


def embedding_to_bytes(embedding: np.ndarray) -> bytes:
    return np.ascontiguousarray(embedding, dtype="<f4").tobytes()


def embedding_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")


def _face_rows(rows: Sequence) -> FaceRows:
    embeddings = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), -1)
    return FaceRows(
        [r[0] for r in rows],
        np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)),
        embeddings.astype(np.float32, copy=False),
        {r[1]: r[3] for r in rows},
    )


def _record(row: FaceService, api_key: str | None = None) -> ServiceRecord:
    return ServiceRecord(row.id, row.name, row.type, row.key_hint, row.pack, row.created, api_key)


class ServiceStore:
    """All server reads and writes, each in its own short transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ----------------------------------------------------------------- services (administration)
    def create_service(
        self, name: str, type_: str, pack: str, *, api_key: str | None = None
    ) -> ServiceRecord:
        if type_ not in SERVICE_TYPES:
            raise ValueError(f"service type must be one of {', '.join(SERVICE_TYPES)}, not {type_!r}")
        name = check_service_name(name)
        api_key = api_key or new_api_key()
        try:
            with self.db.session() as s:
                row = FaceService(
                    name=name,
                    type=type_,
                    key_hash=hash_api_key(api_key),
                    key_hint=key_hint(api_key),
                    pack=pack,
                )
                s.add(row)
                s.flush()
                s.add(ServiceVersion(service_id=row.id, version=0))
                return _record(row, api_key)
        except IntegrityError as exc:
            raise ServiceExistsError(f"a service named {name!r} already exists") from exc

    def list_services(self) -> list[ServiceRecord]:
        with self.db.session() as s:
            return [_record(r) for r in s.scalars(select(FaceService).order_by(FaceService.id))]

    def _find(self, s: Session, name_or_id: str | int) -> FaceService:
        """By name first (a service may be called "1"), then by id."""
        row = None
        text = str(name_or_id)
        if isinstance(name_or_id, str) and "\x00" not in text and len(text) <= MAX_SERVICE_NAME:
            row = s.scalar(select(FaceService).where(FaceService.name == text))
        if row is None and text.isascii() and text.isdigit() and int(text) < 2**31:
            row = s.get(FaceService, int(text))
        if row is None:
            raise ServiceNotFoundError(f"no service {name_or_id!r}")
        return row

    def get_service(self, name_or_id: str | int) -> ServiceRecord:
        with self.db.session() as s:
            return _record(self._find(s, name_or_id))

    def service_by_key(self, api_key: str) -> ServiceRecord | None:
        with self.db.session() as s:
            row = s.scalar(select(FaceService).where(FaceService.key_hash == hash_api_key(api_key)))
            return _record(row) if row else None

    def rotate_key(self, name_or_id: str | int) -> ServiceRecord:
        """A new key for the service (returned once, in the record); the old one stops working."""
        api_key = new_api_key()
        with self.db.session() as s:
            row = self._find(s, name_or_id)
            row.key_hash, row.key_hint = hash_api_key(api_key), key_hint(api_key)
            s.flush()
            return _record(row, api_key)

    def rename_service(self, name_or_id: str | int, new_name: str) -> ServiceRecord:
        new_name = check_service_name(new_name)
        try:
            with self.db.session() as s:
                row = self._find(s, name_or_id)
                row.name = new_name
                s.flush()
                return _record(row)
        except IntegrityError as exc:
            raise ServiceExistsError(f"a service named {new_name!r} already exists") from exc

    def delete_service(self, name_or_id: str | int) -> ServiceRecord:
        with self.db.session() as s:
            row = self._find(s, name_or_id)
            record = _record(row)
            s.delete(row)
            return record

    # ----------------------------------------------------------------- version log
    def _bump(self, s: Session, service_id: int) -> int:
        """Take the service's write lock and return the new version (call first in a write)."""
        s.execute(
            update(ServiceVersion)
            .where(ServiceVersion.service_id == service_id)
            .values(version=ServiceVersion.version + 1)
        )
        version = s.scalar(select(ServiceVersion.version).where(ServiceVersion.service_id == service_id))
        if version is None:
            raise ServiceNotFoundError(f"service {service_id} was deleted")
        if version % CHANGE_LOG_PRUNE_EVERY == 0:
            s.execute(
                delete(ServiceChange).where(
                    ServiceChange.service_id == service_id, ServiceChange.version < version - CHANGE_LOG_KEEP
                )
            )
        return int(version)

    def _log(
        self, s: Session, service_id: int, version: int, op: str, face_ids: Iterable[str | None]
    ) -> None:
        s.add_all(
            ServiceChange(service_id=service_id, version=version, op=op, face_id=face_id)
            for face_id in face_ids
        )

    def version(self, service_id: int) -> int:
        with self.db.engine.connect() as conn:
            value = conn.scalar(select(ServiceVersion.version).where(ServiceVersion.service_id == service_id))
        return int(value or 0)

    def changes_since(self, service_id: int, known: int) -> ChangeSet | None:
        """What changed after version ``known``; None when nothing did."""
        with self.db.session() as s:
            current = s.scalar(select(ServiceVersion.version).where(ServiceVersion.service_id == service_id))
            current = int(current or 0)
            if current == known:
                return None
            rows = s.execute(
                select(ServiceChange.version, ServiceChange.op, ServiceChange.face_id)
                .where(
                    ServiceChange.service_id == service_id,
                    ServiceChange.version > known,
                    ServiceChange.version <= current,
                )
                .order_by(ServiceChange.id)
            ).all()
        # a gap (pruned log) or a version behind us (service recreated) needs a full reload
        if current < known or not rows or rows[0].version != known + 1:
            return ChangeSet(current, True, frozenset(), frozenset())
        added: set[str] = set()
        deleted: set[str] = set()
        for _version, op, face_id in rows:
            if op == "reload" or face_id is None:
                return ChangeSet(current, True, frozenset(), frozenset())
            if op == "add":
                added.add(face_id)
            else:
                added.discard(face_id)
                deleted.add(face_id)
        return ChangeSet(current, False, frozenset(added), frozenset(deleted))

    def load_face_rows(self, service_id: int, pack: str, face_ids: Iterable[str] | None = None) -> FaceRows:
        """Embeddings of ``pack`` in one service (optionally only ``face_ids``), in one piece."""
        chunks = list(self.iter_faces(service_id, pack, face_ids))
        if not chunks:
            return FaceRows([], np.zeros(0, np.int64), np.zeros((0, 0), np.float32), {})
        return FaceRows(
            [i for c in chunks for i in c.ids],
            np.concatenate([c.subject_ids for c in chunks]),
            np.concatenate([c.embeddings for c in chunks]),
            {k: v for c in chunks for k, v in c.subjects.items()},
        )

    def iter_faces(
        self, service_id: int, pack: str, face_ids: Iterable[str] | None = None, chunk: int = 10_000
    ) -> Iterator[FaceRows]:
        """Embeddings of ``pack`` in one service, streamed in chunks (a big collection is never
        held twice in memory while it loads)."""
        query = (
            select(ServiceFace.id, ServiceFace.subject_id, ServiceFace.embedding, ServiceSubject.name)
            .join(ServiceSubject, ServiceSubject.id == ServiceFace.subject_id)
            .where(ServiceFace.service_id == service_id, ServiceFace.pack == pack)
        )
        with self.db.session() as s:
            if face_ids is None:
                result = s.execute(query.execution_options(yield_per=chunk))
                for rows in result.partitions():
                    yield _face_rows(rows)
            else:
                wanted = list(face_ids)
                for start in range(0, len(wanted), 500):
                    rows = s.execute(query.where(ServiceFace.id.in_(wanted[start : start + 500]))).all()
                    if rows:
                        yield _face_rows(rows)

    def count_faces(
        self, *, service_id: int | None = None, pack: str | None = None, other_than_pack: str | None = None
    ) -> int:
        query = select(func.count()).select_from(ServiceFace)
        if service_id is not None:
            query = query.where(ServiceFace.service_id == service_id)
        if pack is not None:
            query = query.where(ServiceFace.pack == pack)
        if other_than_pack is not None:
            query = query.where(ServiceFace.pack != other_than_pack)
        with self.db.session() as s:
            return int(s.scalar(query) or 0)

    # ----------------------------------------------------------------- faces
    def _subject(self, s: Session, service_id: int, name: str) -> ServiceSubject | None:
        return s.scalar(
            select(ServiceSubject).where(
                ServiceSubject.service_id == service_id, ServiceSubject.name_key == name.lower()
            )
        )

    def add_face(
        self,
        service_id: int,
        subject: str,
        embedding: np.ndarray,
        pack: str,
        image: bytes | None = None,
        *,
        also: Callable[[Session, str, int], None] | None = None,
    ) -> tuple[str, int]:
        """Store one face under ``subject`` (created when new); returns (image_id, version).

        ``also(session, image_id, subject_id)`` runs in the same transaction (e.g. to record where the
        face came from), so the face and that record are committed together or not at all."""
        face_id = str(uuid.uuid4())
        with self.db.session() as s:
            version = self._bump(s, service_id)
            row = self._subject(s, service_id, subject)
            if row is None:
                row = ServiceSubject(service_id=service_id, name=subject, name_key=subject.lower())
                s.add(row)
                s.flush()
            s.add(
                ServiceFace(
                    id=face_id,
                    service_id=service_id,
                    subject_id=row.id,
                    embedding=embedding_to_bytes(embedding),
                    pack=pack,
                )
            )
            if image is not None:
                s.flush()
                s.add(ServiceImage(face_id=face_id, data=image))
            if also is not None:
                s.flush()
                also(s, face_id, row.id)
            self._log(s, service_id, version, "add", [face_id])
        return face_id, version

    def add_faces_bulk(
        self, service_id: int, subjects: Sequence[str], embeddings: np.ndarray, pack: str
    ) -> list[str]:
        """Insert many faces in one transaction (benchmarks and imports; no images)."""
        ids = [str(uuid.uuid4()) for _ in subjects]
        with self.db.session() as s:
            version = self._bump(s, service_id)
            # set-based: one SELECT per chunk of names and one multi-row INSERT of the new ones (a
            # row-by-row lookup and flush took ~25 min for a million subjects on PostgreSQL)
            first_name: dict[str, str] = {}
            for name in subjects:
                first_name.setdefault(name.lower(), name)
            subject_ids: dict[str, int] = {}
            keys = list(first_name)
            for start in range(0, len(keys), 10_000):
                chunk = keys[start : start + 10_000]
                found = s.execute(
                    select(ServiceSubject.name_key, ServiceSubject.id).where(
                        ServiceSubject.service_id == service_id, ServiceSubject.name_key.in_(chunk)
                    )
                ).all()
                subject_ids.update({key: subject_id for key, subject_id in found})
                new = [
                    {"service_id": service_id, "name": first_name[key], "name_key": key}
                    for key in chunk
                    if key not in subject_ids
                ]
                if new:
                    s.execute(cast(Table, ServiceSubject.__table__).insert(), new)
                    created = s.execute(
                        select(ServiceSubject.name_key, ServiceSubject.id).where(
                            ServiceSubject.service_id == service_id,
                            ServiceSubject.name_key.in_([row["name_key"] for row in new]),
                        )
                    ).all()
                    subject_ids.update({key: subject_id for key, subject_id in created})
            s.execute(
                cast(Table, ServiceFace.__table__).insert(),
                [
                    {
                        "id": face_id,
                        "service_id": service_id,
                        "subject_id": subject_ids[name.lower()],
                        "embedding": embedding_to_bytes(vector),
                        "pack": pack,
                        "created": datetime.now().astimezone(),
                    }
                    for face_id, name, vector in zip(ids, subjects, embeddings, strict=True)
                ],
            )
            self._log(s, service_id, version, "reload", [None])
        return ids

    def list_faces(
        self, service_id: int, page: int, size: int, subject: str | None = None
    ) -> tuple[list[FaceRef], int]:
        where = [ServiceFace.service_id == service_id]
        if subject:
            where.append(ServiceSubject.name_key == subject.lower())
        base = select(ServiceFace.id, ServiceSubject.name).join(
            ServiceSubject, ServiceSubject.id == ServiceFace.subject_id
        )
        with self.db.session() as s:
            total = s.scalar(
                select(func.count())
                .select_from(ServiceFace)
                .join(ServiceSubject, ServiceSubject.id == ServiceFace.subject_id)
                .where(*where)
            )
            rows = s.execute(
                base.where(*where)
                .order_by(ServiceFace.created, ServiceFace.id)
                .offset(page * size)
                .limit(size)
            ).all()
        return [FaceRef(r[0], r[1]) for r in rows], int(total or 0)

    def get_face(self, service_id: int, face_id: str) -> StoredFace | None:
        with self.db.session() as s:
            row = s.execute(
                select(ServiceFace.id, ServiceSubject.name, ServiceFace.embedding, ServiceFace.pack)
                .join(ServiceSubject, ServiceSubject.id == ServiceFace.subject_id)
                .where(ServiceFace.service_id == service_id, ServiceFace.id == face_id)
            ).first()
        if row is None:
            return None
        return StoredFace(row[0], row[1], embedding_from_bytes(row[2]), row[3])

    def get_image(self, service_id: int, face_id: str) -> bytes | None:
        with self.db.session() as s:
            return s.scalar(
                select(ServiceImage.data)
                .join(ServiceFace, ServiceFace.id == ServiceImage.face_id)
                .where(ServiceFace.service_id == service_id, ServiceImage.face_id == face_id)
            )

    def _delete_faces(self, s: Session, service_id: int, version: int, where: list) -> list[FaceRef]:
        rows = s.execute(
            select(ServiceFace.id, ServiceSubject.name)
            .join(ServiceSubject, ServiceSubject.id == ServiceFace.subject_id)
            .where(ServiceFace.service_id == service_id, *where)
        ).all()
        ids = [r[0] for r in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            s.execute(delete(ServiceImage).where(ServiceImage.face_id.in_(chunk)))
            s.execute(delete(ServiceFace).where(ServiceFace.id.in_(chunk)))
        if len(ids) > 1000:
            self._log(s, service_id, version, "reload", [None])
        else:
            self._log(s, service_id, version, "delete", ids)
        return [FaceRef(r[0], r[1]) for r in rows]

    def delete_face(self, service_id: int, face_id: str) -> FaceRef | None:
        with self.db.session() as s:
            version = self._bump(s, service_id)
            deleted = self._delete_faces(s, service_id, version, [ServiceFace.id == face_id])
        return deleted[0] if deleted else None

    def delete_faces(self, service_id: int, face_ids: Sequence[str]) -> list[FaceRef]:
        """Delete the given faces (unknown ids are skipped), in the order they were asked for."""
        wanted = list(dict.fromkeys(face_ids))
        found: dict[str, FaceRef] = {}
        with self.db.session() as s:
            version = self._bump(s, service_id)
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                for ref in self._delete_faces(s, service_id, version, [ServiceFace.id.in_(chunk)]):
                    found[ref.image_id] = ref
        return [found[i] for i in wanted if i in found]

    def delete_subject_faces(self, service_id: int, subject: str | None) -> int:
        """Delete every face of ``subject`` (every face of the service when None); the subjects stay."""
        with self.db.session() as s:
            version = self._bump(s, service_id)
            if subject is None:
                return len(self._delete_faces(s, service_id, version, []))
            row = self._subject(s, service_id, subject)
            if row is None:
                return 0
            return len(self._delete_faces(s, service_id, version, [ServiceFace.subject_id == row.id]))

    # ----------------------------------------------------------------- subjects
    def add_subject(self, service_id: int, name: str) -> str:
        with self.db.session() as s:
            self._bump(s, service_id)
            if self._subject(s, service_id, name) is not None:
                raise SubjectExistsError(name)
            s.add(ServiceSubject(service_id=service_id, name=name, name_key=name.lower()))
        return name

    def list_subjects(self, service_id: int) -> list[str]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(ServiceSubject.name)
                    .where(ServiceSubject.service_id == service_id)
                    .order_by(ServiceSubject.name_key)
                )
            )

    def rename_subject(self, service_id: int, old: str, new: str) -> bool:
        """Rename ``old`` to ``new``; onto an existing subject the two are merged."""
        with self.db.session() as s:
            version = self._bump(s, service_id)
            source = self._subject(s, service_id, old)
            if source is None:
                raise SubjectNotFoundError(old)
            if not new.strip() or old == new:
                return False
            target = self._subject(s, service_id, new)
            if target is None or target.id == source.id:
                source.name, source.name_key = new, new.lower()
            else:
                s.execute(
                    update(ServiceFace)
                    .where(ServiceFace.subject_id == source.id)
                    .values(subject_id=target.id)
                )
                s.delete(source)
            self._log(s, service_id, version, "reload", [None])
        return True

    def delete_subject(self, service_id: int, name: str) -> bool:
        with self.db.session() as s:
            version = self._bump(s, service_id)
            row = self._subject(s, service_id, name)
            if row is None:
                return False
            self._delete_faces(s, service_id, version, [ServiceFace.subject_id == row.id])
            s.delete(row)
        return True

    def delete_all_subjects(self, service_id: int) -> int:
        with self.db.session() as s:
            version = self._bump(s, service_id)
            self._delete_faces(s, service_id, version, [])
            result = s.execute(delete(ServiceSubject).where(ServiceSubject.service_id == service_id))
            self._log(s, service_id, version, "reload", [None])
            return int(getattr(result, "rowcount", 0) or 0)

    # ----------------------------------------------------------------- re-embedding (migration)
    def faces_to_migrate(self, pack: str, *, everything: bool = False) -> Iterator[tuple[int, str]]:
        """(service_id, face_id) of stored faces whose embedding was made by another pack."""
        query = select(ServiceFace.service_id, ServiceFace.id).order_by(ServiceFace.service_id)
        if not everything:
            query = query.where(ServiceFace.pack != pack)
        with self.db.session() as s:
            rows = s.execute(query).all()
        yield from ((int(r[0]), r[1]) for r in rows)

    def set_embedding(self, service_id: int, face_id: str, embedding: np.ndarray, pack: str) -> None:
        with self.db.session() as s:
            version = self._bump(s, service_id)
            s.execute(
                update(ServiceFace)
                .where(ServiceFace.id == face_id)
                .values(embedding=embedding_to_bytes(embedding), pack=pack)
            )
            # a delete then an add moves the face to its new embedding in every process
            self._log(s, service_id, version, "delete", [face_id])
            self._log(s, service_id, version, "add", [face_id])


def generate_token() -> str:
    return secrets.token_urlsafe(32)
