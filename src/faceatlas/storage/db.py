"""Database connection, schema migration and session handling.

One :class:`Database` per process and URL. SQLite runs in WAL mode with a busy timeout so that
several processes (server workers, an indexer) can share one file; PostgreSQL is used as is.
The schema is owned by Alembic: :meth:`Database.migrate` upgrades every branch to its head.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine as SQLEngine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    """Timezone-aware now, for every stored timestamp (naive datetimes compare wrongly across databases)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every faceatlas table (server and library)."""


def default_data_dir() -> Path:
    """Where faceatlas keeps its database and images unless told otherwise."""
    env = os.environ.get("FACEATLAS_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "faceatlas"


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700: it holds faces, embeddings and keys."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)


def make_private_sqlite(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it, so that its -wal and -shm files, which
    SQLite creates with the main file's permissions, are private too; tighten existing files.
    A missing folder is created 0700; an existing one is left as it is (it may be a photo folder)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    # Only ever open a file that does not exist yet: closing any descriptor of a database file drops
    # every POSIX lock this process holds on it, and another connection of ours may have it open.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o777 != PRIVATE_FILE:
            os.chmod(file, PRIVATE_FILE)


def sqlite_url(path: str | os.PathLike[str]) -> str:
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Database:
    """A connection pool, a session factory and the migration entry point for one URL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1].split("?", 1)[0]
            if path and path != ":memory:" and not path.startswith("file:"):
                make_private_sqlite(Path(path))
            self.engine: SQLEngine = create_engine(
                url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
                self.url = url
            self.engine = create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None = None, *, data_dir: str | os.PathLike[str] | None = None) -> Database:
        """Open (and migrate) the database at ``url``, or the SQLite file in ``data_dir``."""
        if url is None:
            url = sqlite_url(Path(data_dir or default_data_dir()) / "faceatlas.db")
        db = cls(url)
        db.migrate()
        return db

    def alembic_config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
        cfg.attributes["connection_engine"] = self.engine
        return cfg

    def migrate(self) -> None:
        """Bring every schema branch (server, library) to its newest revision."""
        command.upgrade(self.alembic_config(), "heads")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
