"""Engine benchmark: cold load time, RSS after load, per-stage milliseconds and analyze latency.

    python benchmarks/engine.py [--pack sface] [--runs 60] [--threads N]

Writes benchmarks/results/engine.json. Latencies are medians over ``--runs`` calls after a warm-up,
on a one-face 1080p JPEG (``obama-1080p.jpg``), a 12 MP JPEG made from it and a 250 x 250 LFW photo
(``--threads 1`` gives the one-thread stage costs an indexer worker pays per photo).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, machine, rss_mb, summary, write_result

PHOTO = SHARED / "data/photos/face_recognition_examples/examples/obama-1080p.jpg"
LFW_PHOTO = SHARED / "data/lfw-dev/images/AJ_Cook/AJ_Cook_0001.jpg"

COLD_LOAD = """
import json, time, sys
started = time.perf_counter()
from faceatlas.engine import Engine
engine = Engine(sys.argv[1])
loaded = time.perf_counter() - started
rss = [int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmRSS:')][0]
print(json.dumps({"cold_load_s": loaded, "engine_init_s": engine.load_seconds, "rss_after_load_mb": rss}))
"""


def _load_once(pack: str, env: dict[str, str] | None = None) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", COLD_LOAD, pack], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_load(pack: str, repeats: int) -> dict[str, object]:
    """A fresh process importing faceatlas and loading the pack; the very first load also converts models."""
    with tempfile.TemporaryDirectory() as empty_cache:
        first = _load_once(pack, {**os.environ, "FACEATLAS_CACHE": empty_cache})
    samples = [_load_once(pack) for _ in range(repeats)]
    return {
        "first_load_with_conversion_s": round(first["cold_load_s"], 3),
        "cold_load_s": summary([s["cold_load_s"] * 1000 for s in samples])["p50"] / 1000,
        "engine_init_s": summary([s["engine_init_s"] * 1000 for s in samples])["p50"] / 1000,
        "rss_after_load_mb": round(summary([s["rss_after_load_mb"] for s in samples])["p50"], 1),
        "repeats": repeats,
    }


def stage_latency(engine, data: bytes, runs: int, plugins: tuple[str, ...], embed: bool = True) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(5):
        engine.analyze(data, plugins=plugins, embed=embed)
    totals, stages = [], {}
    for _ in range(runs):
        timings: dict[str, float] = {}
        started = time.perf_counter()
        engine.analyze(data, plugins=plugins, embed=embed, timings=timings)
        totals.append((time.perf_counter() - started) * 1000)
        for stage, seconds in timings.items():
            stages.setdefault(stage, []).append(seconds * 1000)
    return {
        "analyze_ms": summary(totals),
        "stages_ms_p50": {stage: summary(values)["p50"] for stage, values in stages.items()},
    }


def plugin_cost_per_face(engine, data: bytes, runs: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Milliseconds each attribute plugin adds per face (its share of the ``attributes`` stage, one face),
    and the mask classifier's per-face cost when 8 faces are classified in one batch."""
    import numpy as np

    from faceatlas.models.mask import MaskClassifier

    out: dict[str, object] = {}
    for plugin in [p for p in engine.pack.plugins if p != "landmarks"]:
        measured = stage_latency(engine, data, runs, plugins=(plugin,), embed=False)
        out[plugin] = round(measured["stages_ms_p50"].get("attributes", 0.0), 3)
    mask = engine.attribute_model("mask")
    if isinstance(mask, MaskClassifier):
        decoded = engine.decode(data)
        boxes = np.repeat(engine.detector.detect(decoded.rgb, 0.6).boxes[:1], 8, axis=0)
        mask.classify(decoded.rgb, boxes)
        samples = []
        for _ in range(max(5, runs // 4)):
            started = time.perf_counter()
            mask.classify(decoded.rgb, boxes)
            samples.append((time.perf_counter() - started) * 1000 / len(boxes))
        out["mask_batch_of_8_per_face"] = round(summary(samples)["p50"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pack", default="sface")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import cv2

    from faceatlas.engine import Engine
    from faceatlas.images import decode_image

    result: dict[str, object] = {"pack": args.pack, "machine": machine(), "photo": PHOTO.name}
    result["cold"] = cold_load(args.pack, repeats=5)

    engine = Engine(args.pack, threads=args.threads)
    data = PHOTO.read_bytes()
    result["rss_after_load_in_process_mb"] = round(rss_mb(), 1)
    result["one_face_1080p_embed_only"] = stage_latency(engine, data, args.runs, plugins=())
    result["one_face_1080p_all_plugins"] = stage_latency(
        engine, data, args.runs, plugins=("age", "gender", "pose")
    )
    result["one_face_1080p_detect_only"] = stage_latency(engine, data, args.runs, plugins=(), embed=False)
    result["plugin_ms_per_face"] = plugin_cost_per_face(engine, data, max(10, args.runs // 3))
    result["one_face_lfw_250px_embed_only"] = stage_latency(
        engine, LFW_PHOTO.read_bytes(), args.runs, plugins=()
    )

    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "12mp.jpg"
        cv2.imwrite(
            str(big),
            cv2.resize(cv2.imread(str(PHOTO)), (4000, 2250), interpolation=cv2.INTER_CUBIC),
            [cv2.IMWRITE_JPEG_QUALITY, 90],
        )
        blob = big.read_bytes()
        full, reduced = [], []
        for _ in range(20):
            started = time.perf_counter()
            decode_image(blob)
            full.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            decode_image(blob, target_size=engine.decode_size)
            reduced.append((time.perf_counter() - started) * 1000)
        result["decode_12mp_ms"] = {
            "full": summary(full),
            "dct_reduced": summary(reduced),
            "speedup_p50": round(summary(full)["p50"] / summary(reduced)["p50"], 2),
        }
        result["one_face_12mp_embed_only"] = stage_latency(engine, blob, max(10, args.runs // 3), plugins=())
    result["rss_end_mb"] = round(rss_mb(), 1)
    result["targets"] = {"cold_load_s": 1.5, "rss_after_load_mb": 250, "analyze_p50_ms": 60}
    path = write_result("engine", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
