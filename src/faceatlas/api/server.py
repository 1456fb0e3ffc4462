"""Running the app on uvicorn with connection hygiene: every connection must make progress.

uvicorn closes an idle keep-alive connection only after a response (``timeout_keep_alive``); a client
that connects and sends nothing, or half a request line, or headers without ever finishing its body,
holds its socket forever (measured: 260 such sockets made every other request answer 503 because
uvicorn's ``limit_concurrency`` counts connections). :class:`GuardedH11Protocol` adds two deadlines:

- ``header_timeout``: from the moment a connection opens or a new request's first byte arrives, its
  request line and headers must be complete within this many seconds;
- ``body_timeout``: once the headers are in, the whole body must arrive within this many seconds.

The idle wait between keep-alive requests stays uvicorn's ``timeout_keep_alive``. A connection that
misses a deadline is closed. The app's own :class:`~faceatlas.api.middleware.ConcurrencyLimit` counts
requests, not sockets, so idle connections never deny service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from faceatlas.api.settings import Settings


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines (settings read from the environment
    so that ``--workers`` processes get them too)."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for: object = None  # h11.IDLE (headers) or h11.SEND_BODY (body)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(h11.IDLE, self.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._waiting_for is not h11.IDLE:
            # the first byte of a keep-alive connection's next request: its headers are now due
            self._arm(h11.IDLE, self.header_timeout)
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn's keep-alive timer now guards the idle wait; a pipelined request may have started
        self._follow_state()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow_state(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._waiting_for is not h11.SEND_BODY:
                self._arm(h11.SEND_BODY, self.body_timeout)
        elif state is not h11.IDLE:
            # the request is complete (or the connection is closing): nothing more is due from the client
            self._disarm()

    def _arm(self, waiting_for: object, seconds: float) -> None:
        self._disarm()
        self._waiting_for = waiting_for
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._waiting_for = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport is not None and not self.transport.is_closing():
            self.logger.info("closing a connection that did not send its %s in time", self._phase())
            self.transport.close()

    def _phase(self) -> str:
        return "body" if self._waiting_for is h11.SEND_BODY else "request headers"


def raise_open_file_limit() -> None:
    """Every idle socket is a file descriptor: let the process use as many as the hard limit allows."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 16), hard))


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": settings.header_timeout, "body_timeout": settings.body_timeout},
    )


def run_server(settings: Settings, *, log_level: str = "info") -> None:
    """Serve ``settings`` until interrupted (one process, or ``settings.workers`` processes)."""
    import uvicorn

    raise_open_file_limit()
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "http": guarded_protocol(settings) if settings.workers <= 1 else GuardedWorkerProtocol,
        "timeout_keep_alive": settings.keep_alive_timeout,
        # requests are limited inside the app (ConcurrencyLimit); uvicorn's limit counts sockets
        "limit_concurrency": None,
        "backlog": 4096,
    }
    if settings.workers > 1:
        # worker processes rebuild the settings from the environment
        os.environ.update(settings.to_env())
        uvicorn.run(
            "faceatlas.api.app:create_app_from_env", factory=True, workers=settings.workers, **options
        )
    else:
        from faceatlas.api.app import create_app

        uvicorn.run(create_app(settings), **options)


class GuardedWorkerProtocol(GuardedH11Protocol):
    """The protocol of ``--workers`` processes: a class importable by name, deadlines from FACEATLAS_*."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from faceatlas.api.settings import Settings

        settings = Settings.from_env()
        self.header_timeout = settings.header_timeout
        self.body_timeout = settings.body_timeout
        super().__init__(*args, **kwargs)
