"""Image input of the CompreFace API: multipart parts (``file``, ``source_image``, ``target_image``)
or a JSON body with the same keys holding base64 strings."""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import PurePosixPath
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from faceatlas.api.errors import (
    NOT_BASE64,
    ApiError,
    bad_extension,
    empty_field,
    missing_part,
    something_went_wrong,
)

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
    except Exception:  # malformed multipart or no body at all: the part is simply missing
        raise missing_part(parts[0]) from None
    out = []
    for part in parts:
        upload = form.get(part)
        if not isinstance(upload, UploadFile):
            raise missing_part(part)
        out.append(await read_upload(upload, max_size))
    return out
