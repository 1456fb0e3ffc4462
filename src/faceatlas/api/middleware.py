"""ASGI layers between uvicorn and the routers, outermost first:

- :class:`ApiOnlyCors`: CORS open (``*``) on the CompreFace API only, where browser clients need it;
  admin actions and web pages never answer cross-origin requests.
- :class:`ConcurrencyLimit`: at most N requests in the app at once, more get a CompreFace-style 503.
  uvicorn's own ``limit_concurrency`` counts *connections*, so idle sockets would deny service.
- :class:`BodyLimit`: a body sent to the CompreFace or admin API is refused with 413 as soon as it
  passes the limit (declared or streamed), so no more than the limit is ever buffered.
- :class:`CatchUnexpected`: any unforeseen error becomes CompreFace's 400 code 0 on a connection that
  stays usable; Starlette's last-resort handler would re-raise, and uvicorn then drops the connection.
"""

from __future__ import annotations

import logging

from fastapi.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceatlas.api.errors import ApiError, error_response

log = logging.getLogger("faceatlas.api")

# paths that CompreFace's browser clients call cross-origin (its nginx answers them with CORS *)
CORS_PREFIX = "/api/v1/"
CORS_EXCLUDED = ("/api/v1/migrate",)  # an admin action here, though CompreFace serves it under /api/v1


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, 0, f"The request body is larger than the limit of {limit} bytes")


class ApiOnlyCors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"], expose_headers=["*"]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(CORS_PREFIX) and not path.startswith(CORS_EXCLUDED):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0  # the event loop is single-threaded: a plain counter is safe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            response = error_response(503, 0, "The server is busy, please try again")
            response.headers["Retry-After"] = "1"
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class BodyLimit:
    """The request-size limit of the CompreFace API (``max_request_size``) and the admin API; other
    mounts (the web app's photo uploads) set limits of their own per file."""

    def __init__(self, app: ASGIApp, limit: int, prefixes: tuple[str, ...] = ("/api/v1/", "/admin/")) -> None:
        self.app = app
        self.limit = limit
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            too_large = BodyTooLarge(self.limit)
            await error_response(too_large.status, too_large.code, too_large.message)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


class CatchUnexpected:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            return  # the client left (or missed its body deadline): nobody to answer
        except Exception as exc:
            # CompreFace answers anything unforeseen with 400 code 0; the traceback goes to the log
            log.error("unexpected error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            if not started:
                response = error_response(400, 0, "Something went wrong, please try again")
                await response(scope, receive, send)
