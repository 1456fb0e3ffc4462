"""What the web app knows at run time: its libraries, the allowed photo roots, the login, the jobs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from faceatlas.errors import LibraryNotFoundError
from faceatlas.storage import Database
from faceatlas.web.auth import Authenticator

#: Environment variables ``faceatlas serve`` hands to its worker processes (JSON lists).
LIBRARIES_ENV = "FACEATLAS_WEB_LIBRARIES"
PHOTOS_ROOTS_ENV = "FACEATLAS_WEB_PHOTOS_ROOTS"
DEFAULT_LIBRARY = "default"
THUMBNAIL_PATHS = 200_000  # remembered thumbnail files per library (~40 MB at most)


class ServerSettings(Protocol):
    """The part of the server's settings the web app reads."""

    @property
    def data_dir(self) -> Path: ...


@dataclass(frozen=True, slots=True)
class WebConfig:
    data_dir: Path
    libraries: tuple[str, ...] = ()  # extra libraries: folders, .db files or database URLs
    photos_roots: tuple[Path, ...] = ()  # folders whose photos may be indexed through the web app

    @classmethod
    def from_env(cls, data_dir: Path, environ: dict[str, str] | None = None) -> WebConfig:
        env = os.environ if environ is None else environ
        libraries = tuple(json.loads(env.get(LIBRARIES_ENV) or "[]"))
        roots = tuple(Path(p).expanduser() for p in json.loads(env.get(PHOTOS_ROOTS_ENV) or "[]"))
        return cls(Path(data_dir), libraries, roots)

    def to_env(self) -> dict[str, str]:
        return {
            LIBRARIES_ENV: json.dumps(list(self.libraries)),
            PHOTOS_ROOTS_ENV: json.dumps([str(p) for p in self.photos_roots]),
        }


def _slug(location: str) -> str:
    text = location.rstrip("/")
    if "://" in text:
        text = text.rsplit("/", 1)[-1] or "database"
    name = Path(text).stem if Path(text).suffix.lower() in {".db", ".sqlite", ".sqlite3"} else Path(text).name
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "library"


@dataclass
class LibraryHandle:
    """One library the server shows: its id in URLs, where it lives, its database and caches."""

    id: str
    location: str
    label: str
    upload_dir: Path
    _db: Database | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: (face id, size) -> cached thumbnail file, see ``library_api.thumbnail``
    thumbnail_paths: dict[tuple[int, int], Path] = field(default_factory=dict)
    _cache_dirs: dict[str, Path] = field(default_factory=dict)

    def remember_thumbnail(self, key: tuple[int, int], path: Path) -> None:
        if len(self.thumbnail_paths) >= THUMBNAIL_PATHS:
            self.thumbnail_paths.clear()
        self.thumbnail_paths[key] = path

    @property
    def db(self) -> Database:
        with self._lock:
            if self._db is None:
                from faceatlas.library.store import open_library

                self._db = open_library(self.location)
            return self._db

    def cache_dir(self, kind: str) -> Path:
        folder = self._cache_dirs.get(kind)
        if folder is None:
            from faceatlas.library.thumbnails import library_cache_dir

            folder = self._cache_dirs[kind] = library_cache_dir(self.db.url, kind)
        return folder

    def dispose(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.dispose()
                self._db = None


class WebContext:
    """Built once per process by :func:`faceatlas.web.mount`; handlers reach it as ``app.state.web``."""

    def __init__(self, config: WebConfig, app_state: Any) -> None:
        self.config = config
        self._app_state = app_state  # the FastAPI app's state: the server's engine and admin token
        self._auth: Authenticator | None = None
        self.libraries: dict[str, LibraryHandle] = {}
        uploads = config.data_dir / "uploads"
        self.libraries[DEFAULT_LIBRARY] = LibraryHandle(
            DEFAULT_LIBRARY, str(config.data_dir), "Default library", uploads / DEFAULT_LIBRARY
        )
        for location in config.libraries:
            slug = base = _slug(location)
            n = 2
            while slug in self.libraries:
                slug, n = f"{base}-{n}", n + 1
            digest = hashlib.sha256(location.encode()).hexdigest()[:8]
            self.libraries[slug] = LibraryHandle(slug, location, location, uploads / f"{slug}-{digest}")
        from faceatlas.web.jobs import JobManager

        self.jobs = JobManager(self)

    @property
    def server(self) -> Any:
        """The server's :class:`faceatlas.api.state.ServerState` (engine, admin token), set at start-up."""
        return self._app_state.faceatlas

    @property
    def engine(self) -> Any:
        return self.server.engine

    @property
    def auth(self) -> Authenticator:
        if self._auth is None:
            self._auth = Authenticator(self.config.data_dir, str(getattr(self.server, "admin_token", "")))
        return self._auth

    def library(self, library_id: str) -> LibraryHandle:
        handle = self.libraries.get(library_id)
        if handle is None:
            raise LibraryNotFoundError(f"no library {library_id!r}")
        return handle

    def close(self) -> None:
        self.jobs.shutdown()
        for handle in self.libraries.values():
            handle.dispose()
