"""Drive an engine over an evaluation data set and return a JSON-ready report (for ``faceatlas eval``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceatlas.evaluation import wider
from faceatlas.evaluation.cluster_metrics import cluster_scores
from faceatlas.evaluation.embeddings import ImageEmbeddings, embed_images
from faceatlas.evaluation.errors import DatasetError
from faceatlas.evaluation.lfw import find_images_dir, pair_similarities, parse_pairs, verification_report

if TYPE_CHECKING:
    from faceatlas.engine import Engine

# track(description, total) -> advance(n): how runs report progress without knowing about rich
Tracker = Callable[[str, int], Callable[[int], None]]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
#: Lowest detection score kept for WIDER: the official protocol sweeps thresholds over all detections.
WIDER_DET_THRESHOLD = 0.02


def _no_tracking(description: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def _engine_info(engine: Engine) -> dict[str, Any]:
    pack = engine.pack
    return {
        "pack": pack.id,
        "pack_version": pack.version,
        "detector": pack.detector_name,
        "recognizer": pack.recognizer_name,
        "embedding_size": pack.embedding_size,
    }


def run_lfw(
    engine: Engine,
    root: Path,
    *,
    pairs_file: Path | None = None,
    folds: int | None = None,
    far: float = 1e-3,
    cache_root: Path | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    det_threshold: float | None = None,
    track: Tracker = _no_tracking,
) -> dict[str, Any]:
    """LFW View-2 verification on ``root`` (``pairs.txt`` plus an images folder)."""
    started = time.perf_counter()
    root = Path(root)
    pairs_file = pairs_file or root / "pairs.txt"
    pairs = parse_pairs(pairs_file, folds=folds)
    images_dir = find_images_dir(root, pairs)
    names = pairs.images()
    missing = [n for n in names if not (images_dir / n).is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} images of {pairs_file} are missing under {images_dir}, e.g. {missing[0]}"
        )

    advance = track("embedding LFW images", len(names))
    embedded = embed_images(
        engine,
        images_dir,
        names,
        cache_root=cache_root,
        use_cache=use_cache,
        batch_size=batch_size,
        det_threshold=det_threshold,
        progress=advance,
    )
    embed_seconds = time.perf_counter() - started
    similarity = pair_similarities(pairs, embedded.index(), embedded.embeddings, embedded.found)
    index = embedded.index()
    pair_missing = ~(
        embedded.found[[index[p] for p in pairs.left]] & embedded.found[[index[p] for p in pairs.right]]
    )
    report = {
        "protocol": "lfw-view2",
        **_engine_info(engine),
        "root": str(root),
        "pairs_file": str(pairs_file),
        "images": len(names),
        "images_no_face": embedded.no_face,
        "images_unreadable": embedded.errors,
        "pairs_with_missing_face": {
            "count": int(pair_missing.sum()),
            "same": int((pair_missing & pairs.same).sum()),
            "scored_as": "similarity -1 / distance 2.0, i.e. 'different person'",
        },
        "det_threshold": det_threshold,
        **verification_report(similarity, pairs.same, pairs.fold, pack=engine.pack.id, far=far),
    }
    report["timing"] = {
        "embedded_now": embedded.computed,
        "from_cache": len(names) - embedded.computed,
        "embed_seconds": embed_seconds,
        "total_seconds": time.perf_counter() - started,
    }
    return report


def run_wider(
    engine: Engine,
    root: Path,
    *,
    det_threshold: float = WIDER_DET_THRESHOLD,
    limit: int | None = None,
    track: Tracker = _no_tracking,
) -> dict[str, Any]:
    """The official WIDER FACE evaluation on the images ``root/images`` holds."""
    images = wider.load_dataset(Path(root))
    if limit:
        images = images[:limit]
    started = time.perf_counter()
    advance = track("detecting WIDER faces", len(images))
    predictions: dict[str, np.ndarray] = {}
    images_dir = Path(root) / "images"
    for image in images:
        # the detector alone: the protocol needs every low-score box, not aligned and embedded faces
        decoded = engine.decode(images_dir / image.name)
        found = engine.detector.detect(decoded.rgb, det_threshold)
        boxes = np.column_stack([found.boxes * decoded.scale, found.scores]).astype(np.float64).reshape(-1, 5)
        boxes[:, 2:4] -= boxes[:, 0:2]  # x_min, y_min, x_max, y_max -> x, y, w, h
        predictions[image.name] = boxes
        advance(1)
    detect_seconds = time.perf_counter() - started
    result = wider.evaluate(images, predictions)
    return {
        "protocol": "wider-face-val",
        **_engine_info(engine),
        "root": str(root),
        "images": result.images,
        "faces": result.faces,
        "predictions": result.predictions,
        "det_threshold": det_threshold,
        "ap": {setting: (None if np.isnan(ap) else ap) for setting, ap in result.ap.items()},
        "timing": {
            "detect_seconds": detect_seconds,
            "images_per_second": len(images) / max(detect_seconds, 1e-9),
        },
    }


def people_with_images(images_dir: Path, min_images: int) -> dict[str, list[str]]:
    """Identity folders under ``images_dir`` with at least ``min_images`` images (relative paths)."""
    people = {}
    for folder in sorted(p for p in Path(images_dir).iterdir() if p.is_dir()):
        files = sorted(
            f"{folder.name}/{f.name}" for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
        )
        if len(files) >= min_images:
            people[folder.name] = files
    return people


def embed_identities(
    engine: Engine,
    root: Path,
    min_images: int,
    max_people: int | None,
    cache_root: Path | None,
    use_cache: bool,
    batch_size: int,
    track: Tracker,
) -> tuple[dict[str, list[str]], np.ndarray, ImageEmbeddings]:
    """The identity folders of ``root`` with >= ``min_images`` images, each image's identity and embedding."""
    root = Path(root)
    images_dir = root / "images" if (root / "images").is_dir() else root
    people = people_with_images(images_dir, min_images)
    if max_people:
        people = dict(list(people.items())[:max_people])
    if not people:
        raise DatasetError(f"no identity folder under {images_dir} has {min_images} or more images")
    names = [name for files in people.values() for name in files]
    identity = np.array([name.split("/", 1)[0] for name in names])
    embedded = embed_images(
        engine,
        images_dir,
        names,
        cache_root=cache_root,
        use_cache=use_cache,
        batch_size=batch_size,
        progress=track("embedding faces", len(names)),
    )
    return people, identity, embedded


def run_cluster(
    engine: Engine,
    root: Path,
    *,
    min_images: int = 5,
    threshold: float | None = None,
    min_cluster_size: int = 2,
    max_people: int | None = None,
    cache_root: Path | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    track: Tracker = _no_tracking,
) -> dict[str, Any]:
    """Cluster the faces of every identity with >= ``min_images`` images and score against the identities."""
    from faceatlas.clustering import cluster_faces

    started = time.perf_counter()
    people, identity, embedded = embed_identities(
        engine, root, min_images, max_people, cache_root, use_cache, batch_size, track
    )
    names = embedded.names
    embed_seconds = time.perf_counter() - started
    found = embedded.found
    threshold = engine.pack.threshold if threshold is None else threshold
    cluster_started = time.perf_counter()
    # every image is its own photo, so no cannot-link constraint applies between them
    labels = cluster_faces(
        embedded.embeddings[found],
        threshold=threshold,
        photo_ids=np.arange(int(found.sum())),
        min_cluster_size=min_cluster_size,
    )
    cluster_seconds = time.perf_counter() - cluster_started
    scores = cluster_scores(labels, identity[found])
    return {
        "protocol": "identity-clustering",
        **_engine_info(engine),
        "root": str(root),
        "min_images": min_images,
        "people": len(people),
        "images": len(names),
        "images_no_face": int((~found).sum()),
        "threshold": threshold,
        "min_cluster_size": min_cluster_size,
        **scores.to_dict(),
        "timing": {
            "embed_seconds": embed_seconds,
            "cluster_seconds": cluster_seconds,
            "embedded_now": embedded.computed,
        },
    }


#: Quality gates ``eval cluster --distractors`` reports (faceatlas.quality scores).
DISTRACTOR_GATES = (0.0, 0.3, 0.5, 0.7)


def cluster_library_like(
    embeddings: np.ndarray,
    *,
    threshold: float,
    far: float = 1e-3,
    min_faces: int = 3,
    eligible: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    new: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """One library clustering run over ``embeddings`` (each its own photo): the threshold corrected for
    their number as :func:`faceatlas.library.clustering.run_threshold` does, then
    :func:`faceatlas.clustering.cluster_incremental`. Returns (labels, threshold used)."""
    from faceatlas.clustering import cluster_incremental, impostor_spread, one_to_n_threshold

    n = len(embeddings)
    corrected = one_to_n_threshold(threshold, n, far=far, spread=impostor_spread(embeddings))
    start = np.full(n, -1, dtype=np.int64) if labels is None else labels
    result = cluster_incremental(
        embeddings, start, threshold=corrected, eligible=eligible, min_faces=min_faces, new=new
    )
    return result.labels, corrected


def run_cluster_distractors(
    engine: Engine,
    root: Path,
    *,
    threshold: float | None = None,
    min_faces: int = 3,
    gates: tuple[float, ...] = DISTRACTOR_GATES,
    frequent_min_photos: int = 5,
    incremental: bool = True,
    max_people: int | None = None,
    cache_root: Path | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    track: Tracker = _no_tracking,
) -> dict[str, Any]:
    """Every photo of every identity under ``root`` in one library (most identities are strangers seen
    once), clustered as the library does and scored on each photo's main face."""
    from faceatlas.evaluation.cluster_metrics import distractor_scores

    started = time.perf_counter()
    people, identity, embedded = embed_identities(
        engine, root, 1, max_people, cache_root, use_cache, batch_size, track
    )
    names = embedded.names
    embed_seconds = time.perf_counter() - started
    found = embedded.found
    x, truth, quality = embedded.embeddings[found], identity[found], embedded.quality[found]
    base = engine.pack.threshold if threshold is None else threshold

    def scored(labels: np.ndarray) -> dict[str, Any]:
        return distractor_scores(labels, truth, frequent_min_photos=frequent_min_photos).to_dict()

    cluster_started = time.perf_counter()
    by_gate = []
    single: dict[str, Any] = {}
    for gate in gates:
        labels, used = cluster_library_like(x, threshold=base, min_faces=min_faces, eligible=quality >= gate)
        entry = {"gate": gate, "eligible": int((quality >= gate).sum()), "threshold": used, **scored(labels)}
        by_gate.append(entry)
        if gate == gates[0]:
            single = entry
    cluster_seconds = time.perf_counter() - cluster_started
    report: dict[str, Any] = {
        "protocol": "identity-clustering-distractors",
        **_engine_info(engine),
        "root": str(root),
        "people": len(people),
        "images": len(names),
        "images_no_face": int((~found).sum()),
        "base_threshold": base,
        "min_faces": min_faces,
        "single_run": single,
        "quality_gates": by_gate,
    }
    if incremental:
        # half the photos (a seeded random half), cluster, then all of them, cluster again
        first = np.random.default_rng(0).random(len(x)) < 0.5
        labels = np.full(len(x), -1, dtype=np.int64)
        labels[first], _ = cluster_library_like(x[first], threshold=base, min_faces=min_faces)
        labels, used = cluster_library_like(x, threshold=base, min_faces=min_faces, labels=labels, new=~first)
        report["incremental_run"] = {"threshold": used, **scored(labels)}
    report["timing"] = {
        "embed_seconds": embed_seconds,
        "cluster_seconds": cluster_seconds,
        "embedded_now": embedded.computed,
    }
    return report
