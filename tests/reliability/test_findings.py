"""The nine findings of issue 11, each reproduced against a real ``faceatlas serve`` on 127.0.0.1.

Every test here failed on the server before the hardening (commit 8412c9c) and passes after it.
"""

from __future__ import annotations

import json
import math
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.reliability.conftest import ADMIN, Server
from tests.reliability.support import Figures, KeepAlive, RssSampler, multipart, png_bomb

RECOGNIZE = "/api/v1/recognition/recognize"
# the decoding budget of one image is 384 MB (settings.decode_memory = 512 MB, a quarter reserved)
WORST_CASE_RGBA = (6400, 6400)  # the largest RGBA PNG that still fits (about 360 MB estimated)
PER_REQUEST_RSS_MB = 600


def is_compreface_error(answer_json: object) -> bool:
    return (
        isinstance(answer_json, dict)
        and isinstance(answer_json.get("message"), str)
        and isinstance(answer_json.get("code"), int)
    )


@pytest.fixture(scope="session")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("bombs")
    return {
        # finding 1: 10000x9999 RGBA with partial alpha, 0.4 MB on disk, gigabytes decoded
        "bomb": png_bomb(folder / "bomb.png", 10000, 9999).read_bytes(),
        "worst": png_bomb(folder / "worst.png", *WORST_CASE_RGBA).read_bytes(),
    }


def percentile(ordered: list[float], rank: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(rank / 100 * len(ordered)) - 1)]


def post_image(client: KeepAlive, key: dict[str, str], data: bytes, name: str = "image.png") -> object:
    body, headers = multipart({"file": (name, data)})
    return client.request("POST", RECOGNIZE, body, {**key, **headers})


# ----------------------------------------------------------------------------- 1. pixel bombs
def test_pixel_bombs_stay_within_the_memory_budget(
    server: Server, figures: Figures, bombs: dict[str, bytes], face_images: dict[str, bytes]
) -> None:
    client = KeepAlive(server.url, figures)
    with RssSampler(server.pid) as refused:
        answer = post_image(client, server.key, bombs["bomb"])
    assert answer.status == 400 and answer.json()["code"] == 28, answer.body
    assert "memory" in answer.json()["message"]
    assert refused.growth_mb < PER_REQUEST_RSS_MB

    with RssSampler(server.pid) as accepted:
        answer = post_image(client, server.key, bombs["worst"])
    # decoded (a grey square has no face), not refused
    assert answer.status == 400 and "memory" not in answer.json()["message"], answer.body
    assert accepted.growth_mb < PER_REQUEST_RSS_MB
    assert client.still_open()

    # two worst-case images at once, and ordinary recognitions meanwhile
    latencies: list[float] = []
    done = threading.Event()

    def big() -> None:
        heavy = KeepAlive(server.url, figures)
        while not done.is_set():
            post_image(heavy, server.key, bombs["worst"])

    workers = [threading.Thread(target=big, daemon=True) for _ in range(2)]
    normal = KeepAlive(server.url, figures)
    with RssSampler(server.pid) as loaded:
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        for _ in range(60):
            started = time.perf_counter()
            answer = post_image(normal, server.key, face_images["obama"], "obama.jpg")
            latencies.append(time.perf_counter() - started)
            assert answer.status == 200, answer.body
        done.set()
        for worker in workers:
            worker.join(timeout=120)
    latencies.sort()
    figures.note(
        "pixel_bomb",
        {
            "refused_bomb_rss_growth_mb": round(refused.growth_mb, 1),
            "worst_accepted_rss_growth_mb": round(accepted.growth_mb, 1),
            "two_worst_plus_recognize_rss_growth_mb": round(loaded.growth_mb, 1),
            "recognize_samples": len(latencies),
            "recognize_p50_ms_under_two_worst_case": round(1000 * percentile(latencies, 50)),
            "recognize_p95_ms_under_two_worst_case": round(1000 * percentile(latencies, 95)),
            "recognize_p99_ms_under_two_worst_case": round(1000 * percentile(latencies, 99)),
            "recognize_max_ms_under_two_worst_case": round(1000 * latencies[-1]),
        },
    )
    figures.rss(loaded.peak_mb)
    assert loaded.growth_mb < PER_REQUEST_RSS_MB  # the budget makes large decodes take turns
    assert server.process is not None and server.process.poll() is None


# ----------------------------------------------------------------------------- 2. slow clients
def test_idle_and_slow_sockets_do_not_deny_service(
    server: Server, figures: Figures, face_images: dict[str, bytes]
) -> None:
    port = server.port
    idle = []
    for i in range(1000):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:  # half a request: the line and one header, never the end of the headers
            sock.sendall(b"POST /api/v1/recognition/recognize HTTP/1.1\r\nHost: x\r\n")
        idle.append(sock)
    slow_body = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow_body.sendall(
        b"POST /api/v1/recognition/subjects HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"x-api-key: {server.key['x-api-key']}\r\n".encode()
        + b'Content-Length: 1000\r\n\r\n{"subj'
    )
    client = KeepAlive(server.url, figures)
    statuses = [client.request("GET", "/healthcheck").status for _ in range(5)]
    statuses.append(post_image(client, server.key, face_images["obama"], "obama.jpg").status)
    assert statuses == [200] * 6

    time.sleep(2 + 2)  # the header deadline (2 s) and a margin
    # the idle keep-alive connection of the client is closed too (--keep-alive-timeout 2)
    assert client.conn.sock is not None
    client.conn.sock.settimeout(2)
    assert client.conn.sock.recv(1) == b""
    closed = 0
    for sock in idle:
        sock.settimeout(2)
        try:
            closed += sock.recv(1) == b""
        except (ConnectionError, TimeoutError, OSError):
            closed += 1
        sock.close()
    time.sleep(1)  # the body deadline is 3 s
    slow_body.settimeout(3)
    assert slow_body.recv(1) == b""
    slow_body.close()
    figures.note("slow_clients", {"idle_sockets_held": len(idle), "closed_by_deadline": closed})
    assert closed == len(idle)


# ----------------------------------------------------------------------------- 3. admin actions
def test_migrate_needs_the_admin_token_and_admin_routes_refuse_cross_origin(
    server: Server, figures: Figures
) -> None:
    client = KeepAlive(server.url, figures)
    answer = client.request("POST", "/api/v1/migrate", headers={"Origin": "http://attacker.example"})
    assert answer.status == 401 and is_compreface_error(answer.json())
    assert "access-control-allow-origin" not in answer.headers
    preflight = {"Origin": "http://attacker.example", "Access-Control-Request-Method": "POST"}
    for path in ("/admin/services", "/api/v1/migrate"):
        answer = client.request("OPTIONS", path, headers=preflight)
        assert "access-control-allow-origin" not in answer.headers, path
    # CompreFace clients in a browser still work
    answer = client.request(
        "OPTIONS", RECOGNIZE, headers={**preflight, "Access-Control-Request-Headers": "x-api-key"}
    )
    assert answer.headers.get("access-control-allow-origin") == "*"
    answer = client.request("POST", "/api/v1/migrate", headers=ADMIN)
    assert answer.status == 200 and answer.body == b"Migration started"


# ----------------------------------------------------------------------------- 4. private data
def test_data_is_private_and_keys_are_stored_as_hashes(
    server: Server, figures: Figures, face_images: dict[str, bytes]
) -> None:
    client = KeepAlive(server.url, figures)
    body, headers = multipart({"file": ("obama.jpg", face_images["obama"])})
    added = client.request(
        "POST", "/api/v1/recognition/faces?subject=private", body, {**server.key, **headers}
    )
    assert added.status == 201, added.body
    data_dir = Path(server.data_dir)
    assert data_dir.stat().st_mode & 0o777 == 0o700
    files = [data_dir / name for name in ("faceatlas.db", "faceatlas.db-wal", "faceatlas.db-shm")]
    for path in files:
        assert path.exists() and path.stat().st_mode & 0o777 == 0o600, path
    key = server.key["x-api-key"].encode()
    assert not any(key in path.read_bytes() for path in files)
    with sqlite3.connect(data_dir / "faceatlas.db") as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(face_service)")]
    assert "api_key" not in columns and "key_hash" in columns
    listed = client.request("GET", "/admin/services", headers=ADMIN).json()["services"]
    assert listed and all("api_key" not in s and len(s["key_hint"]) == 4 for s in listed)


# ----------------------------------------------------------------------------- 5, 6. invalid input
def invalid_inputs(image_id: str) -> list[tuple[str, str, object, int]]:
    """(method, path, JSON body or raw bytes, expected status) of findings 5, 6 and 9."""
    nested = {"embeddings": [[[0.1]] * 128]}
    longest = quote("İ" * 200)  # 200 characters, 400 once lower-cased
    return [
        ("GET", "/api/v1/recognition/faces?page=99999999999999999999999999999", None, 400),
        ("GET", "/api/v1/recognition/faces?size=99999999999999999999999999999", None, 400),
        ("GET", "/api/v1/recognition/faces?page=9223372036854775807&size=2", None, 400),
        ("POST", "/api/v1/recognition/embeddings/recognize", nested, 400),
        ("POST", f"/api/v1/recognition/embeddings/faces/{image_id}/verify", nested, 400),
        ("POST", "/api/v1/recognition/embeddings/recognize", {"embeddings": [[True] * 128]}, 400),
        ("POST", "/api/v1/recognition/subjects", b"[" * 100_000, 400),
        ("POST", "/api/v1/recognition/subjects", {"subject": "a\x00b"}, 400),
        ("PUT", "/api/v1/recognition/subjects/x", {"subject": "a\x00b"}, 400),
        ("PUT", "/api/v1/recognition/subjects/a%00b", {"subject": "c"}, 400),
        ("GET", "/api/v1/recognition/faces?subject=a%00b", None, 400),
        ("DELETE", "/api/v1/recognition/faces?subject=a%00b", None, 400),
        ("DELETE", "/api/v1/recognition/subjects/a%00b", None, 400),
        ("POST", "/api/v1/recognition/faces?subject=a%00b", "image", 400),
        ("POST", f"/api/v1/recognition/faces?subject={longest}", "image", 400),
        ("DELETE", f"/api/v1/recognition/subjects/{longest}", None, 400),
        ("POST", "/admin/services", {"name": "s" * 300}, 400),
        ("POST", "/admin/services", {"name": "a\x00b"}, 400),
        ("GET", "/admin/services/a%00b", None, 404),
        ("POST", "/admin/services/a%00b/rotate-key", None, 404),
    ]


def test_invalid_inputs_get_the_same_400_on_every_database_and_keep_the_connection(
    any_server: Server, figures: Figures, face_images: dict[str, bytes]
) -> None:
    client = KeepAlive(any_server.url, figures)
    log_before = len(any_server.log_text())
    for method, path, payload, expected in invalid_inputs(str(uuid.uuid4())):
        headers = {**any_server.key, **ADMIN}
        if payload == "image":
            body, multipart_headers = multipart({"file": ("obama.jpg", face_images["obama"])})
            answer = client.request(method, path, body, {**headers, **multipart_headers})
        elif isinstance(payload, bytes):
            answer = client.request(method, path, payload, {**headers, "Content-Type": "application/json"})
        elif payload is not None:
            answer = client.request(
                method, path, json.dumps(payload), {**headers, "Content-Type": "application/json"}
            )
        else:
            answer = client.request(method, path, headers=headers)
        assert answer.status == expected, (method, path, answer.status, answer.body[:300])
        assert is_compreface_error(answer.json()), (path, answer.body[:300])
        assert client.still_open(), (method, path)
    assert "Traceback" not in any_server.log_text()[log_before:]


def test_bodies_are_refused_as_soon_as_they_pass_the_limit(server: Server, figures: Figures) -> None:
    request_head = (
        f"POST /api/v1/recognition/subjects HTTP/1.1\r\nHost: x\r\nx-api-key: {server.key['x-api-key']}\r\n"
        "Content-Type: application/json\r\n"
    )
    # declared too large: refused before a byte of the body is read
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall((request_head + f"Content-Length: {200 * 1024 * 1024}\r\n\r\n").encode())
    head, _, body = read_response(sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and is_compreface_error(json.loads(body))
    sock.close()

    # streamed (chunked, no length): refused once past the limit, the rest never read
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(read_response(sock)), daemon=True)
    sent = 0
    chunk = b" " * (1024 * 1024)
    with RssSampler(server.pid) as rss:
        sock.sendall((request_head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        reader.start()
        try:
            while sent < 200 * 1024 * 1024:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass
        reader.join(timeout=30)
    sock.close()
    head, _, body = received[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and is_compreface_error(json.loads(body)), received[0][:300]
    figures.note(
        "streamed_body",
        {"sent_mb_before_refusal": sent // (1024 * 1024), "rss_growth_mb": round(rss.growth_mb, 1)},
    )
    assert sent < 64 * 1024 * 1024  # the limit is 10 MB; socket buffers hold a few more
    assert rss.growth_mb < 64


def read_response(sock: socket.socket) -> bytes:
    data = b""
    try:
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    None,
                )
                if length is not None and len(body) >= length:
                    break
    except (ConnectionError, OSError):
        pass
    return data


# ----------------------------------------------------------------------------- 7, 8, 9. names, minor
def test_subjects_with_a_slash_and_a_service_named_1_are_reachable(
    server: Server, figures: Figures, face_images: dict[str, bytes]
) -> None:
    client = KeepAlive(server.url, figures)
    key = server.new_key()
    body, headers = multipart({"file": ("obama.jpg", face_images["obama"])})
    for subject in ("team/alice", "team/bob"):
        added = client.request(
            "POST", f"/api/v1/recognition/faces?subject={quote(subject, safe='')}", body, {**key, **headers}
        )
        assert added.status == 201, added.body
    renamed = client.request(
        "PUT", "/api/v1/recognition/subjects/team/alice", json_body={"subject": "alice"}, headers=key
    )
    assert renamed.status == 200 and renamed.json() == {"updated": True}, renamed.body
    deleted = client.request("DELETE", "/api/v1/recognition/subjects/team%2Fbob", headers=key)
    assert deleted.status == 200 and deleted.json() == {"subject": "team/bob"}, deleted.body
    assert client.request("GET", "/api/v1/recognition/subjects", headers=key).json() == {
        "subjects": ["alice"]
    }

    created = client.request(
        "POST", "/admin/services", json_body={"name": "1", "type": "detection"}, headers=ADMIN
    )
    assert created.status == 201
    found = client.request("GET", "/admin/services/1", headers=ADMIN)
    assert found.status == 200 and found.json()["name"] == "1"
    by_id = client.request("GET", f"/admin/services/{created.json()['id']}", headers=ADMIN)
    assert by_id.json()["name"] == "1"


def test_booleans_are_not_embeddings_and_413_and_503_have_compreface_bodies(
    server: Server, figures: Figures, bombs: dict[str, bytes]
) -> None:
    client = KeepAlive(server.url, figures)
    answer = client.request(
        "POST",
        "/api/v1/recognition/embeddings/recognize",
        json_body={"embeddings": [[True, False] * 64]},
        headers=server.key,
    )
    assert answer.status == 400 and is_compreface_error(answer.json())

    # an image body over the 10 MB request limit (the server answers before the body is sent)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        f"POST {RECOGNIZE} HTTP/1.1\r\nHost: x\r\nx-api-key: {server.key['x-api-key']}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {11 * 1024 * 1024}\r\n\r\n".encode()
        + b"--b\r\n"
    )
    head, _, body = read_response(sock).partition(b"\r\n\r\n")
    sock.close()
    assert head.startswith(b"HTTP/1.1 413") and is_compreface_error(json.loads(body))

    # the server admits 4 requests at once (FACEATLAS_LIMIT_CONCURRENCY): keep 4 busy decoding
    busy = [
        threading.Thread(
            target=post_image, args=(KeepAlive(server.url, figures), server.key, bombs["worst"]), daemon=True
        )
        for _ in range(4)
    ]
    for thread in busy:
        thread.start()
    # ask until the four uploads fill the server (a fixed wait raced with decodes that got faster)
    deadline = time.monotonic() + 10
    while True:
        answer = KeepAlive(server.url, Figures()).request("GET", "/healthcheck")  # a 503 on purpose
        if answer.status == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for thread in busy:
        thread.join(timeout=120)
    assert answer.status == 503 and is_compreface_error(answer.json()), answer.body
