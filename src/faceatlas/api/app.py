"""The FastAPI application: ``create_app(settings)``; the engine and database open once at start-up."""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from faceatlas.api.collections import Collections, IndexOptions
from faceatlas.api.errors import install_handlers
from faceatlas.api.middleware import ApiOnlyCors, BodyLimit, CatchUnexpected, ConcurrencyLimit
from faceatlas.api.migration import Migration
from faceatlas.api.routes import admin, detection, misc, recognition, verification
from faceatlas.api.settings import Settings
from faceatlas.api.state import DecodeGate, ServerState
from faceatlas.images import DecodeBudget
from faceatlas.storage.db import Database
from faceatlas.storage.services import ServiceStore

if TYPE_CHECKING:
    from faceatlas.engine import Engine

log = logging.getLogger("faceatlas.api")


MMAP_THRESHOLD = 8 * 2**20
TRIM_THRESHOLD = 32 * 2**20


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread heaps: every worker thread that runs inference would otherwise keep its
    own arena of freed buffers, which shows as tens of MB of extra resident memory."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # -8: M_ARENA_MAX
        # -3: M_MMAP_THRESHOLD. A fixed threshold keeps every large buffer (a big photo's pixels,
        # Pillow's 16 MB blocks) in its own mapping that free() returns to the system; glibc's default
        # raises the threshold to 32 MB after the first such free, and big decodes then stay resident.
        # Not lower than 8 MB: an ordinary request's buffers (a 1080p photo decoded at 960 x 540 is
        # 1.5 MB, and its resized copies) must be reused from the heap, or every request pays for
        # fresh zeroed pages (measured: decoding a 1080p upload 7.2 ms with 8 MB, 11.5 ms with 1 MB).
        libc.mallopt(-3, MMAP_THRESHOLD)
        # -1: M_TRIM_THRESHOLD. Setting the mmap threshold freezes this one at 128 KB, which would give
        # those same buffers back to the system after every request.
        libc.mallopt(-1, TRIM_THRESHOLD)


def limit_blas_threads() -> None:
    """One BLAS thread: the search is a memory-bound product that runs faster on one core, and idle
    BLAS workers spin after each product, stealing the CPU the next request's inference needs."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def load_engine(settings: Settings) -> Engine:
    from faceatlas.engine import Engine
    from faceatlas.models.runtime import ADAPTIVE_THREADS

    providers = tuple(p.strip() for p in settings.providers.split(",") if p.strip()) or ("cpu",)
    return Engine(settings.pack, providers=providers, threads=settings.engine_threads or ADAPTIVE_THREADS)


def index_options(settings: Settings) -> IndexOptions:
    from faceatlas.index.service import snapshot_root

    return IndexOptions(
        backend=settings.index, snapshot_dir=snapshot_root(settings.data_dir, settings.database_url)
    )


def build_state(settings: Settings, engine: Engine | None = None, db: Database | None = None) -> ServerState:
    engine = engine or load_engine(settings)
    db = db or Database.open(settings.database_url)
    store = ServiceStore(db)
    state = ServerState(
        settings=settings,
        engine=engine,
        db=db,
        store=store,
        collections=Collections(
            store, engine.pack.id, engine.pack.embedding_size, settings.sync_interval, index_options(settings)
        ),
        limiter=anyio.CapacityLimiter(settings.inference_limit),
        decode_gate=DecodeGate(DecodeBudget(settings.decode_memory)),
    )
    state.migration = Migration(state)
    state.admin_token = settings.resolve_admin_token()[0]
    return state


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, db: Database | None = None
) -> FastAPI:
    """The server app. ``engine``/``db`` may be handed in (tests share one engine); otherwise they
    are created in the lifespan, once per process, before the first request is accepted."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_malloc_arenas()
        limit_blas_threads()
        state = build_state(settings, engine, db)
        app.state.faceatlas = state
        # warm the collections so the first recognition does not pay for loading them
        for record in state.store.list_services():
            if record.type == "recognition":
                state.collections.get(record.id)
        try:
            yield
        finally:
            # snapshot the big in-memory indexes, so the next start replays only newer changes
            state.collections.persist()
            if state.migration is not None and state.migration.running:
                state.migration.join(timeout=5)
            state.decode_gate.close()
            if db is None:
                state.db.dispose()

    app = FastAPI(
        title="faceatlas",
        summary="Self-hosted face recognition with a CompreFace-compatible REST API",
        version=_version(),
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    # add_middleware wraps: the last one added is the outermost (see faceatlas.api.middleware)
    app.add_middleware(CatchUnexpected)
    app.add_middleware(BodyLimit, limit=settings.max_body_size)
    app.add_middleware(ConcurrencyLimit, limit=settings.limit_concurrency)
    app.add_middleware(ApiOnlyCors)
    install_handlers(app)
    for router in (recognition.router, detection.router, verification.router, misc.router, admin.router):
        app.include_router(router)
    from faceatlas.web import mount as mount_web  # the owner's web app and library API (faceatlas.web)

    mount_web(app, settings)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (``--workers N``): settings come from FACEATLAS_* variables."""
    return create_app(Settings.from_env())


def _version() -> str:
    from faceatlas import __version__

    return __version__
