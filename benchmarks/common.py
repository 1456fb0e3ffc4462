"""Helpers shared by the benchmark scripts: where shared data is, where results go, memory readings."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEATLAS_SHARED", ROOT / ".." / "shared")).resolve()
RESULTS = ROOT / "benchmarks" / "results"


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def summary(values_ms: list[float]) -> dict[str, float]:
    data = np.asarray(values_ms, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(data, 50)), 2),
        "p90": round(float(np.percentile(data, 90)), 2),
        "p99": round(float(np.percentile(data, 99)), 2),
        "mean": round(float(data.mean()), 2),
        "n": len(data),
    }


def machine() -> dict[str, object]:
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def write_result(name: str, result: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path
