"""Face thumbnails, cropped from the original photo on demand and cached as JPEG files."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select

from faceatlas.errors import FaceAtlasError, ThumbnailError
from faceatlas.images import decode_image
from faceatlas.library.tables import Face, Photo
from faceatlas.storage import Database


def library_cache_dir(url: str, kind: str = "thumbnails") -> Path:
    """One cache folder per library and kind, so face and photo ids of different libraries never collide."""
    import hashlib

    from faceatlas.models.store import cache_dir

    return cache_dir() / kind / hashlib.sha256(url.encode()).hexdigest()[:16]


def crop_face(
    rgb: np.ndarray, box: tuple[float, float, float, float], *, size: int, margin: float = 0.25
) -> np.ndarray:
    """A square ``size`` x ``size`` crop around ``box`` (decoded-image pixels), ``margin`` added per side."""
    x_min, y_min, x_max, y_max = box
    side = max(x_max - x_min, y_max - y_min) * (1 + 2 * margin)
    cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2
    # An affine warp handles boxes that reach past the image edge (padded with black).
    scale = size / max(side, 1e-6)
    matrix = np.array(
        [[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]], dtype=np.float64
    )
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)


def face_thumbnail(db: Database, face_id: int, cache_dir: str | os.PathLike[str], *, size: int = 160) -> Path:
    """Path of the cached JPEG thumbnail of a face (made now if missing or if the photo changed)."""
    with db.session() as session:
        row = session.execute(
            select(Face.x_min, Face.y_min, Face.x_max, Face.y_max, Photo.path, Photo.content_hash)
            .join(Photo, Photo.id == Face.photo_id)
            .where(Face.id == face_id)
        ).first()
    if row is None:
        raise ThumbnailError(f"no face {face_id}")
    x_min, y_min, x_max, y_max, path, content_hash = row
    target = Path(cache_dir) / f"{face_id}-{(content_hash or 'nohash')[:16]}-{size}.jpg"
    if target.is_file():
        return target
    try:
        decoded = decode_image(path, target_size=max(size * 4, 640))
    except (FaceAtlasError, OSError) as exc:
        raise ThumbnailError(f"cannot read the photo of face {face_id}: {exc}") from exc
    box = tuple(np.asarray([x_min, y_min, x_max, y_max]) / decoded.scale)
    crop = crop_face(decoded.rgb, box, size=size)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.jpg")
    cv2.imwrite(str(tmp), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    os.replace(tmp, target)
    return target
