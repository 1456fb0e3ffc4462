"""Generated input against the live server: a Hypothesis run over every CompreFace endpoint (query
strings and bodies the OpenAPI schema does not describe, since the routes parse leniently by hand),
then schemathesis over the app's whole OpenAPI schema. Neither may find a 5xx or a dropped connection."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote as url_quote

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from tests.reliability.conftest import ADMIN, Server
from tests.reliability.support import Figures, KeepAlive

# (method, path); {id} is filled with a random UUID
ENDPOINTS = [
    ("POST", "/api/v1/recognition/recognize"),
    ("POST", "/api/v1/recognition/faces"),
    ("GET", "/api/v1/recognition/faces"),
    ("DELETE", "/api/v1/recognition/faces"),
    ("POST", "/api/v1/recognition/faces/delete"),
    ("POST", "/api/v1/recognition/faces/{id}/verify"),
    ("POST", "/api/v1/recognition/subjects"),
    ("GET", "/api/v1/recognition/subjects"),
    ("PUT", "/api/v1/recognition/subjects/{text}"),
    ("DELETE", "/api/v1/recognition/subjects/{text}"),
    ("POST", "/api/v1/recognition/embeddings/recognize"),
    ("POST", "/api/v1/recognition/embeddings/faces/{id}/verify"),
    ("POST", "/api/v1/detection/detect"),
    ("POST", "/api/v1/verification/verify"),
    ("POST", "/api/v1/verification/embeddings/verify"),
    ("GET", "/admin/services/{text}"),
    ("POST", "/admin/services"),
]
PARAMS = [
    "page", "size", "subject", "limit", "det_prob_threshold", "prediction_count", "face_plugins",
    "status", "detect_faces", "min_similarity", "unique_subjects",
]  # fmt: skip
NUMBERISH = st.sampled_from(
    ["0", "-1", "1", "2147483648", "9223372036854775807", "99999999999999999999", "1e309", "nan", "-0", ""]
)
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=140) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=300,
)
BODY_KEYS = [
    "file",
    "subject",
    "embeddings",
    "source",
    "targets",
    "source_image",
    "target_image",
    "name",
    "type",
]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None, dict[str, str]]:
    method, path = draw(st.sampled_from(ENDPOINTS))
    path = path.replace("{id}", str(uuid.uuid4())).replace("{text}", draw(TEXT.filter(bool)).replace("?", ""))
    params = draw(st.dictionaries(st.sampled_from(PARAMS), NUMBERISH | TEXT, max_size=4))
    query = "&".join(f"{name}={quote(value)}" for name, value in params.items())
    body_kind = draw(st.sampled_from(["none", "json", "object", "bytes"]))
    headers: dict[str, str] = {}
    body: bytes | None = None
    if body_kind == "json":
        body = json.dumps(draw(JSON_VALUES)).encode()
    elif body_kind == "object":
        body = json.dumps(draw(st.dictionaries(st.sampled_from(BODY_KEYS), JSON_VALUES, max_size=3))).encode()
    elif body_kind == "bytes":
        body = draw(st.binary(max_size=2000))
        headers["Content-Type"] = draw(
            st.sampled_from(["application/json", "multipart/form-data; boundary=x", "image/jpeg"])
        )
    if body_kind in ("json", "object"):
        headers["Content-Type"] = "application/json"
    return method, quote_path(path) + (f"?{query}" if query else ""), body, headers


def quote(value: str) -> str:
    return url_quote(value, safe="", errors="surrogatepass")


def quote_path(path: str) -> str:
    return url_quote(path, safe="/", errors="surrogatepass")


def test_generated_requests_get_no_5xx_and_keep_the_connection(server: Server, figures: Figures) -> None:
    keys = {kind: server.new_key(kind) for kind in ("recognition", "detection", "verification")}
    client = KeepAlive(server.url, figures)
    seen = {"cases": 0}

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(request=requests())
    def run(request: tuple[str, str, bytes | None, dict[str, str]]) -> None:
        method, path, body, headers = request
        kind = next((k for k in keys if f"/{k}/" in path), "recognition")
        answer = client.request(method, path, body, {**headers, **keys[kind], **ADMIN})
        seen["cases"] += 1
        assert answer.status < 500, (method, path, answer.status, answer.body[:300])
        if answer.status >= 400:
            error = answer.json()
            assert isinstance(error.get("code"), int) and isinstance(error.get("message"), str), answer.body[
                :300
            ]
        assert client.dropped == 0

    run()
    figures.note("hypothesis_cases", seen["cases"])
    assert client.still_open()


def test_schemathesis_over_the_whole_openapi_schema(server: Server, figures: Figures) -> None:
    """Last in the suite: it may rotate keys and delete services it guesses by id."""
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    keys = {kind: server.new_key(kind) for kind in ("recognition", "detection", "verification")}
    counted = {"cases": 0, "operations": 0}
    failures: list[str] = []

    def exercise(operation: Any, headers: dict[str, str]) -> None:
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            counted["cases"] += 1
            response = case.call(base_url=server.url, headers=headers, timeout=60)
            figures.count(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")
            case.validate_response(response, checks=[not_a_server_error])

        run()

    for result in schema.get_all_operations():
        operation = result.ok()
        counted["operations"] += 1
        kind = next((k for k in keys if f"/{k}/" in operation.path), "recognition")
        exercise(operation, {**keys[kind], **ADMIN})
    figures.note("schemathesis", counted)
    assert not failures
    assert server.process is not None and server.process.poll() is None
