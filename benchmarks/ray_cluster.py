"""Photos/s of ``faceatlas index`` locally and with ``--ray`` on a real two-node Ray cluster.

    sudo PYTHONPATH=src python benchmarks/ray_cluster.py [--photos 200]

The cluster is the one the tests use (tests/ray_cluster.py: a head node plus a node in its own network
namespace, one CPU each). Both runs index the same LFW photos into fresh SQLite libraries, without the
attribute models. On one 2-core machine the two nodes share the same cores, so this measures Ray's
overhead and scheduling rather than a speed-up; it is reported, not floored. Writes
benchmarks/results/ray_cluster.json with the load average, since this machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.ray_cluster import ROOT, RayCluster

from benchmarks.common import SHARED, machine, write_result


def run_index(folder: Path, library: Path, env: dict[str, str], *extra: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "faceatlas",
            "index",
            str(folder),
            "--library",
            str(library),
            "--no-attributes",
            "--json",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(done.stdout[done.stdout.index("{") :])
    report["process_seconds"] = round(time.perf_counter() - started, 2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faceatlas-raybench-"))
    try:
        folder = work / "photos"
        folder.mkdir()
        for image in sorted((SHARED / "data" / "lfw-dev" / "images").glob("*/*.jpg"))[: args.photos]:
            shutil.copy(image, folder / image.name)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        result: dict[str, object] = {
            "machine": machine(),
            "photos": args.photos,
            "load_average": [os.getloadavg()[0]],
        }
        local = run_index(folder, work / "local.db", env)
        result["local"] = {
            k: local[k] for k in ("indexed", "faces", "wall_seconds", "photos_per_second", "process_seconds")
        }
        with RayCluster() as cluster:
            ray = run_index(
                folder, work / "ray.db", cluster.env, "--batch-size", "4", f"--ray={cluster.address}"
            )
        result["ray_two_nodes"] = {
            k: ray[k] for k in ("indexed", "faces", "wall_seconds", "photos_per_second", "process_seconds")
        }
        result["load_average"].append(os.getloadavg()[0])  # type: ignore[union-attr]
        path = write_result("ray_cluster", result)
        print(json.dumps(result, indent=2), f"\nwritten to {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
