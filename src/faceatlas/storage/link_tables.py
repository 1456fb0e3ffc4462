"""Which service subjects and faces a photo library published (Alembic branch ``service``).

``faceatlas services import-library`` turns named library people into subjects of a recognition service.
These rows are its memory: a subject without a row here was not made by the import and is never touched
by it; a face row says which library face a stored face came from, so re-runs add and remove exactly the
difference. Both cascade with the subject / face they describe.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from faceatlas.storage.db import Base


class LibrarySubjectLink(Base):
    __tablename__ = "service_library_subject"
    __table_args__ = (
        UniqueConstraint("service_id", "library", "person_id", name="uq_service_library_subject_person"),
    )

    subject_id: Mapped[int] = mapped_column(
        ForeignKey("service_subject.id", ondelete="CASCADE"), primary_key=True
    )
    service_id: Mapped[int] = mapped_column(ForeignKey("face_service.id", ondelete="CASCADE"))
    # the library's database URL (password removed): one service may take people from several libraries
    library: Mapped[str] = mapped_column(String(512))
    person_id: Mapped[int] = mapped_column(Integer)


class LibraryFaceLink(Base):
    __tablename__ = "service_library_face"
    __table_args__ = (Index("ix_service_library_face_subject_id", "subject_id"),)

    face_id: Mapped[str] = mapped_column(ForeignKey("service_face.id", ondelete="CASCADE"), primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("service_subject.id", ondelete="CASCADE"))
    library_face_id: Mapped[int] = mapped_column(Integer)
