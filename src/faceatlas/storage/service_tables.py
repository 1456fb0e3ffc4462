"""Tables of the REST server (Alembic branch ``service``).

A *face service* owns an API key and, for recognition services, a face collection: subjects and
their faces. Every face stores its embedding as raw float32 bytes together with the id of the
model pack that produced it, so embeddings of different packs are never compared.

``service_version`` and ``service_change`` let several server processes keep their in-memory
collections in sync: every write bumps the service's version (a row lock that also serialises
writers of one service) and logs which faces changed under that version number.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from faceatlas.storage.db import Base, utcnow

SERVICE_TYPES = ("recognition", "detection", "verification")


class FaceService(Base):
    __tablename__ = "face_service"
    __table_args__ = (
        UniqueConstraint("name", name="uq_face_service_name"),
        # the constraint keeps the name it had when it held the key itself (service_0001)
        UniqueConstraint("key_hash", name="uq_face_service_api_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))
    # SHA-256 (hex) of the API key: the key itself is shown once and never stored (service_0002)
    key_hash: Mapped[str] = mapped_column(String(64))
    key_hint: Mapped[str] = mapped_column(String(8))
    pack: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ServiceSubject(Base):
    __tablename__ = "service_subject"
    __table_args__ = (
        UniqueConstraint("service_id", "name_key", name="uq_service_subject_name"),
        Index("ix_service_subject_service_id", "service_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("face_service.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    # lower-cased name: CompreFace matches subject names case-insensitively
    name_key: Mapped[str] = mapped_column(String(255))


class ServiceFace(Base):
    __tablename__ = "service_face"
    __table_args__ = (
        Index("ix_service_face_service_subject", "service_id", "subject_id"),
        Index("ix_service_face_subject_id", "subject_id"),
    )

    # the CompreFace "image_id" (really the embedding's id)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("face_service.id", ondelete="CASCADE"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("service_subject.id", ondelete="CASCADE"))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    pack: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ServiceImage(Base):
    __tablename__ = "service_image"

    face_id: Mapped[str] = mapped_column(ForeignKey("service_face.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ServiceVersion(Base):
    __tablename__ = "service_version"

    service_id: Mapped[int] = mapped_column(
        ForeignKey("face_service.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class ServiceChange(Base):
    __tablename__ = "service_change"
    __table_args__ = (Index("ix_service_change_service_version", "service_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("face_service.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(BigInteger)
    # "add" / "delete" of one face, or "reload" (renames and merges move many faces at once)
    op: Mapped[str] = mapped_column(String(8))
    face_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
