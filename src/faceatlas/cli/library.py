"""``faceatlas index / cluster / people / person / search / export``: the photo-library commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from faceatlas.cli.common import load_engine
from faceatlas.errors import LibraryNotFoundError

if TYPE_CHECKING:
    from faceatlas.library.pipeline import IndexReport
    from faceatlas.storage import Database

console = Console(stderr=True)
library_option = click.option(
    "--library",
    "library",
    metavar="PATH|URL",
    envvar="FACEATLAS_LIBRARY",
    help="Library folder, .db file or postgresql:// URL (default: the faceatlas data folder).",
)
pack_option = click.option("--pack", default="sface", show_default=True, help="Model pack.")


def _open(library: str | None, *, create: bool = False) -> Database:
    """Open the library; only ``index`` may create one (elsewhere a mistyped path is an error)."""
    from sqlalchemy.engine import make_url

    from faceatlas.library.store import library_url, open_library

    url = library_url(library)
    parsed = make_url(url)
    is_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    if not create and is_file and not Path(str(parsed.database)).is_file():
        raise LibraryNotFoundError(
            f"no library at {parsed.database}; index photos into it first: "
            f"faceatlas index FOLDER --library {library or parsed.database}"
        )
    return open_library(library)


def _print_report(report: IndexReport, title: str) -> None:
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for name, seconds, share in report.stage_table():
        table.add_row(name, f"{seconds:.2f}", f"{share:.0%}")
    console.print(table)
    console.print(f"slowest stage: [bold]{report.slowest_stage}[/bold]")
    console.print(
        f"{report.found} photos found, {report.skipped} unchanged, {report.indexed} indexed, "
        f"{report.faces} faces, {len(report.errors)} unreadable, {report.wall_seconds:.1f} s "
        f"({report.photos_per_second:.1f} photos/s)"
    )
    if report.errors:
        bad = Table(title="unreadable files (skipped until they change)")
        bad.add_column("path")
        bad.add_column("reason")
        for path, reason in report.errors:
            bad.add_row(path, reason)
        console.print(bad)


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@library_option
@pack_option
@click.option("--workers", type=int, default=0, help="Worker processes (default: one per CPU core).")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Photos per engine batch.")
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Main-process engine threads (default: the cores not in workers).",
)
@click.option(
    "--attributes/--no-attributes", default=True, show_default=True, help="Estimate age, gender and pose."
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run as a Ray Data job (local Ray if no address); put it after the folders or use --ray=ADDRESS.",
)
@click.option(
    "--detect-in-workers/--detect-in-main",
    default=None,
    help="Detect in the worker processes (default on CPU), or in the main process (default on accelerators).",
)
@click.option(
    "--embed-in-workers/--embed-in-main",
    default=None,
    help="With detection in the workers, embed there too (default on CPU) or in the main process.",
)
@click.option(
    "--prune", is_flag=True, help="Forget photos that no longer exist (their faces leave their people)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the run's report as JSON on stdout.")
def index(
    folders: tuple[Path, ...],
    library: str | None,
    pack: str,
    workers: int,
    batch_size: int,
    threads: int | None,
    attributes: bool,
    ray_address: str | None,
    detect_in_workers: bool | None,
    embed_in_workers: bool | None,
    prune: bool,
    as_json: bool,
) -> None:
    """Find the faces in every new or changed photo under FOLDERS.

    Moved or renamed photos are recognised by their content (faces and people kept); photos that
    disappeared are listed, and forgotten with --prune.
    """
    from faceatlas.library.pipeline import IndexOptions, index_library, split_for

    db = _open(library, create=True)
    plugins = ("age", "gender", "pose") if attributes else ()
    options = IndexOptions(
        workers=workers,
        batch_size=batch_size,
        plugins=plugins,
        detect_in_workers=detect_in_workers,
        embed_in_workers=embed_in_workers,
    )
    engine = load_engine(pack, threads=threads or split_for(options)[1], attributes=attributes)
    progress = Progress(
        TextColumn("indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} photos/s"),
        TextColumn("{task.fields[faces]} faces"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("index", total=None, rate=0.0, faces=0)

    def on_progress(done: int, total: int, faces: int) -> None:
        elapsed = progress.tasks[task].elapsed or 0.0
        progress.update(
            task, completed=done, total=total, faces=faces, rate=done / elapsed if elapsed else 0.0
        )

    try:
        with progress:
            if ray_address is not None:
                from faceatlas.library.ray_index import index_library_ray

                report = index_library_ray(
                    db,
                    engine,
                    folders,
                    options=options,
                    progress=on_progress,
                    address=None if ray_address == "local" else ray_address,
                )
            else:
                report = index_library(db, engine, folders, options=options, progress=on_progress)
    except KeyboardInterrupt:
        command = " ".join(["faceatlas", "index", *(str(f) for f in folders)])
        if library:
            command += f" --library {library}"
        click.echo(
            "\ninterrupted: every photo finished so far is saved. "
            f"Run the same command again to resume (finished photos are skipped):\n  {command}",
            err=True,
        )
        sys.exit(130)
    _print_report(report, "index stages")
    if report.moved:
        console.print(f"{report.moved} moved or renamed photos recognised by their content (faces kept)")
    pruned = None
    if report.missing:
        if prune:
            from faceatlas.library.writer import prune_photos

            pruned = prune_photos(db, report.missing)
            console.print(
                f"pruned {pruned.photos} deleted photos ({pruned.faces} faces); "
                f"{pruned.removed_people} unnamed people left without faces removed"
            )
        else:
            console.print(
                f"{len(report.missing)} photos of the library no longer exist (--prune forgets them):"
            )
            for path in report.missing[:20]:
                console.print(f"  {path}")
            if len(report.missing) > 20:
                console.print(f"  ... and {len(report.missing) - 20} more")
    if as_json:
        out = report.to_dict()
        if pruned is not None:
            out["pruned"] = {
                "photos": pruned.photos,
                "faces": pruned.faces,
                "removed_people": pruned.removed_people,
            }
        click.echo(json.dumps(out, indent=2))


@click.command()
@library_option
@pack_option
@click.option("--rebuild", is_flag=True, help="Re-cluster every face from scratch (named people are kept).")
@click.option(
    "--threshold", type=float, default=None, help="Cosine same-person threshold (default: the pack's)."
)
@click.option(
    "--min-face-size", type=float, default=24.0, show_default=True, help="Smaller faces stay unassigned."
)
@click.option(
    "--min-score", type=float, default=0.0, show_default=True, help="Less confident faces stay unassigned."
)
@click.option(
    "--min-quality",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Quality gate: faces below it never create or join a person automatically.",
)
@click.option(
    "--min-faces",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Mutually consistent faces a new person needs.",
)
def cluster(
    library: str | None,
    pack: str,
    rebuild: bool,
    threshold: float | None,
    min_face_size: float,
    min_score: float,
    min_quality: float,
    min_faces: int,
) -> None:
    """Group the library's faces into people (incrementally unless --rebuild).

    The same-person threshold is the pack's (or --threshold), made stricter for the number of faces
    compared (docs/clustering.md).
    """
    from faceatlas.library.clustering import ClusterOptions, cluster_library
    from faceatlas.models.packs import get_pack

    if threshold is None:
        threshold = get_pack(pack).calibration().threshold
    db = _open(library)
    options = ClusterOptions(
        threshold=threshold,
        min_face_size=min_face_size,
        min_score=min_score,
        min_quality=min_quality,
        min_faces=min_faces,
    )
    report = cluster_library(db, pack, options, rebuild=rebuild)
    console.print(
        f"{report.faces} faces ({report.eligible} eligible), threshold {report.threshold:.4f}: "
        f"{report.joined_existing} joined existing people, "
        f"{report.clustered} clustered into {report.new_people} new people, {report.unassigned} unassigned; "
        f"{report.people} people"
    )


@click.command()
@library_option
@click.option("--unassigned", is_flag=True, help="Only faces that belong to no person.")
@click.option("--limit", type=int, default=0, help="At most this many faces (0: all).")
@click.option("--json", "as_json", is_flag=True)
def faces(library: str | None, unassigned: bool, limit: int, as_json: bool) -> None:
    """List faces (id, photo, person, quality); --unassigned shows the ones no person has."""
    from faceatlas.library.clustering import list_faces

    rows = list_faces(_open(library), unassigned=unassigned, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    table = Table()
    for col in ("face", "photo", "person", "quality", "size"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r.face_id),
            r.photo_path,
            r.person_name or (str(r.person_id) if r.person_id is not None else ""),
            "" if r.quality is None else f"{r.quality:.2f}",
            f"{r.size:.0f}",
        )
    Console().print(table)


@click.command()
@library_option
@click.option("--json", "as_json", is_flag=True)
def people(library: str | None, as_json: bool) -> None:
    """List people with their face and photo counts."""
    from faceatlas.library.people import list_people

    rows = list_people(_open(library))
    if as_json:
        click.echo(
            json.dumps([{"id": r.id, "name": r.name, "faces": r.faces, "photos": r.photos} for r in rows])
        )
        return
    table = Table()
    for col in ("id", "name", "faces", "photos"):
        table.add_column(col, justify="right" if col != "name" else "left")
    for r in rows:
        table.add_row(str(r.id), r.name or "", str(r.faces), str(r.photos))
    Console().print(table)


@click.command()
@click.argument("who")
@click.argument("action", type=click.Choice(["rename", "merge", "remove-face", "split", "photos", "faces"]))
@click.argument("values", nargs=-1)
@library_option
@click.option(
    "--thumbnails",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where `faces` caches face thumbnails (default: the faceatlas cache).",
)
def person(
    who: str, action: str, values: tuple[str, ...], library: str | None, thumbnails: Path | None
) -> None:
    """Act on the person WHO (name or id).

    \b
    rename NEW         give the person a name
    merge OTHER        move OTHER's faces to WHO
    remove-face ID     "not this person": unassign the face for good
    split ID...        move these faces to a new person
    photos             list the person's photos
    faces              list the person's faces with a cropped thumbnail of each (to review before naming)
    """
    from faceatlas.library import people as ops

    db = _open(library)
    if action == "rename":
        _need(values, 1, "rename NEW_NAME")
        p = ops.rename_person(db, who, values[0])
        click.echo(f"person {p.id} is now {p.name!r}")
    elif action == "merge":
        _need(values, 1, "merge OTHER")
        merged = ops.merge_people(db, who, values[0])
        click.echo(f"merged {values[0]} into person {merged.person_id}: {merged.moved} faces moved")
        for blocked in merged.blocked:
            click.echo(f"face {blocked.face_id} was not moved and is now unassigned: {blocked.reason}")
    elif action == "remove-face":
        _need(values, 1, "remove-face FACE_ID")
        ops.remove_face(db, who, _int(values[0]))
        click.echo(f"face {values[0]} removed from {who}; it will not be given back to this person")
    elif action == "split":
        if not values:
            raise click.UsageError("split FACE_ID...")
        p = ops.split_faces(db, who, [_int(v) for v in values])
        click.echo(f"faces {', '.join(values)} moved to new person {p.id}")
    elif action == "faces":
        from faceatlas.library.thumbnails import face_thumbnail

        folder = thumbnails or _thumbnail_dir(db.url)
        for face_id, path in ops.person_faces(db, who):
            click.echo(f"{face_id}\t{path}\t{face_thumbnail(db, face_id, folder)}")
    else:
        for path in ops.person_photos(db, who):
            click.echo(path)


def _thumbnail_dir(url: str) -> Path:
    from faceatlas.library.thumbnails import library_cache_dir

    return library_cache_dir(url, "thumbnails")


def _need(values: tuple[str, ...], n: int, usage: str) -> None:
    if len(values) != n:
        raise click.UsageError(f"expected: person WHO {usage}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise click.UsageError(f"{text!r} is not a face id") from None


@click.command()
@click.argument("face_image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@library_option
@pack_option
@click.option("--top", type=int, default=20, show_default=True)
@click.option(
    "--index",
    "index",
    type=click.Choice(["exact", "hnsw", "pgvector", "auto"]),
    default="auto",
    show_default=True,
    help="Face index (kept beside the library, reopened by the next search).",
)
@click.option("--json", "as_json", is_flag=True)
def search(face_image: Path, library: str | None, pack: str, top: int, index: str, as_json: bool) -> None:
    """Photos that contain the person in FACE_IMAGE, best first."""
    from faceatlas.library.search import search_by_image

    db = _open(library)
    hits = search_by_image(db, load_engine(pack, attributes=False), face_image, top=top, index=index)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "path": h.path,
                        "similarity": round(h.similarity, 4),
                        "match": h.match,
                        "face_id": h.face_id,
                        "person_id": h.person_id,
                        "person": h.person_name,
                    }
                    for h in hits
                ],
                indent=2,
            )
        )
        return
    table = Table()
    for col in ("similarity", "match", "photo", "face", "person"):
        table.add_column(col)
    for h in hits:
        table.add_row(
            f"{h.similarity:.3f}",
            "yes" if h.match else "",
            h.path,
            str(h.face_id),
            h.person_name or (str(h.person_id) if h.person_id else ""),
        )
    Console().print(table)


@click.command()
@library_option
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here instead of stdout.",
)
@click.option(
    "--albums",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also make a folder per person of links to the photos.",
)
def export(library: str | None, fmt: str, output: Path | None, albums: Path | None) -> None:
    """Export people, photos and faces as JSON or CSV (and albums of links)."""
    from faceatlas.library.export import export_albums, export_csv, export_json

    db = _open(library)
    text = export_json(db) if fmt == "json" else export_csv(db)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    if albums is not None:
        counts = export_albums(db, albums)
        console.print(f"{len(counts)} albums, {sum(counts.values())} links in {albums}")
