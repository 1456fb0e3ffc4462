"""Robust image decoding: any supported input to an upright RGB uint8 array plus the scale back.

Every entry point of the engine goes through :func:`decode_image`, so this module is on the hot path of
indexing and is also the place where untrusted uploads are checked. Decisions, in one place:

- Inputs: ``bytes``/``bytearray``/``memoryview``, a path (``str`` or ``os.PathLike``), a binary file
  object (read from its current position), a numpy array, a ``PIL.Image.Image`` or an already decoded
  :class:`DecodedImage` (returned unchanged). A ``str`` is always a path, never base64.
- Formats: JPEG (and MPO), PNG/APNG, WebP, GIF, BMP, TIFF, ICO, PPM, HEIC/HEIF (pillow-heif) and AVIF.
  Other Pillow plugins (EPS, PSD, ...) are refused on purpose: some run external programs or are rarely
  worth the attack surface. Animated or multi-page files give their first frame.
- EXIF orientation is applied, so ``rgb`` is upright and ``original_size`` is the upright size.
- Transparency is composited on white (what a viewer shows on a page; transparent pixels often hold
  black or garbage that would otherwise become the background).
- 16-bit data is scaled to 8 bits (``round(v / 257)``), never clipped. Mode ``I`` (32-bit ints) is taken as
  8-bit when its values fit in 0..255, as 16-bit when they fit in 0..65535, else stretched min..max;
  mode ``F`` (float) as 0..1 when it fits there, as 0..255 when it fits there, else stretched min..max.
- ``rgb`` is always read-only: a decoded image can be shared between threads without copies. Copy it
  (``decoded.rgb.copy()``) before drawing on it. A numpy input is used as given (a read-only view, no
  copy when it already is C-contiguous RGB uint8) and gets neither EXIF handling nor ``target_size``.
- ``target_size``: JPEGs are reduced by 1/2, 1/4 or 1/8 inside libjpeg (DCT scaling, much faster than a
  full decode); other formats are decoded fully and shrunk with OpenCV's INTER_AREA only when their long
  side is more than twice ``target_size``. The decoded long side is never smaller than ``target_size``.
  ``scale`` maps decoded coordinates (pixel edges at integers) to original ones: it is exactly the DCT
  factor for JPEGs, and ``original long side / decoded long side`` after a resize, where the short axis
  is then off by at most half a decoded pixel.
- Errors are the typed ``faceatlas.errors.ImageError`` subclasses with a message naming the problem. A
  path that does not exist (or cannot be read) raises the usual ``OSError`` (``FileNotFoundError``,
  ``PermissionError``): that is a caller's mistake, not a bad image, and front ends never pass user paths.
- Memory: ``max_memory`` bounds the *working memory* of one decode in bytes: Pillow's pixel buffer, the
  codec's own buffers, the RGB result and every conversion on the way are estimated from the header
  (after the JPEG DCT reduction) and an image over the limit is refused before any pixel is decoded.
  Large images are converted to RGB in strips of rows, so alpha compositing or 16-bit scaling never
  holds a full-size temporary. A :class:`DecodeBudget` shared by the threads of a process makes
  concurrent decodes wait for memory instead of adding up, while keeping a reserve for small images
  so that a few huge uploads never starve ordinary requests.
- Pixel limits are checked on the header's declared size before any pixel is decoded. Files are identified
  through Pillow's plugin registry so that Pillow's process-wide guard (``PIL.Image.MAX_IMAGE_PIXELS``)
  does not pre-empt ``max_pixels``; the GIF, ICO and TIFF plugins still apply that guard to frames and
  tiles, and it is then reported as our ``DecompressionBombError`` too.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from faceatlas.errors import (
    CorruptImageError,
    DecompressionBombError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "DecodeBudget",
    "DecodedImage",
    "ImageSource",
    "decode_image",
    "decode_memory",
    "probe_image",
    "read_exif_datetime",
]

ImageSource = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO | np.ndarray | Image.Image

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_PIXELS = 100_000_000

# Pillow plugin names tried, in order of how common they are in photo libraries.
SUPPORTED_FORMATS: tuple[str, ...] = (
    "JPEG",
    "PNG",
    "HEIF",
    "WEBP",
    "GIF",
    "TIFF",
    "BMP",
    "DIB",
    "AVIF",
    "ICO",
    "PPM",
)
_PILLOW_PLUGINS = (
    "JpegImagePlugin",
    "PngImagePlugin",
    "WebPImagePlugin",
    "GifImagePlugin",
    "TiffImagePlugin",
    "BmpImagePlugin",
    "AvifImagePlugin",
    "IcoImagePlugin",
    "PpmImagePlugin",
)
_DCT_FORMATS = frozenset({"JPEG", "MPO"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

# Leading bytes of the supported formats, to tell "broken PNG" from "not an image at all".
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (8, b"WEBP", "WebP"),
    (4, b"ftyp", "HEIF/AVIF"),
    (0, b"BM", "BMP"),
)
# Bytes that occur in text (printable ASCII, whitespace, anything >= 0x80 as in UTF-8).
_TEXT_BYTES = bytes([9, 10, 12, 13, *range(32, 127), *range(128, 256)])

_EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_EXIF_DATETIME = 306
_EXIF_DATETIME_ORIGINAL = 36867
_EXIF_OFFSET_TIME = 36880
_EXIF_OFFSET_TIME_ORIGINAL = 36881
_EXIF_SUBSEC_TIME = 37520
_EXIF_SUBSEC_TIME_ORIGINAL = 37521
_EXIF_DATE_RE = re.compile(r"(\d{4})[:\-/.](\d{2})[:\-/.](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_EXIF_OFFSET_RE = re.compile(r"([+-])(\d{2}):?(\d{2})")

# Exceptions Pillow's plugins raise for broken data (it has no single "corrupt" class); the AVIF and
# HEIF codecs raise RuntimeError.
_PILLOW_DATA_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    zlib.error,
    RuntimeError,
)


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An upright RGB image and how it maps back to the original's pixels."""

    rgb: np.ndarray  # (H, W, 3) uint8, C-contiguous, read-only, RGB order
    scale: float  # original pixels per decoded pixel (1.0 = full size, > 1.0 when reduced)
    original_size: tuple[int, int]  # (width, height) of the original after EXIF orientation
    format: str  # Pillow's format name ("JPEG", "PNG", ...) or "array" for in-memory pixels

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    def to_original(self, coords: np.ndarray) -> np.ndarray:
        """Map decoded-image coordinates (any shape, x/y pairs or boxes) to original-image pixels."""
        coords = np.asarray(coords)
        if not np.issubdtype(coords.dtype, np.floating):
            coords = coords.astype(np.float64)
        return coords * self.scale


class DecodeBudget:
    """Bytes of decoding working memory shared by the threads of a process (a byte semaphore).

    A decode reserves its estimated working memory for as long as it runs. Large decodes (more than
    a quarter of ``reserve``) together never take more than ``total - reserve``, so small decodes
    always find room and wait only for each other. One decode may need at most ``max_single``.
    """

    def __init__(self, total: int, *, reserve: int | None = None) -> None:
        self.total = total
        self.reserve = total // 4 if reserve is None else reserve
        self.small = self.reserve // 4
        self.max_single = total - self.reserve
        self.in_use = 0
        self.large_in_use = 0
        self._changed = threading.Condition()

    def _fits(self, nbytes: int) -> bool:
        if self.in_use + nbytes > self.total:
            return False
        return nbytes <= self.small or self.large_in_use + nbytes <= self.max_single

    def try_acquire(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` if they are free now (for callers that wait their own way, e.g. an
        event loop, instead of blocking a thread); pair with :meth:`release`."""
        with self._changed:
            if not self._fits(nbytes):
                return False
            self.in_use += nbytes
            self.large_in_use += nbytes if nbytes > self.small else 0
            return True

    def release(self, nbytes: int) -> None:
        with self._changed:
            self.in_use -= nbytes
            self.large_in_use -= nbytes if nbytes > self.small else 0
            self._changed.notify_all()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Reserve ``nbytes`` for the block, waiting (in this thread) until they are free."""
        with self._changed:
            while not self._fits(nbytes):
                self._changed.wait()
            self.in_use += nbytes
            self.large_in_use += nbytes if nbytes > self.small else 0
        try:
            yield
        finally:
            self.release(nbytes)


def decode_memory(
    source: bytes | bytearray | memoryview,
    *,
    target_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_memory: int | None = None,
) -> int:
    """Bytes of working memory :func:`decode_image` would need for ``source``, from the header only
    (after the JPEG DCT reduction ``target_size`` allows). Raises ``DecompressionBombError`` when that is
    over ``max_memory``, and the other typed image errors for inputs that are not images."""
    data, label = _read_source(source, max_bytes)
    with _pillow_errors(data, label), _open(io.BytesIO(data)) as im:
        width, height = im.size
        _draft(im, target_size)
        needed = _working_memory(im, (width, height), target_size)
        _MemoryLimits(max_memory, None).check(needed, f"{width}x{height} {im.mode}")
        return needed


def decode_image(
    source: ImageSource | DecodedImage,
    *,
    target_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_memory: int | None = None,
    budget: DecodeBudget | None = None,
) -> DecodedImage:
    """Decode ``source`` to an upright RGB uint8 image, reduced towards ``target_size`` when asked.

    ``max_memory`` refuses images whose decoding would need more working memory (bytes, estimated
    from the header); ``budget`` makes the decode wait until its working memory is free.

    Raises ``EmptyImageError``, ``ImageTooLargeError``, ``DecompressionBombError``,
    ``UnsupportedImageError`` or ``CorruptImageError`` (all ``faceatlas.errors.ImageError``) for bad
    images, ``TypeError`` for a source of the wrong type and ``OSError`` for a path that cannot be read.
    """
    if target_size is not None and target_size < 1:
        raise ValueError(f"target_size must be a positive number of pixels, got {target_size}")
    if isinstance(source, DecodedImage):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    limits = _MemoryLimits(max_memory, budget)
    if isinstance(source, Image.Image):
        with _pillow_errors(None):
            return _decode_pillow(source, target_size, max_pixels, limits, allow_draft=False)
    data, label = _read_source(source, max_bytes)
    with _pillow_errors(data, label), _open(io.BytesIO(data)) as im:
        fast = _decode_jpeg_opencv(data, im, target_size, max_pixels, limits)
        if fast is not None:
            return fast
        return _decode_pillow(im, target_size, max_pixels, limits, allow_draft=True)


def probe_image(source: ImageSource) -> tuple[str, tuple[int, int]]:
    """Format and upright ``(width, height)`` from the header only, without decoding pixels.

    A path is opened lazily (only the header is read). Raises the same typed errors as
    :func:`decode_image` for inputs that are not images.
    """
    if isinstance(source, DecodedImage):
        return source.format, source.original_size
    if isinstance(source, np.ndarray):
        return "array", (int(source.shape[1]), int(source.shape[0]))
    if isinstance(source, Image.Image):
        return source.format or "array", _upright_size(source.size, _header_orientation(source))
    with _opened_header(source) as im:
        return im.format or "unknown", _upright_size(im.size, _header_orientation(im))


def read_exif_datetime(
    source: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO,
) -> datetime | None:
    """When the photo was taken: EXIF DateTimeOriginal, else DateTime; ``None`` when absent or invalid.

    The result is timezone-aware when the file records the offset (OffsetTimeOriginal / OffsetTime),
    naive (camera-local time) otherwise. Inputs that are not images raise the typed image errors; a
    missing or unreadable EXIF block gives ``None``.
    """
    with _opened_header(source) as im:
        try:
            exif = im.getexif()
            sub = exif.get_ifd(_EXIF_IFD)
        except Exception:  # a broken EXIF block is common in the wild and must not fail a scan
            return None
        for stamp, offset, subsec in (
            (
                sub.get(_EXIF_DATETIME_ORIGINAL),
                sub.get(_EXIF_OFFSET_TIME_ORIGINAL),
                sub.get(_EXIF_SUBSEC_TIME_ORIGINAL),
            ),
            (
                exif.get(_EXIF_DATETIME) or sub.get(_EXIF_DATETIME),
                sub.get(_EXIF_OFFSET_TIME),
                sub.get(_EXIF_SUBSEC_TIME),
            ),
        ):
            parsed = _parse_exif_datetime(stamp, offset, subsec)
            if parsed is not None:
                return parsed
    return None


# --- reading the input -----------------------------------------------------------------------------


def _read_source(source: object, max_bytes: int) -> tuple[bytes | bytearray | memoryview, str]:
    """The encoded bytes of ``source`` and a label for messages, with the byte limits enforced."""
    if isinstance(source, bytes | bytearray | memoryview):
        _check_byte_count(memoryview(source).nbytes, max_bytes, "image data")
        return source, "image data"
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        label = repr(os.fsdecode(path))
        # stat first: a huge file is refused without reading it
        _check_byte_count(os.stat(path).st_size, max_bytes, label)
        with open(path, "rb") as f:
            # read() sizes its buffer from fstat: several times faster than read(max_bytes + 1)
            data = f.read()
        _check_byte_count(len(data), max_bytes, label)  # the file may have changed since stat
        return data, label
    if callable(getattr(source, "read", None)):
        label = f"file object {getattr(source, 'name', '')!r}".replace(" ''", "")
        remaining = _remaining_bytes(source)
        if remaining is not None:
            _check_byte_count(remaining, max_bytes, label)
        # an unbounded read() is much faster on real files, so use it when the size is known to be fine
        data = source.read() if remaining is not None else source.read(max_bytes + 1)  # type: ignore[attr-defined]
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"{label} must be opened in binary mode (read() returned {type(data).__name__})")
        _check_byte_count(len(data), max_bytes, label)
        return data, label
    raise TypeError(
        f"cannot decode an image from {type(source).__name__}; pass bytes, a path, a binary file, "
        "a numpy array or a PIL image"
    )


def _remaining_bytes(fileobj: object) -> int | None:
    try:
        if not fileobj.seekable():  # type: ignore[attr-defined]
            return None
        position = fileobj.tell()  # type: ignore[attr-defined]
        end = fileobj.seek(0, os.SEEK_END)  # type: ignore[attr-defined]
        fileobj.seek(position)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
    return max(0, end - position)


def _check_byte_count(count: int, max_bytes: int, label: str) -> None:
    if count == 0:
        raise EmptyImageError(f"{label} is empty (0 bytes)")
    if count > max_bytes:
        raise ImageTooLargeError(f"{label} is {_byte_size(count)}, over the {_byte_size(max_bytes)} limit")


def _byte_size(count: int) -> str:
    return f"{count / 1_000_000:.1f} MB ({count:,} bytes)" if count >= 1_000_000 else f"{count:,} bytes"


@functools.cache
def _register_plugins() -> None:
    """Load the Pillow plugins we accept, and HEIC/HEIF, once per process on first use."""
    for module in _PILLOW_PLUGINS:
        with contextlib.suppress(ImportError):  # e.g. AVIF needs Pillow >= 11.3
            importlib.import_module(f"PIL.{module}")
    try:
        import pillow_heif
    except ImportError:  # a build without pillow-heif simply cannot read HEIC
        return
    pillow_heif.register_heif_opener()


def _open(fp: BinaryIO) -> Image.Image:
    """``Image.open`` restricted to our formats, without Pillow's global pixel guard.

    Pillow checks its process-wide ``MAX_IMAGE_PIXELS`` while identifying the file, before we can see
    the size; going through its plugin registry lets ``max_pixels`` alone decide, with our message.
    """
    _register_plugins()
    prefix = fp.read(16)
    for name in SUPPORTED_FORMATS:
        opener = Image.OPEN.get(name)
        if opener is None:
            continue
        factory, accept = opener
        try:
            accepted = accept(prefix) if accept is not None else True
            if not accepted or isinstance(accepted, str):
                continue
            fp.seek(0)
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # what Image.open also takes as "not this format"
    raise UnidentifiedImageError("cannot identify image file")


@contextlib.contextmanager
def _opened_header(source: object) -> Iterator[Image.Image]:
    """The lazily opened (header-only) image of a probe, with Pillow's errors mapped to ours."""
    if isinstance(source, str | os.PathLike):
        label = repr(os.fsdecode(os.fspath(source)))
        if os.stat(source).st_size == 0:
            raise EmptyImageError(f"{label} is empty (0 bytes)")
        with open(source, "rb") as f:
            head = f.read(512)
            f.seek(0)
            with _pillow_errors(head, label), _open(f) as im:
                yield im
    else:
        data, label = _read_source(source, DEFAULT_MAX_BYTES)
        with _pillow_errors(data, label), _open(io.BytesIO(data)) as im:
            yield im


@contextlib.contextmanager
def _pillow_errors(data: bytes | bytearray | memoryview | None, label: str = "image") -> Iterator[None]:
    """Turn Pillow's exceptions into our typed errors, naming the problem."""
    try:
        yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.1f} MP" if found else "too many pixels"
        raise DecompressionBombError(
            f"{label} declares {size}, over Pillow's own limit (PIL.Image.MAX_IMAGE_PIXELS)"
        ) from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(data, label) from exc
    except _PILLOW_DATA_ERRORS as exc:
        raise CorruptImageError(f"{label} is broken or truncated: {exc}") from exc


def _unidentified(data: bytes | bytearray | memoryview | None, label: str) -> ImageError:
    sample = bytes(memoryview(data)[:512]) if data is not None else b""
    for offset, magic, name in _SIGNATURES:
        if sample[offset : offset + len(magic)] == magic:
            return CorruptImageError(f"{label} starts like a {name} file but its header is broken")
    if sample and not sample.translate(None, _TEXT_BYTES):
        preview = sample[:40].decode("utf-8", errors="replace")
        return UnsupportedImageError(f"{label} is text, not an image (starts with {preview!r})")
    return UnsupportedImageError(
        f"{label} is not a supported image format (first bytes: {sample[:12].hex(' ')}); "
        f"supported: {', '.join(SUPPORTED_FORMATS)}"
    )


# --- decoding ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _MemoryLimits:
    max_memory: int | None
    budget: DecodeBudget | None

    def check(self, nbytes: int, describe: str) -> None:
        limit = self.max_memory
        if self.budget is not None:
            limit = self.budget.max_single if limit is None else min(limit, self.budget.max_single)
        if limit is not None and nbytes > limit:
            raise DecompressionBombError(
                f"image is {describe}: decoding it needs about {nbytes / 1e6:.0f} MB of memory, "
                f"over the {limit / 1e6:.0f} MB limit"
            )

    def held(self, nbytes: int, describe: str) -> contextlib.AbstractContextManager[None]:
        self.check(nbytes, describe)
        return self.budget.hold(nbytes) if self.budget is not None else contextlib.nullcontext()


# Bytes per pixel of Pillow's buffer for a mode (multi-band modes take 4 bytes a pixel)
_PILLOW_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Codecs that decode into a buffer of their own before Pillow copies it, or (TIFF) turn the
# image upright with a second full-size buffer
_CODEC_PIXEL_BYTES = {"WEBP": 4, "HEIF": 4, "AVIF": 4, "TIFF": 4}
# Peak temporaries of converting a whole image at once, per pixel (measured on the code paths of
# _to_rgb_array); large images are converted in strips instead
_WHOLE_CONVERSION_BYTES = {"alpha": 36, "I": 28, "F": 28, "I;16": 16, "L": 4, "RGB": 0, "other": 8}
_STRIP_PIXELS = 2_000_000  # pixels per strip of a strip-wise conversion
_STRIP_ABOVE = 4_000_000  # images with more pixels than this are converted in strips


def _conversion_kind(im: Image.Image) -> str:
    mode = im.mode
    if mode == "RGB":
        return "RGB"
    if mode in ("L", "1") and "transparency" not in im.info:
        return "L"
    if mode.startswith("I;16"):
        return "I;16"
    if mode in ("I", "F"):
        return mode
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return "alpha"
    return "other"


def _working_memory(im: Image.Image, original: tuple[int, int], target_size: int | None) -> int:
    """Estimated peak bytes of decoding ``im`` (already drafted) to the RGB result."""
    width, height = im.size
    pixels = width * height
    per_pixel = _PILLOW_PIXEL_BYTES.get(im.mode, 4) + _CODEC_PIXEL_BYTES.get(im.format or "", 0) + 3
    if target_size is None or max(width, height) <= 2 * target_size:
        per_pixel += 3  # turning the full-size result upright copies it
    if pixels > _STRIP_ABOVE:
        extra = _STRIP_PIXELS * _WHOLE_CONVERSION_BYTES["alpha"]
    else:
        extra = pixels * _WHOLE_CONVERSION_BYTES[_conversion_kind(im)]
    if im.format in _DCT_FORMATS and im.info.get("progressive"):
        # a progressive JPEG keeps every DCT coefficient (2 bytes) of every component at full size
        extra += original[0] * original[1] * 2 * len(im.getbands())
    return pixels * per_pixel + extra


def _decode_pillow(
    im: Image.Image,
    target_size: int | None,
    max_pixels: int,
    limits: _MemoryLimits = _MemoryLimits(None, None),
    *,
    allow_draft: bool,
) -> DecodedImage:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"image declares a degenerate size of {width}x{height} pixels")
    if width * height > max_pixels:
        raise DecompressionBombError(
            f"image is {width}x{height} = {width * height / 1e6:.1f} MP, "
            f"over the {max_pixels / 1e6:.1f} MP limit"
        )
    image_format = im.format or "array"

    scale = _draft(im, target_size) if allow_draft else 1.0
    needed = _working_memory(im, (width, height), target_size)
    with limits.held(needed, f"{width}x{height} {im.mode}"):
        im.load()
        rgb = _to_rgb(im)
        if target_size is not None and scale == 1.0 and max(rgb.shape[:2]) > 2 * target_size:
            rgb, scale = _shrink(rgb, target_size)
        orientation = _orientation(im)
        rgb = _apply_orientation(rgb, orientation)
    return DecodedImage(
        rgb=_read_only(rgb),
        scale=scale,
        original_size=_upright_size((width, height), orientation),
        format=image_format,
    )


# IMREAD flags of libjpeg's DCT-domain reduction by 1 (none), 2, 4 and 8.
_OPENCV_REDUCTION = {
    1: 0,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def _decode_jpeg_opencv(
    data: bytes | bytearray | memoryview,
    im: Image.Image,
    target_size: int | None,
    max_pixels: int,
    limits: _MemoryLimits = _MemoryLimits(None, None),
) -> DecodedImage | None:
    """The fast path for plain colour JPEGs: OpenCV's libjpeg-turbo decode, or None to let Pillow do it.

    Same pixels as Pillow's draft + load (both libjpeg-turbo, same DCT scaling; checked identical on
    the benchmark photos) but 10-15 % faster, because Pillow's decode ends in an extra copy of the
    image into NumPy. Pillow still reads the header (size, mode, EXIF orientation); anything unusual
    (CMYK, greyscale, progressive quirks, a file that does not end in an EOI marker and might be
    truncated, an image OpenCV refuses) goes to Pillow, whose errors explain what is wrong.
    """
    if im.format != "JPEG" or im.mode != "RGB" or bytes(data[-2:]) != b"\xff\xd9":
        return None
    width, height = im.size
    if width <= 0 or height <= 0 or width * height > max_pixels:
        return None
    factor = _dct_factor(max(width, height), target_size) if target_size is not None else 1
    flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION | _OPENCV_REDUCTION[factor]
    # the reduced image, and one more copy of it when it is turned upright
    needed = 2 * 3 * -(-width // factor) * -(-height // factor)
    with limits.held(needed, f"{width}x{height} JPEG"):
        rgb = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
        if rgb is None or rgb.shape != (-(-height // factor), -(-width // factor), 3):
            return None
        scale = float(factor)
        if target_size is not None and factor == 1 and max(rgb.shape[:2]) > 2 * target_size:
            rgb, scale = _shrink(rgb, target_size)
        orientation = _orientation(im)
        upright = _apply_orientation(rgb, orientation)
    return DecodedImage(
        rgb=_read_only(upright),
        scale=scale,
        original_size=_upright_size((width, height), orientation),
        format="JPEG",
    )


def _draft(im: Image.Image, target_size: int | None) -> float:
    """Ask libjpeg to decode a JPEG reduced towards ``target_size``; the scale it chose (1.0: none)."""
    width, height = im.size
    if target_size is None or im.format not in _DCT_FORMATS:
        return 1.0
    factor = _dct_factor(max(width, height), target_size)
    if factor > 1:
        # Pillow picks the largest of 8/4/2 that keeps both sides >= the requested size
        drafted = im.draft("RGB", (max(1, width // factor), max(1, height // factor)))
        if drafted is not None:
            return float(round(width / drafted[1][2]))
    return 1.0


def _dct_factor(long_side: int, target_size: int) -> int:
    """Largest libjpeg reduction (1, 2, 4, 8) that keeps the long side at or above ``target_size``."""
    for factor in (8, 4, 2):
        if -(-long_side // factor) >= target_size:
            return factor
    return 1


def _shrink(rgb: np.ndarray, target_size: int) -> tuple[np.ndarray, float]:
    height, width = rgb.shape[:2]
    ratio = max(width, height) / target_size
    new_size = (max(1, round(width / ratio)), max(1, round(height / ratio)))
    # cv2.resize is several times faster than Pillow's resize on these machines
    shrunk = cv2.resize(rgb, new_size, interpolation=cv2.INTER_AREA)
    return shrunk, max(width, height) / max(new_size)


def _to_rgb(im: Image.Image) -> np.ndarray:
    """The RGB pixels of a loaded image; a large one is converted strip by strip into one result, so
    that no conversion temporary is ever image-sized (every conversion is per pixel, except the
    min..max stretch of I/F images, which gets the whole image's extremes)."""
    width, height = im.size
    if width * height <= _STRIP_ABOVE:
        return _to_rgb_array(im)
    extremes = im.getextrema() if im.mode in ("I", "F") else None
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, _STRIP_PIXELS // width)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        out[top:bottom] = _to_rgb_array(im.crop((0, top, width, bottom)), extremes)
    return out


def _to_rgb_array(im: Image.Image, extremes: object = None) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode in ("L", "1") and "transparency" not in im.info:
        return cv2.cvtColor(np.asarray(im.convert("L") if mode == "1" else im), cv2.COLOR_GRAY2RGB)
    if mode.startswith("I;16"):
        return cv2.cvtColor(_from_16bit(np.asarray(im)), cv2.COLOR_GRAY2RGB)
    if mode in ("I", "F"):
        return cv2.cvtColor(_stretch_to_8bit(np.asarray(im), mode, extremes), cv2.COLOR_GRAY2RGB)
    if mode in _ALPHA_MODES or im.has_transparency_data:
        return _composite_on_white(np.asarray(im.convert("RGBA")))
    try:
        return np.asarray(im.convert("RGB"))  # P, CMYK (incl. Adobe-inverted), YCbCr, RGBX, ...
    except ValueError as exc:
        raise UnsupportedImageError(f"image mode {mode!r} cannot be converted to RGB") from exc


def _from_16bit(values: np.ndarray) -> np.ndarray:
    """Scale 0..65535 to 0..255 with rounding (v / 257), as every 16-bit viewer does."""
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _stretch_to_8bit(values: np.ndarray, mode: str, extremes: object = None) -> np.ndarray:
    if isinstance(extremes, tuple) and len(extremes) == 2:
        low, high = float(extremes[0]), float(extremes[1])
    else:
        low, high = float(values.min()), float(values.max())
    if mode == "F" and low >= 0.0 and high <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    if low >= 0 and high <= 255:
        return np.rint(values).astype(np.uint8)
    if mode == "I" and low >= 0 and high <= 65535:
        return _from_16bit(values)
    if high == low:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:]
    if alpha.min() == 255:
        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
    rgb = rgba[..., :3].astype(np.uint16)
    # out = rgb*a/255 + 255*(1-a/255), written so every intermediate fits in uint16
    out = rgb + ((255 - rgb) * (255 - alpha.astype(np.uint16)) + 127) // 255
    return out.astype(np.uint8)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # broken EXIF must not make an otherwise fine photo undecodable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _header_orientation(im: Image.Image) -> int:
    """Orientation still to apply to an unloaded image's ``size``.

    Pillow's TIFF plugin already reports the upright size and turns the pixels itself while loading.
    """
    return 1 if im.format == "TIFF" else _orientation(im)


def _apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored with EXIF ``orientation`` upright (same result as ``ImageOps.exif_transpose``)."""
    if orientation == 2:
        return cv2.flip(rgb, 1)
    if orientation == 3:
        return cv2.rotate(rgb, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(rgb, 0)
    if orientation == 5:
        return cv2.transpose(rgb)
    if orientation == 6:
        return cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(rgb), -1)
    if orientation == 8:
        return cv2.rotate(rgb, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return rgb


def _upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation >= 5 else (size[0], size[1])


def _read_only(rgb: np.ndarray) -> np.ndarray:
    rgb = np.ascontiguousarray(rgb)
    if rgb.flags.writeable:
        rgb = rgb.view()
        rgb.flags.writeable = False
    return rgb


def _from_array(array: np.ndarray) -> DecodedImage:
    if array.size == 0:
        raise EmptyImageError(f"image array is empty (shape {array.shape})")
    if array.dtype == np.uint16:
        array = _from_16bit(array)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        raise UnsupportedImageError(f"image array dtype {array.dtype} is not supported; pass uint8 or uint16")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        rgb = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_GRAY2RGB)
    elif array.ndim == 3 and array.shape[2] == 3:
        rgb = array
    elif array.ndim == 3 and array.shape[2] == 4:
        rgb = _composite_on_white(np.ascontiguousarray(array))
    else:
        raise UnsupportedImageError(
            f"image array has shape {array.shape}; expected (H, W), (H, W, 3) RGB or (H, W, 4) RGBA"
        )
    height, width = rgb.shape[:2]
    return DecodedImage(rgb=_read_only(rgb), scale=1.0, original_size=(width, height), format="array")


# --- EXIF dates --------------------------------------------------------------------------------------


def _parse_exif_datetime(stamp: object, offset: object, subsec: object) -> datetime | None:
    if isinstance(stamp, bytes):
        stamp = stamp.decode("ascii", errors="replace")
    if not isinstance(stamp, str):
        return None
    found = _EXIF_DATE_RE.search(stamp)
    if found is None:
        return None
    try:
        parsed = datetime(*(int(part) for part in found.groups()))  # type: ignore[misc]
    except ValueError:  # "0000:00:00 00:00:00" and other placeholders
        return None
    if isinstance(subsec, str) and subsec.strip().isdigit():
        digits = subsec.strip()[:6]
        parsed = parsed.replace(microsecond=int(digits.ljust(6, "0")))
    if isinstance(offset, str):
        zone = _EXIF_OFFSET_RE.fullmatch(offset.strip().rstrip("\x00"))
        if zone is not None:
            sign = -1 if zone.group(1) == "-" else 1
            delta = timedelta(hours=int(zone.group(2)), minutes=int(zone.group(3)))
            if delta <= timedelta(hours=14):
                parsed = parsed.replace(tzinfo=timezone(sign * delta))
    return parsed
