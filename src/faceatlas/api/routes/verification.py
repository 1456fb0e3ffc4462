"""``/api/v1/verification/*``: compare the face of a source image (or embedding) with targets."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from faceatlas.api.blocking import analyze
from faceatlas.api.collections import round_half_up
from faceatlas.api.errors import MORE_THAN_ONE_FACE, wrong_embedding_count
from faceatlas.api.requests import parse_face_query, query, read_images, read_json, vector, vectors
from faceatlas.api.responses import face_json, plugins_versions
from faceatlas.api.state import State, VerificationService
from faceatlas.vectors import normalize_rows, similarity_of_cosine

router = APIRouter(prefix="/api/v1/verification", tags=["verification"])


@router.post("/verify", summary="Compare the one face of `source_image` with every face of `target_image`")
async def verify(request: Request, state: State, service: VerificationService) -> JSONResponse:
    params = query(request)
    params.pop("detect_faces", None)
    options = parse_face_query(params, state.engine.pack.plugins)
    source_data, target_data = await read_images(
        request, ("source_image", "target_image"), state.settings.max_file_size, state.settings.max_body_size
    )
    source_faces = await analyze(state, source_data, options, embed=True)
    if len(source_faces) > 1:
        raise MORE_THAN_ONE_FACE
    target_faces = await analyze(state, target_data, options, embed=True)
    source = source_faces[0]
    pack = state.engine.pack
    targets = normalize_rows(np.stack([f.embedding for f in target_faces]))
    sims = similarity_of_cosine(targets @ normalize_rows(source.embedding[None, :])[0], pack.c0, pack.c1)
    matches = []
    for face, sim in zip(target_faces, sims, strict=True):
        item = face_json(face, options, round_probability=True)
        item["similarity"] = round_half_up(sim)
        matches.append(item)
    matches.sort(key=lambda item: item["similarity"], reverse=True)
    entry: dict[str, Any] = {
        "source_image_face": face_json(source, options, round_probability=True),
        "face_matches": matches,
    }
    if options.status:
        entry["plugins_versions"] = plugins_versions(state, options, embedded=True)
    return JSONResponse({"result": [entry]})


@router.post("/embeddings/verify", summary="Compare a source embedding with target embeddings")
async def verify_embeddings(request: Request, state: State, service: VerificationService) -> JSONResponse:
    body = await read_json(request, state.settings.max_body_size)
    body = body if isinstance(body, dict) else {}
    pack = state.engine.pack
    source = vector(body.get("source"), "source", pack.embedding_size, pack.id)
    raw_targets = body.get("targets")
    if not raw_targets:
        raise wrong_embedding_count(2, 1)
    targets = vectors(raw_targets, "targets", pack.embedding_size, pack.id)
    cosines = normalize_rows(targets) @ normalize_rows(source[None, :])[0]
    sims = similarity_of_cosine(cosines, pack.c0, pack.c1)
    result = [
        {"embedding": row, "similarity": round_half_up(s)} for row, s in zip(raw_targets, sims, strict=True)
    ]
    result.sort(key=lambda item: item["similarity"], reverse=True)
    return JSONResponse({"result": result})
