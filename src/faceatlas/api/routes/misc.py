"""Endpoints without an API key header: static images, config, consistency, migration, health."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from faceatlas.api.blocking import run_blocking
from faceatlas.api.errors import MIGRATION_RUNNING
from faceatlas.api.requests import parse_bool, query
from faceatlas.api.responses import IMAGE_HEADERS
from faceatlas.api.routes.admin import Admin
from faceatlas.api.state import State, is_uuid

router = APIRouter(tags=["misc"])


@router.get("/api/v1/static/{api_key}/images/{image_id}", summary="A stored face image, for <img src>")
async def static_image(api_key: str, image_id: str, state: State) -> Response:
    data = None
    if is_uuid(api_key) and is_uuid(image_id):
        service = await run_blocking(state.service_for_key, api_key)
        if service is not None:
            data = await run_blocking(state.store.get_image, service.id, image_id)
    return Response(data or b"", media_type="application/octet-stream", headers=IMAGE_HEADERS)


@router.get("/api/v1/config", summary="Upload limits for clients")
async def config(state: State) -> JSONResponse:
    return JSONResponse(
        {"clientMaxFileSize": state.settings.max_file_size, "clientMaxBodySize": state.settings.max_body_size}
    )


@router.get("/api/v1/consistence/status", summary="Whether stored embeddings need a migration")
async def consistence(state: State) -> JSONResponse:
    stale = await run_blocking(lambda: state.store.count_faces(other_than_pack=state.engine.pack.id))
    return JSONResponse(
        {
            "demoFaceCollectionIsInconsistent": False,
            "dbIsInconsistent": stale > 0,
            "saveImagesToDB": state.settings.keep_images,
            "status": "OK",
        }
    )


@router.post("/api/v1/migrate", summary="Re-embed stored images made by another model pack (admin token)")
async def migrate(request: Request, state: Admin) -> PlainTextResponse:
    # CompreFace needs no key here; we do: a run blocks every write for as long as it takes.
    # Beyond CompreFace: ?all=true re-embeds every stored image, not only other packs' ones
    migration = state.migration
    if migration is None or not migration.start(everything=parse_bool(query(request), "all", False)):
        raise MIGRATION_RUNNING
    return PlainTextResponse("Migration started")


@router.get("/healthcheck", summary="Liveness")
@router.get("/core/healthcheck", include_in_schema=False)
async def healthcheck() -> JSONResponse:
    return JSONResponse({"status": "OK"})


@router.get("/status", summary="Engine status, like compreface-core's /status")
@router.get("/core/status", include_in_schema=False)
async def status(state: State) -> JSONResponse:
    from faceatlas import __version__

    pack = state.engine.pack
    plugins = {"detector": f"faceatlas.{pack.detector_name}", "calculator": f"faceatlas.Calculator@{pack.id}"}
    plugins.update({name: f"faceatlas.{name}" for name in pack.plugins})
    return JSONResponse(
        {
            "status": "OK",
            "build_version": __version__,
            "calculator_version": pack.id,
            "similarity_coefficients": [pack.c0, pack.c1],
            "available_plugins": plugins,
            "index": state.collections.describe(),
        }
    )


@router.get("/api/swagger-ui.html", include_in_schema=False)
async def swagger_ui() -> RedirectResponse:
    # where CompreFace's nginx serves its Swagger UI and spec
    return RedirectResponse("/docs")


@router.get("/api/v2/api-docs", include_in_schema=False)
async def api_docs() -> RedirectResponse:
    return RedirectResponse("/openapi.json")
