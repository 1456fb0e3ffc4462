"""The OpenCV fast path for colour JPEGs decodes the same pixels as Pillow, and leaves odd files to Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from faceatlas.errors import CorruptImageError, ImageError
from faceatlas.images import DEFAULT_MAX_PIXELS, _decode_jpeg_opencv, decode_image

PHOTO = "data/photos/face_recognition_examples/examples/obama-1080p.jpg"


def _jpeg(image: Image.Image, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("target_size", [None, 960, 400, 200])
def test_same_pixels_as_pillow(shared: Path, orientation: int, target_size: int | None) -> None:
    data = _jpeg(Image.open(shared / PHOTO).resize((2400, 1350)), orientation)
    fast = decode_image(data, target_size=target_size)
    with Image.open(io.BytesIO(data)) as im:
        factor = 1
        if target_size is not None:
            factor = next((f for f in (8, 4, 2) if -(-2400 // f) >= target_size), 1)
            im.draft("RGB", (2400 // factor, 1350 // factor))
        reference = np.asarray(ImageOps.exif_transpose(im.convert("RGB")))
    with Image.open(io.BytesIO(data)) as im:  # the fast path itself took this file
        assert _decode_jpeg_opencv(data, im, target_size, DEFAULT_MAX_PIXELS) is not None
    assert fast.format == "JPEG"
    assert fast.original_size == ((1350, 2400) if orientation in (6, 8) else (2400, 1350))
    if factor > 1:
        assert fast.scale == factor
        np.testing.assert_array_equal(fast.rgb, reference)
    else:  # no DCT reduction: the decoded image may be shrunk, never above twice the target
        full = decode_image(data)
        np.testing.assert_array_equal(full.rgb, reference)


def test_truncated_and_greyscale_jpegs_take_the_pillow_path(shared: Path) -> None:
    data = _jpeg(Image.open(shared / PHOTO))
    with pytest.raises(ImageError):
        decode_image(data[: len(data) // 2], target_size=960)
    with pytest.raises(CorruptImageError):
        decode_image(data[:600])
    with Image.open(io.BytesIO(data[: len(data) // 2])) as im:
        assert _decode_jpeg_opencv(data[: len(data) // 2], im, 960, DEFAULT_MAX_PIXELS) is None
    grey = decode_image(_jpeg(Image.open(shared / PHOTO).convert("L")), target_size=400)
    assert grey.rgb.shape[2] == 3 and np.array_equal(grey.rgb[..., 0], grey.rgb[..., 1])
