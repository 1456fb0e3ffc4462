"""CompreFace's error vocabulary: every failure is ``{"message": ..., "code": ...}`` with its HTTP status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("faceatlas.api")


class ApiError(Exception):
    """An error answered as CompreFace answers it (codes from CommonExceptionCode.java)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def something_went_wrong(message: str = "Something went wrong, please try again") -> ApiError:
    return ApiError(400, 0, message)


def empty_field(field: str) -> ApiError:
    return ApiError(400, 5, f"Field {field} cannot be empty")


def service_not_found(kind: str, api_key: str) -> ApiError:
    return ApiError(404, 10, f"{kind.capitalize()} service with API Key {api_key} not found")


MISSING_API_KEY = ApiError(400, 20, "Missing header: x-api-key")
API_KEY_NOT_UUID = ApiError(400, 26, "Service API key should be UUID")
NOT_BASE64 = ApiError(400, 21, "Provided value is not Base64")
NO_FACE = ApiError(400, 28, "No face is found in the given image")
MORE_THAN_ONE_FACE = ApiError(400, 31, "More than one face in the source image")
MIGRATION_RUNNING = ApiError(400, 27, "Migration already executing")
WRITES_DURING_MIGRATION = ApiError(405, 32, "Write operations during migration aren't allowed")
SUBJECT_EXISTS = ApiError(400, 43, "Subject already exists")
IMAGE_ID_INCORRECT = ApiError(404, 44, "Image Id is incorrect")


def bad_extension(filename: str) -> ApiError:
    return ApiError(400, 21, f"File [{filename}] has an unavailable extension")


def validation(message: str) -> ApiError:
    return ApiError(400, 26, message)


def missing_parameter(name: str) -> ApiError:
    return ApiError(400, 33, f"Required parameter {name} is missing")


def missing_part(name: str) -> ApiError:
    return ApiError(400, 34, f"Required part {name} is missing")


def subject_pattern(name: str) -> ApiError:
    return ApiError(400, 36, f"Subject name {name!r} must not contain ';', '/' or '\\'")


def wrong_embedding_count(expected: int, got: int) -> ApiError:
    return ApiError(400, 37, f"{expected} embeddings were expected, but {got} were provided")


def subject_not_found(name: str) -> ApiError:
    return ApiError(404, 42, f"Subject {name} not found")


def image_not_found(image_id: str) -> ApiError:
    return ApiError(404, 44, f"Image {image_id} not found")


def error_response(status: int, code: int, message: str) -> JSONResponse:
    response = JSONResponse({"message": message, "code": code}, status_code=status)
    if status == 413:
        # the rest of the body is not wanted: closing stops the client sending it
        response.headers["Connection"] = "close"
    return response


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Spring answers an unknown path or a wrong method with 404 and code 0
        status = 404 if exc.status_code == 405 else exc.status_code
        return error_response(status, 0, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        messages = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return error_response(400, 26, messages or "Invalid request")
