"""Shared vector math: unit normalisation, cosine ↔ distance, CompreFace's similarity.

Every embedding faceatlas stores is an L2-normalised float32 row, so the cosine of two faces and their
Euclidean distance carry the same information: ``d = sqrt(2 - 2·cos)``. The search works in cosines
(one matrix product); CompreFace's similarity and the calibration are defined on distances.
"""

from __future__ import annotations

import numpy as np

ArrayOrFloat = np.ndarray | float


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise each row (float32); zero rows stay zero."""
    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    unit: np.ndarray = x / np.maximum(norms, 1e-12)
    return unit


def cosine_to_distance(cosine: ArrayOrFloat) -> np.ndarray:
    """Euclidean distance between unit vectors with this cosine similarity."""
    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(cosine, dtype=np.float64), 0.0, 4.0))


def distance_to_cosine(distance: ArrayOrFloat) -> np.ndarray:
    """Cosine similarity of unit vectors at this Euclidean distance."""
    return 1.0 - np.asarray(distance, dtype=np.float64) ** 2 / 2.0


def compreface_similarity(distance: ArrayOrFloat, c0: float, c1: float) -> np.ndarray:
    """CompreFace's similarity (tanh((c0 - d)·c1) + 1) / 2 of unit embeddings at Euclidean distance ``d``."""
    return (np.tanh((c0 - np.asarray(distance, dtype=np.float64)) * c1) + 1.0) / 2.0


def similarity_of_cosine(cosine: ArrayOrFloat, c0: float, c1: float) -> np.ndarray:
    """CompreFace's similarity from a cosine (what the matrix-product search yields)."""
    return compreface_similarity(cosine_to_distance(cosine), c0, c1)
