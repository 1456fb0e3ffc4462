"""Everything read from a request, checked the way CompreFace checks it.

- Query parameters are parsed leniently, as Spring does: case-insensitive booleans, an empty value
  means the default. FastAPI's own validation would reject ``status=True`` variants, empty values
  (the community SDK sends ``face_plugins=`` and ``threshold=``) or ``face_plugins=undefined``
  (Double Take), so the routes read raw strings and convert them here.
- Images come as multipart parts (``file``, ``source_image``, ``target_image``) or as a JSON body with
  the same keys holding base64 strings.
- JSON bodies, subject names and raw embedding vectors are validated here, before any of it reaches the
  engine or the database.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile

from faceatlas.api.errors import (
    NO_FACE,
    NOT_BASE64,
    ApiError,
    bad_extension,
    empty_field,
    missing_part,
    something_went_wrong,
    subject_pattern,
    validation,
)

# ----------------------------------------------------------------------------- query parameters
_TRUE = {"true", "1", "yes", "on", "y", "t"}
# Spring binds int parameters to a Java int: anything outside fails to convert (and would overflow
# an SQL OFFSET once multiplied by the page size)
JAVA_INT_MIN, JAVA_INT_MAX = -(2**31), 2**31 - 1
_FALSE = {"false", "0", "no", "off", "n", "f"}
CALCULATOR = "calculator"


def query(request: Request) -> dict[str, str]:
    # the last value wins, as with Spring's single-valued @RequestParam
    return dict(request.query_params.items())


def _value(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse_bool(params: Mapping[str, str], name: str, default: bool) -> bool:
    value = _value(params, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise validation(f"{name}: Failed to convert value '{value[:40]}' to boolean")


def parse_int(params: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    value = _value(params, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = JAVA_INT_MAX + 1
    if not JAVA_INT_MIN <= number <= JAVA_INT_MAX:
        raise validation(f"{name}: Failed to convert value '{value[:40]}' to int")
    if minimum is not None and number < minimum:
        raise validation(f"{name}: must be greater than or equal to {minimum}")
    return number


def parse_float(params: Mapping[str, str], name: str) -> float | None:
    value = _value(params, name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise validation(f"{name}: Failed to convert value '{value[:40]}' to double") from None


def parse_plugins(params: Mapping[str, str], available: Iterable[str]) -> tuple[str, ...]:
    """Requested plugin slugs (comma- or space-separated); unknown ones are dropped, as the core does."""
    value = _value(params, "face_plugins")
    if value is None:
        return ()
    known = set(available)
    requested = [slug for slug in re.split(r"[,\s]+", value.lower()) if slug]
    return tuple(dict.fromkeys(slug for slug in requested if slug in known))


@dataclass(frozen=True, slots=True)
class FaceQuery:
    """The detection options shared by recognize, verify and detect."""

    limit: int = 0
    det_prob_threshold: float | None = None
    plugins: tuple[str, ...] = ()
    status: bool = False
    detect_faces: bool = True
    prediction_count: int = 1
    min_similarity: float | None = None
    unique_subjects: bool = False


def parse_face_query(params: Mapping[str, str], plugins_available: Iterable[str]) -> FaceQuery:
    limit = parse_int(params, "limit", 0, minimum=0)
    threshold = parse_float(params, "det_prob_threshold")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        # the core rejects it with a 400, which the API turns into "no face" (code 28)
        raise NO_FACE
    prediction_count = parse_int(params, "prediction_count", 1)
    if prediction_count == 0 or prediction_count < -1:
        raise validation("prediction_count: must be greater than or equal to 1")
    min_similarity = parse_float(params, "min_similarity")
    if min_similarity is not None and not 0.0 <= min_similarity <= 1.0:
        raise validation("min_similarity: must be between 0 and 1")
    return FaceQuery(
        limit=limit,
        det_prob_threshold=threshold,
        plugins=parse_plugins(params, (*plugins_available, CALCULATOR)),
        status=parse_bool(params, "status", False),
        detect_faces=parse_bool(params, "detect_faces", True),
        prediction_count=prediction_count,
        min_similarity=min_similarity,
        unique_subjects=parse_bool(params, "unique_subjects", False),
    )


# ----------------------------------------------------------------------------- names
_SUBJECT_PATTERN = re.compile(r"^[^;/\\]+$")
MAX_NAME = 255  # database column size; CompreFace's subject_name is varchar(255) too
MAX_SUBJECT = MAX_NAME


def check_name(value: str, field: str) -> str:
    """A name the database can hold on every backend: PostgreSQL refuses NUL characters and
    varchar(255) overflows, SQLite would store both, so both are refused here (code 26).
    Subjects are also stored lower-cased, which can make them longer ('İ' becomes two characters)."""
    if "\x00" in value:
        raise validation(f"{field}: must not contain NUL characters")
    if len(value) > MAX_NAME or len(value.lower()) > MAX_NAME:
        raise validation(f"{field}: size must be between 1 and {MAX_NAME}")
    return value


def subject_filter(params: Mapping[str, str]) -> str | None:
    """The optional ``subject`` filter of list and delete (blank: no filter)."""
    subject = (params.get("subject") or "").strip()
    return check_name(subject, "subject") if subject else None


def check_subject_body(value: Any, field: str = "subject") -> str:
    """SubjectDto's checks: present, 1-50 characters (code 26), no ';', '/' or '\\' (code 36)."""
    if value is None or (isinstance(value, str) and not value.strip() and value):
        raise empty_field(field)
    if not isinstance(value, str):
        raise validation(f"{field}: must be a string")
    if not 1 <= len(value) <= 50:
        raise validation(f"{field}: size must be between 1 and 50")
    if not _SUBJECT_PATTERN.match(value):
        raise subject_pattern(value)
    return check_name(value, field)


# ----------------------------------------------------------------------------- JSON and image bodies
# CompreFace's image.types (application.yml)
ALLOWED_EXTENSIONS = frozenset({"tif", "tiff", "jpg", "jpeg", "png", "bmp", "ico", "gif", "webp"})
_BASE64 = re.compile(rb"^[A-Za-z0-9+/=_\-\s]*$")


def too_large(limit: int) -> ApiError:
    return ApiError(413, 0, f"The image is larger than the limit of {limit} bytes")


def is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


def decode_base64(value: Any, max_size: int) -> bytes:
    if not isinstance(value, str) or not value:
        raise NOT_BASE64
    raw = value.encode("ascii", "replace")
    # commons-codec isBase64 accepts only the alphabet and whitespace, so a "data:" URI fails
    if not _BASE64.match(raw):
        raise NOT_BASE64
    if len(raw) * 3 // 4 > max_size + 3:
        raise too_large(max_size)
    compact = re.sub(rb"\s+", b"", raw).replace(b"-", b"+").replace(b"_", b"/")
    try:
        data = base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise NOT_BASE64 from None
    if len(data) > max_size:
        raise too_large(max_size)
    return data


async def read_json(request: Request, max_body: int) -> Any:
    body = await request.body()
    if len(body) > max_body:
        raise too_large(max_body)
    try:
        return json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise something_went_wrong("The request body is not valid JSON") from None
    except RecursionError:  # thousands of nested arrays: deeper than the parser's stack
        raise something_went_wrong("The request body is nested too deeply") from None


async def read_upload(upload: UploadFile, max_size: int) -> bytes:
    name = upload.filename or ""
    extension = PurePosixPath(name).suffix.lower().lstrip(".")
    if extension not in ALLOWED_EXTENSIONS:
        raise bad_extension(name)
    data = await upload.read(max_size + 1)
    if len(data) > max_size:
        raise too_large(max_size)
    return data


async def read_images(request: Request, parts: tuple[str, ...], max_size: int, max_body: int) -> list[bytes]:
    """The bytes of each named image part, from multipart or from a base64 JSON body."""
    if is_json(request):
        body = await read_json(request, max_body)
        if not isinstance(body, dict):
            raise empty_field(parts[0])
        out = []
        for part in parts:
            if body.get(part) in (None, ""):
                raise empty_field(part)
            out.append(decode_base64(body[part], max_size))
        return out
    content_length = request.headers.get("content-length")
    if content_length and content_length.isdigit() and int(content_length) > max_body:
        raise too_large(max_body)
    try:
        form = await request.form(max_files=len(parts) + 8, max_fields=64)
    except ApiError:  # the body passed the limit while streaming
        raise
    except Exception:  # malformed multipart or no body at all: the part is simply missing
        raise missing_part(parts[0]) from None
    out = []
    for part in parts:
        upload = form.get(part)
        if not isinstance(upload, UploadFile):
            raise missing_part(part)
        out.append(await read_upload(upload, max_size))
    return out


# ----------------------------------------------------------------------------- raw embeddings
def vectors(value: Any, field: str, dim: int, pack: str) -> np.ndarray:
    """A (n, dim) float32 array from a JSON list of number lists; empty gives code 5."""
    if value is None or (isinstance(value, list) and not value):
        raise empty_field(field)
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise ApiError(400, 0, f"Field {field} must be a list of number lists")
    for row in value:
        if len(row) != dim:
            raise ApiError(
                400,
                0,
                f"Embeddings in {field} must have {dim} values (model pack {pack}), not {len(row)}",
            )
        # exact types: a bool is an int to Python, and a nested list would make a 3-d array
        if not all(type(v) in (int, float) for v in row):
            raise ApiError(400, 0, f"Field {field} must hold numbers only")
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise ApiError(400, 0, f"Field {field} must hold numbers only") from None
    if not np.all(np.isfinite(array)) or np.any(np.linalg.norm(array, axis=1) == 0):
        raise ApiError(400, 0, f"Embeddings in {field} must be finite and non-zero")
    return array


def vector(value: Any, field: str, dim: int, pack: str) -> np.ndarray:
    if value is None or (isinstance(value, list) and not value):
        raise empty_field(field)
    if not isinstance(value, list) or any(isinstance(v, list) for v in value):
        raise ApiError(400, 0, f"Field {field} must be a list of numbers")
    return vectors([value], field, dim, pack)[0]
