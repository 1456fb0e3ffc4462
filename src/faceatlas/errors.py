"""Typed errors raised by the faceatlas core.

Front ends map these to their own vocabulary (HTTP codes, CLI messages); the core never
formats user-facing output itself.
"""

from __future__ import annotations


class FaceAtlasError(Exception):
    """Base class of every error faceatlas raises on purpose."""


class ImageError(FaceAtlasError, ValueError):
    """An image could not be used."""


class EmptyImageError(ImageError):
    """The input holds no bytes at all."""


class ImageTooLargeError(ImageError):
    """The encoded input is larger than the configured byte limit."""


class DecompressionBombError(ImageError):
    """The image declares more pixels than the configured pixel limit."""


class UnsupportedImageError(ImageError):
    """The bytes are not an image format faceatlas can decode."""


class CorruptImageError(ImageError):
    """The format was recognised but the data is broken or truncated."""


class ModelError(FaceAtlasError):
    """A model pack or model file could not be loaded."""


class ProviderUnavailableError(ModelError):
    """An execution provider that was asked for is not available on this machine."""


class ModelNotInstalledError(ModelError):
    """A model pack's files are not present in the model directory."""


class ModelIntegrityError(ModelError):
    """A model file's size or hash does not match the expected value."""
