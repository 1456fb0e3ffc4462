"""One embedding per image (the subject's face) for evaluation sets, cached per pack on disk.

Evaluation images (LFW) show one subject at the centre, sometimes with other people around; the
subject is the face centred nearest to the image centre among those whose box covers it.
The cache is keyed by the images folder, the pack and the detector settings, and every entry remembers
its file's size and mtime, so a changed image is re-embedded and a larger run reuses a smaller one's work.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceatlas.errors import ImageError
from faceatlas.face import DetectedFace
from faceatlas.quality import face_qualities

if TYPE_CHECKING:
    from faceatlas.engine import Engine

CACHE_VERSION = 3  # bump when the choice of face or the cache layout changes (3: + quality)
SAVE_EVERY_BATCHES = 32


@dataclass(frozen=True, slots=True)
class ImageEmbeddings:
    names: tuple[str, ...]  # paths relative to the images folder
    embeddings: np.ndarray  # (n, d) float32 unit vectors; zero rows where no face was found
    found: np.ndarray  # bool per image: a face was found and embedded
    faces: np.ndarray  # faces detected per image (-1: the image could not be read)
    quality: np.ndarray  # faceatlas.quality score of the subject face (0 where none was found)
    errors: dict[str, str]  # unreadable images -> reason
    computed: int  # images embedded in this run (the rest came from the cache)

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    @property
    def no_face(self) -> list[str]:
        return [name for name, ok in zip(self.names, self.found, strict=True) if not ok]


def subject_face(faces: Sequence[DetectedFace], width: float, height: float) -> int | None:
    """Index of the subject: of the faces whose box covers the image centre, the one centred nearest to it;
    the largest face if none covers the centre.

    Nearest rather than largest: a loose false detection around the subject's head is often larger than
    the subject's face and covers the centre too, but its own centre is off to one side.
    """
    if not faces:
        return None
    cx, cy = width / 2, height / 2
    boxes = np.array([f.box for f in faces], dtype=np.float64)
    covers = (boxes[:, 0] <= cx) & (cx <= boxes[:, 2]) & (boxes[:, 1] <= cy) & (cy <= boxes[:, 3])
    if not covers.any():
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return int(np.argmax(areas))
    offset = np.hypot((boxes[:, 0] + boxes[:, 2]) / 2 - cx, (boxes[:, 1] + boxes[:, 3]) / 2 - cy)
    return int(np.argmin(np.where(covers, offset, np.inf)))


def default_cache_dir() -> Path:
    from faceatlas.models.store import cache_dir

    return cache_dir() / "eval"


def cache_file(cache_root: Path, pack: str, images_dir: Path, settings: str) -> Path:
    key = hashlib.sha256(f"{Path(images_dir).resolve()}|{settings}".encode()).hexdigest()[:16]
    return Path(cache_root) / pack / f"{key}.npz"


def _stamps(images_dir: Path, names: Sequence[str]) -> np.ndarray:
    """(n, 2) int64 size and mtime_ns of each file; -1 for files that do not exist."""
    out = np.full((len(names), 2), -1, dtype=np.int64)
    for i, name in enumerate(names):
        try:
            st = os.stat(images_dir / name)
        except OSError:
            continue
        out[i] = (st.st_size, st.st_mtime_ns)
    return out


#: One cached image: embedding, face found, faces detected, (size, mtime_ns), subject quality.
Entry = tuple[np.ndarray, bool, int, np.ndarray, float]


def _load_cache(path: Path, dim: int) -> dict[str, Entry]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != CACHE_VERSION or data["embeddings"].shape[1] != dim:
                return {}
            return {
                str(name): (vec, bool(ok), int(count), stamp, float(quality))
                for name, vec, ok, count, stamp, quality in zip(
                    data["names"],
                    data["embeddings"],
                    data["found"],
                    data["faces"],
                    data["stamps"],
                    data["quality"],
                    strict=True,
                )
            }
    except (OSError, KeyError, ValueError):
        return {}  # a missing or damaged cache only costs a recomputation


def _save_cache(path: Path, entries: dict[str, Entry], dim: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(entries)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # one per writer process
    np.savez(
        tmp,
        version=np.array(CACHE_VERSION),
        names=np.array(names, dtype=str),
        embeddings=np.stack([entries[n][0] for n in names]).astype(np.float32)
        if names
        else np.zeros((0, dim)),
        found=np.array([entries[n][1] for n in names], dtype=bool),
        faces=np.array([entries[n][2] for n in names], dtype=np.int64),
        stamps=np.stack([entries[n][3] for n in names]) if names else np.zeros((0, 2), np.int64),
        quality=np.array([entries[n][4] for n in names], dtype=np.float32),
    )
    os.replace(tmp, path)  # atomic: an interrupted run leaves the old cache intact


def embed_images(
    engine: Engine,
    images_dir: Path,
    names: Sequence[str],
    *,
    cache_root: Path | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    det_threshold: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImageEmbeddings:
    """Embed the subject face of every image in ``names`` (relative to ``images_dir``)."""
    images_dir = Path(images_dir)
    dim = engine.pack.embedding_size
    settings = f"{engine.pack.id}|{engine.pack.version}|{engine.pack.detector_name}|{det_threshold}"
    path = cache_file(cache_root or default_cache_dir(), engine.pack.id, images_dir, settings)
    stamps = _stamps(images_dir, names)
    entries = _load_cache(path, dim) if use_cache else {}

    todo = [
        i
        for i, name in enumerate(names)
        if name not in entries or not np.array_equal(entries[name][3], stamps[i]) or stamps[i, 0] < 0
    ]
    if progress is not None and len(names) > len(todo):
        progress(len(names) - len(todo))
    errors: dict[str, str] = {}
    zero = np.zeros(dim, dtype=np.float32)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        decoded, readable = [], []
        for i in chunk:
            try:
                decoded.append(engine.decode(images_dir / names[i]))
                readable.append(i)
            except (ImageError, OSError) as exc:
                errors[names[i]] = str(exc)
                entries[names[i]] = (zero, False, -1, stamps[i], 0.0)
        results = engine.analyze_batch(decoded, embed=False, det_threshold=det_threshold) if decoded else []
        for i, image, faces in zip(readable, decoded, results, strict=True):
            width, height = image.original_size
            chosen = subject_face(faces, width, height)
            if chosen is None:
                entries[names[i]] = (zero, False, 0, stamps[i], 0.0)
                continue
            engine.embed_faces(image, [faces[chosen]])
            (quality,) = face_qualities(image, [faces[chosen]])
            vector = faces[chosen].embedding
            assert vector is not None  # embed_faces just set it
            entries[names[i]] = (
                vector.astype(np.float32),
                True,
                len(faces),
                stamps[i],
                quality,
            )
        if progress is not None:
            progress(len(chunk))
        if use_cache and (start // batch_size + 1) % SAVE_EVERY_BATCHES == 0:
            _save_cache(path, entries, dim)  # an interrupted run keeps what it has embedded
    if todo and use_cache:
        _save_cache(path, entries, dim)

    rows = [entries[name] for name in names]
    return ImageEmbeddings(
        names=tuple(names),
        embeddings=np.stack([r[0] for r in rows]).astype(np.float32)
        if rows
        else np.zeros((0, dim), np.float32),
        found=np.array([r[1] for r in rows], dtype=bool),
        faces=np.array([r[2] for r in rows], dtype=np.int64),
        quality=np.array([r[4] for r in rows], dtype=np.float32),
        errors=errors,
        computed=len(todo),
    )
