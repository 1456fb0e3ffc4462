"""Persistent storage shared by the server and the photo library (SQLAlchemy + Alembic)."""

from faceatlas.storage.db import Base, Database, default_data_dir

__all__ = ["Base", "Database", "default_data_dir"]
