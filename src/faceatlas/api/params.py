"""Lenient query-parameter parsing, as Spring does it: case-insensitive booleans, empty value = default.

FastAPI's own validation would reject ``status=True`` variants, empty values (the community SDK
sends ``face_plugins=`` and ``threshold=``) or ``face_plugins=undefined`` (Double Take), so the
routes read raw strings and convert them here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from faceatlas.api.errors import NO_FACE, ApiError, validation

_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}


def _value(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse_bool(params: Mapping[str, str], name: str, default: bool) -> bool:
    value = _value(params, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise validation(f"{name}: Failed to convert value '{value}' to boolean")


def parse_int(params: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    value = _value(params, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise validation(f"{name}: Failed to convert value '{value}' to int") from None
    if minimum is not None and number < minimum:
        raise validation(f"{name}: must be greater than or equal to {minimum}")
    return number


def parse_float(params: Mapping[str, str], name: str) -> float | None:
    value = _value(params, name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise validation(f"{name}: Failed to convert value '{value}' to double") from None


def parse_plugins(params: Mapping[str, str], available: Iterable[str]) -> tuple[str, ...]:
    """Requested plugin slugs (comma- or space-separated); unknown ones are dropped, as the core does."""
    value = _value(params, "face_plugins")
    if value is None:
        return ()
    known = set(available)
    requested = [slug for slug in re.split(r"[,\s]+", value.lower()) if slug]
    return tuple(dict.fromkeys(slug for slug in requested if slug in known))


@dataclass(frozen=True, slots=True)
class FaceQuery:
    """The detection options shared by recognize, verify and detect."""

    limit: int = 0
    det_prob_threshold: float | None = None
    plugins: tuple[str, ...] = ()
    status: bool = False
    detect_faces: bool = True
    prediction_count: int = 1
    min_similarity: float | None = None
    unique_subjects: bool = False


CALCULATOR = "calculator"


def parse_face_query(params: Mapping[str, str], plugins_available: Iterable[str]) -> FaceQuery:
    limit = parse_int(params, "limit", 0, minimum=0)
    threshold = parse_float(params, "det_prob_threshold")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        # the core rejects it with a 400, which the API turns into "no face" (code 28)
        raise NO_FACE
    prediction_count = parse_int(params, "prediction_count", 1)
    if prediction_count == 0 or prediction_count < -1:
        raise validation("prediction_count: must be greater than or equal to 1")
    min_similarity = parse_float(params, "min_similarity")
    if min_similarity is not None and not 0.0 <= min_similarity <= 1.0:
        raise validation("min_similarity: must be between 0 and 1")
    return FaceQuery(
        limit=limit,
        det_prob_threshold=threshold,
        plugins=parse_plugins(params, (*plugins_available, CALCULATOR)),
        status=parse_bool(params, "status", False),
        detect_faces=parse_bool(params, "detect_faces", True),
        prediction_count=prediction_count,
        min_similarity=min_similarity,
        unique_subjects=parse_bool(params, "unique_subjects", False),
    )


__all__ = ["ApiError", "FaceQuery", "parse_bool", "parse_face_query", "parse_float", "parse_int"]
