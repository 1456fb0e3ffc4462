"""Evaluation reports as JSON and as Markdown tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=_json_default) + "\n"


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def _table(rows: list[tuple[str, str]]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def lfw_markdown(report: dict[str, Any]) -> str:
    accuracy = report["accuracy"]
    tar = report["tar_at_far"]
    calibration = report["calibration"]
    best = report["best_threshold"]
    missing = report["pairs_with_missing_face"]
    rows = [
        ("pack / detector", f"`{report['pack']}` / `{report['detector']}`"),
        ("pairs (folds)", f"{report['pairs']} ({report['folds']})"),
        (
            "accuracy, threshold from the other folds"
            if accuracy.get("cross_validated", True)
            else "accuracy (one fold: threshold from the same pairs)",
            f"{_pct(accuracy['mean'])} ± {100 * accuracy['std']:.2f}",
        ),
        ("ROC AUC", f"{report['auc']:.5f}"),
        ("TAR @ FAR = 1e-3", f"{_pct(tar['0.001']['tar'])} (cosine ≥ {tar['0.001']['threshold']:.4f})"),
        ("TAR @ FAR = 1e-2", f"{_pct(tar['0.01']['tar'])} (cosine ≥ {tar['0.01']['threshold']:.4f})"),
        (
            "best global threshold",
            f"cosine {best['threshold']:.4f} / distance {best['distance_threshold']:.4f} "
            f"({_pct(best['accuracy'])})",
        ),
        (
            "equal error rate",
            f"{_pct(report['eer']['rate'])} at distance {report['eer']['distance_threshold']:.4f}",
        ),
        (
            f"calibrated threshold (FAR {calibration['far']:g})",
            f"cosine {calibration['threshold']:.4f} / distance {calibration['distance_threshold']:.4f}",
        ),
        ("similarity coefficients c0, c1", f"{calibration['c0']:.5f}, {calibration['c1']:.4f}"),
        (
            "images without a face",
            f"{len(report['images_no_face'])} of {report['images']}; {missing['count']} pairs "
            f"({missing['same']} same-person) scored as {missing['scored_as']}",
        ),
        (
            "time",
            f"{report['timing']['total_seconds']:.1f} s ({report['timing']['embedded_now']} images embedded, "
            f"{report['timing']['from_cache']} from cache)",
        ),
    ]
    return f"## LFW verification: `{report['pack']}`\n\n{_table(rows)}\n"


def wider_markdown(report: dict[str, Any]) -> str:
    ap, faces = report["ap"], report["faces"]
    rows = [
        ("detector", f"`{report['detector']}`"),
        ("images / predictions", f"{report['images']} / {report['predictions']}"),
        *(
            (f"AP {s}", f"{'n/a' if ap[s] is None else _pct(ap[s])} ({faces[s]} faces)")
            for s in ("easy", "medium", "hard")
        ),
        ("detection threshold", f"{report['det_threshold']}"),
        ("time", f"{report['timing']['detect_seconds']:.1f} s"),
    ]
    return f"## WIDER FACE: `{report['detector']}`\n\n{_table(rows)}\n"


def cluster_markdown(report: dict[str, Any]) -> str:
    rows = [
        ("pack", f"`{report['pack']}`"),
        (
            "people (≥ images) / images",
            f"{report['people']} (≥ {report['min_images']}) / {report['images']}",
        ),
        ("clusters found (unassigned faces)", f"{report['clusters']} ({report['unassigned']})"),
        ("BCubed precision / recall / F", _prf(report, "bcubed")),
        ("pairwise precision / recall / F", _prf(report, "pairwise")),
        ("threshold (cosine)", f"{report['threshold']:.4f}"),
        ("images without a face", f"{report['images_no_face']}"),
    ]
    return f"## Clustering: `{report['pack']}`\n\n{_table(rows)}\n"


def cluster_distractors_markdown(report: dict[str, Any]) -> str:
    runs = [(f"quality ≥ {g['gate']:g}", g) for g in report["quality_gates"]]
    if "incremental_run" in report:
        runs.append(("incremental (half, then all)", report["incremental_run"]))
    n = report["single_run"]["frequent_min_photos"]
    lines = [
        f"## Clustering with distractors: `{report['pack']}`",
        "",
        f"{report['people']} identities, {report['images']} photos "
        f"({report['images_no_face']} without a face); "
        f"main face of each photo; min_faces {report['min_faces']}; "
        f"base threshold {report['base_threshold']:.4f}",
        "",
        f"| run | eligible | threshold | BCubed P / R (all) | BCubed P / R (≥ {n} photos) | clusters | "
        "fake people | strangers in a person | intruders |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs:
        overall = run["overall"]
        lines.append(
            f"| {name} | {run.get('eligible', '')} | {run['threshold']:.4f} | "
            f"{overall['bcubed_precision']:.4f} / {overall['bcubed_recall']:.4f} | "
            f"{run['frequent_bcubed_precision']:.4f} / {run['frequent_bcubed_recall']:.4f} | "
            f"{overall['clusters']} | {run['fake_people']} ({100 * run['fake_people_share']:.2f} %) | "
            f"{run['strangers_in_a_person']} of {run['strangers']} | {run['intruders']} |"
        )
    return "\n".join(lines) + "\n"


def _prf(report: dict[str, Any], kind: str) -> str:
    return " / ".join(f"{report[f'{kind}_{m}']:.4f}" for m in ("precision", "recall", "f"))


MARKDOWN = {
    "lfw-view2": lfw_markdown,
    "wider-face-val": wider_markdown,
    "identity-clustering": cluster_markdown,
    "identity-clustering-distractors": cluster_distractors_markdown,
}


def to_markdown(report: dict[str, Any]) -> str:
    text = MARKDOWN[report["protocol"]](report)
    if report.get("command"):
        text += f"\nCommand: `{report['command']}`\n"
    return text


def write_report(report: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(to_json(report))
    md_path.write_text(to_markdown(report))
    return json_path, md_path
