"""The library pages: people, person, review, photo, search, library (jobs). Server-rendered shells; the
data comes from the library API through small plain-JS modules in ``static/``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from faceatlas.web.context import DEFAULT_LIBRARY
from faceatlas.web.shell import NavLink, OwnerPage, PageSet, Web, WebError, render

router = APIRouter(include_in_schema=False)

LIBRARY_PAGES = PageSet(
    router,
    nav=(
        NavLink("People", "/l/{library}/people", "people"),
        NavLink("Review", "/l/{library}/review", "review"),
        NavLink("Photos", "/l/{library}/photos", "photos"),
        NavLink("Search", "/l/{library}/search", "search"),
        NavLink("Library", "/l/{library}/library", "library"),
    ),
    order=10,
)


def _check(web: Web, library: str) -> str:
    if library not in web.libraries:
        raise WebError(404, f"no library {library!r}")
    return library


@router.get("/")
async def home(_owner: OwnerPage) -> RedirectResponse:
    return RedirectResponse(f"/l/{DEFAULT_LIBRARY}/people", status_code=303)


@router.get("/l/{library}/people", response_class=HTMLResponse)
async def people_page(request: Request, library: str, owner: OwnerPage, web: Web) -> HTMLResponse:
    return render(request, "people.html", owner, library=_check(web, library), section="people")
