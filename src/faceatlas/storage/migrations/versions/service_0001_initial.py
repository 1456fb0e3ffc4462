"""service: face services, subjects, faces, images and the cross-process version log

Revision ID: service_0001
Revises:
Create Date: 2026-11-22 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "service_0001"
down_revision = None
branch_labels = ("service",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "face_service",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("api_key", sa.String(36), nullable=False),
        sa.Column("pack", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_face_service_name"),
        sa.UniqueConstraint("api_key", name="uq_face_service_api_key"),
    )
    op.create_table(
        "service_subject",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "service_id", sa.Integer, sa.ForeignKey("face_service.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("name_key", sa.String(255), nullable=False),
        sa.UniqueConstraint("service_id", "name_key", name="uq_service_subject_name"),
    )
    op.create_index("ix_service_subject_service_id", "service_subject", ["service_id"])
    op.create_table(
        "service_face",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "service_id", sa.Integer, sa.ForeignKey("face_service.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "subject_id", sa.Integer, sa.ForeignKey("service_subject.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("pack", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_service_face_service_subject", "service_face", ["service_id", "subject_id"])
    op.create_index("ix_service_face_subject_id", "service_face", ["subject_id"])
    op.create_table(
        "service_image",
        sa.Column(
            "face_id", sa.String(36), sa.ForeignKey("service_face.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "service_version",
        sa.Column(
            "service_id",
            sa.Integer,
            sa.ForeignKey("face_service.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "service_change",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "service_id", sa.Integer, sa.ForeignKey("face_service.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("face_id", sa.String(36), nullable=True),
    )
    op.create_index("ix_service_change_service_version", "service_change", ["service_id", "version"])


def downgrade() -> None:
    for table in (
        "service_change",
        "service_version",
        "service_image",
        "service_face",
        "service_subject",
        "face_service",
    ):
        op.drop_table(table)
