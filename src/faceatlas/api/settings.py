"""Server settings: command-line options first, then ``FACEATLAS_*`` environment variables, then defaults.

Worker processes started by uvicorn (``--workers N``) rebuild their settings from the environment,
so :meth:`Settings.to_env` is how the parent hands its options over.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from faceatlas.storage.db import default_data_dir, make_private_dir, sqlite_url

MB = 1024 * 1024
ENV_PREFIX = "FACEATLAS_"


def _env_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    database: str | None = None  # SQLAlchemy URL; None: SQLite file in data_dir
    data_dir: Path = field(default_factory=default_data_dir)
    pack: str = "sface"
    providers: str = "cpu"  # comma-separated ONNX Runtime providers
    keep_images: bool = True
    max_file_size: int = 5 * MB  # CompreFace: max_file_size=5MB
    max_body_size: int = 10 * MB  # CompreFace: max_request_size=10M
    # bytes of decoding working memory shared by all requests of a process (faceatlas.images
    # DecodeBudget): one image may use three quarters, the last quarter stays for small images
    decode_memory: int = 512 * MB
    inference_threads: int = 0  # concurrent engine calls; 0: number of CPU cores
    # ONNX Runtime threads per engine call; 0: adapt to load (every core for a lone request, one per
    # request under concurrency: faceatlas.models.runtime.ADAPTIVE_THREADS)
    engine_threads: int = 0
    limit_concurrency: int = 256  # requests inside the app at once before a 503 (idle sockets do not count)
    # connection hygiene (faceatlas.api.server): seconds for a request's headers, for its whole body,
    # and for the idle wait between keep-alive requests
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    sync_interval: float = 0.2  # seconds between version polls of the shared database
    index: str = "auto"  # face index backend: exact | hnsw | pgvector | auto (faceatlas.index)
    admin_token: str | None = None

    @property
    def database_url(self) -> str:
        return self.database or sqlite_url(Path(self.data_dir) / "faceatlas.db")

    @property
    def inference_limit(self) -> int:
        return self.inference_threads or max(os.cpu_count() or 1, 1)

    def resolve_admin_token(self) -> tuple[str, Path | None]:
        """The admin token and, when it was generated, the file that holds it."""
        if self.admin_token:
            return self.admin_token, None
        path = Path(self.data_dir) / "admin-token"
        if path.is_file():
            token = path.read_text().strip()
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)  # a token file others can read is no secret
            if token:
                return token, path
        make_private_dir(path.parent)
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        return token, path

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            if f.name == "data_dir":
                values[f.name] = Path(raw).expanduser()
            elif f.type in ("int",):
                values[f.name] = int(raw)
            elif f.type in ("float",):
                values[f.name] = float(raw)
            elif f.type in ("bool",):
                values[f.name] = _env_bool(raw)
            else:
                values[f.name] = raw or None if f.name in ("database", "admin_token") else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[ENV_PREFIX + f.name.upper()] = str(int(value) if isinstance(value, bool) else value)
        return out

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
