"""Fixtures of the reliability suite: real ``faceatlas serve`` processes on 127.0.0.1 (SQLite, and
PostgreSQL when FACEATLAS_TEST_POSTGRES is set), the figures file written at the end of the run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.api_helpers import EXAMPLES, LiveServer, drop_postgres_database, fresh_postgres_url
from tests.reliability.support import MB, Figures

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# short deadlines so that the slow-client tests take seconds
TIMEOUTS = ("--header-timeout", "2", "--body-timeout", "3", "--keep-alive-timeout", "2")
# address space the server may add on top of what it has after start-up (threads reserve stacks and
# malloc arenas, onnxruntime its pools): a decode that ignored its budget would fail inside it
ADDRESS_SPACE_HEADROOM = 2048 * MB


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    recorded = Figures()
    yield recorded
    recorded.write()


@pytest.fixture(scope="session")
def face_images(shared: Path) -> dict[str, bytes]:
    examples = shared / EXAMPLES
    return {name: (examples / f"{name}.jpg").read_bytes() for name in ("obama", "obama2", "biden")}


class Server(LiveServer):
    """A live server with a recognition key and, once started, a bounded address space."""

    key: dict[str, str]

    def new_key(self, type_: str = "recognition") -> dict[str, str]:
        created = httpx.post(
            self.url + "/admin/services",
            json={"name": f"{type_}-{os.urandom(4).hex()}", "type": type_},
            headers=ADMIN,
            timeout=30,
        )
        assert created.status_code == 201, created.text
        return {"x-api-key": created.json()["api_key"]}

    def bound_address_space(self) -> int:
        assert self.process is not None
        process = psutil.Process(self.process.pid)
        limit = process.memory_info().vms + ADDRESS_SPACE_HEADROOM
        process.rlimit(psutil.RLIMIT_AS, (limit, limit))
        return limit

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(data_dir: Path, database: str | None = None, **env: str) -> Server:
    server = Server(data_dir, database=database, extra=TIMEOUTS, env=env)
    server.start()
    server.key = server.new_key()
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, figures: Figures) -> Iterator[Server]:
    """The shared SQLite server, its address space bounded once started."""
    live = start_server(tmp_path_factory.mktemp("reliability-sqlite"), FACEATLAS_LIMIT_CONCURRENCY="4")
    figures.note("address_space_limit_mb", round(live.bound_address_space() / MB))
    try:
        yield live
    finally:
        crashed = live.process is not None and live.process.poll() is not None
        figures.crashes += int(crashed)
        live.stop()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory, figures: Figures) -> Iterator[Server]:
    url = fresh_postgres_url("reliability")
    if url is None:
        pytest.skip("FACEATLAS_TEST_POSTGRES is not set (CI sets it)")
    live = start_server(tmp_path_factory.mktemp("reliability-pg"), url, FACEATLAS_LIMIT_CONCURRENCY="4")
    try:
        yield live
    finally:
        crashed = live.process is not None and live.process.poll() is not None
        figures.crashes += int(crashed)
        live.stop()
        drop_postgres_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_server(request: pytest.FixtureRequest) -> Server:
    """The SQLite server, then the PostgreSQL one: the same input must get the same answer."""
    return request.getfixturevalue("server" if request.param == "sqlite" else "pg_server")
