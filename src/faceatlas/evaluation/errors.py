"""Errors of the evaluation layer."""

from __future__ import annotations

from faceatlas.errors import FaceAtlasError


class DatasetError(FaceAtlasError, ValueError):
    """An evaluation data set is missing, incomplete or malformed."""
