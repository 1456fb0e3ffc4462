"""Recognition latency and throughput of ``faceatlas serve`` over HTTP, and its memory.

Starts a real server process on loopback with a fresh SQLite data dir, stores one real face
(obama.jpg) plus synthetic unit embeddings written directly through the storage layer, then
measures ``POST /api/v1/recognition/recognize`` with a one-face 1080p JPEG:

* start-up with ``--large`` stored faces (default 1 000 000, written in bulk before the server starts):
  the first start (reads every embedding from the database, builds the index, saves a snapshot) and a
  restart (opens the snapshot, replays the log), each to the healthcheck and to the first recognize;
* sequential latency p50/p99 with 1 000 and with ``--large`` stored faces (after the restart);
* throughput with 8 concurrent clients at ``--large`` faces;
* the server's resident memory (VmRSS, and the peak VmHWM), and with ``--workers 2`` the RSS and the
  proportional set size (PSS: shared pages split between the workers) of each worker.

Writes ``benchmarks/results/server.json``.
Usage: ``python benchmarks/server.py [--requests 100] [--large 1000000] [--serve-arg=--index=hnsw]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEATLAS_SHARED", ROOT / ".." / "shared")).resolve()
EXAMPLES = SHARED / "data/photos/face_recognition_examples/examples"
sys.path.insert(0, str(ROOT / "src"))

from faceatlas.api.collections import Collection, IndexOptions  # noqa: E402
from faceatlas.index.service import snapshot_root  # noqa: E402
from faceatlas.storage.db import Database, sqlite_url  # noqa: E402
from faceatlas.storage.services import ServiceStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kb(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key == "Pss":
            values["Pss"] = int(rest.split()[0])
    return values


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.is_file() else []


class Server:
    """``faceatlas serve`` in a subprocess, timed to its healthcheck."""

    def __init__(self, data_dir: Path, port: int, extra: list[str], log_name: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = data_dir / log_name
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        started = time.monotonic()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faceatlas",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                *extra,
            ],
            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        while True:
            try:
                if httpx.get(self.url + "/healthcheck", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
            if self.process.poll() is not None:
                raise RuntimeError(self.log_path.read_text())
        self.ready_seconds = round(time.monotonic() - started, 2)
        self.started = started

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.terminate()  # SIGTERM: the lifespan saves the index snapshots
        self.process.wait(timeout=120)
        self.log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (load-independent, unlike wall-clock latency)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def latencies(client: httpx.Client, url: str, key: str, image: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.post(
            f"{url}/api/v1/recognition/recognize",
            files={"file": ("frame.jpg", image, "image/jpeg")},
            headers={"x-api-key": key},
        )
        out.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200, r.text
        assert r.json()["result"][0]["subjects"][0]["subject"] == "obama", r.text
    return out


def multipart(image: bytes) -> tuple[bytes, str]:
    """The body and content type of a recognize upload, encoded once."""
    boundary = "faceatlas-benchmark-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="frame.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + image + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def throughput(
    url: str,
    key: str,
    image: bytes,
    clients: int,
    seconds: float,
    *,
    light: bool = False,
    server_pid: int = 0,
) -> dict[str, object]:
    """Requests per second of ``clients`` threads, each on its own keep-alive connection.

    ``light``: the threads send a body encoded once through ``http.client`` instead of ``httpx``
    building every multipart request; the load generator shares this machine's cores with the server,
    and httpx's own CPU per request (``client_cpu_ms_per_request``) is taken from the server's share.
    """
    done: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    body, content_type = multipart(image)
    host, port = url.removeprefix("http://").split(":")

    def run_httpx() -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                r = client.post(
                    f"{url}/api/v1/recognition/recognize",
                    files={"file": ("frame.jpg", image, "image/jpeg")},
                    headers={"x-api-key": key},
                )
                assert r.status_code == 200
                with lock:
                    done.append((time.perf_counter() - started) * 1000)

    def run_light() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"x-api-key": key, "Content-Type": content_type}
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            connection.request("POST", "/api/v1/recognition/recognize", body, headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            with lock:
                done.append((time.perf_counter() - started) * 1000)
        connection.close()

    started = time.monotonic()
    client_cpu = time.process_time()
    server_cpu = cpu_seconds(server_pid) if server_pid else 0.0
    threads = [threading.Thread(target=run_light if light else run_httpx) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    result = {
        "client": "http.client, body encoded once" if light else "httpx",
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(done),
        "requests_per_second": round(len(done) / elapsed, 2),
        "latency_p50_ms": round(percentile(done, 50), 2),
        "latency_p99_ms": round(percentile(done, 99), 2),
        "client_cpu_ms_per_request": round((time.process_time() - client_cpu) / max(len(done), 1) * 1000, 2),
    }
    if server_pid:
        result["server_cpu_ms_per_request"] = round(
            (cpu_seconds(server_pid) - server_cpu) / max(len(done), 1) * 1000, 2
        )
    return result


def add_synthetic(store: ServiceStore, service_id: int, count: int, dim: int, seed: int) -> None:
    """Random unit vectors (never closer to the real face than a stranger) in subjects of 10."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, 20_000):
        n = min(20_000, count - start)
        vectors = rng.normal(size=(n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        subjects = [f"synthetic-{seed}-{(start + i) // 10}" for i in range(n)]
        store.add_faces_bulk(service_id, subjects, vectors, "sface")


def index_options(args: argparse.Namespace, data_dir: Path) -> IndexOptions:
    """The server's index setting, with its snapshots: the search then runs on the index it served."""
    backend = "auto"
    for arg in args.serve_arg:
        if arg.startswith("--index="):
            backend = arg.split("=", 1)[1]
    url = sqlite_url(data_dir / "faceatlas.db")
    return IndexOptions(backend, snapshot_dir=snapshot_root(data_dir, url))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--engine-baseline",
        action="store_true",
        help="also time the engine alone in this process (interleaved; it competes with the server for CPU)",
    )
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="extra option for faceatlas serve (repeatable)"
    )
    parser.add_argument("--large", type=int, default=1_000_000, help="faces in the big collection")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/server.json")
    args = parser.parse_args()

    image = (EXAMPLES / "obama-1080p.jpg").read_bytes()
    large_n = args.large
    data_dir = Path(tempfile.mkdtemp(prefix="faceatlas-bench-"))
    db = Database.open(sqlite_url(data_dir / "faceatlas.db"))
    store = ServiceStore(db)
    service = store.create_service("bench", "recognition", "sface")
    small = store.create_service("bench-1000", "recognition", "sface")
    dim = 128
    t = time.monotonic()
    add_synthetic(store, small.id, 999, dim, 1)
    add_synthetic(store, service.id, large_n - 1, dim, 2)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    results: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "pack": "sface",
        "image": "obama-1080p.jpg (1920x1080, one face)",
        "serve_args": args.serve_arg,
        "large": large_n,
        "bulk_insert_seconds": round(time.monotonic() - t, 1),
        "load_average_at_start": os.getloadavg(),
    }
    server: Server | None = None
    try:
        # 1. first start: every embedding read from the database, the index built and snapshotted
        server = Server(data_dir, port, args.serve_arg, "serve-first.log")
        results["first_start_ready_seconds"] = server.ready_seconds
        for record in (service, small):
            r = httpx.post(
                f"{url}/api/v1/recognition/faces?subject=obama",
                files={"file": ("obama.jpg", (EXAMPLES / "obama.jpg").read_bytes(), "image/jpeg")},
                headers={"x-api-key": record.api_key},
                timeout=60,
            )
            assert r.status_code == 201, r.text
        results["first_start_rss_mb"] = round(memory_kb(server.pid)["VmRSS"] / 1024, 1)
        # with --index auto the first start serves from the exact index and builds HNSW in the background
        while True:
            services = httpx.get(url + "/status", timeout=30).json()["index"]["services"]
            big = [x for x in services if x["service_id"] == service.id]
            setting = httpx.get(url + "/status", timeout=30).json()["index"]["setting"]
            if setting != "auto" or not big or big[0]["backend"] != "exact" or large_n < 200_000:
                break
            time.sleep(5)
        results["first_start_index_built_seconds"] = round(time.monotonic() - server.started, 1)
        server.stop()
        # 2. restart: the snapshot is opened, only the log since it is replayed
        server = Server(data_dir, port, args.serve_arg, "serve.log")
        results["startup_seconds"] = server.ready_seconds
        results["rss_idle_mb"] = round(memory_kb(server.pid)["VmRSS"] / 1024, 1)
        client = httpx.Client(timeout=60)  # a keep-alive connection, as a camera client would hold
        latencies(client, url, service.api_key, image, 1)
        results["startup_to_first_recognize_seconds"] = round(time.monotonic() - server.started, 2)
        status = httpx.get(url + "/status", timeout=10).json()
        results["index"] = status.get("index")
        key = service.api_key
        for record in (small, service):
            latencies(client, url, record.api_key, image, 5)  # warm-up
        results["rss_loaded_mb"] = round(memory_kb(server.pid)["VmRSS"] / 1024, 1)
        # the engine alone, in this process, interleaved with the HTTP requests: the difference is what
        # the server adds (HTTP, multipart, search, JSON) under the same machine load
        engine = None
        if args.engine_baseline:
            from faceatlas.engine import Engine

            engine = Engine("sface")
            engine.analyze(image)
        values: dict[int, list[float]] = {1_000: [], large_n: []}
        engine_only: list[float] = []
        order = random.Random(0)
        for _ in range(args.requests):
            pair = [(1_000, small.api_key), (large_n, key)]
            order.shuffle(pair)  # neither size always goes first
            for stored, api_key in pair:
                values[stored] += latencies(client, url, api_key, image, 1)
            if engine is not None:
                t = time.perf_counter()
                engine.analyze(image)
                engine_only.append((time.perf_counter() - t) * 1000)
        for stored, record in ((1_000, small), (large_n, service)):
            before = cpu_seconds(server.pid)
            latencies(client, url, record.api_key, image, 30)
            results[f"server_cpu_ms_per_request_{stored}"] = round(
                (cpu_seconds(server.pid) - before) / 30 * 1000, 1
            )
        if engine_only:
            results["engine_only_in_process_p50_ms"] = round(percentile(engine_only, 50), 2)
        for stored, record in ((1_000, small), (large_n, service)):
            results[f"recognize_{stored}"] = {
                "stored_faces": store.count_faces(service_id=record.id),
                "requests": len(values[stored]),
                "latency_p50_ms": round(percentile(values[stored], 50), 2),
                "latency_p99_ms": round(percentile(values[stored], 99), 2),
                "latency_mean_ms": round(float(np.mean(values[stored])), 2),
            }
            print(json.dumps({f"recognize_{stored}": results[f"recognize_{stored}"]}), flush=True)
        results[f"throughput_{large_n}"] = throughput(
            url, key, image, args.clients, args.seconds, server_pid=server.pid
        )
        results[f"throughput_{large_n}_light_client"] = throughput(
            url, key, image, args.clients, args.seconds, light=True, server_pid=server.pid
        )
        print(json.dumps({k: v for k, v in results.items() if k.startswith("throughput")}), flush=True)
        memory = memory_kb(server.pid)
        server.stop()
        server = None
        results["rss_after_throughput_mb"] = round(memory["VmRSS"] / 1024, 1)
        results["rss_peak_mb"] = round(memory["VmHWM"] / 1024, 1)

        # 3. two workers on one machine: what each holds privately (PSS splits the shared pages)
        server = Server(data_dir, port, [*args.serve_arg, "--workers", "2"], "serve-workers.log")
        results["two_workers_ready_seconds"] = server.ready_seconds
        # a fresh connection per request, so that both workers answer (a keep-alive connection stays
        # with one worker) and each has opened the big collection before its memory is read
        for _ in range(40):
            with httpx.Client(timeout=60) as fresh:
                latencies(fresh, url, key, image, 1)
        results["two_workers"] = [
            {k: round(v / 1024, 1) for k, v in memory_kb(pid).items()} for pid in children(server.pid)
        ]
        results["two_workers_note"] = (
            "Pss counts each shared page (the memory-mapped snapshot, the models' file pages) as 1/2 per "
            "worker; VmRSS - Pss is what a worker shares with the other"
        )
        server.stop()
        server = None

        # the search alone, measured in this process with one BLAS thread, as the server runs it
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
        collection = Collection(
            store, service.id, "sface", dim, poll_interval=60, options=index_options(args, data_dir)
        )
        collection.sync(force=True)
        query = np.random.default_rng(3).normal(size=(1, dim)).astype(np.float32)
        timings = []
        for _ in range(50):
            t = time.perf_counter()
            collection.search(query, 1)
            timings.append((time.perf_counter() - t) * 1000)
        results[f"search_only_{large_n}_p50_ms"] = round(percentile(timings, 50), 3)
        results[f"search_only_{large_n}_backend"] = collection.index.kind
        results["load_average_at_end"] = os.getloadavg()
        small_p50 = results["recognize_1000"]["latency_p50_ms"]  # type: ignore[index]
        large_p50 = results[f"recognize_{large_n}"]["latency_p50_ms"]  # type: ignore[index]
        results["targets"] = {"p50_within_ms_of_1000": 10, "ready_seconds": 15}
        results["meets_targets"] = {
            "p50": large_p50 - small_p50 <= 10,
            "restart_ready": results["startup_to_first_recognize_seconds"] <= 15,  # type: ignore[operator]
        }
    finally:
        if server is not None:
            server.stop()
        db.dispose()
        shutil.rmtree(data_dir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
