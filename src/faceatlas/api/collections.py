"""The server's face collections: one :mod:`faceatlas.index` index per recognition service.

The collections themselves live in :mod:`faceatlas.index.service`; this module keeps the names the
routes use, and CompreFace's rounding of similarities.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from faceatlas.index.service import IndexOptions, Match, release_free_memory
from faceatlas.index.service import ServiceCollection as Collection
from faceatlas.index.service import ServiceCollections as Collections

__all__ = ["Collection", "Collections", "IndexOptions", "Match", "release_free_memory", "round_half_up"]


def round_half_up(value: float, places: int = 5) -> float:
    """Java's BigDecimal.valueOf(x).setScale(places, HALF_UP), which CompreFace applies to similarities."""
    return float(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
