"""Opening a library database from what the user typed: a folder, a ``.db`` file or a database URL."""

from __future__ import annotations

import os
from pathlib import Path

from faceatlas.library import tables  # noqa: F401  (registers the library tables before migrating)
from faceatlas.storage import Database, default_data_dir
from faceatlas.storage.db import sqlite_url

LIBRARY_FILE = "library.db"


def library_url(location: str | os.PathLike[str] | None = None) -> str:
    """The database URL for ``location``.

    A URL (``postgresql://``, ``sqlite://``) is used as is, a ``.db``/``.sqlite`` path is a SQLite
    file, anything else is a folder holding ``library.db``.
    """
    if location is None:
        location = os.environ.get("FACEATLAS_LIBRARY") or default_data_dir()
    text = str(location)
    if "://" in text:
        return text
    path = Path(text).expanduser()
    if path.suffix.lower() in {".db", ".sqlite", ".sqlite3"}:
        return sqlite_url(path)
    return sqlite_url(path / LIBRARY_FILE)


def open_library(location: str | os.PathLike[str] | None = None) -> Database:
    """Open (creating and migrating as needed) the library database."""
    return Database.open(library_url(location))
