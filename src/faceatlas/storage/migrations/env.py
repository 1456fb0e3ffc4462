"""Alembic environment: runs migrations on the engine handed over by :class:`Database`."""

from __future__ import annotations

from alembic import context

from faceatlas.storage.db import Base

config = context.config
engine = config.attributes["connection_engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
