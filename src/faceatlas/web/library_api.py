"""The library REST API under ``/api/library/v1``: a thin JSON layer over :mod:`faceatlas.library`.

Every endpoint needs the owner's login (session cookie + CSRF token, or ``Authorization: Bearer``).
Errors are ``{"message": ..., "status": ...}``: 401 no login, 403 a folder outside the allowed roots or
a missing CSRF token, 404 an unknown library/person/face/photo, 409 a job already running, 400 bad input.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from faceatlas.errors import FaceAtlasError, LibraryNotFoundError
from faceatlas.library import browse
from faceatlas.library import people as ops
from faceatlas.web.context import LibraryHandle
from faceatlas.web.jobs import JobRunningError
from faceatlas.web.shell import OwnerApi, PageSet, Web, WebContext, WebError

PREFIX = "/api/library/v1"
router = APIRouter(prefix=PREFIX, tags=["library"])
API_PAGES = PageSet(router, order=90)
LIB = "/libraries/{library}"
#: Thumbnails and previews are private (``private``: no shared cache) and change only with the photo.
IMAGE_CACHE = "private, max-age=86400"
MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # per file
MAX_SEARCH_BYTES = 20 * 1024 * 1024
SMALL_FILE = 256 * 1024
T = TypeVar("T")


class PathNotAllowedError(FaceAtlasError, PermissionError):
    """A folder outside the roots the server was started with (``--photos-root``)."""


def _status(exc: BaseException) -> int:
    if isinstance(exc, PathNotAllowedError):
        return 403
    if isinstance(exc, LookupError | FileNotFoundError):
        return 404
    if isinstance(exc, JobRunningError):
        return 409
    return 400


async def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a library function in the worker pool; its typed errors become JSON errors."""
    try:
        return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))
    except (FaceAtlasError, ValueError, FileNotFoundError) as exc:
        raise WebError(_status(exc), str(exc)) from None


def _library(web: WebContext, library: str) -> LibraryHandle:
    try:
        return web.library(library)
    except LibraryNotFoundError as exc:
        raise WebError(404, str(exc)) from None


def _pack(web: WebContext) -> tuple[str, float]:
    pack = web.engine.pack
    return pack.id, float(pack.threshold)


def _image_response(request: Request, path: Path) -> Response:
    """A cached JPEG with its ETag (the cache file's name holds the photo's content hash)."""
    stat = path.stat()
    etag = (
        '"' + hashlib.sha1(f"{path.name}:{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:20] + '"'
    )
    headers = {"ETag": etag, "Cache-Control": IMAGE_CACHE}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if stat.st_size <= SMALL_FILE:  # one read beats FileResponse's threaded streaming for small files
        return Response(path.read_bytes(), media_type="image/jpeg", headers=headers)
    return FileResponse(path, media_type="image/jpeg", headers=headers)


# --- libraries ---------------------------------------------------------------------------------


def _library_info(web: WebContext, handle: LibraryHandle) -> dict[str, Any]:
    return {
        "id": handle.id,
        "label": handle.label,
        "location": handle.location,
        **browse.library_counts(handle.db).to_dict(),
    }


@router.get("/libraries", summary="The libraries this server shows, with photo, face and people counts")
async def list_libraries(_owner: OwnerApi, web: Web) -> dict[str, Any]:
    def run() -> list[dict[str, Any]]:
        return [_library_info(web, h) for h in web.libraries.values()]

    return {"libraries": await _call(run)}


@router.get(LIB, summary="One library: counts, the allowed photo roots, the current job")
async def get_library(library: str, _owner: OwnerApi, web: Web) -> dict[str, Any]:
    handle = _library(web, library)
    info = await _call(_library_info, web, handle)
    job = await _call(web.jobs.current, handle.id)
    return {
        **info,
        "photos_roots": [str(p) for p in web.config.photos_roots],
        "job": job.to_dict() if job else None,
    }


# --- people ------------------------------------------------------------------------------------


@router.get(LIB + "/people", summary="People, paged: sort by faces or name, show all/named/unnamed/hidden")
async def list_people(
    library: str,
    _owner: OwnerApi,
    web: Web,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 60,
    sort: str = "faces",
    show: str = "all",
    q: str | None = None,
) -> dict[str, Any]:
    handle = _library(web, library)
    total, cards = await _call(
        browse.people_page,
        handle.db,
        offset=offset,
        limit=limit,
        sort=sort,
        show=show,
        query=q,
        pack=_pack(web)[0],
    )
    return {"total": total, "offset": offset, "people": [c.to_dict() for c in cards]}


@router.get(LIB + "/people/{person}", summary="One person with a page of their faces")
async def get_person(
    library: str,
    person: str,
    _owner: OwnerApi,
    web: Web,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    handle = _library(web, library)
    card = await _call(browse.person_card, handle.db, person)
    total, faces = await _call(browse.person_faces_page, handle.db, card.id, offset=offset, limit=limit)
    return {
        **card.to_dict(),
        "face_page": {"total": total, "offset": offset, "faces": [f.to_dict() for f in faces]},
    }


class PersonChange(BaseModel):
    name: str | None = Field(None, description="New name")
    hidden: bool | None = Field(None, description="Hide from (or show again in) the people list")
    cover_face_id: int | None = Field(None, description="One of the person's faces, shown in every list")


@router.patch(LIB + "/people/{person}", summary="Rename, hide/unhide, or set the cover face")
async def change_person(
    library: str, person: str, change: PersonChange, _owner: OwnerApi, web: Web
) -> dict[str, Any]:
    handle = _library(web, library)
    pid = (await _call(browse.person_card, handle.db, person)).id
    if change.name is not None:
        await _call(ops.rename_person, handle.db, pid, change.name)
    if change.hidden is not None:
        await _call(ops.hide_person, handle.db, pid, change.hidden)
    if change.cover_face_id is not None:
        await _call(ops.set_cover_face, handle.db, pid, change.cover_face_id)
    return (await _call(browse.person_card, handle.db, pid)).to_dict()


class MergeRequest(BaseModel):
    other: str | int = Field(description="The person (id or name) whose faces move to this one")


@router.post(LIB + "/people/{person}/merge", summary="Merge another person into this one")
async def merge(library: str, person: str, body: MergeRequest, _owner: OwnerApi, web: Web) -> dict[str, Any]:
    handle = _library(web, library)
    result = await _call(ops.merge_people, handle.db, person, body.other)
    card = await _call(browse.person_card, handle.db, result.person_id)
    return {"person": card.to_dict(), "left_behind": result.left_behind, "reason": result.reason}


class FacesRequest(BaseModel):
    face_ids: list[int] = Field(min_length=1, max_length=10_000)
    name: str | None = Field(None, description="Name of the new person (split only)")


@router.post(LIB + "/people/{person}/split", summary="Move selected faces of a person into a new person")
async def split(library: str, person: str, body: FacesRequest, _owner: OwnerApi, web: Web) -> dict[str, Any]:
    handle = _library(web, library)
    new = await _call(ops.split_faces, handle.db, person, body.face_ids, body.name)
    return (await _call(browse.person_card, handle.db, new.id)).to_dict()


@router.post(
    LIB + "/people/{person}/remove-faces",
    summary='"Not this person": unassign faces and never give them back to this person',
)
async def remove_faces(
    library: str, person: str, body: FacesRequest, _owner: OwnerApi, web: Web
) -> dict[str, Any]:
    handle = _library(web, library)
    pid = (await _call(browse.person_card, handle.db, person)).id
    for face_id in body.face_ids:
        await _call(ops.remove_face, handle.db, pid, face_id)
    return (await _call(browse.person_card, handle.db, pid)).to_dict()


@router.get(LIB + "/people/{person}/suggestions", summary="Closest people (merge candidates), best first")
async def suggestions(
    library: str, person: str, _owner: OwnerApi, web: Web, top: Annotated[int, Query(ge=1, le=50)] = 8
) -> dict[str, Any]:
    handle = _library(web, library)
    pack, threshold = _pack(web)
    found = await _call(browse.closest_people, handle.db, person, pack=pack, threshold=threshold, top=top)
    return {"threshold": threshold, "suggestions": [s.to_dict() for s in found]}


# --- faces -------------------------------------------------------------------------------------


@router.get(LIB + "/review", summary="Unassigned faces to review, each with the closest people")
async def review(
    library: str,
    _owner: OwnerApi,
    web: Web,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> dict[str, Any]:
    handle = _library(web, library)
    pack, threshold = _pack(web)
    total, items = await _call(
        browse.review_queue, handle.db, pack=pack, threshold=threshold, offset=offset, limit=limit
    )
    return {"total": total, "offset": offset, "threshold": threshold, "faces": [i.to_dict() for i in items]}


@router.get(LIB + "/faces/{face_id}", summary="One face")
async def get_face(library: str, face_id: int, _owner: OwnerApi, web: Web) -> dict[str, Any]:
    handle = _library(web, library)
    return (await _call(browse.face_card, handle.db, face_id)).to_dict()


class AssignRequest(BaseModel):
    person: str | int | None = Field(None, description="Person id or name; none: a new person")
    name: str | None = Field(None, description="Name of the new person")


@router.post(LIB + "/faces/{face_id}/assign", summary="Assign a face to a person or to a new person")
async def assign(
    library: str, face_id: int, body: AssignRequest, _owner: OwnerApi, web: Web
) -> dict[str, Any]:
    handle = _library(web, library)
    person = await _call(ops.assign_face, handle.db, face_id, body.person, name=body.name)
    return {"face": (await _call(browse.face_card, handle.db, face_id)).to_dict(), "person_id": person.id}


@router.post(LIB + "/faces/{face_id}/ignore", summary="Leave a face out of the review queue")
async def ignore(library: str, face_id: int, _owner: OwnerApi, web: Web) -> dict[str, Any]:
    handle = _library(web, library)
    await _call(ops.ignore_face, handle.db, face_id)
    return {"face_id": face_id, "ignored": True}


@router.get(
    LIB + "/faces/{face_id}/thumbnail",
    summary="A face's cropped thumbnail (JPEG, cached; ETag)",
    response_class=FileResponse,
)
async def thumbnail(
    request: Request,
    library: str,
    face_id: int,
    _owner: OwnerApi,
    web: Web,
    size: Annotated[int, Query(ge=32, le=512)] = 160,
) -> Response:
    from faceatlas.library.thumbnails import face_thumbnail

    handle = _library(web, library)
    size = 160 if size <= 160 else 320  # two sizes: a small cache that serves every screen
    # A face row never changes its photo or box (re-indexing a photo replaces its faces), so the cache
    # file found once for a face id stays its thumbnail: later requests skip the database.
    path = handle.thumbnail_paths.get((face_id, size))
    if path is None or not path.is_file():
        path = await _call(face_thumbnail, handle.db, face_id, handle.cache_dir("thumbnails"), size=size)
        handle.remember_thumbnail((face_id, size), path)
    return _image_response(request, path)


# --- photos ------------------------------------------------------------------------------------


@router.get(LIB + "/photos", summary="Photos, paged: by person, by folder, by date")
async def list_photos(
    library: str,
    _owner: OwnerApi,
    web: Web,
    person: str | None = None,
    folder: str | None = None,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    sort: str = "date",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 60,
) -> dict[str, Any]:
    handle = _library(web, library)
    total, cards = await _call(
        browse.photos_page,
        handle.db,
        person=person,
        folder=folder,
        date_from=date_from,
        date_to=date_to,
        sort=sort,
        offset=offset,
        limit=limit,
    )
    return {"total": total, "offset": offset, "photos": [c.to_dict() for c in cards]}


@router.get(LIB + "/photos/unreadable", summary="Files the indexer could not read, with the reason")
async def unreadable(library: str, _owner: OwnerApi, web: Web) -> dict[str, Any]:
    handle = _library(web, library)
    rows = await _call(browse.unreadable_photos, handle.db)
    return {"photos": [{"path": p, "reason": r} for p, r in rows]}


@router.get(LIB + "/photos/{photo_id}", summary="One photo with its faces (boxes in original pixels)")
async def get_photo(library: str, photo_id: int, _owner: OwnerApi, web: Web) -> dict[str, Any]:
    handle = _library(web, library)
    card, faces = await _call(browse.photo_detail, handle.db, photo_id)
    return {**card.to_dict(), "faces": [f.to_dict() for f in faces]}


@router.get(
    LIB + "/photos/{photo_id}/preview",
    summary="A downscaled, upright JPEG preview (size: long side; original=true for the file itself)",
    response_class=FileResponse,
)
async def preview(
    request: Request,
    library: str,
    photo_id: int,
    _owner: OwnerApi,
    web: Web,
    size: Annotated[int, Query(ge=64, le=4096)] = 1280,
    original: bool = False,
) -> Response:
    from faceatlas.library.previews import photo_path, photo_preview

    handle = _library(web, library)
    if original:
        path, _hash = await _call(photo_path, handle.db, photo_id)
        if not Path(path).is_file():
            raise WebError(404, f"the file of photo {photo_id} is gone")
        return FileResponse(path, headers={"Cache-Control": IMAGE_CACHE})
    cached = await _call(photo_preview, handle.db, photo_id, handle.cache_dir("previews"), size=size)
    return _image_response(request, cached)


# --- search ------------------------------------------------------------------------------------


@router.post(LIB + "/search", summary="Photos of the person in an uploaded image (or of a face), best first")
async def search(
    library: str,
    _owner: OwnerApi,
    web: Web,
    file: Annotated[UploadFile | None, File(description="An image with a face (the largest is used)")] = None,
    face_id: int | None = None,
    top: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    from faceatlas.library.search import search_by_embedding, search_by_image

    handle = _library(web, library)
    pack, threshold = _pack(web)
    if file is not None:
        data = await file.read(MAX_SEARCH_BYTES + 1)
        if len(data) > MAX_SEARCH_BYTES:
            raise WebError(400, f"the image is larger than {MAX_SEARCH_BYTES // (1024 * 1024)} MB")
        hits = await _call(search_by_image, handle.db, web.engine, data, top=top)
    elif face_id is not None:

        def by_face() -> list[Any]:
            with handle.db.session() as session:
                from faceatlas.library.tables import Face

                face = session.get(Face, face_id)
                if face is None or face.vector is None:
                    raise ops.FaceNotFoundError(f"no face {face_id}")
                vector = face.vector
            return search_by_embedding(handle.db, vector, pack=pack, threshold=threshold, top=top)

        hits = await _call(by_face)
    else:
        raise WebError(400, "send an image (multipart field file) or a face_id")
    return {
        "threshold": threshold,
        "hits": [
            {
                "photo_id": h.photo_id,
                "path": h.path,
                "face_id": h.face_id,
                "similarity": round(h.similarity, 4),
                "match": h.match,
                "person_id": h.person_id,
                "person_name": h.person_name,
            }
            for h in hits
        ],
    }


# --- jobs --------------------------------------------------------------------------------------


def allowed_folder(raw: str, roots: tuple[Path, ...]) -> Path:
    """The folder ``raw`` if it lies under one of ``roots`` (after resolving symlinks), else
    :class:`PathNotAllowedError`. A path with a ``..`` part is refused as is; a relative path is taken
    under the first root."""
    if not roots:
        raise PathNotAllowedError("this server allows no photo folders (start it with --photos-root DIR)")
    text = raw.strip()
    if not text or "\x00" in text:
        raise ValueError("name a folder")
    candidate = Path(text).expanduser()
    if ".." in candidate.parts:
        raise PathNotAllowedError(f"{raw!r}: a path with '..' is not allowed")
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()
    if not any(resolved.is_relative_to(root.resolve()) for root in roots):
        raise PathNotAllowedError(f"{raw!r} is outside the allowed photo folders")
    if not resolved.is_dir():
        raise FileNotFoundError(f"{raw!r} is not a folder")
    return resolved


class FolderJobRequest(BaseModel):
    folder: str = Field(description="A folder under one of the server's --photos-root folders")


def _start(
    web: WebContext, handle: LibraryHandle, roots: list[str], kind: str, rejected: list[dict[str, str]]
) -> dict[str, Any]:
    return web.jobs.start(handle.id, roots, kind, rejected).to_dict()


@router.post(LIB + "/jobs", status_code=202, summary="Index a folder (under an allowed root), then cluster")
async def start_folder_job(
    library: str, body: FolderJobRequest, _owner: OwnerApi, web: Web
) -> dict[str, Any]:
    handle = _library(web, library)
    try:
        folder = allowed_folder(body.folder, web.config.photos_roots)
    except PathNotAllowedError as exc:
        raise WebError(403, str(exc)) from None
    except (ValueError, OSError) as exc:
        raise WebError(400, str(exc)) from None
    return await _call(_start, web, handle, [str(folder)], "folder", [])


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


def _safe_filename(name: str | None, index: int) -> str:
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    base = _SAFE_NAME.sub("_", base).strip(". ") or f"upload-{index}"
    return base[:120]


@router.post(LIB + "/uploads", status_code=202, summary="Upload photos (multipart field files), index them")
async def upload(
    library: str,
    _owner: OwnerApi,
    web: Web,
    files: Annotated[list[UploadFile], File(description="Photos (many at once)")],
) -> dict[str, Any]:
    from faceatlas.library.scan import PHOTO_SUFFIXES

    handle = _library(web, library)
    running = await _call(web.jobs.current, handle.id)
    if running is not None and running.to_dict()["active"]:
        raise WebError(409, f"library {handle.id!r} already has a running job; wait or cancel it")
    batch = handle.upload_dir / f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    batch.mkdir(parents=True, exist_ok=True)
    saved: list[str] = []
    rejected: list[dict[str, str]] = []
    for index, upload_file in enumerate(files):
        name = _safe_filename(upload_file.filename, index)
        if os.path.splitext(name)[1].lower() not in PHOTO_SUFFIXES:
            rejected.append({"path": upload_file.filename or name, "reason": "not a photo file type"})
            continue
        target = batch / name
        n = 1
        while target.exists():
            target = batch / f"{Path(name).stem}-{n}{Path(name).suffix}"
            n += 1
        size = 0
        with open(target, "wb") as out:
            while chunk := await upload_file.read(1024 * 1024):
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    break
                out.write(chunk)
        if size > MAX_UPLOAD_BYTES:
            target.unlink(missing_ok=True)
            rejected.append({"path": upload_file.filename or name, "reason": "larger than 64 MB"})
            continue
        saved.append(str(target))
    try:
        job = await _call(_start, web, handle, [str(batch)], "upload", rejected)
    except WebError:
        shutil.rmtree(batch, ignore_errors=True)  # a refused upload leaves nothing behind
        raise
    return {**job, "saved": len(saved)}


@router.get(LIB + "/jobs/current", summary="The running or last job: progress, ETA, errors, stage table")
async def current_job(library: str, _owner: OwnerApi, web: Web) -> dict[str, Any]:
    handle = _library(web, library)
    job = await _call(web.jobs.current, handle.id)
    return {"job": job.to_dict() if job else None}


@router.post(LIB + "/jobs/current/cancel", summary="Cancel the running job (indexed photos stay)")
async def cancel_job(library: str, _owner: OwnerApi, web: Web) -> dict[str, Any]:
    handle = _library(web, library)
    job = await _call(web.jobs.cancel, handle.id)
    return {"job": job.to_dict() if job else None}
