"""Image decoding: real photos, every supported format and mode, and bad inputs that must fail typed."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageOps, features

from faceatlas.errors import (
    CorruptImageError,
    DecompressionBombError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from faceatlas.images import DecodedImage, decode_image, probe_image, read_exif_datetime

ORIENTATIONS = "exif-orientation"
EXAMPLES = "face_recognition_examples/examples"
RED = (255, 0, 0)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_with_header(width: int, height: int) -> bytes:
    """A well-formed PNG whose IHDR declares ``width`` x ``height`` RGB but holds one tiny IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def _red_centroid(rgb: np.ndarray) -> np.ndarray:
    """(x, y) centre of the saturated red marker, in pixel-edge coordinates."""
    rgb = rgb.astype(np.int16)
    mask = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    ys, xs = np.nonzero(mask)
    assert xs.size > 0, "marker not found"
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


@pytest.fixture(scope="module")
def photo_rgb(photos: Path) -> np.ndarray:
    """A real 1920x1080 photo as an upright RGB array."""
    return decode_image(photos / EXAMPLES / "obama-1080p.jpg").rgb


@pytest.fixture(scope="module")
def small_rgb(photo_rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(photo_rgb, (64, 48), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def marked_12mp(photo_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 4000x3000 grey photo with a red square; returns (upright RGB, marker centre in pixels)."""
    gray = cv2.cvtColor(
        cv2.resize(photo_rgb, (4000, 3000), interpolation=cv2.INTER_LINEAR), cv2.COLOR_RGB2GRAY
    )
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    rgb[500:620, 3000:3120] = RED
    return rgb, np.array([3060.0, 560.0])


# --- orientation and scale ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
def test_exif_orientations_all_decode_upright(photos: Path, kind: str) -> None:
    reference = decode_image(photos / ORIENTATIONS / f"{kind}_1.jpg")
    expected_size = (1800, 1200) if kind == "Landscape" else (1200, 1800)
    assert reference.original_size == expected_size
    assert (reference.width, reference.height) == expected_size
    for orientation in range(9):
        path = photos / ORIENTATIONS / f"{kind}_{orientation}.jpg"
        decoded = decode_image(path)
        assert decoded.format == "JPEG"
        assert decoded.original_size == expected_size
        assert decoded.rgb.shape == reference.rgb.shape
        assert decoded.rgb.dtype == np.uint8 and decoded.rgb.flags.c_contiguous
        # each file is a separately encoded JPEG, so only near-identical
        assert np.abs(decoded.rgb.astype(np.int16) - reference.rgb).mean() < 6, path.name
        with Image.open(path) as im:
            assert np.array_equal(decoded.rgb, np.asarray(ImageOps.exif_transpose(im).convert("RGB")))
        assert probe_image(path) == ("JPEG", expected_size)

        reduced = decode_image(path, target_size=400)
        assert reduced.scale == 4.0
        assert reduced.original_size == expected_size
        assert (reduced.width * 4, reduced.height * 4) == expected_size


def test_target_size_decodes_jpeg_reduced_in_dct_domain(tmp_path: Path, marked_12mp) -> None:
    rgb, marker = marked_12mp
    path = tmp_path / "big.jpg"
    path.write_bytes(_encode(Image.fromarray(rgb), "JPEG", quality=90))

    full = decode_image(path)
    assert full.scale == 1.0 and full.rgb.shape == (3000, 4000, 3)
    reduced = decode_image(path, target_size=640)
    assert reduced.rgb.shape == (750, 1000, 3)  # 1/4: the largest reduction keeping >= 640
    assert reduced.scale == 4.0
    assert reduced.original_size == (4000, 3000)
    assert reduced.width * reduced.scale == pytest.approx(4000)
    # same picture as an area-resized full decode
    expected = cv2.resize(full.rgb, (1000, 750), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.rgb.astype(np.int16) - expected).mean() < 3
    found = reduced.to_original(_red_centroid(reduced.rgb))
    assert np.abs(found - marker).max() < 2

    assert decode_image(path, target_size=400).rgb.shape == (375, 500, 3)  # 1/8
    assert decode_image(path, target_size=1500).rgb.shape == (1500, 2000, 3)  # 1/2
    assert decode_image(path, target_size=2001).rgb.shape == (3000, 4000, 3)  # never below target


@pytest.mark.parametrize("target_size", [300, 640, 1001, 2000])
def test_target_size_never_goes_below_target_on_odd_sizes(photo_rgb: np.ndarray, target_size: int) -> None:
    odd = Image.fromarray(cv2.resize(photo_rgb, (2501, 1407), interpolation=cv2.INTER_LINEAR))
    decoded = decode_image(_encode(odd, "JPEG", quality=85), target_size=target_size)
    progressive = decode_image(_encode(odd, "JPEG", quality=85, progressive=True), target_size=target_size)
    assert progressive.rgb.shape == decoded.rgb.shape and progressive.scale == decoded.scale
    long_side = max(decoded.width, decoded.height)
    assert long_side >= target_size
    assert long_side < 2 * target_size or decoded.scale == 8.0 or decoded.scale == 1.0
    factor = int(decoded.scale)
    assert decoded.scale == factor and factor in (1, 2, 4, 8)
    assert (decoded.width, decoded.height) == (-(-2501 // factor), -(-1407 // factor))


def test_rotated_reduced_jpeg_maps_back_to_upright_pixels(marked_12mp) -> None:
    rgb, marker = marked_12mp
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": store the pixels turned the other way
    stored = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)
    data = _encode(stored, "JPEG", quality=90, exif=exif.tobytes())

    decoded = decode_image(data, target_size=640)
    assert decoded.original_size == (4000, 3000)
    assert decoded.rgb.shape == (750, 1000, 3)
    found = decoded.to_original(_red_centroid(decoded.rgb))
    assert np.abs(found - marker).max() < 2
    assert probe_image(data) == ("JPEG", (4000, 3000))


def test_target_size_resizes_other_formats_only_when_much_larger(photo_rgb: np.ndarray) -> None:
    big = cv2.resize(photo_rgb, (2000, 1500), interpolation=cv2.INTER_AREA)
    png = _encode(Image.fromarray(big), "PNG", compress_level=1)
    decoded = decode_image(png, target_size=640)
    assert decoded.format == "PNG"
    assert decoded.rgb.shape == (480, 640, 3)
    assert decoded.scale == pytest.approx(2000 / 640)
    assert decoded.original_size == (2000, 1500)
    np.testing.assert_allclose(decoded.to_original(np.array([640.0, 480.0])), [2000.0, 1500.0])
    # at most twice the target: kept at full size
    assert decode_image(png, target_size=1000).scale == 1.0
    assert decode_image(png, target_size=1000).rgb.shape == (1500, 2000, 3)


# --- bad inputs ---------------------------------------------------------------------------------------


def test_empty_inputs_raise_empty_image_error(tmp_path: Path) -> None:
    empty_file = tmp_path / "empty.jpg"
    empty_file.write_bytes(b"")
    for source in (b"", bytearray(), memoryview(b""), io.BytesIO(), empty_file, str(empty_file)):
        with pytest.raises(EmptyImageError, match="empty"):
            decode_image(source)
    with pytest.raises(EmptyImageError):
        probe_image(empty_file)
    with pytest.raises(EmptyImageError):
        decode_image(np.zeros((0, 10, 3), np.uint8))


def test_truncated_jpeg_is_corrupt(photos: Path) -> None:
    data = (photos / EXAMPLES / "obama.jpg").read_bytes()
    for cut in (data[: len(data) // 2], data[:20]):
        for target_size in (None, 200):
            with pytest.raises(CorruptImageError) as caught:
                decode_image(cut, target_size=target_size)
            assert "truncated" in str(caught.value) or "JPEG" in str(caught.value)


def test_text_file_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("Meeting notes: bring the photos.\nSecond line.\n")
    with pytest.raises(UnsupportedImageError, match="text, not an image") as caught:
        decode_image(path)
    assert "notes.jpg" in str(caught.value)
    with pytest.raises(UnsupportedImageError, match="text"):
        probe_image(path)


def test_tiny_files_are_unsupported(tmp_path: Path) -> None:
    for content in (b"ab\n", b"\x00", b"RIFF", b"\xff\xd8"):
        path = tmp_path / "tiny"
        path.write_bytes(content)
        with pytest.raises((UnsupportedImageError, CorruptImageError)):
            decode_image(path)


def test_random_bytes_are_unsupported() -> None:
    noise = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    noise = b"\x00\x01" + noise  # no accidental image signature
    with pytest.raises(UnsupportedImageError, match="not a supported image format"):
        decode_image(noise)


def test_one_pixel_png_decodes() -> None:
    decoded = decode_image(_encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"))
    assert decoded.rgb.shape == (1, 1, 3)
    assert decoded.rgb[0, 0].tolist() == [10, 20, 30]
    assert decoded.original_size == (1, 1) and decoded.scale == 1.0


def test_png_header_claiming_50000x50000_fails_before_decoding() -> None:
    bomb = _png_with_header(50_000, 50_000)
    assert len(bomb) < 200
    assert probe_image(bomb) == ("PNG", (50_000, 50_000))  # the header alone is readable
    with pytest.raises(DecompressionBombError, match=r"50000x50000 = 2500\.0 MP, over the 100\.0 MP limit"):
        decode_image(bomb)
    with pytest.raises(DecompressionBombError, match=r"2500\.0 MP"):
        decode_image(bomb, target_size=640)


def test_pixel_limit_is_configurable(photos: Path) -> None:
    path = photos / EXAMPLES / "obama-240p.jpg"
    with pytest.raises(DecompressionBombError, match="427x240"):
        decode_image(path, max_pixels=100_000)
    assert decode_image(path, max_pixels=427 * 240).original_size == (427, 240)


def test_degenerate_png_is_corrupt() -> None:
    with pytest.raises(CorruptImageError):
        decode_image(_png_with_header(0, 10))


def test_bytes_over_the_limit_raise_too_large(tmp_path: Path, photos: Path) -> None:
    data = (photos / EXAMPLES / "obama.jpg").read_bytes()
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    limit = len(data) - 1
    for source in (data, path, io.BytesIO(data)):
        with pytest.raises(
            ImageTooLargeError, match=f"is {len(data):,} bytes, over the {limit:,} bytes limit"
        ):
            decode_image(source, max_bytes=limit)
    assert decode_image(data, max_bytes=len(data)).original_size == (910, 1137)


def test_errors_are_image_errors_and_value_errors() -> None:
    for error in (EmptyImageError, ImageTooLargeError, DecompressionBombError, UnsupportedImageError):
        assert issubclass(error, ImageError) and issubclass(error, ValueError)
    assert issubclass(CorruptImageError, ImageError)


def test_wrong_source_types_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "missing.jpg")
    with pytest.raises(TypeError, match="cannot decode an image from int"):
        decode_image(42)  # type: ignore[arg-type]
    path = tmp_path / "text.txt"
    path.write_text("hello")
    with open(path) as text_mode, pytest.raises(TypeError, match="binary mode"):
        decode_image(text_mode)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target_size"):
        decode_image(b"x", target_size=0)


# --- formats and modes --------------------------------------------------------------------------------


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (32, 24), color) for color in (RED, (0, 255, 0), (0, 0, 255))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 3
    decoded = decode_image(data)
    assert decoded.format == "GIF"
    assert decoded.rgb.shape == (24, 32, 3)
    assert np.all(decoded.rgb == RED)


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    gray = np.linspace(0, 65535, 256 * 16).astype(np.uint16).reshape(16, 256)
    path = tmp_path / "gray16.png"
    assert cv2.imwrite(str(path), gray)
    decoded = decode_image(path)
    expected = np.rint(gray / 257.0).astype(np.uint8)
    assert np.array_equal(decoded.rgb[..., 0], expected)
    assert np.array_equal(decoded.rgb[..., 0], decoded.rgb[..., 2])
    assert decoded.rgb.max() == 255 and decoded.rgb.min() == 0

    bgr = np.stack([gray, gray[::-1], np.full_like(gray, 40000)], axis=-1)
    path = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(path), bgr)
    decoded = decode_image(path)
    expected_rgb = (bgr[..., ::-1] / 257.0).astype(np.int16)
    assert np.abs(decoded.rgb.astype(np.int16) - expected_rgb).max() <= 1


def test_cmyk_jpeg_decodes_to_source_colours() -> None:
    colours = [(200, 30, 30), (30, 160, 60), (40, 60, 200), (128, 128, 128), (250, 250, 250), (20, 20, 20)]
    rgb = np.concatenate([np.full((32, 32, 3), colour, np.uint8) for colour in colours], axis=1)
    data = _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "CMYK"
    decoded = decode_image(data)
    assert decoded.rgb.shape == rgb.shape
    assert np.abs(decoded.rgb.astype(np.int16) - rgb).mean() < 6
    reduced = decode_image(data, target_size=50)
    assert reduced.scale == 2.0 and reduced.rgb.shape == (16, 96, 3)


def test_palette_png_with_transparency_is_composited_on_white() -> None:
    palette_image = Image.new("P", (20, 10), 0)
    palette_image.putpalette([0, 0, 0, 200, 40, 40] + [0, 0, 0] * 254)
    palette_image.paste(1, (10, 0, 20, 10))
    data = _encode(palette_image, "PNG", transparency=0)
    decoded = decode_image(data)
    assert np.all(decoded.rgb[:, :10] == 255)  # transparent index -> white, not black
    assert np.all(decoded.rgb[:, 10:] == (200, 40, 40))


def test_gray_alpha_and_rgba_are_composited_on_white() -> None:
    la = Image.new("LA", (4, 2), (60, 255))
    la.putpixel((0, 0), (60, 0))
    decoded = decode_image(_encode(la, "PNG"))
    assert decoded.rgb[0, 0].tolist() == [255, 255, 255]
    assert decoded.rgb[1, 3].tolist() == [60, 60, 60]

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[...] = (200, 100, 0, 255)
    rgba[0, 0] = (200, 100, 0, 128)
    decoded = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    half = [round(v * 128 / 255 + 255 * 127 / 255) for v in (200, 100, 0)]
    assert np.abs(decoded.rgb[0, 0].astype(int) - half).max() <= 1
    assert decoded.rgb[1, 1].tolist() == [200, 100, 0]


def test_grayscale_and_bilevel_images(small_rgb: np.ndarray) -> None:
    gray = Image.fromarray(small_rgb).convert("L")
    for fmt in ("PNG", "JPEG"):
        decoded = decode_image(_encode(gray, fmt))
        assert decoded.rgb.shape == (48, 64, 3)
        assert np.array_equal(decoded.rgb[..., 0], decoded.rgb[..., 1])
        assert np.abs(decoded.rgb[..., 0].astype(np.int16) - np.asarray(gray)).mean() < 3
    bilevel = decode_image(_encode(gray.convert("1"), "PNG"))
    assert set(np.unique(bilevel.rgb).tolist()) <= {0, 255}


@pytest.mark.parametrize(
    ("fmt", "options", "tolerance"),
    [
        ("PNG", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("WEBP", {"quality": 90}, 8),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("TIFF", {"compression": "tiff_lzw"}, 0),
        ("PPM", {}, 0),
        ("HEIF", {"quality": 90}, 8),
        pytest.param(
            "AVIF",
            {"quality": 90},
            8,
            marks=pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF (< 11.3)"),
        ),
    ],
)
def test_formats_decode_to_the_source_pixels(
    small_rgb: np.ndarray, fmt: str, options: dict, tolerance: int
) -> None:
    if fmt == "HEIF":
        pillow_heif.register_heif_opener()  # for saving; decode_image registers it by itself
    data = _encode(Image.fromarray(small_rgb), fmt, **options)
    decoded = decode_image(data)
    assert decoded.format == fmt
    assert decoded.rgb.shape == small_rgb.shape
    assert np.abs(decoded.rgb.astype(np.int16) - small_rgb).mean() <= tolerance
    assert probe_image(data) == (fmt, (64, 48))


def test_ico_decodes_its_largest_icon(small_rgb: np.ndarray) -> None:
    square = Image.fromarray(np.ascontiguousarray(small_rgb[:, :48]))
    data = _encode(square, "ICO", sizes=[(16, 16), (48, 48)])
    decoded = decode_image(data)
    assert decoded.format == "ICO"
    assert decoded.rgb.shape == (48, 48, 3)
    assert np.abs(decoded.rgb.astype(np.int16) - small_rgb[:, :48]).mean() < 2


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF", "HEIF"])
def test_exif_orientation_in_other_formats(small_rgb: np.ndarray, fmt: str) -> None:
    upright = cv2.cvtColor(cv2.cvtColor(small_rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    upright[:8, :8] = RED  # the only red: the grey photo has none
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned clockwise; display turns it back counter-clockwise
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_270)
    if fmt == "HEIF":
        pillow_heif.register_heif_opener()
    options = {"exif": exif} if fmt == "TIFF" else {"exif": exif.tobytes(), "quality": 95}
    data = _encode(stored, fmt, **options)
    decoded = decode_image(data)
    assert decoded.original_size == (64, 48)
    assert decoded.rgb.shape == (48, 64, 3)
    assert np.abs(_red_centroid(decoded.rgb) - [4, 4]).max() < 1.5
    assert probe_image(data) == (fmt, (64, 48))


# --- other kinds of source ----------------------------------------------------------------------------


def test_every_source_kind_gives_the_same_pixels(tmp_path: Path, photos: Path) -> None:
    path = photos / EXAMPLES / "obama-240p.jpg"
    data = path.read_bytes()
    reference = decode_image(data)
    assert reference.format == "JPEG" and reference.rgb.shape == (240, 427, 3)
    assert not reference.rgb.flags.writeable
    with open(path, "rb") as binary_file:
        from_file = decode_image(binary_file)
    with Image.open(path) as pil_image:
        from_pil = decode_image(pil_image)
    for decoded in (
        decode_image(str(path)),
        decode_image(path),
        decode_image(bytearray(data)),
        decode_image(memoryview(data)),
        decode_image(io.BytesIO(data)),
        from_file,
        from_pil,
    ):
        assert np.array_equal(decoded.rgb, reference.rgb)
        assert decoded.original_size == (427, 240) and decoded.scale == 1.0
    assert decode_image(reference) is reference


def test_pil_images_are_turned_upright_and_converted(photos: Path) -> None:
    path = photos / ORIENTATIONS / "Landscape_6.jpg"
    with Image.open(path) as im:
        decoded = decode_image(im)
    assert decoded.original_size == (1800, 1200) and decoded.format == "JPEG"
    assert np.array_equal(decoded.rgb, decode_image(path).rgb)

    in_memory = Image.fromarray(np.full((3, 5), 40000, np.uint16))
    assert in_memory.mode.startswith("I;16")
    decoded = decode_image(in_memory)
    assert decoded.format == "array"
    assert np.all(decoded.rgb == round(40000 / 257))
    assert probe_image(in_memory) == ("array", (5, 3))

    # 32-bit integer and float images: 8-bit range kept, 16-bit range scaled, floats in 0..1 stretched
    assert decode_image(Image.fromarray(np.full((2, 2), 200, np.int32), "I")).rgb[0, 0, 0] == 200
    assert decode_image(Image.fromarray(np.full((2, 2), 65535, np.int32), "I")).rgb[0, 0, 0] == 255
    assert decode_image(Image.fromarray(np.full((2, 2), 0.5, np.float32), "F")).rgb[0, 0, 0] == 128
    wide = decode_image(Image.fromarray(np.array([[-1000.0, 3000.0]], np.float32), "F"))
    assert wide.rgb[0, :, 0].tolist() == [0, 255]


def test_numpy_arrays_are_used_as_given() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    decoded = decode_image(rgb, target_size=8)
    assert decoded.format == "array" and decoded.scale == 1.0 and decoded.original_size == (40, 30)
    assert np.shares_memory(decoded.rgb, rgb)  # no copy
    assert not decoded.rgb.flags.writeable and rgb.flags.writeable
    assert probe_image(rgb) == ("array", (40, 30))

    bgr_view = rgb[..., ::-1]
    assert np.array_equal(decode_image(bgr_view).rgb, bgr_view)
    assert decode_image(bgr_view).rgb.flags.c_contiguous

    gray = rgb[..., 0]
    assert np.array_equal(decode_image(gray).rgb, np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(decode_image(gray[..., None]).rgb[..., 2], gray)

    rgba = np.dstack([rgb, np.full((30, 40), 255, np.uint8)])
    assert np.array_equal(decode_image(rgba).rgb, rgb)
    rgba[..., 3] = 0
    assert np.all(decode_image(rgba).rgb == 255)

    gray16 = np.array([[0, 257, 65535], [32768, 1000, 65534]], np.uint16)
    assert decode_image(gray16).rgb[..., 1].tolist() == [[0, 1, 255], [128, 4, 255]]
    assert decode_image(np.dstack([gray16] * 3)).rgb[..., 0].tolist() == [[0, 1, 255], [128, 4, 255]]
    assert decode_image(np.eye(2, dtype=bool)).rgb[..., 0].tolist() == [[255, 0], [0, 255]]

    with pytest.raises(UnsupportedImageError, match="float64"):
        decode_image(np.zeros((4, 4, 3)))
    with pytest.raises(UnsupportedImageError, match="shape"):
        decode_image(np.zeros((4, 4, 2), np.uint8))


def test_decoded_image_helpers() -> None:
    decoded = DecodedImage(
        rgb=np.zeros((10, 20, 3), np.uint8), scale=2.5, original_size=(50, 25), format="JPEG"
    )
    assert (decoded.width, decoded.height) == (20, 10)
    mapped = decoded.to_original(np.array([[1, 2], [4, 8]]))
    assert mapped.dtype == np.float64 and mapped.tolist() == [[2.5, 5.0], [10.0, 20.0]]
    assert decoded.to_original(np.array([2.0], np.float32)).dtype == np.float32
    with pytest.raises(AttributeError):
        decoded.scale = 1.0  # type: ignore[misc]


# --- EXIF dates ---------------------------------------------------------------------------------------


def test_read_exif_datetime_from_real_photos(photos: Path) -> None:
    assert read_exif_datetime(photos / EXAMPLES / "obama.jpg") == datetime(2012, 12, 6, 15, 46, 1)
    assert read_exif_datetime(photos / EXAMPLES / "biden.jpg") == datetime(2010, 5, 10, 10, 4, 1, 750000)
    with_zone = read_exif_datetime(photos / "deepface-pairs" / "img1.jpg")
    assert with_zone == datetime(2019, 7, 20, 17, 45, 22, 160000, tzinfo=timezone(timedelta(hours=-7)))
    assert read_exif_datetime(photos / ORIENTATIONS / "Landscape_0.jpg") is None


def test_read_exif_datetime_fallbacks(small_rgb: np.ndarray) -> None:
    image = Image.fromarray(small_rgb)
    exif = Image.Exif()
    exif[306] = "2020:01:02 03:04:05"
    assert read_exif_datetime(_encode(image, "JPEG", exif=exif.tobytes())) == datetime(2020, 1, 2, 3, 4, 5)
    exif.get_ifd(0x8769)[36867] = "2019:12:31 23:59:58"
    exif.get_ifd(0x8769)[36881] = "+02:00"
    assert read_exif_datetime(io.BytesIO(_encode(image, "JPEG", exif=exif.tobytes()))) == datetime(
        2019, 12, 31, 23, 59, 58, tzinfo=timezone(timedelta(hours=2))
    )
    placeholder = Image.Exif()
    placeholder[306] = "0000:00:00 00:00:00"
    assert read_exif_datetime(_encode(image, "JPEG", exif=placeholder.tobytes())) is None
    assert read_exif_datetime(_encode(image, "PNG")) is None
    with pytest.raises(UnsupportedImageError):
        read_exif_datetime(b"plain text, no image")
