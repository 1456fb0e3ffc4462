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
    rgb: np.ndarray,
    box: tuple[float, float, float, float],
    *,
    size: int,
    margin: float = 0.25,
    landmarks: np.ndarray | None = None,
) -> np.ndarray:
    """A square ``size`` x ``size`` crop around ``box`` (decoded-image pixels), ``margin`` added per side.

    With the five ``landmarks`` (decoded-image pixels, eyes first) the crop is turned so that the eyes are
    level: a tilted or sideways face shows upright in every list."""
    x_min, y_min, x_max, y_max = box
    side = max(x_max - x_min, y_max - y_min) * (1 + 2 * margin)
    cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2
    scale = size / max(side, 1e-6)
    cos, sin = 1.0, 0.0
    if landmarks is not None:
        (lx, ly), (rx, ry) = np.asarray(landmarks, np.float64)[:2]
        length = float(np.hypot(rx - lx, ry - ly))
        if length > 1e-3:
            cos, sin = (rx - lx) / length, (ry - ly) / length
    # dest = scale * R(-angle) * (src - centre) + (size/2, size/2); an affine warp also pads boxes
    # that reach past the image edge (with black).
    rotation = np.array([[cos, sin], [-sin, cos]]) * scale
    shift = np.array([size / 2, size / 2]) - rotation @ np.array([cx, cy])
    matrix = np.hstack([rotation, shift[:, None]])
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)


def face_thumbnail(db: Database, face_id: int, cache_dir: str | os.PathLike[str], *, size: int = 160) -> Path:
    """Path of the cached JPEG thumbnail of a face (made now if missing or if the photo changed)."""
    with db.session() as session:
        row = session.execute(
            select(
                Face.x_min, Face.y_min, Face.x_max, Face.y_max, Face.landmarks, Photo.path, Photo.content_hash
            )
            .join(Photo, Photo.id == Face.photo_id)
            .where(Face.id == face_id)
        ).first()
    if row is None:
        raise ThumbnailError(f"no face {face_id}")
    x_min, y_min, x_max, y_max, landmark_bytes, path, content_hash = row
    # "-up": turned upright by the eyes (older, unturned crops in the cache are not reused)
    target = Path(cache_dir) / f"{face_id}-{(content_hash or 'nohash')[:16]}-{size}-up.jpg"
    if target.is_file():
        return target
    try:
        decoded = decode_image(path, target_size=max(size * 4, 640))
    except (FaceAtlasError, OSError) as exc:
        raise ThumbnailError(f"cannot read the photo of face {face_id}: {exc}") from exc
    box = tuple(np.asarray([x_min, y_min, x_max, y_max]) / decoded.scale)
    landmarks = None
    if landmark_bytes is not None:
        landmarks = np.frombuffer(landmark_bytes, np.float32).reshape(-1, 2) / decoded.scale
    crop = crop_face(decoded.rgb, box, size=size, landmarks=landmarks)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.jpg")
    cv2.imwrite(str(tmp), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    os.replace(tmp, target)
    return target
