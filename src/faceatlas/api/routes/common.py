"""Helpers shared by the routers: key checks per prefix, the write guard, JSON bodies."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from faceatlas.api.errors import (
    WRITES_DURING_MIGRATION,
    empty_field,
    subject_pattern,
    validation,
)
from faceatlas.api.state import ServerState, authenticate, get_state
from faceatlas.storage.services import ServiceRecord

State = Annotated[ServerState, Depends(get_state)]
ApiKey = Annotated[str | None, Header(alias="x-api-key")]

_SUBJECT_PATTERN = re.compile(r"^[^;/\\]+$")
MAX_SUBJECT = 255  # database column size; CompreFace's subject_name is varchar(255) too


def recognition_service(state: State, x_api_key: ApiKey = None) -> ServiceRecord:
    return authenticate(state, x_api_key, "recognition")


def detection_service(state: State, x_api_key: ApiKey = None) -> ServiceRecord:
    return authenticate(state, x_api_key, "detection")


def verification_service(state: State, x_api_key: ApiKey = None) -> ServiceRecord:
    return authenticate(state, x_api_key, "verification")


RecognitionService = Annotated[ServiceRecord, Depends(recognition_service)]
DetectionService = Annotated[ServiceRecord, Depends(detection_service)]
VerificationService = Annotated[ServiceRecord, Depends(verification_service)]


def query(request: Request) -> dict[str, str]:
    # the last value wins, as with Spring's single-valued @RequestParam
    return dict(request.query_params.items())


def guard_writes(state: ServerState) -> None:
    if state.migration is not None and state.migration.running:
        raise WRITES_DURING_MIGRATION


def check_subject_body(value: Any, field: str = "subject") -> str:
    """SubjectDto's checks: present, 1-50 characters (code 26), no ';', '/' or '\\' (code 36)."""
    if value is None or (isinstance(value, str) and not value.strip() and value):
        raise empty_field(field)
    if not isinstance(value, str):
        raise validation(f"{field}: must be a string")
    if not 1 <= len(value) <= 50:
        raise validation(f"{field}: size must be between 1 and 50")
    if not _SUBJECT_PATTERN.match(value):
        raise subject_pattern(value)
    return value
