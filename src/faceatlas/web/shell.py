"""The shared shell of every web page set: login dependencies, the template environment, the nav, errors.

A page set (the library pages, the service console) is a :class:`PageSet`: a FastAPI router whose page
handlers depend on :data:`OwnerPage` (or :data:`OwnerApi` for JSON) and render templates that extend
``base.html`` with :func:`render`. See ``web/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

from faceatlas.errors import FaceAtlasError
from faceatlas.web.auth import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, AuthError, Owner, authenticate_request
from faceatlas.web.context import WebContext

WEB_DIR = Path(__file__).parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
STATIC_URL = "/web/static"
#: Everything from this server: a page can load no script, style, font or image from anywhere else.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


@dataclass(frozen=True, slots=True)
class NavLink:
    label: str
    #: URL; ``{library}`` is replaced by the library the page shows (the default one elsewhere).
    href: str
    #: Pages whose ``section`` equals this key highlight the link.
    key: str


@dataclass(frozen=True, slots=True)
class PageSet:
    router: APIRouter
    nav: tuple[NavLink, ...] = ()
    templates: tuple[Path, ...] = ()  # folders searched after web/templates
    order: int = 100  # nav position


@dataclass
class Shell:
    """Templates and nav links of every mounted page set."""

    page_sets: list[PageSet] = field(default_factory=list)
    templates: Jinja2Templates | None = None

    def build(self) -> None:
        folders = [TEMPLATES_DIR, *(t for ps in self.page_sets for t in ps.templates)]
        env = Environment(
            loader=ChoiceLoader([FileSystemLoader(str(f)) for f in folders]),
            autoescape=select_autoescape(["html", "xml"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates = Jinja2Templates(env=env)

    @property
    def nav(self) -> list[NavLink]:
        links: list[NavLink] = []
        for ps in sorted(self.page_sets, key=lambda p: p.order):
            links.extend(ps.nav)
        return links


def web_context(request: Request) -> WebContext:
    return request.app.state.web


class LoginRequired(FaceAtlasError, PermissionError):
    """A page asked for without a login: answered with a redirect to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__("log in first")
        self.next_url = next_url


class WebError(FaceAtlasError):
    """A JSON error of the web app and the library API: ``{"message": ..., "status": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _owner(request: Request) -> Owner:
    csrf = request.headers.get(CSRF_HEADER)
    return authenticate_request(
        web_context(request).auth,
        request.method,
        request.cookies.get(SESSION_COOKIE),
        request.headers.get("authorization"),
        csrf,
    )


async def require_owner_api(request: Request) -> Owner:
    """For JSON endpoints: 401/403 JSON without a login or CSRF token."""
    try:
        return _owner(request)
    except AuthError as exc:
        if exc.status == 403 and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            form = await request.form()
            token = form.get(CSRF_FIELD)
            session = web_context(request).auth.read_session(request.cookies.get(SESSION_COOKIE))
            if session is not None and isinstance(token, str) and token == session.csrf:
                return Owner("session", session.csrf)
        raise WebError(exc.status, str(exc)) from None


async def require_owner_page(request: Request) -> Owner:
    """For pages: a redirect to ``/login?next=...`` without a login."""
    try:
        return _owner(request)
    except AuthError as exc:
        if exc.status == 403:
            raise WebError(403, str(exc)) from None
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target) from None


OwnerApi = Annotated[Owner, Depends(require_owner_api)]
OwnerPage = Annotated[Owner, Depends(require_owner_page)]
Web = Annotated[WebContext, Depends(web_context)]


def render(request: Request, template: str, owner: Owner | None, **context: Any) -> HTMLResponse:
    """A page: ``template`` (extending ``base.html``) with the nav, the CSRF token and ``context``."""
    shell: Shell = request.app.state.web_shell
    web = web_context(request)
    library = context.get("library") or "default"
    nav = [(link, link.href.replace("{library}", quote(str(library)))) for link in shell.nav]
    assert shell.templates is not None
    response = shell.templates.TemplateResponse(
        request,
        template,
        {
            "csrf_token": owner.csrf if owner else "",
            "nav": nav,
            "static": STATIC_URL,
            "libraries": list(web.libraries.values()),
            "library": library,
            **context,
        },
    )
    # Pages show private data: never stored by shared caches, never framed by another site.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


def install_error_handlers(app: Any) -> None:
    @app.exception_handler(WebError)
    async def _web_error(_request: Request, exc: WebError) -> Response:
        return JSONResponse({"message": exc.message, "status": exc.status}, status_code=exc.status)

    @app.exception_handler(LoginRequired)
    async def _login(_request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.next_url, safe='')}", status_code=303)
