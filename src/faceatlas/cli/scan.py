"""``faceatlas scan``: find faces in images, print JSON, optionally write annotated copies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from faceatlas.errors import FaceAtlasError
from faceatlas.face import DetectedFace


def draw_faces(rgb: np.ndarray, faces: list[DetectedFace], scale: float) -> np.ndarray:
    """A BGR copy of ``rgb`` with boxes, landmarks and labels drawn (faces in original pixels)."""
    import cv2

    canvas = np.ascontiguousarray(rgb[:, :, ::-1])
    thickness = max(1, round(max(canvas.shape[:2]) / 500))
    for index, face in enumerate(faces):
        x0, y0, x1, y1 = (round(v / scale) for v in face.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 220, 0), thickness)
        for x, y in face.landmarks / scale:
            cv2.circle(canvas, (round(x), round(y)), thickness + 1, (0, 0, 255), -1)
        label = [f"#{index} {face.score:.2f}"]
        if face.gender is not None:
            label.append(face.gender.value[0].upper())
        if face.age is not None:
            label.append(f"{face.age.value:.0f}y")
        cv2.putText(
            canvas,
            " ".join(label),
            (x0, max(12, y0 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness,
            (0, 220, 0),
            thickness,
        )
    return canvas


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Write annotated copies here."
)
@click.option("--pack", default="sface", show_default=True, help="Model pack.")
@click.option(
    "--plugins", default="landmarks,age,gender,pose", show_default=True, help="Comma-separated plugins."
)
@click.option("--limit", default=0, show_default=True, help="Largest N faces per image (0 = all).")
@click.option(
    "--det-threshold", type=float, default=None, help="Detection score threshold (pack default if unset)."
)
@click.option(
    "--embeddings/--no-embeddings", default=False, show_default=True, help="Include embeddings in the JSON."
)
@click.option(
    "--provider", "providers", multiple=True, default=("cpu",), show_default=True, help="Execution provider."
)
def scan(
    images: tuple[Path, ...],
    out_dir: Path | None,
    pack: str,
    plugins: str,
    limit: int,
    det_threshold: float | None,
    embeddings: bool,
    providers: tuple[str, ...],
) -> None:
    """Detect faces in IMAGES and print one JSON document with every face found."""
    from faceatlas.engine import Engine
    from faceatlas.images import decode_image

    engine = Engine(pack, providers=providers)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, object]] = []
    report: dict[str, object] = {"pack": engine.pack.id, "images": entries}
    failures = 0
    for path in images:
        entry: dict[str, object] = {"path": str(path)}
        try:
            decoded = decode_image(path, target_size=engine.decode_size)
            faces = engine.analyze(
                decoded, plugins=plugins, embed=embeddings, limit=limit, det_threshold=det_threshold
            )
        except (FaceAtlasError, OSError) as error:
            failures += 1
            entry["error"] = f"{type(error).__name__}: {error}"
            entries.append(entry)
            continue
        entry["width"], entry["height"] = decoded.original_size
        entry["faces"] = [face.to_dict(include_embedding=embeddings) for face in faces]
        if out_dir is not None:
            import cv2

            target = out_dir / f"{path.stem}.faces.jpg"
            cv2.imwrite(str(target), draw_faces(decoded.rgb, faces, decoded.scale))
            entry["annotated"] = str(target)
        entries.append(entry)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if failures == len(images):
        sys.exit(1)
