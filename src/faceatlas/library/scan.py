"""Finding photos on disk and deciding which of them need (re-)indexing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

#: File name suffixes the indexer reads (compared lower-case).
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".tif", ".tiff", ".bmp"})


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One photo file as seen on disk: absolute path, size in bytes and modification time."""

    path: str
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class KnownPhoto:
    """What the library already holds for a path."""

    size: int
    mtime: float
    content_hash: str | None


def _walk(root: Path) -> Iterator[FileEntry]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # unreadable folder: nothing to index there
        for entry in sorted(entries, key=lambda e: e.name):
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in PHOTO_SUFFIXES:
                    st = entry.stat()
                    yield FileEntry(str(Path(entry.path).resolve()), st.st_size, st.st_mtime)
            except OSError:
                continue


def scan_photos(roots: Iterable[str | os.PathLike[str]]) -> list[FileEntry]:
    """Every photo file under ``roots`` (files or folders, recursive), sorted by path, no duplicates."""
    found: dict[str, FileEntry] = {}
    for root in roots:
        root_path = Path(root).expanduser()
        if root_path.is_file():
            st = root_path.stat()
            resolved = str(root_path.resolve())
            found[resolved] = FileEntry(resolved, st.st_size, st.st_mtime)
        else:
            for entry in _walk(root_path):
                found[entry.path] = entry
    return [found[p] for p in sorted(found)]


def needs_indexing(entry: FileEntry, known: KnownPhoto | None) -> bool:
    """True for a new path or one whose size or mtime changed since it was indexed (or recorded as bad)."""
    return known is None or known.size != entry.size or known.mtime != entry.mtime


def plan(entries: Iterable[FileEntry], known: Mapping[str, KnownPhoto]) -> tuple[list[FileEntry], int]:
    """The entries to index and the count of unchanged ones skipped."""
    entries = list(entries)
    todo = [e for e in entries if needs_indexing(e, known.get(e.path))]
    return todo, len(entries) - len(todo)


@dataclass(frozen=True, slots=True)
class Move:
    """A photo the library knows under ``old_path`` that now lives at ``entry.path`` (same bytes)."""

    old_path: str
    entry: FileEntry


def file_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, the library's content hash (the same the decoder records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def missing_paths(known: Mapping[str, KnownPhoto], seen: Iterable[FileEntry]) -> list[str]:
    """Photos the library holds that this scan did not see and that no longer exist on disk."""
    seen_paths = {e.path for e in seen}
    return sorted(p for p in known if p not in seen_paths and not os.path.exists(p))


def find_moves(
    todo: Iterable[FileEntry], missing: Iterable[str], known: Mapping[str, KnownPhoto]
) -> tuple[list[FileEntry], list[Move], list[str]]:
    """Recognise moved or renamed photos by their content hash.

    A new path whose bytes equal a missing photo's is that photo, moved: it keeps its faces and
    people instead of being detected again. Only new files of the same size as a missing photo
    are hashed here, so a run without missing photos reads nothing extra. Returns (photos still
    to index, moves, photos still missing, i.e. deleted).
    """
    by_size: dict[int, dict[str, str]] = {}
    for path in missing:
        photo = known[path]
        if photo.content_hash is not None:
            by_size.setdefault(photo.size, {}).setdefault(photo.content_hash, path)
    moves: list[Move] = []
    rest: list[FileEntry] = []
    for entry in todo:
        candidates = by_size.get(entry.size)
        if entry.path in known or not candidates:
            rest.append(entry)
            continue
        try:
            old_path = candidates.pop(file_hash(entry.path), None)
        except OSError:
            old_path = None  # unreadable now: the indexer reports it like any bad file
        if old_path is None:
            rest.append(entry)
        else:
            moves.append(Move(old_path, entry))
    moved = {m.old_path for m in moves}
    return rest, moves, [p for p in missing if p not in moved]
