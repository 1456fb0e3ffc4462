"""service: which subjects and faces were published from a photo library (import-library)

Revision ID: service_0002_console
Revises: service_0002_scale
Create Date: 2026-12-01 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "service_0002_console"
down_revision = "service_0002_scale"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_library_subject",
        sa.Column(
            "subject_id",
            sa.Integer,
            sa.ForeignKey("service_subject.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "service_id", sa.Integer, sa.ForeignKey("face_service.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("library", sa.String(512), nullable=False),
        sa.Column("person_id", sa.Integer, nullable=False),
        sa.UniqueConstraint("service_id", "library", "person_id", name="uq_service_library_subject_person"),
    )
    op.create_table(
        "service_library_face",
        sa.Column(
            "face_id", sa.String(36), sa.ForeignKey("service_face.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "subject_id",
            sa.Integer,
            sa.ForeignKey("service_subject.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("library_face_id", sa.Integer, nullable=False),
    )
    op.create_index("ix_service_library_face_subject_id", "service_library_face", ["subject_id"])


def downgrade() -> None:
    op.drop_table("service_library_face")
    op.drop_table("service_library_subject")
