"""The indexer as a Ray Data job: decode tasks → analysis actors (one engine each) → the library writer.

Same scan, skip rules and writer as the local pipeline (:mod:`faceatlas.library.pipeline`); only
decode and analysis move to Ray, so a cluster's nodes can share the work. Results stream back to the
driver, which commits them through the single :class:`~faceatlas.library.writer.WriterThread`.
Decoded pixels travel as raw bytes plus a shape, because Ray Data columns cannot hold images of
different sizes as one tensor.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from faceatlas.library.pipeline import (
    IndexOptions,
    IndexReport,
    ProgressCallback,
    start_run,
)
from faceatlas.library.scan import FileEntry
from faceatlas.library.work import decode_photo, describe_error
from faceatlas.library.writer import PhotoResult, WriterThread
from faceatlas.quality import face_qualities
from faceatlas.storage import Database

if TYPE_CHECKING:
    from faceatlas.engine import Engine


def decode_batch(batch: dict[str, np.ndarray], decode_size: int) -> dict[str, np.ndarray]:
    """Ray task: decode a batch of files; failures become rows with an ``error``."""
    rows: dict[str, list] = {
        k: []
        for k in (
            "path",
            "size",
            "mtime",
            "hash",
            "error",
            "unchanged",
            "pixels",
            "shape",
            "scale",
            "width",
            "height",
            "taken_at",
            "decode_s",
        )
    }
    for path, size, mtime, known in zip(
        batch["path"], batch["size"], batch["mtime"], batch["known_hash"], strict=True
    ):
        entry = FileEntry(str(path), int(size), float(mtime))
        d = decode_photo(entry, decode_size, str(known) if known else None)
        image = d.image
        rows["path"].append(entry.path)
        rows["size"].append(entry.size)
        rows["mtime"].append(entry.mtime)
        rows["hash"].append(d.content_hash or "")
        rows["error"].append(d.error or "")
        rows["unchanged"].append(d.unchanged_content)
        rows["pixels"].append(b"" if image is None else image.rgb.tobytes())
        rows["shape"].append(
            np.zeros(3, np.int64) if image is None else np.asarray(image.rgb.shape, np.int64)
        )
        rows["scale"].append(1.0 if image is None else float(image.scale))
        rows["width"].append(0 if image is None else image.original_size[0])
        rows["height"].append(0 if image is None else image.original_size[1])
        rows["taken_at"].append(d.taken_at.isoformat() if d.taken_at else "")
        rows["decode_s"].append(d.seconds)
    return {
        k: np.asarray(v, dtype=object)
        if k in ("pixels", "path", "hash", "error", "taken_at")
        else np.stack(v)
        if k == "shape"
        else np.asarray(v)
        for k, v in rows.items()
    }


class AnalyzeActor:
    """Ray actor holding one engine; analyses batches of decoded photos."""

    def __init__(
        self,
        pack: str,
        threads: int | None,
        plugins: tuple[str, ...],
        det_threshold: float | None,
        min_face_size: float,
        providers: tuple[str, ...] = ("cpu",),
    ) -> None:
        from faceatlas.engine import Engine

        self.engine = Engine(pack, providers=providers, threads=threads, attributes=bool(plugins))
        self.kwargs: dict[str, Any] = {
            "plugins": plugins,
            "det_threshold": det_threshold,
            "min_face_size": min_face_size,
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from faceatlas.images import DecodedImage

        ok = [i for i, err in enumerate(batch["error"]) if not err and not batch["unchanged"][i]]
        images = [
            DecodedImage(
                np.frombuffer(batch["pixels"][i], np.uint8).reshape(tuple(batch["shape"][i])),
                float(batch["scale"][i]),
                (int(batch["width"][i]), int(batch["height"][i])),
                "ray",
            )
            for i in ok
        ]
        timings: dict[str, float] = {}
        faces: list[Any] = [[] for _ in batch["path"]]
        quality: list[list[float]] = [[] for _ in batch["path"]]
        errors = list(batch["error"])
        if images:
            found: list[Any]
            try:
                found = self.engine.analyze_batch(images, timings=timings, **self.kwargs)
            except Exception as exc:  # report on every photo of the batch rather than kill the job
                found = [exc] * len(images)
            for i, image, result in zip(ok, images, found, strict=True):
                if isinstance(result, BaseException):
                    errors[i] = describe_error(result)
                else:
                    faces[i] = result
                    quality[i] = face_qualities(image, result)
        n = len(batch["path"])
        share = {k: v / max(len(images), 1) for k, v in timings.items()}
        out = {
            k: batch[k]
            for k in ("path", "size", "mtime", "hash", "unchanged", "width", "height", "taken_at", "decode_s")
        }
        out["error"] = np.asarray(errors, dtype=object)
        out["faces"] = np.asarray([pickle.dumps(f) for f in faces], dtype=object)
        out["quality"] = np.asarray([pickle.dumps(q) for q in quality], dtype=object)
        out["pack"] = np.asarray([self.engine.pack.id] * n, dtype=object)
        for stage in ("detect", "align", "embed", "attributes"):
            out[f"{stage}_s"] = np.asarray([share.get(stage, 0.0) if i in ok else 0.0 for i in range(n)])
        return out


def index_library_ray(
    db: Database,
    engine: Engine,
    roots: Iterable[str | os.PathLike[str]],
    *,
    options: IndexOptions | None = None,
    progress: ProgressCallback | None = None,
    address: str | None = None,
    actors: int | None = None,
) -> IndexReport:
    """Index ``roots`` like :func:`~faceatlas.library.pipeline.index_library`, with Ray Data doing the work.

    ``address`` is a Ray cluster address (``None``: start or join a local Ray). ``engine`` is only used
    for its pack id; every actor loads its own engine.
    """
    from datetime import datetime

    import ray

    options = options or IndexOptions()
    started = time.perf_counter()
    report, todo, known = start_run(db, roots, progress)
    if not todo:
        report.wall_seconds = time.perf_counter() - started
        return report
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 1))
    gpus = int(resources.get("GPU", 0))
    # One single-threaded engine per CPU: Ray fuses decode into the actors, so each actor decodes
    # and analyses its own batches and the CPUs never wait on each other. On a cluster with GPUs,
    # one engine per GPU instead (CUDA first, CPU for what it cannot run).
    actors = actors or (gpus or cpus)
    placement: dict[str, Any] = {"num_cpus": 1}
    providers: tuple[str, ...] = ("cpu",)
    if gpus:
        placement["num_gpus"] = 1
        providers = ("cuda", "cpu")
    items = [
        {
            "path": e.path,
            "size": e.size,
            "mtime": e.mtime,
            "known_hash": (known[e.path].content_hash or "") if e.path in known else "",
        }
        for e in todo
    ]
    ds: Any = ray.data.from_items(
        items, override_num_blocks=max(1, min(len(items) // max(options.batch_size, 1), 64))
    )
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"decode_size": options.decode_size},
        batch_size=options.batch_size,
        batch_format="numpy",
    )
    ds = ds.map_batches(
        AnalyzeActor,
        fn_constructor_kwargs={
            "pack": engine.pack.id,
            "threads": 1,
            "plugins": tuple(options.plugins),
            "det_threshold": options.det_threshold,
            "min_face_size": options.min_face_size,
            "providers": providers,
        },
        batch_size=options.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        # A worker process or node that dies mid-job: Ray Data restarts the actor and runs its batch
        # again (its defaults, max_restarts=-1 and max_task_retries=-1; setting them here would stop
        # decode from fusing into the actors). Results reach the writer only from finished batches,
        # so nothing is written twice.
        **placement,
    )
    writer = WriterThread(db)
    done = 0
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["path"])):
                entry = FileEntry(str(batch["path"][i]), int(batch["size"][i]), float(batch["mtime"][i]))
                error = str(batch["error"][i]) or None
                stamp = str(batch["taken_at"][i])
                faces = pickle.loads(batch["faces"][i]) if error is None else []
                result = PhotoResult(
                    entry,
                    str(batch["hash"][i]) or None,
                    int(batch["width"][i]) or None,
                    int(batch["height"][i]) or None,
                    datetime.fromisoformat(stamp) if stamp else None,
                    faces,
                    error,
                    str(batch["pack"][i]),
                    bool(batch["unchanged"][i]),
                    quality=pickle.loads(batch["quality"][i]) if error is None else None,
                )
                writer.put(result)
                done += 1
                report.stage_seconds["decode"] += float(batch["decode_s"][i])
                report.stage_seconds["detect"] += float(batch["detect_s"][i])
                report.stage_seconds["embed"] += float(batch["align_s"][i]) + float(batch["embed_s"][i])
                report.stage_seconds["attributes"] += float(batch["attributes_s"][i])
                report.record(result)
            if progress:
                progress(done, len(todo), report.faces)
    finally:
        writer.close()
        report.finish(done, writer.writer.seconds)
        report.wall_seconds = time.perf_counter() - started
    return report
