"""Shared pieces of the server tests: a live ``faceatlas serve`` process, a fresh PostgreSQL database,
the official SDK's interpreter."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = "data/photos/face_recognition_examples/examples"
SDK_REQUIREMENTS = ("compreface-sdk==0.6.0", "urllib3<2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # the project may be installed (CI) or run from the source tree (PYTHONPATH=src)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def faceatlas_cli(*args: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "faceatlas", *args],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


class LiveServer:
    """``faceatlas serve`` in a subprocess on a free loopback port."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database: str | None = None,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.env = {"FACEATLAS_ADMIN_TOKEN": "test-admin-token", **(env or {})}
        self.database = database
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"serve-{self.port}.log"

    def db_args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        if self.database:
            args += ["--database", self.database]
        return args

    def create_service(self, name: str, type_: str = "recognition") -> str:
        out = faceatlas_cli("services", "create", "--name", name, "--type", type_, *self.db_args())
        return out.strip().splitlines()[-1]

    def start(self, timeout: float = 90.0) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "faceatlas", "serve", "--port", str(self.port), *self.db_args()]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*command, *self.extra],
                env=subprocess_env(**self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthcheck", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fresh_postgres_url(tag: str, env: str = "FACEATLAS_TEST_POSTGRES") -> str | None:
    """A new, empty PostgreSQL database made from the server in ``env`` (None when it is unset);
    FACEATLAS_TEST_PGVECTOR names the PostgreSQL 18 + pgvector server of .ci/pgvector-server."""
    admin_url = os.environ.get(env)
    if not admin_url:
        return None
    import psycopg

    name = f"faceatlas_{tag}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(url: str, env: str = "FACEATLAS_TEST_POSTGRES") -> None:
    import psycopg

    admin_url = os.environ[env]
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sdk_python() -> Path:
    """The interpreter of a venv holding the official SDK (built once at <repo>/.venv-sdk if needed)."""
    configured = os.environ.get("FACEATLAS_SDK_PYTHON")
    if configured:
        return Path(configured)
    venv = REPO / ".venv-sdk"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import compreface"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *SDK_REQUIREMENTS], check=True, timeout=600)
    return python
