"""``/admin/*``: managing face services over REST, guarded by the admin token.

The token is sent as ``Authorization: Bearer <token>`` or ``x-admin-token: <token>``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from faceatlas.api.blocking import run_blocking
from faceatlas.api.errors import ApiError
from faceatlas.api.requests import check_name, read_json
from faceatlas.api.state import ServerState, get_state
from faceatlas.errors import ServiceExistsError, ServiceNotFoundError
from faceatlas.storage.service_tables import SERVICE_TYPES
from faceatlas.storage.services import ServiceRecord


def require_admin(
    state: Annotated[ServerState, Depends(get_state)],
    authorization: Annotated[str | None, Header()] = None,
    x_admin_token: Annotated[str | None, Header()] = None,
) -> ServerState:
    token = x_admin_token
    if token is None and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    if not token or not secrets.compare_digest(token.encode(), state.admin_token.encode()):
        raise ApiError(401, 0, "A valid admin token is required (Authorization: Bearer <token>)")
    return state


Admin = Annotated[ServerState, Depends(require_admin)]
router = APIRouter(prefix="/admin", tags=["admin"])


ADMIN_BODY_LIMIT = 64 * 1024


def _not_found(exc: Exception) -> ApiError:
    return ApiError(404, 0, str(exc))


def _name(body: object) -> str:
    """The service name of a JSON body, checked before the database sees it."""
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"].strip():
        raise ApiError(400, 5, "Field name cannot be empty")
    return check_name(body["name"].strip(), "name")


@router.get("/services", summary="List face services")
async def list_services(state: Admin) -> JSONResponse:
    records = await run_blocking(state.store.list_services)
    return JSONResponse({"services": [r.to_dict() for r in records]})


@router.post("/services", status_code=201, summary='Create a face service: {"name", "type"}')
async def create_service(request: Request, state: Admin) -> JSONResponse:
    body = await read_json(request, ADMIN_BODY_LIMIT)
    name = _name(body)
    kind = str(body.get("type", "recognition")).lower()
    if kind == "verify":
        kind = "verification"
    if kind not in SERVICE_TYPES:
        raise ApiError(400, 26, f"type must be one of {', '.join(SERVICE_TYPES)}")
    try:
        record = await run_blocking(state.store.create_service, name, kind, state.engine.pack.id)
    except ServiceExistsError as exc:
        raise ApiError(400, 43, str(exc)) from None
    return JSONResponse(record.to_dict(), status_code=201)


async def _on_service(action: Callable[[str], ServiceRecord], service: str) -> ServiceRecord:
    """Run a store action on one service in the worker pool; an unknown service is a 404."""
    try:
        return await run_blocking(action, service)
    except ServiceNotFoundError as exc:
        raise _not_found(exc) from None


@router.get("/services/{service}", summary="One face service (by id or name)")
async def get_service(service: str, state: Admin) -> JSONResponse:
    record = await _on_service(state.store.get_service, service)
    return JSONResponse(record.to_dict())


@router.post("/services/{service}/rotate-key", summary="Give a face service a new API key")
async def rotate_key(service: str, state: Admin) -> JSONResponse:
    record = await _on_service(state.store.rotate_key, service)
    state.forget_keys()
    return JSONResponse(record.to_dict())


@router.put("/services/{service}", summary='Rename a face service: {"name"}')
async def rename_service(service: str, request: Request, state: Admin) -> JSONResponse:
    name = _name(await read_json(request, ADMIN_BODY_LIMIT))
    try:
        record = await _on_service(lambda found: state.store.rename_service(found, name), service)
    except ServiceExistsError as exc:
        raise ApiError(400, 43, str(exc)) from None
    return JSONResponse(record.to_dict())


@router.delete("/services/{service}", summary="Delete a face service and its collection")
async def delete_service(service: str, state: Admin) -> JSONResponse:
    record = await _on_service(state.store.delete_service, service)
    state.forget_keys()
    state.collections.drop(record.id)
    return JSONResponse(record.to_dict())
