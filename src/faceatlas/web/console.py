"""The service console: CompreFace's web UI for faceatlas — services and keys, collections, try it, status.

Pages under ``/console`` (same login as the library pages) and their JSON API under ``/api/console/v1``.
Writes go through the server's :class:`ServiceStore` (so every process's in-memory collection follows);
API keys are shown only in the answer that creates or rotates them. "Try it" runs in the browser against
the real CompreFace endpoints with the service's key, so the JSON shown is exactly what a client gets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
import cv2
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from faceatlas.errors import FaceAtlasError, ImageError
from faceatlas.images import decode_image
from faceatlas.library.publish import DEFAULT_FACES_PER_PERSON, publish_library
from faceatlas.library.thumbnails import crop_face
from faceatlas.models.convert import write_atomically
from faceatlas.models.store import cache_dir
from faceatlas.storage.service_tables import SERVICE_TYPES
from faceatlas.storage.services import (
    ServiceExistsError,
    ServiceNotFoundError,
    ServiceRecord,
    SubjectNotFoundError,
)
from faceatlas.web import console_store
from faceatlas.web.console_status import status_report
from faceatlas.web.shell import NavLink, OwnerApi, OwnerPage, PageSet, WebError, render

if TYPE_CHECKING:
    from faceatlas.engine import Engine

PREFIX = "/api/console/v1"
pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix=PREFIX, tags=["console"])
router = APIRouter()
router.include_router(pages)
CONSOLE_PAGES = PageSet(
    router,
    nav=(
        NavLink("Services", "/console/services", "services"),
        NavLink("Status", "/console/status", "status"),
    ),
    order=50,
)
SUBJECTS_PER_PAGE = 60
IMAGES_PER_PAGE = 60
THUMB_SIZES = (96, 160, 320)
IMAGE_CACHE = "private, max-age=86400"  # a stored image never changes under its id
MAX_FILES_PER_UPLOAD = 200
T = TypeVar("T")


def _state(request: Request) -> Any:
    """The server's state (engine, store, collections); the console shares it, it does not import the API."""
    return request.app.state.faceatlas


async def _call(request: Request, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return await anyio.to_thread.run_sync(
            lambda: function(*args, **kwargs), limiter=_state(request).limiter
        )
    except (ServiceNotFoundError, SubjectNotFoundError, LookupError) as exc:
        raise WebError(404, str(exc) or "not found") from None
    except (ServiceExistsError, console_store.ServiceNameTakenError) as exc:
        raise WebError(409, str(exc)) from None
    except (FaceAtlasError, ValueError) as exc:
        raise WebError(400, str(exc)) from None


def _service(request: Request, service_id: int) -> ServiceRecord:
    try:
        return _state(request).store.get_service(service_id)
    except ServiceNotFoundError:
        raise WebError(404, f"no service {service_id}") from None


def _recognition(request: Request, service_id: int) -> ServiceRecord:
    record = _service(request, service_id)
    if record.type != "recognition":
        raise WebError(400, f"service {record.name!r} is a {record.type} service: it has no face collection")
    return record


async def _subject_or_404(request: Request, service_id: int, subject_id: int) -> console_store.SubjectSummary:
    _recognition(request, service_id)
    found = await _call(request, console_store.subject, _state(request).store.db, service_id, subject_id)
    if found is None:
        raise WebError(404, f"no subject {subject_id}")
    return found


def _page_number(value: int, total: int, per_page: int) -> int:
    return min(max(value, 1), max(math.ceil(total / per_page), 1))


# ------------------------------------------------------------------------------------------- pages


@pages.get("/console")
async def console_home(_owner: OwnerPage) -> RedirectResponse:
    return RedirectResponse("/console/services", status_code=303)


@pages.get("/console/services", response_class=HTMLResponse)
async def services_page(request: Request, owner: OwnerPage) -> HTMLResponse:
    services = await _call(request, console_store.service_summaries, _state(request).store.db)
    return render(
        request,
        "console/services.html",
        owner,
        section="services",
        services=services,
        types=SERVICE_TYPES,
        pack=_state(request).engine.pack.id,
    )


@pages.get("/console/services/{service_id}", response_class=HTMLResponse)
async def service_page(
    request: Request, service_id: int, owner: OwnerPage, page: int = 1, q: str = ""
) -> HTMLResponse:
    state = _state(request)
    summary = await _call(request, console_store.service_summary, state.store.db, service_id)
    if summary is None:
        raise WebError(404, f"no service {service_id}")
    total, subjects = 0, list[console_store.SubjectSummary]()
    if summary.type == "recognition":
        page = max(page, 1)
        for _attempt in range(2):  # a page past the end shows the last one
            total, subjects = await _call(
                request,
                console_store.subjects_page,
                state.store.db,
                service_id,
                offset=(page - 1) * SUBJECTS_PER_PAGE,
                limit=SUBJECTS_PER_PAGE,
                query=q or None,
            )
            if subjects or page == 1:
                break
            page = _page_number(page, total, SUBJECTS_PER_PAGE)
    return render(
        request,
        "console/service.html",
        owner,
        section="services",
        service=summary,
        subjects=subjects,
        total=total,
        page=page,
        pages=max(math.ceil(total / SUBJECTS_PER_PAGE), 1),
        q=q,
        plugins=_plugins(state),
        faces_per_person=DEFAULT_FACES_PER_PERSON,
    )


@pages.get("/console/services/{service_id}/subjects/{subject_id}", response_class=HTMLResponse)
async def subject_page(
    request: Request, service_id: int, subject_id: int, owner: OwnerPage, page: int = 1
) -> HTMLResponse:
    state = _state(request)
    record = _recognition(request, service_id)
    found = await _call(request, console_store.subject, state.store.db, service_id, subject_id)
    if found is None:
        raise WebError(404, f"no subject {subject_id} in service {record.name!r}")
    page = _page_number(page, found.faces, IMAGES_PER_PAGE)
    images = await _call(
        request,
        console_store.subject_images,
        state.store.db,
        service_id,
        subject_id,
        offset=(page - 1) * IMAGES_PER_PAGE,
        limit=IMAGES_PER_PAGE,
    )
    return render(
        request,
        "console/subject.html",
        owner,
        section="services",
        service=record,
        subject=found,
        images=images,
        page=page,
        pages=max(math.ceil(found.faces / IMAGES_PER_PAGE), 1),
    )


@pages.get("/console/status", response_class=HTMLResponse)
async def status_page(request: Request, owner: OwnerPage) -> HTMLResponse:
    return render(
        request, "console/status.html", owner, section="status", status=status_report(_state(request))
    )


def _plugins(state: Any) -> list[str]:
    return [p for p in state.engine.pack.plugins] + ["calculator"]


# ------------------------------------------------------------------------------------------- JSON API


class NewService(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    type: str = "recognition"


class NewName(BaseModel):
    name: str = Field(min_length=1, max_length=255)


def _with_key(record: ServiceRecord) -> dict[str, object]:
    """The one answer that carries the key in full: creation and rotation."""
    return record.to_dict()


@api.get("/services", summary="Services with their subject and face counts (no keys)")
async def list_services(request: Request, _owner: OwnerApi) -> dict[str, object]:
    services = await _call(request, console_store.service_summaries, _state(request).store.db)
    return {"services": [s.to_dict() for s in services]}


@api.post("/services", status_code=201, summary="Create a service; the answer holds its API key")
async def create_service(request: Request, body: NewService, _owner: OwnerApi) -> dict[str, object]:
    state = _state(request)
    kind = "verification" if body.type.lower() == "verify" else body.type.lower()
    if kind not in SERVICE_TYPES:
        raise WebError(400, f"service type must be one of {', '.join(SERVICE_TYPES)}")
    if "\0" in body.name or not body.name.strip():
        raise WebError(400, "a service name must not be blank or contain NUL")
    record = await _call(request, state.store.create_service, body.name, kind, state.engine.pack.id)
    return _with_key(record)


@api.patch("/services/{service_id}", summary="Rename a service")
async def rename_service(
    request: Request, service_id: int, body: NewName, _owner: OwnerApi
) -> dict[str, object]:
    _service(request, service_id)
    if "\0" in body.name or not body.name.strip():
        raise WebError(400, "a service name must not be blank or contain NUL")
    await _call(request, console_store.rename_service, _state(request).store.db, service_id, body.name)
    return {"id": service_id, "name": body.name.strip()}


@api.post("/services/{service_id}/rotate-key", summary="Give a service a new key; the old one stops working")
async def rotate_key(request: Request, service_id: int, _owner: OwnerApi) -> dict[str, object]:
    state = _state(request)
    _service(request, service_id)
    record = await _call(request, state.store.rotate_key, service_id)
    state.forget_keys()  # this process refuses the old key at once; others within their key cache time
    return _with_key(record)


@api.delete("/services/{service_id}", summary="Delete a service and its whole collection")
async def delete_service(request: Request, service_id: int, _owner: OwnerApi) -> dict[str, object]:
    state = _state(request)
    _service(request, service_id)
    record = await _call(request, state.store.delete_service, service_id)
    state.forget_keys()
    return {"deleted": record.name}


@api.get("/services/{service_id}/subjects", summary="One page of a collection's subjects")
async def list_subjects(
    request: Request,
    service_id: int,
    _owner: OwnerApi,
    offset: int = 0,
    limit: int = SUBJECTS_PER_PAGE,
    q: str = "",
) -> dict[str, object]:
    _recognition(request, service_id)
    if offset < 0 or not 1 <= limit <= 500:
        raise WebError(400, "offset must be >= 0 and limit between 1 and 500")
    db = _state(request).store.db
    total, subjects = await _call(
        request, console_store.subjects_page, db, service_id, offset=offset, limit=limit, query=q or None
    )
    return {"total": total, "subjects": [s.to_dict() for s in subjects]}


@api.put("/services/{service_id}/subjects/{subject_id}", summary="Rename a subject (onto another: merge)")
async def rename_subject(
    request: Request, service_id: int, subject_id: int, body: NewName, _owner: OwnerApi
) -> dict[str, object]:
    state = _state(request)
    found = await _subject_or_404(request, service_id, subject_id)
    new = body.name.strip()
    if "\0" in new or not new:
        raise WebError(400, "a subject name must not be blank or contain NUL")
    target = await _call(request, console_store.subject_by_name, state.store.db, service_id, new)
    merged = target is not None and target.id != subject_id
    await _call(request, state.store.rename_subject, service_id, found.name, new)
    await _call(request, state.collections.after_write, service_id)
    survivor = target.id if merged and target is not None else subject_id
    return {"subject": new, "merged": merged, "id": survivor}


@api.delete("/services/{service_id}/subjects/{subject_id}", summary="Delete a subject with its faces")
async def delete_subject(
    request: Request, service_id: int, subject_id: int, _owner: OwnerApi
) -> dict[str, object]:
    state = _state(request)
    found = await _subject_or_404(request, service_id, subject_id)
    await _call(request, state.store.delete_subject, service_id, found.name)
    await _call(request, state.collections.after_write, service_id)
    return {"deleted": found.name, "faces": found.faces}


@api.post(
    "/services/{service_id}/images", summary="Add images to a subject: one face each, a result per file"
)
async def add_images(request: Request, service_id: int, _owner: OwnerApi) -> dict[str, object]:
    state = _state(request)
    record = _recognition(request, service_id)
    form = await request.form(max_files=MAX_FILES_PER_UPLOAD)
    subject = str(form.get("subject") or "").strip()
    if not subject or "\0" in subject or len(subject) > 255:
        raise WebError(400, "give the subject's name (1 to 255 characters)")
    uploads = [f for f in form.getlist("files") if not isinstance(f, str)]
    if not uploads:
        raise WebError(400, "no files: choose or drop one or more images")
    results = []
    for upload in uploads:
        data = await upload.read(state.settings.max_file_size + 1)
        name = upload.filename or "image"
        if len(data) > state.settings.max_file_size:
            results.append({"file": name, "error": f"larger than {state.settings.max_file_size} bytes"})
            continue
        try:
            image_id = await anyio.to_thread.run_sync(
                _add_one, state, record, subject, data, limiter=state.limiter
            )
        except (FaceAtlasError, ValueError) as exc:
            results.append({"file": name, "error": str(exc)})
            continue
        results.append({"file": name, "image_id": image_id, "subject": subject})
    await anyio.to_thread.run_sync(state.collections.after_write, service_id)
    return {"subject": subject, "results": results, "added": sum("image_id" in r for r in results)}


class UploadError(FaceAtlasError, ValueError):
    """An uploaded image that cannot become a face of the collection (none or several faces)."""


def _add_one(state: Any, record: ServiceRecord, subject: str, data: bytes) -> str:
    """As CompreFace's ``POST /faces``: exactly one face, embedded and stored with the image."""
    try:
        faces = state.engine.analyze(data, embed=True, limit=2)
    except ImageError as exc:
        raise UploadError(f"not a usable image: {exc}") from None
    if not faces:
        raise UploadError("no face found in the image")
    if len(faces) > 1:
        raise UploadError("more than one face in the image; upload a photo of this subject alone")
    image = data if state.settings.keep_images else None
    image_id, _version = state.store.add_face(
        record.id, subject, faces[0].embedding, state.engine.pack.id, image
    )
    return str(image_id)


@api.delete("/services/{service_id}/images/{image_id}", summary="Delete one stored image (face)")
async def delete_image(
    request: Request, service_id: int, image_id: str, _owner: OwnerApi
) -> dict[str, object]:
    state = _state(request)
    _recognition(request, service_id)
    deleted = await _call(request, state.store.delete_face, service_id, image_id)
    if deleted is None:
        raise WebError(404, f"no image {image_id}")
    await _call(request, state.collections.after_write, service_id)
    return {"image_id": deleted.image_id, "subject": deleted.subject}


@api.get("/services/{service_id}/images/{image_id}/thumbnail", summary="A stored image's face, box drawn")
async def thumbnail(
    request: Request, service_id: int, image_id: str, _owner: OwnerApi, size: int = 160
) -> Response:
    state = _state(request)
    if size not in THUMB_SIZES:
        raise WebError(400, f"size must be one of {', '.join(map(str, THUMB_SIZES))}")
    if not all(c.isalnum() or c == "-" for c in image_id) or len(image_id) > 64:
        raise WebError(404, f"no image {image_id}")
    target = cache_dir() / "console" / f"{service_id}-{image_id}-{size}.jpg"
    if not target.is_file():
        data = await _call(request, state.store.get_image, service_id, image_id)
        if not data:
            raise WebError(404, f"no stored image {image_id}")
        jpeg = await _call(request, _face_thumbnail, state.engine, data, size)
        write_atomically(target, jpeg, private=True)
    return Response(target.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": IMAGE_CACHE})


def _face_thumbnail(engine: Engine, data: bytes, size: int) -> bytes:
    """A square crop around the largest face with its box drawn (the whole image when none is found)."""
    decoded = decode_image(data, target_size=max(size * 3, 480))
    faces = engine.analyze(decoded, embed=False, limit=1)
    rgb = np.ascontiguousarray(decoded.rgb)
    if faces:
        x0, y0, x1, y1 = (v / decoded.scale for v in faces[0].box)
        margin = 0.45
        crop = np.ascontiguousarray(crop_face(rgb, (x0, y0, x1, y1), size=size, margin=margin))
        side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
        scale = size / max(side, 1e-6)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        top_left = (int(size / 2 + (x0 - cx) * scale), int(size / 2 + (y0 - cy) * scale))
        bottom_right = (int(size / 2 + (x1 - cx) * scale), int(size / 2 + (y1 - cy) * scale))
        cv2.rectangle(crop, top_left, bottom_right, (255, 212, 0), max(1, size // 80))
    else:
        h, w = rgb.shape[:2]
        side = min(h, w)
        square = rgb[(h - side) // 2 : (h + side) // 2, (w - side) // 2 : (w + side) // 2]
        crop = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise UploadError("could not encode the thumbnail")
    return encoded.tobytes()


class LibraryImport(BaseModel):
    library: str = "default"
    people: list[str] | None = None  # names or ids; None: every named person
    faces_per_person: int = Field(default=DEFAULT_FACES_PER_PERSON, ge=1, le=50)


@api.post("/services/{service_id}/import-library", summary="Publish a library's named people as subjects")
async def import_library(
    request: Request, service_id: int, body: LibraryImport, _owner: OwnerApi
) -> dict[str, object]:
    """As ``faceatlas services import-library``: re-running applies only what changed in the library."""
    state = _state(request)
    _recognition(request, service_id)
    handle = request.app.state.web.libraries.get(body.library)
    if handle is None:
        raise WebError(404, f"no library {body.library!r}")
    report = await _call(
        request,
        publish_library,
        handle.db,
        state.store,
        service_id,
        people=body.people,
        faces_per_person=body.faces_per_person,
    )
    await _call(request, state.collections.after_write, service_id)
    return {**report.to_dict(), "changed": report.changed}


@api.get("/status", summary="Pack, models, providers and what a similarity means for this pack")
async def status(request: Request, _owner: OwnerApi) -> dict[str, object]:
    return status_report(_state(request))


router.include_router(api)
