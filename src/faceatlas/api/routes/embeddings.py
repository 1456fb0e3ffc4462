"""Validation of raw embedding vectors sent to the ``/embeddings`` endpoints."""

from __future__ import annotations

from typing import Any

import numpy as np

from faceatlas.api.errors import ApiError, empty_field


def vectors(value: Any, field: str, dim: int, pack: str) -> np.ndarray:
    """A (n, dim) float32 array from a JSON list of number lists; empty gives code 5."""
    if value is None or (isinstance(value, list) and not value):
        raise empty_field(field)
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise ApiError(400, 0, f"Field {field} must be a list of number lists")
    for row in value:
        if len(row) != dim:
            raise ApiError(
                400,
                0,
                f"Embeddings in {field} must have {dim} values (model pack {pack}), not {len(row)}",
            )
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ApiError(400, 0, f"Field {field} must hold numbers only") from None
    if not np.all(np.isfinite(array)) or np.any(np.linalg.norm(array, axis=1) == 0):
        raise ApiError(400, 0, f"Embeddings in {field} must be finite and non-zero")
    return array


def vector(value: Any, field: str, dim: int, pack: str) -> np.ndarray:
    if value is None or (isinstance(value, list) and not value):
        raise empty_field(field)
    if not isinstance(value, list) or any(isinstance(v, list) for v in value):
        raise ApiError(400, 0, f"Field {field} must be a list of numbers")
    return vectors([value], field, dim, pack)[0]
