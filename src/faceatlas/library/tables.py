"""Photo-library tables (Alembic branch ``library``): photos, faces, people and user decisions.

Every table name starts with ``library_`` so the library can share one database with the server.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from faceatlas.storage.db import Base, utcnow

#: Photo status values.
STATUS_OK = "ok"
STATUS_ERROR = "error"

#: Face assignment sources: ``auto`` faces may be moved by a later clustering run, ``user`` faces never.
SOURCE_AUTO = "auto"
SOURCE_USER = "user"
#: An unassigned face a clustering run has looked at (the next run revisits it only near new faces).
SOURCE_SEEN = "seen"


class Photo(Base):
    __tablename__ = "library_photos"
    __table_args__ = (
        UniqueConstraint("path", name="uq_library_photos_path"),
        Index("ix_library_photos_content_hash", "content_hash"),
        Index("ix_library_photos_indexed_at", "indexed_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    mtime: Mapped[float] = mapped_column(Float, nullable=False)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=STATUS_OK)
    error: Mapped[str | None] = mapped_column(Text)
    pack: Mapped[str | None] = mapped_column(String(64))
    face_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    indexed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class Person(Base):
    __tablename__ = "library_people"
    __table_args__ = (UniqueConstraint("name", name="uq_library_people_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    # A person merged into another keeps its row (ids stay resolvable) and points at the survivor.
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("library_people.id", ondelete="SET NULL"))
    #: Hidden people are left out of the people page unless asked for (strangers in the background).
    hidden: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    #: The face chosen to show the person; None or a face no longer theirs: the best face is shown.
    cover_face_id: Mapped[int | None] = mapped_column(
        ForeignKey(
            "library_faces.id", ondelete="SET NULL", use_alter=True, name="fk_library_people_cover_face"
        )
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class Face(Base):
    __tablename__ = "library_faces"
    __table_args__ = (
        Index("ix_library_faces_photo_id", "photo_id"),
        Index("ix_library_faces_person_id", "person_id"),
        Index("ix_library_faces_pack", "pack"),
        # covering index of the people list (face and photo counts per person) and the review queue
        Index("ix_library_faces_person_photo", "person_id", "photo_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("library_photos.id", ondelete="CASCADE"), nullable=False)
    x_min: Mapped[float] = mapped_column(Float, nullable=False)
    y_min: Mapped[float] = mapped_column(Float, nullable=False)
    x_max: Mapped[float] = mapped_column(Float, nullable=False)
    y_max: Mapped[float] = mapped_column(Float, nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    landmarks: Mapped[bytes | None] = mapped_column(LargeBinary)  # (5, 2) float32
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # (d,) float32, unit norm
    pack: Mapped[str] = mapped_column(String(64), nullable=False)
    age: Mapped[float | None] = mapped_column(Float)
    gender: Mapped[str | None] = mapped_column(String(8))
    gender_probability: Mapped[float | None] = mapped_column(Float)
    pitch: Mapped[float | None] = mapped_column(Float)
    yaw: Mapped[float | None] = mapped_column(Float)
    roll: Mapped[float | None] = mapped_column(Float)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("library_people.id", ondelete="SET NULL"))
    source: Mapped[str | None] = mapped_column(String(8))
    #: faceatlas.quality score in [0, 1] (NULL for faces indexed before it existed: treated as passing).
    quality: Mapped[float | None] = mapped_column(Float)

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x_min, self.y_min, self.x_max, self.y_max)

    @property
    def vector(self) -> np.ndarray | None:
        return None if self.embedding is None else np.frombuffer(self.embedding, dtype=np.float32)


class Decision(Base):
    """A user decision; clustering reads these and never undoes them.

    kinds: ``rename`` (person, name), ``merge`` (person merged into other_person), ``reject``
    (face is not person), ``assign`` (face confirmed as person, e.g. by a split or the review page),
    ``ignore`` (face left out of the review queue), ``hide``/``unhide`` (person), ``cover`` (face, person).
    """

    __tablename__ = "library_decisions"
    __table_args__ = (
        UniqueConstraint("kind", "face_id", "person_id", name="uq_library_decisions_kind_face_person"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("library_people.id", ondelete="CASCADE"))
    other_person_id: Mapped[int | None] = mapped_column(ForeignKey("library_people.id", ondelete="CASCADE"))
    face_id: Mapped[int | None] = mapped_column(ForeignKey("library_faces.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
