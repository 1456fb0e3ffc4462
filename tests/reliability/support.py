"""Pieces of the reliability suite: a keep-alive client that notices dropped connections, an RSS
sampler for the server process, pixel bombs written without holding their pixels, and the figures
every run writes to ``benchmarks/results/reliability.json``."""

from __future__ import annotations

import base64
import http.client
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.api_helpers import REPO

RESULTS = REPO / "benchmarks" / "results" / "reliability.json"
MB = 1024 * 1024


@dataclass
class Figures:
    """What the suite saw: every request it sent through :class:`KeepAlive` and what the tests add."""

    requests: int = 0
    server_errors: int = 0
    dropped_connections: int = 0
    crashes: int = 0
    lost_writes: int = 0
    peak_rss_mb: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, status: int | None) -> None:
        with self.lock:
            self.requests += 1
            if status is None:
                self.dropped_connections += 1
            elif status >= 500:
                self.server_errors += 1

    def rss(self, megabytes: float) -> None:
        with self.lock:
            self.peak_rss_mb = max(self.peak_rss_mb, megabytes)

    def note(self, name: str, value: Any) -> None:
        with self.lock:
            self.details[name] = value

    def write(self) -> None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps(
                {
                    "requests": self.requests,
                    "5xx": self.server_errors,
                    "dropped_connections": self.dropped_connections,
                    "crashes": self.crashes,
                    "lost_writes": self.lost_writes,
                    "peak_rss_mb": round(self.peak_rss_mb, 1),
                    "duration_s": round(time.monotonic() - self.started, 1),
                    **self.details,
                },
                indent=2,
            )
            + "\n"
        )


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class KeepAlive:
    """One HTTP/1.1 connection used for request after request, as a pooled client does: a request that
    finds it closed by the server counts as a dropped connection (the pooled client's ECONNRESET)."""

    def __init__(self, url: str, figures: Figures, *, timeout: float = 60.0) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.timeout = host, int(port), timeout
        self.figures = figures
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self.dropped = 0

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        *,
        json_body: Any = None,
    ) -> Answer:
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body)
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (http.client.HTTPException, ConnectionError, OSError):
            self.figures.count(None)
            self.dropped += 1
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            raise
        self.figures.count(response.status)
        answer = Answer(response.status, data, {k.lower(): v for k, v in response.getheaders()})
        if answer.headers.get("connection", "").lower() == "close":
            self.conn.close()  # announced: not a drop
        return answer

    def still_open(self) -> bool:
        """Whether the connection survived the last answer (a second request on it succeeds)."""
        try:
            return self.request("GET", "/healthcheck").status == 200
        except (http.client.HTTPException, ConnectionError, OSError):
            return False

    def close(self) -> None:
        self.conn.close()


class RssSampler:
    """Peak resident memory of a process while a block runs (sampled every 10 ms)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.01)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / MB

    @property
    def peak_mb(self) -> float:
        return self.peak / MB


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, width: int, height: int, *, alpha: int | None = 128) -> Path:
    """A PNG of ``width`` x ``height`` grey pixels (RGBA with partial ``alpha``, or RGB), written row
    by row: the file is tiny, its pixels would take gigabytes."""
    if path.exists():
        return path
    row = b"\x00" + (bytes([90, 90, 90]) + (b"" if alpha is None else bytes([alpha]))) * width
    compressor = zlib.compressobj(9)
    parts = [b"\x89PNG\r\n\x1a\n"]
    color_type = 2 if alpha is None else 6
    parts.append(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)))
    data = bytearray()
    for _ in range(height):
        data += compressor.compress(row)
    data += compressor.flush()
    parts.append(_chunk(b"IDAT", bytes(data)))
    parts.append(_chunk(b"IEND", b""))
    path.write_bytes(b"".join(parts))
    return path


def as_json_image(data: bytes) -> dict[str, str]:
    return {"file": base64.b64encode(data).decode()}


@contextmanager
def threads(count: int, target: Any, *args: Any) -> Iterator[list[threading.Thread]]:
    started = [threading.Thread(target=target, args=args, daemon=True) for _ in range(count)]
    for thread in started:
        thread.start()
    try:
        yield started
    finally:
        for thread in started:
            thread.join(timeout=120)


def multipart(parts: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body of file parts ``{field: (filename, data)}`` and its header."""
    boundary = "faceatlas-reliability-boundary"
    chunks = []
    for name, (filename, data) in parts.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), {"Content-Type": f"multipart/form-data; boundary={boundary}"}
