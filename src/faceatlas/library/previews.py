"""Downscaled photo previews for screens: decoded at reduced size (DCT scaling for JPEG), EXIF-upright,
cached as JPEG files — a 12 MP original is never sent unless asked for."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
from sqlalchemy import select

from faceatlas.errors import FaceAtlasError
from faceatlas.images import decode_image
from faceatlas.library.browse import PhotoNotFoundError
from faceatlas.library.tables import Photo
from faceatlas.storage import Database

#: Long sides a preview may have (a few sizes keep the cache small and shared between screens).
PREVIEW_SIZES = (320, 640, 1280, 2048)


class PreviewError(FaceAtlasError, OSError):
    """The photo can no longer be read."""


def preview_size(requested: int) -> int:
    """The smallest allowed size at least ``requested`` (the largest when more is asked)."""
    return next((s for s in PREVIEW_SIZES if s >= requested), PREVIEW_SIZES[-1])


def photo_path(db: Database, photo_id: int) -> tuple[str, str | None]:
    with db.session() as session:
        row = session.execute(select(Photo.path, Photo.content_hash).where(Photo.id == photo_id)).first()
    if row is None:
        raise PhotoNotFoundError(f"no photo {photo_id}")
    return row[0], row[1]


def photo_preview(
    db: Database, photo_id: int, cache_dir: str | os.PathLike[str], *, size: int = 1280
) -> Path:
    """Path of the cached JPEG preview of a photo, long side at most ``preview_size(size)`` pixels."""
    size = preview_size(size)
    path, content_hash = photo_path(db, photo_id)
    target = Path(cache_dir) / f"{photo_id}-{(content_hash or 'nohash')[:16]}-{size}.jpg"
    if target.is_file():
        return target
    try:
        decoded = decode_image(path, target_size=size)
    except (FaceAtlasError, OSError) as exc:
        raise PreviewError(f"cannot read photo {photo_id}: {exc}") from exc
    rgb = decoded.rgb
    long_side = max(rgb.shape[:2])
    if long_side > size:  # DCT scaling stops at a power of two; finish with an area resize
        scale = size / long_side
        rgb = cv2.resize(
            rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp.jpg")
    cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    os.replace(tmp, target)
    return target
