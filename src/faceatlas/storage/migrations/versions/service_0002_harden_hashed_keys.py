"""service: API keys stored as SHA-256 hashes (the key is shown once, at creation and rotation)

Existing keys keep working: each stored key is replaced by its hash and its last four characters.
The column is renamed rather than recreated: rebuilding ``face_service`` on SQLite would drop the
old table, and with foreign keys on that cascades into every subject and face.

Revision ID: service_0002_harden
Revises: service_0001
Create Date: 2026-12-01 11:00:00
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "service_0002_harden"
down_revision = "service_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite ignores varchar lengths, and RENAME COLUMN keeps the unique constraint
        op.execute("ALTER TABLE face_service RENAME COLUMN api_key TO key_hash")
    else:
        op.alter_column(
            "face_service",
            "api_key",
            new_column_name="key_hash",
            type_=sa.String(64),
            existing_nullable=False,
        )
    op.add_column("face_service", sa.Column("key_hint", sa.String(8), nullable=False, server_default=""))
    table = sa.table("face_service", sa.column("id"), sa.column("key_hash"), sa.column("key_hint"))
    for service_id, key in bind.execute(sa.select(table.c.id, table.c.key_hash)).all():
        bind.execute(
            table.update()
            .where(table.c.id == service_id)
            .values(key_hash=hashlib.sha256(key.encode("utf-8")).hexdigest(), key_hint=key[-4:])
        )


def downgrade() -> None:
    raise NotImplementedError("API keys are stored as hashes since service_0002; they cannot be restored")
