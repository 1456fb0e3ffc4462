"""``/docs`` and ``/redoc`` served with local Swagger UI and ReDoc files (the ``fastapi-offline`` wheel's),
so the API docs work on a LAN without internet."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
DOCS_URL = "/web/docs-assets"


def install_offline_docs(app: FastAPI) -> None:
    """Replace FastAPI's CDN-backed ``/docs`` and ``/redoc`` pages with ones that load local assets."""
    app.router.routes[:] = [
        r
        for r in app.router.routes
        if getattr(r, "path", None) not in {"/docs", "/redoc", "/docs/oauth2-redirect"}
    ]
    app.mount(DOCS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(_request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} – Swagger UI",
            swagger_js_url=f"{DOCS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(_request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} – ReDoc",
            redoc_js_url=f"{DOCS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_URL}/favicon.png",
            with_google_fonts=False,
        )
