"""``/api/v1/recognition/*``: face collections, recognition and verification against stored faces."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from faceatlas.api.blocking import analyze, run_blocking
from faceatlas.api.collections import round_half_up
from faceatlas.api.errors import (
    IMAGE_ID_INCORRECT,
    MORE_THAN_ONE_FACE,
    SUBJECT_EXISTS,
    ApiError,
    image_not_found,
    missing_parameter,
    something_went_wrong,
    subject_not_found,
    validation,
)
from faceatlas.api.requests import (
    check_name,
    check_subject_body,
    parse_bool,
    parse_face_query,
    parse_float,
    parse_int,
    query,
    read_images,
    read_json,
    subject_filter,
    vectors,
)
from faceatlas.api.responses import IMAGE_HEADERS, face_json, plugins_versions, similarity
from faceatlas.api.state import RecognitionService, State, guard_writes, is_uuid
from faceatlas.errors import SubjectExistsError, SubjectNotFoundError
from faceatlas.vectors import normalize_rows

router = APIRouter(prefix="/api/v1/recognition", tags=["recognition"])


# ----------------------------------------------------------------------------- recognize (#1)
@router.post("/recognize", summary="Recognize faces in an image (multipart `file` or JSON base64 `file`)")
async def recognize(request: Request, state: State, service: RecognitionService) -> JSONResponse:
    params = query(request)
    options = parse_face_query(params, state.engine.pack.plugins)
    (data,) = await read_images(
        request, ("file",), state.settings.max_file_size, state.settings.max_body_size
    )
    faces = await analyze(state, data, options, embed=True)
    embedded = [f for f in faces if f.embedding is not None]

    def search() -> list:
        if not embedded:
            return []
        queries = np.stack([f.embedding for f in embedded])
        collection = state.collections.get(service.id)
        return collection.search(queries, options.prediction_count, unique_subjects=options.unique_subjects)

    matches = await run_blocking(search)
    by_face = dict(zip((id(f) for f in embedded), matches, strict=True))
    result = []
    for face in faces:
        item = face_json(face, options, round_probability=True)
        found = by_face.get(id(face), [])
        sims = similarity(state, np.array([m.cosine for m in found])) if found else []
        subjects = []
        for match, sim in zip(found, sims, strict=True):
            value = round_half_up(sim)
            if options.min_similarity is not None and value < options.min_similarity:
                continue
            subjects.append({"subject": match.subject, "similarity": value, "image_id": match.image_id})
        item["subjects"] = subjects
        result.append(item)
    body: dict[str, Any] = {"result": result}
    if options.status:
        body["plugins_versions"] = plugins_versions(state, options, embedded=True)
    return JSONResponse(body)


# ----------------------------------------------------------------------------- faces (#2-#7, #9)
@router.post("/faces", status_code=201, summary="Add a face of `subject` to the collection")
async def add_face(request: Request, state: State, service: RecognitionService) -> JSONResponse:
    params = query(request)
    subject = params.get("subject")
    if subject is None:
        raise missing_parameter("subject")
    if not subject.strip():
        raise validation("subject: must not be blank")
    check_name(subject, "subject")
    guard_writes(state)
    options = parse_face_query(
        {k: v for k, v in params.items() if k in ("det_prob_threshold", "detect_faces")}, ()
    )
    (data,) = await read_images(
        request, ("file",), state.settings.max_file_size, state.settings.max_body_size
    )
    faces = await analyze(state, data, options, embed=True, limit=2)
    if len(faces) > 1:
        raise MORE_THAN_ONE_FACE
    guard_writes(state)
    face = faces[0]
    image = data if state.settings.keep_images else None
    image_id, _version = await run_blocking(
        state.store.add_face, service.id, subject, face.embedding, state.engine.pack.id, image
    )
    await run_blocking(state.collections.after_write, service.id)
    return JSONResponse({"image_id": image_id, "subject": subject}, status_code=201)


@router.get("/faces", summary="List the collection's faces (paged; optional `subject` filter)")
async def list_faces(request: Request, state: State, service: RecognitionService) -> JSONResponse:
    params = query(request)
    page = max(parse_int(params, "page", 0), 0)
    size = parse_int(params, "size", 20)
    if size < 1:
        size = 20
    subject = subject_filter(params)
    faces, total = await run_blocking(state.store.list_faces, service.id, page, size, subject)
    return JSONResponse(
        {
            "faces": [{"image_id": f.image_id, "subject": f.subject} for f in faces],
            "page_number": page,
            "page_size": size,
            "total_pages": math.ceil(total / size),
            "total_elements": total,
        }
    )


@router.delete("/faces", summary="Delete every face of `subject` (all faces without it)")
async def delete_faces(request: Request, state: State, service: RecognitionService) -> JSONResponse:
    guard_writes(state)
    subject = subject_filter(query(request))
    deleted = await run_blocking(state.store.delete_subject_faces, service.id, subject)
    await run_blocking(state.collections.after_write, service.id)
    return JSONResponse({"deleted": deleted})


@router.post("/faces/delete", summary="Delete several faces by image id; answers the deleted ones")
async def delete_faces_bulk(request: Request, state: State, service: RecognitionService) -> JSONResponse:
    guard_writes(state)
    body = await read_json(request, state.settings.max_body_size)
    if not isinstance(body, list) or not all(isinstance(v, str) for v in body):
        raise something_went_wrong("The body must be a JSON array of image ids")
    ids = [v for v in body if is_uuid(v)]
    deleted = await run_blocking(state.store.delete_faces, service.id, ids)
    await run_blocking(state.collections.after_write, service.id)
    return JSONResponse([{"image_id": f.image_id, "subject": f.subject} for f in deleted])


@router.delete("/faces/{image_id}", summary="Delete one face")
async def delete_face(image_id: str, state: State, service: RecognitionService) -> JSONResponse:
    guard_writes(state)
    deleted = await run_blocking(state.store.delete_face, service.id, image_id) if is_uuid(image_id) else None
    if deleted is None:
        raise image_not_found(image_id)
    await run_blocking(state.collections.after_write, service.id)
    return JSONResponse({"image_id": deleted.image_id, "subject": deleted.subject})


@router.get("/faces/{image_id}/img", summary="The stored image of a face (empty when not kept)")
async def face_image(image_id: str, state: State, service: RecognitionService) -> Response:
    data = await run_blocking(state.store.get_image, service.id, image_id) if is_uuid(image_id) else None
    return Response(data or b"", media_type="application/octet-stream", headers=IMAGE_HEADERS)


@router.post("/faces/{image_id}/verify", summary="Compare the faces of an image with one stored face")
async def verify_face(
    image_id: str, request: Request, state: State, service: RecognitionService
) -> JSONResponse:
    options = parse_face_query(query(request), state.engine.pack.plugins)
    stored = await run_blocking(state.store.get_face, service.id, image_id) if is_uuid(image_id) else None
    if stored is None:
        raise IMAGE_ID_INCORRECT
    if stored.pack != state.engine.pack.id:
        raise ApiError(
            400, 0, f"Image {image_id} was embedded by model pack {stored.pack}; run /api/v1/migrate first"
        )
    (data,) = await read_images(
        request, ("file",), state.settings.max_file_size, state.settings.max_body_size
    )
    faces = await analyze(state, data, options, embed=True)
    reference = normalize_rows(stored.embedding[None, :])[0]
    result = []
    for face in faces:
        item = face_json(face, options, round_probability=True)
        item["subject"] = stored.subject
        cosine = float(normalize_rows(face.embedding[None, :])[0] @ reference)
        item["similarity"] = round_half_up(similarity(state, np.array([cosine]))[0])
        result.append(item)
    result.sort(key=lambda item: item["similarity"], reverse=True)
    body: dict[str, Any] = {"result": result}
    if options.status:
        body["plugins_versions"] = plugins_versions(state, options, embedded=True)
    return JSONResponse(body)


# ----------------------------------------------------------------------------- subjects (#10-#14)
@router.post("/subjects", status_code=201, summary="Create a subject")
async def add_subject(request: Request, state: State, service: RecognitionService) -> JSONResponse:
    body = await read_json(request, state.settings.max_body_size)
    name = check_subject_body(body.get("subject") if isinstance(body, dict) else None)
    try:
        await run_blocking(state.store.add_subject, service.id, name)
    except SubjectExistsError:
        raise SUBJECT_EXISTS from None
    return JSONResponse({"subject": name}, status_code=201)


@router.get("/subjects", summary="List subjects")
async def list_subjects(state: State, service: RecognitionService) -> JSONResponse:
    return JSONResponse({"subjects": await run_blocking(state.store.list_subjects, service.id)})


# ``:path``: subjects added through ``POST /faces?subject=a/b`` (allowed there, as in CompreFace) must
# stay reachable for renaming and deleting
@router.put("/subjects/{subject:path}", summary="Rename a subject (onto an existing one: merge)")
async def rename_subject(
    subject: str, request: Request, state: State, service: RecognitionService
) -> JSONResponse:
    body = await read_json(request, state.settings.max_body_size)
    new = body.get("subject") if isinstance(body, dict) else None
    new = "" if new is None or (isinstance(new, str) and not new.strip()) else check_subject_body(new)
    check_name(subject, "subject")
    try:
        updated = await run_blocking(state.store.rename_subject, service.id, subject, new)
    except SubjectNotFoundError:
        raise subject_not_found(subject) from None
    await run_blocking(state.collections.after_write, service.id)
    return JSONResponse({"updated": updated})


@router.delete("/subjects/{subject:path}", summary="Delete a subject and its faces")
async def delete_subject(subject: str, state: State, service: RecognitionService) -> JSONResponse:
    check_name(subject, "subject")
    if not await run_blocking(state.store.delete_subject, service.id, subject):
        raise subject_not_found(subject)
    await run_blocking(state.collections.after_write, service.id)
    return JSONResponse({"subject": subject})


@router.delete("/subjects", summary="Delete every subject and face")
async def delete_subjects(state: State, service: RecognitionService) -> JSONResponse:
    deleted = await run_blocking(state.store.delete_all_subjects, service.id)
    await run_blocking(state.collections.after_write, service.id)
    return JSONResponse({"deleted": deleted})


# ----------------------------------------------------------------------------- embeddings (#17, #18)
@router.post("/embeddings/recognize", summary="Recognize raw embeddings")
async def recognize_embeddings(request: Request, state: State, service: RecognitionService) -> JSONResponse:
    params = query(request)
    count = parse_int(params, "prediction_count", 1)
    if count == 0 or count < -1:
        raise validation("prediction_count: must be greater than or equal to 1")
    min_similarity = parse_float(params, "min_similarity")
    body = await read_json(request, state.settings.max_body_size)
    raw = body.get("embeddings") if isinstance(body, dict) else None
    pack = state.engine.pack
    queries = vectors(raw, "embeddings", pack.embedding_size, pack.id)
    collection = await run_blocking(state.collections.get, service.id)
    unique = parse_bool(params, "unique_subjects", False)
    matches = await run_blocking(lambda: collection.search(queries, count, unique_subjects=unique))
    result = []
    for row, found in zip(raw, matches, strict=True):
        sims = similarity(state, np.array([m.cosine for m in found])) if found else []
        items = [
            {"subject": m.subject, "similarity": round_half_up(s), "image_id": m.image_id}
            for m, s in zip(found, sims, strict=True)
        ]
        if min_similarity is not None:
            items = [i for i in items if i["similarity"] >= min_similarity]
        result.append({"embedding": row, "similarities": items})
    return JSONResponse({"result": result})


@router.post("/embeddings/faces/{image_id}/verify", summary="Compare raw embeddings with one stored face")
async def verify_embeddings(
    image_id: str, request: Request, state: State, service: RecognitionService
) -> JSONResponse:
    body = await read_json(request, state.settings.max_body_size)
    raw = body.get("embeddings") if isinstance(body, dict) else None
    pack = state.engine.pack
    queries = vectors(raw, "embeddings", pack.embedding_size, pack.id)
    stored = await run_blocking(state.store.get_face, service.id, image_id) if is_uuid(image_id) else None
    if stored is None or stored.pack != pack.id:
        raise IMAGE_ID_INCORRECT
    cosines = normalize_rows(queries) @ normalize_rows(stored.embedding[None, :])[0]
    sims = similarity(state, cosines)
    result = [{"embedding": row, "similarity": round_half_up(s)} for row, s in zip(raw, sims, strict=True)]
    result.sort(key=lambda item: item["similarity"], reverse=True)
    return JSONResponse({"result": result})
