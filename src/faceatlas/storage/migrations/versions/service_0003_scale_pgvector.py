"""service: a pgvector column beside service_face.embedding, where the database has the vector extension

Only on PostgreSQL with pgvector installed; elsewhere this revision changes nothing (the pgvector index
backend adds the column itself if the extension is installed later). The HNSW index is made per pack,
by the backend, on first use (it needs the embedding size).

Revision ID: service_0002_scale
Revises: service_0002_harden
Create Date: 2026-12-01 11:00:00
"""

from __future__ import annotations

from alembic import op

from faceatlas.storage.pgvector import add_vector_column, drop_vector_column

revision = "service_0002_scale"
down_revision = "service_0002_harden"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_vector_column(op.get_bind(), "service_face")


def downgrade() -> None:
    drop_vector_column(op.get_bind(), "service_face")
