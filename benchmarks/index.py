"""Library indexing benchmark: a synthetic library of 12 MP JPEGs through the local and the Ray pipeline.

    PYTHONPATH=src python benchmarks/index.py [--count 500] [--workers N] [--batch-size 16] [--no-ray]
        [--providers cuda]

Builds ``--count`` 4000x3000 JPEGs (quality 90) upscaled from the shared photos with faces, in a temp
folder (``--photos DIR`` keeps and reuses them), then measures in one run: the decode-only ceiling
(every core decoding the same files, nothing else), ``faceatlas index`` (photos/s, faces/s, stage
table, peak RSS) with each stage placement: the default (CPU: whole photos in one worker per core;
accelerators: decode in workers, batches in the main process), the older split (detect in workers,
embed in the main process) and detection in the main process; and the same run with ``--ray`` on a
local Ray. ``--providers cuda`` (or ``tensorrt``) runs the main engine there and samples GPU
utilisation with ``nvidia-smi``. Writes benchmarks/results/index.json. The machine's load average
is recorded: on a shared machine the numbers move with it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from benchmarks.common import SHARED, machine, peak_rss_mb, rss_mb, write_result

SOURCES = [
    "face_recognition_examples/examples",
    "face_recognition_examples/examples/knn_examples/train",
    "face_recognition_examples/tests/test_images",
    "deepface-pairs",
]
SIZE = (4000, 3000)


def source_photos() -> list[Path]:
    photos = SHARED / "data" / "photos"
    found = []
    for folder in SOURCES:
        found += [
            p for p in sorted((photos / folder).rglob("*")) if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
        ]
    return found


def make_one(args: tuple[Path, Path, int]) -> None:
    src, target, index = args
    image = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if image is None:
        return
    h, w = image.shape[:2]
    size = SIZE if w >= h else SIZE[::-1]
    big = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    if index % 2:
        big = cv2.flip(big, 1)  # mirrored copies: different files, faces kept
    cv2.imwrite(str(target), big, [cv2.IMWRITE_JPEG_QUALITY, 90])


def build_library(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.rglob("*.jpg"))
    if len(existing) >= count:
        return existing[:count]
    sources = source_photos()
    jobs = []
    for i in range(count):
        src = sources[i % len(sources)]
        target = folder / f"roll{i // 100:02d}" / f"IMG_{i:05d}.jpg"
        target.parent.mkdir(exist_ok=True)
        jobs.append((src, target, i // len(sources)))
    with ProcessPoolExecutor(mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(make_one, jobs, chunksize=8))
    return sorted(folder.rglob("*.jpg"))[:count]


def decode_ceiling(files: list[Path], workers: int, decode_size: int) -> dict[str, float]:
    from faceatlas.library.scan import FileEntry
    from faceatlas.library.work import decode_photo

    entries = [FileEntry(str(p), p.stat().st_size, p.stat().st_mtime) for p in files]
    started = time.perf_counter()
    seconds, errors = [], 0
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Keep only the timings: holding 500 decoded images would distort the memory figures.
        sizes, hashes = [decode_size] * len(entries), [None] * len(entries)
        for r in pool.map(decode_photo, entries, sizes, hashes, chunksize=4):
            seconds.append(r.seconds)
            errors += r.error is not None
    wall = time.perf_counter() - started
    return {
        "photos": len(entries),
        "errors": errors,
        "wall_seconds": round(wall, 2),
        "photos_per_second": round(len(entries) / wall, 2),
        "mean_decode_ms": round(1000 * float(np.mean(seconds)), 1),
    }


class RssSampler:
    """Peak of (this process + all its descendants) resident memory, sampled every 0.1 s."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _tree(pid: int) -> list[int]:
        pids, todo = [], [pid]
        while todo:
            p = todo.pop()
            pids.append(p)
            for task in Path(f"/proc/{p}/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in task.read_text().split()]
        return pids

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            total = 0.0
            for pid in self._tree(os.getpid()):
                with contextlib.suppress(OSError):
                    total += rss_mb(pid)
            self.peak_mb = max(self.peak_mb, total)


class GpuSampler:
    """Mean and peak GPU utilisation (%) from ``nvidia-smi`` while the block runs; empty without one."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"],
                stdout=subprocess.PIPE,
                text=True,
            )
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(float(line.split(",")[0]))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def summary(self) -> dict[str, float] | None:
        if not self.samples:
            return None
        return {"mean_percent": round(float(np.mean(self.samples)), 1), "peak_percent": max(self.samples)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pack", default="sface")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads of the main engine")
    parser.add_argument(
        "--photos", type=Path, default=None, help="keep the synthetic photos here and reuse them"
    )
    parser.add_argument("--attributes", action="store_true", help="also estimate age/gender/pose")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--name", default="index", help="results file name (benchmarks/results/NAME.json)")
    parser.add_argument(
        "--providers", default="cpu", help="ONNX Runtime providers of the main engine, e.g. cuda"
    )
    args = parser.parse_args()

    from faceatlas.engine import Engine
    from faceatlas.library.pipeline import (
        DEFAULT_DECODE_SIZE,
        IndexOptions,
        index_library,
        placement,
        split_for,
    )
    from faceatlas.library.store import open_library

    cores = len(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="faceatlas-index-bench-"))
    photos_dir = args.photos or tmp / "photos"
    started = time.perf_counter()
    files = build_library(photos_dir, args.count)
    build_s = time.perf_counter() - started
    print(f"{len(files)} photos of {SIZE[0]}x{SIZE[1]} ready in {build_s:.1f} s", flush=True)

    # The ceiling: every core decoding, nothing else running.
    ceiling = decode_ceiling(files, cores, DEFAULT_DECODE_SIZE)
    print(f"decode-only ceiling: {ceiling['photos_per_second']} photos/s", flush=True)
    plugins = ("age", "gender", "pose") if args.attributes else ()
    result: dict[str, object] = {
        "machine": machine(),
        "pack": args.pack,
        "photos": len(files),
        "photo_size": list(SIZE),
        "jpeg_quality": 90,
        "decode_size": DEFAULT_DECODE_SIZE,
        "batch_size": args.batch_size,
        "attributes": bool(plugins),
        "load_average_at_start": os.getloadavg(),
        "build_seconds": round(build_s, 1),
        "decode_only": ceiling,
    }

    providers = tuple(p.strip() for p in args.providers.split(",") if p.strip())
    accelerated = providers[0].lower() != "cpu"
    result["providers"] = list(providers)

    def run_local(name: str, detect_in_workers: bool | None, embed_in_workers: bool | None = None) -> None:
        options = IndexOptions(
            workers=args.workers,
            batch_size=args.batch_size,
            plugins=plugins,
            detect_in_workers=detect_in_workers,
            embed_in_workers=embed_in_workers,
        )
        workers, threads = split_for(options, accelerated=accelerated, cores=cores)
        threads = args.threads or threads
        engine = Engine(args.pack, threads=threads, providers=providers)
        options = IndexOptions(
            workers=workers,
            batch_size=args.batch_size,
            plugins=plugins,
            detect_in_workers=detect_in_workers,
            embed_in_workers=embed_in_workers,
        )
        cpu_before = os.times()
        with RssSampler() as sampler, GpuSampler() as gpu:
            report = index_library(open_library(tmp / name), engine, [photos_dir], options=options)
        cpu_after = os.times()
        out = report.to_dict()
        out["errors"] = len(report.errors)
        out["workers"] = workers
        out["engine_threads"] = threads
        out["detect_in_workers"], out["embed_in_workers"] = placement(options, engine)
        cpu = sum(cpu_after[:4]) - sum(cpu_before[:4])  # user + system, this process and its workers
        out["cpu_per_wall"] = round(cpu / report.wall_seconds, 2) if report.wall_seconds else None
        out["gpu_utilisation"] = gpu.summary()
        out["peak_rss_mb_main_process"] = round(peak_rss_mb(), 1)
        out["peak_rss_mb_with_decode_workers"] = round(sampler.peak_mb, 1)
        out["decode_ceiling_ratio"] = round(report.photos_per_second / ceiling["photos_per_second"], 3)
        result[name] = out
        print(
            f"{name}: {out['photos_per_second']} photos/s, {out['faces_per_second']} faces/s, "
            f"slowest stage {out['slowest_stage']}",
            flush=True,
        )

    run_local("local", detect_in_workers=None)
    run_local("local_split_detect_in_workers_embed_in_main", detect_in_workers=True, embed_in_workers=False)
    run_local("local_detect_in_main", detect_in_workers=False)
    engine = Engine(args.pack, threads=1)
    options = IndexOptions(batch_size=args.batch_size, plugins=plugins)
    if not args.no_ray:
        import ray

        from faceatlas.library.ray_index import index_library_ray

        init_started = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - init_started
        ray_report = index_library_ray(open_library(tmp / "ray"), engine, [photos_dir], options=options)
        ray_dict = ray_report.to_dict()
        ray_dict["errors"] = len(ray_report.errors)
        ray_dict["ray_init_seconds"] = round(init_s, 2)
        ray_dict["decode_ceiling_ratio"] = round(
            ray_report.photos_per_second / ceiling["photos_per_second"], 3
        )
        result["ray_local"] = ray_dict
        print(f"ray: {ray_dict['photos_per_second']} photos/s (init {init_s:.1f} s)", flush=True)
        ray.shutdown()
    result["load_average_at_end"] = os.getloadavg()
    print(write_result(args.name, result))
    # The databases, and the photos unless --photos keeps them elsewhere.
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
