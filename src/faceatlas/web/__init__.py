"""The owner's web app (library pages, the library REST API, later the service console), on the server's port.

``mount(app, settings)`` is the one call the server makes; see ``web/README.md`` for adding a page set.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from faceatlas.web.context import ServerSettings, WebConfig, WebContext
from faceatlas.web.shell import STATIC_DIR, STATIC_URL, PageSet, Shell, install_error_handlers

__all__ = ["WebConfig", "mount", "page_sets"]


def page_sets() -> list[PageSet]:
    """Every page set of the web app; a new one (the service console) adds its line here."""
    from faceatlas.web.console import CONSOLE_PAGES
    from faceatlas.web.library_api import API_PAGES
    from faceatlas.web.login import router as login_router
    from faceatlas.web.pages import LIBRARY_PAGES

    return [PageSet(login_router, order=0), LIBRARY_PAGES, CONSOLE_PAGES, API_PAGES]


def mount(app: FastAPI, settings: ServerSettings, config: WebConfig | None = None) -> None:
    """Add the web app to the server ``app``: pages at ``/``, the library API, static files, offline docs.

    ``config`` defaults to the data directory of ``settings`` plus what ``faceatlas serve`` put in the
    environment (``--library``, ``--photos-root``).
    """
    from faceatlas.web.docs import install_offline_docs

    config = config or WebConfig.from_env(settings.data_dir)
    app.state.web = WebContext(config, app.state)
    shell = Shell(page_sets())
    shell.build()
    app.state.web_shell = shell
    install_error_handlers(app)
    install_offline_docs(app)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="web-static")
    for page_set in shell.page_sets:
        app.include_router(page_set.router)
    _close_on_shutdown(app)


def _close_on_shutdown(app: FastAPI) -> None:
    """Stop indexing jobs (they resume at the next start) and close the libraries when the server stops."""
    inner = app.router.lifespan_context

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(application: Any):  # type: ignore[no-untyped-def]
        async with inner(application) as value:
            # a job the last server was running when it was killed goes on where it stopped
            application.state.web.jobs.resume_interrupted()
            try:
                yield value
            finally:
                application.state.web.close()

    app.router.lifespan_context = lifespan
