"""``/login`` and ``/logout``: the session cookie of the owner's browser."""

from __future__ import annotations

import asyncio
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from faceatlas.web.auth import SESSION_COOKIE, SESSION_SECONDS
from faceatlas.web.shell import OwnerApi, Web, render

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only a path on this server (no ``//host`` or scheme): the login never redirects elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", None, next=_safe_next(next), error=None, section="login")


@router.post("/login", response_model=None)
async def login(
    request: Request,
    web: Web,
    secret: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    # A login from another site's form would bind the victim's browser to our session: refuse it.
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
        return render(
            request, "login.html", None, next="/", error="Cross-site login refused.", section="login"
        )
    if not await asyncio.to_thread(web.auth.check_secret, secret):
        await asyncio.sleep(0.5)  # slows down guessing
        response = render(
            request,
            "login.html",
            None,
            next=_safe_next(next),
            error="Wrong password or admin token.",
            section="login",
        )
        response.status_code = 401
        return response
    cookie, _session = web.auth.new_session()
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout", response_model=None)
async def logout(_owner: OwnerApi) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
