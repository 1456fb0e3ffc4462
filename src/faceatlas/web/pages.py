"""The library pages: people, person, review, photos, photo, search, library (jobs).

Server-rendered (Jinja2): the first screen of every page arrives in one response; small plain-JS modules
in ``static/`` do the rest (rename in place, selections, the keyboard review, uploads, live progress)
through the library API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from faceatlas.errors import FaceAtlasError
from faceatlas.library import browse
from faceatlas.web.context import DEFAULT_LIBRARY, LibraryHandle
from faceatlas.web.shell import NavLink, OwnerPage, PageSet, Web, WebContext, WebError, render

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
PEOPLE_PER_SCREEN = 60
FACES_PER_SCREEN = 120
PHOTOS_PER_SCREEN = 48
T = TypeVar("T")


async def _read(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))
    except LookupError as exc:
        raise WebError(404, str(exc)) from None
    except (FaceAtlasError, ValueError) as exc:
        raise WebError(400, str(exc)) from None


def _library(web: WebContext, library: str) -> LibraryHandle:
    handle = web.libraries.get(library)
    if handle is None:
        raise WebError(404, f"no library {library!r}")
    return handle


def _api(library: str) -> str:
    return f"/api/library/v1/libraries/{library}"


@router.get("/")
async def home(_owner: OwnerPage) -> RedirectResponse:
    return RedirectResponse(f"/l/{DEFAULT_LIBRARY}/people", status_code=303)


@router.get("/l/{library}/people", response_class=HTMLResponse)
async def people_page(
    request: Request,
    library: str,
    owner: OwnerPage,
    web: Web,
    show: str = "all",
    sort: str = "faces",
    q: str = "",
) -> HTMLResponse:
    handle = _library(web, library)
    total, people = await _read(
        browse.people_page,
        handle.db,
        limit=PEOPLE_PER_SCREEN,
        show=show,
        sort=sort,
        query=q or None,
        pack=web.engine.pack.id,
    )
    return render(
        request,
        "people.html",
        owner,
        library=handle.id,
        section="people",
        api=_api(handle.id),
        people=people,
        total=total,
        show=show,
        sort=sort,
        q=q,
        page_size=PEOPLE_PER_SCREEN,
    )


@router.get("/l/{library}/people/{person}", response_class=HTMLResponse, response_model=None)
async def person_page(
    request: Request, library: str, person: str, owner: OwnerPage, web: Web
) -> HTMLResponse | RedirectResponse:
    handle = _library(web, library)
    card = await _read(browse.person_card, handle.db, person)
    if str(card.id) != person:
        return RedirectResponse(f"/l/{handle.id}/people/{card.id}", status_code=303)  # a name or merged id
    total_faces, faces = await _read(browse.person_faces_page, handle.db, card.id, limit=FACES_PER_SCREEN)
    total_photos, photos = await _read(browse.photos_page, handle.db, person=card.id, limit=PHOTOS_PER_SCREEN)
    return render(
        request,
        "person.html",
        owner,
        library=handle.id,
        section="people",
        api=_api(handle.id),
        person=card,
        faces=faces,
        total_faces=total_faces,
        photos=photos,
        total_photos=total_photos,
    )


@router.get("/l/{library}/review", response_class=HTMLResponse)
async def review_page(request: Request, library: str, owner: OwnerPage, web: Web) -> HTMLResponse:
    handle = _library(web, library)
    pack = web.engine.pack
    total, items = await _read(
        browse.review_queue, handle.db, pack=pack.id, threshold=pack.threshold, limit=1
    )
    return render(
        request,
        "review.html",
        owner,
        library=handle.id,
        section="review",
        api=_api(handle.id),
        total=total,
        first=items[0] if items else None,
    )


@router.get("/l/{library}/photos", response_class=HTMLResponse)
async def photos_page(
    request: Request,
    library: str,
    owner: OwnerPage,
    web: Web,
    person: str | None = None,
    folder: str | None = None,
    sort: str = "date",
    offset: int = 0,
) -> HTMLResponse:
    handle = _library(web, library)
    offset = max(offset, 0)
    total, photos = await _read(
        browse.photos_page,
        handle.db,
        person=person or None,
        folder=folder or None,
        sort=sort,
        offset=offset,
        limit=PHOTOS_PER_SCREEN,
    )
    return render(
        request,
        "photos.html",
        owner,
        library=handle.id,
        section="photos",
        api=_api(handle.id),
        photos=photos,
        total=total,
        offset=offset,
        page_size=PHOTOS_PER_SCREEN,
        person=person or "",
        folder=folder or "",
        sort=sort,
    )


@router.get("/l/{library}/photos/{photo_id}", response_class=HTMLResponse)
async def photo_page(
    request: Request, library: str, photo_id: int, owner: OwnerPage, web: Web
) -> HTMLResponse:
    handle = _library(web, library)
    photo, faces = await _read(browse.photo_detail, handle.db, photo_id)
    return render(
        request,
        "photo.html",
        owner,
        library=handle.id,
        section="photos",
        api=_api(handle.id),
        photo=photo,
        faces=faces,
    )


@router.get("/l/{library}/search", response_class=HTMLResponse)
async def search_page(request: Request, library: str, owner: OwnerPage, web: Web) -> HTMLResponse:
    handle = _library(web, library)
    return render(request, "search.html", owner, library=handle.id, section="search", api=_api(handle.id))


@router.get("/l/{library}/library", response_class=HTMLResponse)
async def library_page(request: Request, library: str, owner: OwnerPage, web: Web) -> HTMLResponse:
    handle = _library(web, library)
    counts = await _read(browse.library_counts, handle.db)
    unreadable = await _read(browse.unreadable_photos, handle.db, limit=200)
    return render(
        request,
        "library.html",
        owner,
        library=handle.id,
        section="library",
        api=_api(handle.id),
        handle=handle,
        counts=counts,
        unreadable=unreadable,
        roots=[str(p) for p in web.config.photos_roots],
    )
