"""library: hidden people, cover faces, a (person, photo) index for the people list (web app)

Revision ID: library_0002_web_people
Revises: library_0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "library_0002_web_people"
down_revision = "library_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot add a foreign key to an existing table in place
    with op.batch_alter_table("library_people") as batch:
        batch.add_column(sa.Column("hidden", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("cover_face_id", sa.Integer()))
        batch.create_foreign_key(
            "fk_library_people_cover_face", "library_faces", ["cover_face_id"], ["id"], ondelete="SET NULL"
        )
    # counts per person read this index only, never the rows with their embeddings
    op.create_index("ix_library_faces_person_photo", "library_faces", ["person_id", "photo_id"])


def downgrade() -> None:
    op.drop_index("ix_library_faces_person_photo", table_name="library_faces")
    with op.batch_alter_table("library_people") as batch:
        batch.drop_constraint("fk_library_people_cover_face", type_="foreignkey")
        batch.drop_column("cover_face_id")
        batch.drop_column("hidden")
