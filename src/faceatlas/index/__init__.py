"""Nearest-face search: one interface (:class:`FaceIndex`) with exact, HNSW and pgvector backends.

Used by the REST server's recognition services (:mod:`faceatlas.index.service`) and the library's
search; :meth:`FaceIndex.knn` gives the k-NN lists a clustering graph needs.
"""

from faceatlas.index.base import (
    AUTO_HNSW_FROM,
    INDEX_CHOICES,
    FaceIndex,
    Hits,
    IndexSettingError,
    IndexUnavailableError,
)
from faceatlas.index.memory import ExactIndex, HnswIndex

__all__ = [
    "AUTO_HNSW_FROM",
    "INDEX_CHOICES",
    "ExactIndex",
    "FaceIndex",
    "Hits",
    "HnswIndex",
    "IndexSettingError",
    "IndexUnavailableError",
    "build_index",
]


def build_index(
    kind: str, dim: int, *, count: int = 0, key_dtype: str = "int64", **options: object
) -> FaceIndex:
    """An empty in-memory index: ``exact``, ``hnsw``, or ``auto`` (HNSW from AUTO_HNSW_FROM faces)."""
    if kind == "auto":
        kind = "hnsw" if count >= AUTO_HNSW_FROM else "exact"
    if kind == "exact":
        return ExactIndex(dim, key_dtype=key_dtype)
    if kind == "hnsw":
        return HnswIndex(dim, key_dtype=key_dtype)
    raise IndexSettingError(f"in-memory index must be exact, hnsw or auto, not {kind!r}")
