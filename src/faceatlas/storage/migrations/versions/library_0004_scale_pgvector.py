"""library: an index on library_photos.indexed_at (the search index's change check); a pgvector column
beside library_faces.embedding, where the database has the vector extension

Only on PostgreSQL with pgvector installed; elsewhere this revision changes nothing (the pgvector index
backend adds the column itself if the extension is installed later). The HNSW index is made per pack,
by the backend, on first use (it needs the embedding size).

Revision ID: library_0002_scale
Revises: library_0002_cluster
Create Date: 2026-12-01 11:00:00
"""

from __future__ import annotations

from alembic import op

from faceatlas.storage.pgvector import add_vector_column, drop_vector_column

revision = "library_0002_scale"
down_revision = "library_0002_cluster"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the library search checks max(indexed_at) before every query: an index makes that one lookup
    op.create_index("ix_library_photos_indexed_at", "library_photos", ["indexed_at"])
    add_vector_column(op.get_bind(), "library_faces")


def downgrade() -> None:
    drop_vector_column(op.get_bind(), "library_faces")
    op.drop_index("ix_library_photos_indexed_at", "library_photos")
