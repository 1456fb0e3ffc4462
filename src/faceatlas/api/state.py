"""Everything a request handler needs, built once per process at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Header, Request

from faceatlas.api.collections import Collections
from faceatlas.api.errors import API_KEY_NOT_UUID, MISSING_API_KEY, WRITES_DURING_MIGRATION, service_not_found
from faceatlas.api.settings import Settings
from faceatlas.images import DecodeBudget
from faceatlas.storage.db import Database
from faceatlas.storage.services import ServiceRecord, ServiceStore

if TYPE_CHECKING:
    from faceatlas.api.migration import Migration
    from faceatlas.engine import Engine

log = logging.getLogger("faceatlas.api")

# service type each URL prefix needs, and the word CompreFace uses for it in error messages
KEY_TYPES = {"recognition": "recognition", "detection": "detection", "verification": "verification"}
KEY_CACHE_SECONDS = 2.0
T = TypeVar("T")


def is_uuid(value: str) -> bool:
    if len(value) < 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


LARGE_DECODE_NICENESS = 10  # below ordinary requests: a pixel-heavy upload yields the CPU to them


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux: the priority of this thread alone
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LARGE_DECODE_NICENESS)


class DecodeGate:
    """The process's :class:`DecodeBudget`, waited for on the event loop: a request waiting for decoding
    memory holds no worker thread (a thread per waiting upload would soon leave none for the
    database calls of ordinary requests). Large decodes run one at a time on a thread of their own
    at a lower CPU priority, so that ordinary recognitions keep their speed meanwhile."""

    def __init__(self, budget: DecodeBudget) -> None:
        self.budget = budget
        self._released: anyio.Event | None = None
        self._large: ThreadPoolExecutor | None = None

    @asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[None]:
        while not self.budget.try_acquire(nbytes):
            if self._released is None:
                self._released = anyio.Event()
            await self._released.wait()
        try:
            yield
        finally:
            # reservations are taken and returned on the event loop only: no wake-up is missed
            self.budget.release(nbytes)
            released, self._released = self._released, None
            if released is not None:
                released.set()

    async def run(self, nbytes: int, decode: Callable[[], T]) -> T:
        """``decode()`` in a thread with ``nbytes`` of the budget reserved until it has finished."""
        async with self.hold(nbytes):
            if nbytes <= self.budget.small:
                return await anyio.to_thread.run_sync(decode)
            if self._large is None:
                self._large = ThreadPoolExecutor(1, "faceatlas-large-decode", initializer=_lower_priority)
            with anyio.CancelScope(shield=True):  # the memory stays reserved until the decode is over
                result: T = await asyncio.wrap_future(self._large.submit(decode))
            return result

    def close(self) -> None:
        if self._large is not None:
            self._large.shutdown(wait=False, cancel_futures=True)


@dataclass
class ServerState:
    settings: Settings
    engine: Engine
    db: Database
    store: ServiceStore
    collections: Collections
    limiter: anyio.CapacityLimiter
    decode_gate: DecodeGate
    migration: Migration | None = None  # set once the state exists (it refers back to it)
    admin_token: str = ""
    _keys: dict[str, tuple[ServiceRecord | None, float]] = field(default_factory=dict)
    _keys_lock: threading.Lock = field(default_factory=threading.Lock)

    def service_for_key(self, api_key: str) -> ServiceRecord | None:
        """The service of an API key, cached briefly (keys rotated elsewhere stop working within seconds)."""
        now = time.monotonic()
        with self._keys_lock:
            cached = self._keys.get(api_key)
        if cached is not None and cached[1] > now:
            return cached[0]
        record = self.store.service_by_key(api_key)
        with self._keys_lock:
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[api_key] = (record, now + KEY_CACHE_SECONDS)
        return record

    def forget_keys(self) -> None:
        with self._keys_lock:
            self._keys.clear()


def get_state(request: Request) -> ServerState:
    return request.app.state.faceatlas


def authenticate(state: ServerState, api_key: str | None, kind: str) -> ServiceRecord:
    """CompreFace's SecurityValidationFilter: header present, a UUID, of a service of this type."""
    if api_key is None:
        raise MISSING_API_KEY
    if not is_uuid(api_key):
        raise API_KEY_NOT_UUID
    record = state.service_for_key(api_key)
    if record is None or record.type != kind:
        raise service_not_found(kind, api_key)
    return record


def guard_writes(state: ServerState) -> None:
    if state.migration is not None and state.migration.running:
        raise WRITES_DURING_MIGRATION


# FastAPI dependencies of the routers: the state, and the service of the x-api-key per URL prefix
State = Annotated[ServerState, Depends(get_state)]
ApiKey = Annotated[str | None, Header(alias="x-api-key")]


def recognition_service(state: State, x_api_key: ApiKey = None) -> ServiceRecord:
    return authenticate(state, x_api_key, "recognition")


def detection_service(state: State, x_api_key: ApiKey = None) -> ServiceRecord:
    return authenticate(state, x_api_key, "detection")


def verification_service(state: State, x_api_key: ApiKey = None) -> ServiceRecord:
    return authenticate(state, x_api_key, "verification")


RecognitionService = Annotated[ServiceRecord, Depends(recognition_service)]
DetectionService = Annotated[ServiceRecord, Depends(detection_service)]
VerificationService = Annotated[ServiceRecord, Depends(verification_service)]
