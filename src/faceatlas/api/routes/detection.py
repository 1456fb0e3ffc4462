"""``/api/v1/detection/detect``: faces and plugin results, no collection."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from faceatlas.api.blocking import analyze
from faceatlas.api.requests import CALCULATOR, parse_face_query, query, read_images
from faceatlas.api.responses import face_json, plugins_versions
from faceatlas.api.state import DetectionService, State

router = APIRouter(prefix="/api/v1/detection", tags=["detection"])


@router.post("/detect", summary="Detect faces (multipart `file` or JSON base64 `file`)")
async def detect(request: Request, state: State, service: DetectionService) -> JSONResponse:
    params = query(request)
    params.pop("detect_faces", None)  # not a parameter of this endpoint
    options = parse_face_query(params, state.engine.pack.plugins)
    (data,) = await read_images(
        request, ("file",), state.settings.max_file_size, state.settings.max_body_size
    )
    embed = CALCULATOR in options.plugins
    faces = await analyze(state, data, options, embed=embed)
    # the detection endpoint passes the core's probability through unrounded
    body: dict[str, Any] = {"result": [face_json(f, options, round_probability=False) for f in faces]}
    if options.status:
        body["plugins_versions"] = plugins_versions(state, options, embedded=embed)
    return JSONResponse(body)
