"""Errors of the evaluation layer."""

from __future__ import annotations

from faceatlas.errors import DatasetError

__all__ = ["DatasetError"]
