"""library: a quality score per face (faceatlas.quality), read by clustering's quality gate

Revision ID: library_0002_cluster
Revises: library_0002_web_people
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "library_0002_cluster"
down_revision = "library_0002_web_people"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("library_faces") as batch:
        batch.add_column(sa.Column("quality", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("library_faces") as batch:
        batch.drop_column("quality")
