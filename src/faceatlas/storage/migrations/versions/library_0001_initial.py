"""library: photos, faces, people, decisions

Revision ID: library_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "library_0001"
down_revision = None
branch_labels = ("library",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "library_photos",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime", sa.Float(), nullable=False),
        sa.Column("content_hash", sa.String(64)),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("taken_at", sa.DateTime()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("pack", sa.String(64)),
        sa.Column("face_count", sa.Integer(), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("path", name="uq_library_photos_path"),
    )
    op.create_index("ix_library_photos_content_hash", "library_photos", ["content_hash"])
    op.create_table(
        "library_people",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255)),
        sa.Column("merged_into", sa.Integer(), sa.ForeignKey("library_people.id", ondelete="SET NULL")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_library_people_name"),
    )
    op.create_table(
        "library_faces",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "photo_id", sa.Integer(), sa.ForeignKey("library_photos.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("x_min", sa.Float(), nullable=False),
        sa.Column("y_min", sa.Float(), nullable=False),
        sa.Column("x_max", sa.Float(), nullable=False),
        sa.Column("y_max", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("landmarks", sa.LargeBinary()),
        sa.Column("embedding", sa.LargeBinary()),
        sa.Column("pack", sa.String(64), nullable=False),
        sa.Column("age", sa.Float()),
        sa.Column("gender", sa.String(8)),
        sa.Column("gender_probability", sa.Float()),
        sa.Column("pitch", sa.Float()),
        sa.Column("yaw", sa.Float()),
        sa.Column("roll", sa.Float()),
        sa.Column("person_id", sa.Integer(), sa.ForeignKey("library_people.id", ondelete="SET NULL")),
        sa.Column("source", sa.String(8)),
    )
    op.create_index("ix_library_faces_photo_id", "library_faces", ["photo_id"])
    op.create_index("ix_library_faces_person_id", "library_faces", ["person_id"])
    op.create_index("ix_library_faces_pack", "library_faces", ["pack"])
    op.create_table(
        "library_decisions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("person_id", sa.Integer(), sa.ForeignKey("library_people.id", ondelete="CASCADE")),
        sa.Column("other_person_id", sa.Integer(), sa.ForeignKey("library_people.id", ondelete="CASCADE")),
        sa.Column("face_id", sa.Integer(), sa.ForeignKey("library_faces.id", ondelete="CASCADE")),
        sa.Column("name", sa.String(255)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "face_id", "person_id", name="uq_library_decisions_kind_face_person"),
    )


def downgrade() -> None:
    op.drop_table("library_decisions")
    op.drop_index("ix_library_faces_pack", table_name="library_faces")
    op.drop_index("ix_library_faces_person_id", table_name="library_faces")
    op.drop_index("ix_library_faces_photo_id", table_name="library_faces")
    op.drop_table("library_faces")
    op.drop_table("library_people")
    op.drop_index("ix_library_photos_content_hash", table_name="library_photos")
    op.drop_table("library_photos")
