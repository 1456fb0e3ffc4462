"""The pgvector column of the face tables: created by the migrations where the server has pgvector.

Schema only (the column, the partial index on rows still missing it, the trigger that clears it when
the blob changes); searching it is :mod:`faceatlas.index.pgvector`'s job.
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("faceatlas.storage")

VECTOR_COLUMN = "embedding_vector"
#: tables that carry a pgvector column: table -> (key column, group column)
VECTOR_TABLES = {"service_face": ("id", "subject_id"), "library_faces": ("id", "photo_id")}


def extension_available(conn: Connection) -> bool:
    """Whether the server has pgvector installed (it may still need CREATE EXTENSION)."""
    if conn.dialect.name != "postgresql":
        return False
    return bool(conn.scalar(text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")))


def add_vector_column(conn: Connection, table: str) -> bool:
    """Create the extension, the column, its missing-rows index and the clearing trigger (idempotent).
    Returns False (and changes nothing) where pgvector is not available."""
    if not extension_available(conn):
        return False
    key = VECTOR_TABLES[table][0]
    if not conn.scalar(text("SELECT count(*) FROM pg_extension WHERE extname = 'vector'")):
        try:
            with conn.begin_nested():  # a role that may not create it leaves the transaction usable
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        except DBAPIError:
            log.warning("pgvector is installed but this role cannot CREATE EXTENSION vector")
            return False
    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {VECTOR_COLUMN} vector"))
    conn.execute(
        text(
            f"CREATE INDEX IF NOT EXISTS ix_{table}_vector_missing ON {table} ({key}) "
            f"WHERE {VECTOR_COLUMN} IS NULL"
        )
    )
    conn.execute(
        text(
            f"""CREATE OR REPLACE FUNCTION {table}_clear_vector() RETURNS trigger AS $$
            BEGIN
              IF NEW.embedding IS DISTINCT FROM OLD.embedding THEN NEW.{VECTOR_COLUMN} := NULL; END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql"""
        )
    )
    conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_clear_vector ON {table}"))
    conn.execute(
        text(
            f"CREATE TRIGGER {table}_clear_vector BEFORE UPDATE OF embedding ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_clear_vector()"
        )
    )
    return True


def drop_vector_column(conn: Connection, table: str) -> None:
    if conn.dialect.name != "postgresql":
        return
    conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_clear_vector ON {table}"))
    conn.execute(text(f"DROP FUNCTION IF EXISTS {table}_clear_vector()"))
    conn.execute(text(f"ALTER TABLE {table} DROP COLUMN IF EXISTS {VECTOR_COLUMN}"))
