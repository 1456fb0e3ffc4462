"""``faceatlas eval``: accuracy with the standard protocols (LFW, WIDER FACE, identity clustering)."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from faceatlas.cli.common import load_engine

if TYPE_CHECKING:
    pass

ROOT = click.Path(exists=True, file_okay=False, path_type=Path)
console = Console(stderr=True)


@contextmanager
def _progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:

        def track(description: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(description, total=total)
            return lambda n: progress.advance(task, n)

        yield track


def _command(ctx: click.Context, skip: tuple[str, ...] = ("out",)) -> str:
    """The command line that reproduces this run: the options given on the command line, in order."""
    parts = ["faceatlas", "eval", ctx.info_name or ""]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in skip or param.name is None:
            continue
        if ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            parts.append(param.opts[0] if value or not param.secondary_opts else param.secondary_opts[0])
        else:
            parts += [param.opts[0], str(value)]
    return shlex.join(parts)


def _finish(report: dict[str, Any], out: Path | None, stem: str) -> None:
    from faceatlas.evaluation.report import to_markdown, write_report

    if out is not None:
        json_path, md_path = write_report(report, out, stem)
        console.print(f"wrote {json_path} and {md_path}")
    click.echo(to_markdown(report))


def _run(function: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    with _progress() as track:
        return function(*args, track=track, **kwargs)


@click.group("eval")
def eval_group() -> None:
    """Measure accuracy with the standard protocols and calibrate a pack."""


@eval_group.command("lfw")
@click.option(
    "--root", type=ROOT, required=True, help="LFW folder: pairs.txt and the images (images/ or lfw/)."
)
@click.option("--pack", default="sface", show_default=True, help="Model pack to evaluate.")
@click.option(
    "--pairs",
    "pairs_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Pairs file (default ROOT/pairs.txt).",
)
@click.option("--folds", type=click.IntRange(min=1), help="Use only the first N folds.")
@click.option(
    "--far",
    type=click.FloatRange(0, 1, max_open=True),
    default=1e-3,
    show_default=True,
    help="False-accept rate of the calibrated threshold.",
)
@click.option(
    "--det-threshold", type=click.FloatRange(0, 1), help="Detection threshold (default: the pack's)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime threads (default: all cores).")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Embedding cache (default ~/.cache/faceatlas/eval).",
)
@click.option("--cache/--no-cache", default=True, show_default=True, help="Reuse embeddings of earlier runs.")
@click.option(
    "--calibrate",
    is_flag=True,
    help="Write the pack's calibration (threshold, c0, c1) to CALIBRATION_DIR/<pack>.json.",
)
@click.option(
    "--calibration-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where --calibrate writes (default: faceatlas/models/calibration in the source tree).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Write JSON and Markdown here.")
@click.pass_context
def lfw(
    ctx: click.Context,
    root: Path,
    pack: str,
    pairs_file: Path | None,
    folds: int | None,
    far: float,
    det_threshold: float | None,
    batch_size: int,
    threads: int | None,
    cache_dir: Path | None,
    cache: bool,
    calibrate: bool,
    calibration_dir: Path | None,
    out: Path | None,
) -> None:
    """LFW View-2 verification: k-fold accuracy, AUC, TAR@FAR, thresholds and calibration."""
    from faceatlas.evaluation.calibration import CalibrationFit, write_calibration
    from faceatlas.evaluation.runs import run_lfw

    command = _command(ctx, skip=("out", "calibration_dir", "cache_dir"))
    engine = load_engine(pack, threads=threads, attributes=False)
    report = _run(
        run_lfw,
        engine,
        root,
        pairs_file=pairs_file,
        folds=folds,
        far=far,
        cache_root=cache_dir,
        use_cache=cache,
        batch_size=batch_size,
        det_threshold=det_threshold,
    )
    report["command"] = command
    if calibrate:
        fields = {k: v for k, v in report["calibration"].items() if k not in {"source"}}
        path = write_calibration(
            CalibrationFit(**fields),
            dataset=f"{Path(root).name} ({report['folds']} folds, {report['pairs']} pairs)",
            command=command,
            directory=calibration_dir,
            extra_metrics={
                "accuracy_mean": report["accuracy"]["mean"],
                "accuracy_std": report["accuracy"]["std"],
                "auc": report["auc"],
                "best_threshold": report["best_threshold"],
                "tar_at_far_1e-2": report["tar_at_far"]["0.01"]["tar"],
                "images_no_face": len(report["images_no_face"]),
            },
        )
        console.print(f"wrote calibration {path}")
    _finish(report, out, f"lfw-{pack}")


@eval_group.command("wider")
@click.option(
    "--root",
    type=ROOT,
    required=True,
    help="WIDER FACE val folder: images/, wider_face_val_bbx_gt.txt, eval_tools/ground_truth/*.mat.",
)
@click.option("--pack", default="sface", show_default=True, help="Model pack whose detector is evaluated.")
@click.option("--detector", help="Other detector: 'yunet' or 'scrfd:/path/to/model.onnx'.")
@click.option(
    "--det-size",
    type=click.IntRange(min=32),
    default=640,
    show_default=True,
    help="Detector input size (SCRFD: a multiple of 32).",
)
@click.option(
    "--det-threshold",
    type=click.FloatRange(0, 1),
    default=0.02,
    show_default=True,
    help="Lowest detection score kept; the protocol sweeps thresholds above it.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N images.")
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime threads (default: all cores).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Write JSON and Markdown here.")
@click.pass_context
def wider(
    ctx: click.Context,
    root: Path,
    pack: str,
    detector: str | None,
    det_size: int,
    det_threshold: float,
    limit: int | None,
    threads: int | None,
    out: Path | None,
) -> None:
    """WIDER FACE detection AP (easy / medium / hard) with the official evaluation."""
    from faceatlas.evaluation.runs import run_wider

    engine = load_engine(pack, detector=detector, det_size=det_size, threads=threads, attributes=False)
    report = _run(run_wider, engine, root, det_threshold=det_threshold, limit=limit)
    report["det_size"] = det_size
    report["command"] = _command(ctx)
    _finish(report, out, f"wider-{engine.pack.detector_name}")


@eval_group.command("cluster")
@click.option(
    "--root", type=ROOT, required=True, help="Folder of identity folders (or ROOT/images/ holding them)."
)
@click.option("--pack", default="sface", show_default=True)
@click.option(
    "--min-images",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Use the people with at least this many images.",
)
@click.option("--threshold", type=click.FloatRange(-1, 1), help="Cosine threshold (default: the pack's).")
@click.option("--min-cluster-size", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--max-people", type=click.IntRange(min=1), help="Use only the first N such people.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime threads (default: all cores).")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Embedding cache (default ~/.cache/faceatlas/eval).",
)
@click.option("--cache/--no-cache", default=True, show_default=True)
@click.option(
    "--distractors",
    is_flag=True,
    help="Every photo of ROOT in one library (strangers included), clustered as the library does; "
    "scored on each photo's main face, per quality gate, and for an incremental run.",
)
@click.option(
    "--min-faces",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="With --distractors: faces a new person needs.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Write JSON and Markdown here.")
@click.pass_context
def cluster(
    ctx: click.Context,
    root: Path,
    pack: str,
    min_images: int,
    threshold: float | None,
    min_cluster_size: int,
    max_people: int | None,
    batch_size: int,
    threads: int | None,
    cache_dir: Path | None,
    cache: bool,
    distractors: bool,
    min_faces: int,
    out: Path | None,
) -> None:
    """Cluster the faces of people with many images; BCubed and pairwise precision / recall / F.

    With --distractors: every photo, fake people, strangers put into a person, quality gates.
    """
    from faceatlas.evaluation.runs import run_cluster, run_cluster_distractors

    engine = load_engine(pack, threads=threads, attributes=False)
    if distractors:
        report = _run(
            run_cluster_distractors,
            engine,
            root,
            threshold=threshold,
            min_faces=min_faces,
            max_people=max_people,
            cache_root=cache_dir,
            use_cache=cache,
            batch_size=batch_size,
        )
        report["command"] = _command(ctx, skip=("out", "cache_dir"))
        _finish(report, out, f"cluster-distractors-{pack}")
        return
    report = _run(
        run_cluster,
        engine,
        root,
        min_images=min_images,
        threshold=threshold,
        min_cluster_size=min_cluster_size,
        max_people=max_people,
        cache_root=cache_dir,
        use_cache=cache,
        batch_size=batch_size,
    )
    report["command"] = _command(ctx, skip=("out", "cache_dir"))
    _finish(report, out, f"cluster-{pack}")
