"""The face-index interface every backend implements, and the ranking rules they share.

An index holds unit vectors of one model pack. Every entry has a *key* (the face's id: an int64, or
fixed-width bytes for the server's UUIDs) and a *group* (int64: the subject or the photo it belongs
to), so that a search can return one result per group. Cosine similarity is the inner product of
unit vectors; backends normalise what they are given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from faceatlas.errors import FaceAtlasError

IndexKind = Literal["exact", "hnsw", "pgvector"]
INDEX_CHOICES = ("exact", "hnsw", "pgvector", "auto")
#: ``auto`` switches from the exact product to HNSW at this many faces (exact float32 search of 200 000
#: 128-d faces takes ~10 ms on one core here; HNSW stays under 1 ms at any size).
AUTO_HNSW_FROM = 200_000


class IndexUnavailableError(FaceAtlasError, RuntimeError):
    """The chosen backend cannot run here (library or database extension missing)."""


class IndexSettingError(FaceAtlasError, ValueError):
    """An unknown backend name or option."""


@dataclass(frozen=True, slots=True)
class Hits:
    """The results of one query, best first (parallel arrays)."""

    keys: np.ndarray
    groups: np.ndarray  # int64
    cosines: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.keys)


def empty_hits(key_dtype: np.dtype | str) -> Hits:
    return Hits(np.zeros(0, key_dtype), np.zeros(0, np.int64), np.zeros(0, np.float32))


def best_first(scores: np.ndarray, groups: np.ndarray, k: int, unique_groups: bool) -> np.ndarray:
    """Positions of the ``k`` best scores (k <= 0: all), optionally only the best of each group."""
    n = len(scores)
    if unique_groups and k > 0 and 8 * k < n:
        # the best k groups are almost always among the best few rows: sort only those, widen if not
        fetch = 8 * k
        while True:
            top = np.argpartition(-scores, fetch - 1)[:fetch]
            top = top[np.argsort(-scores[top], kind="stable")]
            _, first = np.unique(groups[top], return_index=True)
            if len(first) >= k or fetch >= n:
                return top[np.sort(first)][:k]
            fetch = min(n, 4 * fetch)
            if 2 * fetch >= n:
                break
    if unique_groups:
        order = np.argsort(-scores, kind="stable")
        # first (best) row of every group, kept in score order
        _, first = np.unique(groups[order], return_index=True)
        order = order[np.sort(first)]
        return order if k <= 0 else order[:k]
    if k <= 0 or k >= n:
        return np.argsort(-scores, kind="stable")
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as contiguous float32 (zero rows stay zero)."""
    from faceatlas.vectors import normalize_rows

    return np.ascontiguousarray(normalize_rows(np.atleast_2d(np.asarray(vectors, np.float32))), np.float32)


class FaceIndex(ABC):
    """Nearest-face search over the embeddings of one pack."""

    kind: str
    dim: int
    key_dtype: np.dtype

    @abstractmethod
    def __len__(self) -> int:
        """Number of faces held."""

    @abstractmethod
    def add(self, keys: np.ndarray, groups: np.ndarray, vectors: np.ndarray) -> None:
        """Insert faces; a key already present is replaced (never duplicated)."""

    @abstractmethod
    def remove(self, keys: np.ndarray) -> int:
        """Remove faces by key (unknown keys are skipped); returns how many were removed."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, *, unique_groups: bool = False) -> list[Hits]:
        """The ``k`` most similar faces (k <= 0: all) of every query row, best first."""

    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, cosines) of the ``k`` nearest faces of each query as ``(q, k)`` arrays, padded with
        cosine -inf where fewer exist (for k-NN graphs, e.g. clustering)."""
        found = self.search(queries, k)
        keys = np.zeros((len(found), k), self.key_dtype)
        cosines = np.full((len(found), k), -np.inf, np.float32)
        for row, hits in enumerate(found):
            keys[row, : len(hits)] = hits.keys
            cosines[row, : len(hits)] = hits.cosines
        return keys, cosines

    def sync(self) -> int:
        """Catch up with the database where the index lives there (pgvector); returns rows updated."""
        return 0

    def save(self, folder: Path, extra: dict[str, object] | None = None) -> None:
        """Write the index to ``folder`` so a later process can open it (in-memory backends)."""
        raise NotImplementedError(f"the {self.kind} index is not saved to files")

    def reserve(self, count: int) -> None:  # noqa: B027 (an optional hint: a no-op unless overridden)
        """Make room for ``count`` faces before a bulk load (a hint; backends may ignore it)."""

    @abstractmethod
    def clear(self) -> None:
        """Drop every face."""

    def describe(self) -> dict[str, object]:
        """What ``/status`` shows about this index."""
        return {"backend": self.kind, "faces": len(self), "dim": self.dim}
