"""The library REST API under ``/api/library/v1``: a thin JSON layer over :mod:`faceatlas.library`."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter

from faceatlas.web.shell import OwnerApi, PageSet, Web

PREFIX = "/api/library/v1"
router = APIRouter(prefix=PREFIX, tags=["library"])
API_PAGES = PageSet(router, order=90)


@router.get("/libraries", summary="The libraries this server shows, with photo, face and people counts")
async def list_libraries(_owner: OwnerApi, web: Web) -> dict[str, Any]:
    from faceatlas.library.browse import library_counts

    def run() -> list[dict[str, Any]]:
        return [
            {"id": h.id, "label": h.label, "location": h.location, **library_counts(h.db).to_dict()}
            for h in web.libraries.values()
        ]

    return {"libraries": await anyio.to_thread.run_sync(run)}
