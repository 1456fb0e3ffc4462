"""Face recognisers: aligned 112x112 crops in, L2-normalised embeddings out, batched."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from faceatlas.models.runtime import create_session
from faceatlas.vectors import normalize_rows

if TYPE_CHECKING:
    from faceatlas.models.packs import ModelRef
    from faceatlas.models.registry import LoadContext


class Recognizer:
    """An embedding network over 112x112 ArcFace-aligned RGB crops.

    ``mean``/``std`` give the network's input normalisation: SFace normalises inside its graph and
    takes raw 0..255 RGB (mean 0, std 1); InsightFace's ArcFace models take (x - 127.5) / 127.5.
    """

    input_size = 112

    def __init__(
        self,
        path: Path,
        providers: list[str],
        *,
        name: str,
        mean: float,
        std: float,
        threads: int | None = None,
        max_batch: int = 32,
    ):
        self.name = name
        self.session = create_session(path, providers, threads=threads)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.fixed_batch = first.shape[0] if isinstance(first.shape[0], int) else None
        self.embedding_size = int(self.session.get_outputs()[0].shape[-1])
        self.mean, self.std = np.float32(mean), np.float32(std)
        self.max_batch = 1 if self.fixed_batch == 1 else max_batch

    @classmethod
    def from_pack(cls, context: LoadContext, ref: ModelRef, **options: Any) -> Self:
        mean, std = context.spec.recognizer_normalisation
        return cls(
            context.path(ref.file),
            context.providers,
            name=context.spec.recognizer_name,
            mean=mean,
            std=std,
            threads=context.threads,
            **options,
        )

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N,112,112,3) uint8 RGB crops -> (N,d) float32 unit vectors."""
        if len(crops) == 0:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        blob = crops.astype(np.float32)
        if self.mean or self.std != 1:
            blob = (blob - self.mean) / self.std
        blob = np.ascontiguousarray(blob.transpose(0, 3, 1, 2))
        parts = [
            self.session.run(None, {self.input_name: blob[i : i + self.max_batch]})[0]
            for i in range(0, len(blob), self.max_batch)
        ]
        embeddings = np.concatenate(parts).astype(np.float32).reshape(len(crops), -1)
        return normalize_rows(embeddings)
