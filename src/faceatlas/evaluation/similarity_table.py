"""What a CompreFace similarity means for a pack: similarity threshold -> false-accept and true-accept rate.

Double Take and Home Assistant users pick a similarity threshold (0.8, 0.9...) without knowing what it
costs. This table answers it for a pack: with the pack's calibrated ``c0, c1``, each LFW-dev pair's
cosine becomes the similarity the server would report, and for each threshold we count the share of
different-person pairs at or above it (FAR) and of same-person pairs (TAR). It is stored next to the
pack's calibration (``models/calibration/<pack>.similarity.json``) and shown by the console's status page.

    python -m faceatlas.evaluation.similarity_table --root ../shared/data/lfw-dev [--pack sface]
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from faceatlas.evaluation.calibration import CALIBRATION_DIR
from faceatlas.vectors import similarity_of_cosine

SIMILARITY_LEVELS = (0.5, 0.6, 0.8, 0.9, 0.99)


def similarity_table(
    cosines: np.ndarray, same: np.ndarray, c0: float, c1: float, levels: tuple[float, ...] = SIMILARITY_LEVELS
) -> list[dict[str, float | int]]:
    """FAR and TAR at each similarity level for pairs with these cosines (``same``: same person)."""
    similarity = similarity_of_cosine(np.asarray(cosines, np.float64), c0, c1)
    same = np.asarray(same, bool)
    different = ~same
    rows: list[dict[str, float | int]] = []
    for level in levels:
        accepted = similarity >= level
        rows.append(
            {
                "similarity": float(level),
                "far": float(accepted[different].mean()) if different.any() else float("nan"),
                "tar": float(accepted[same].mean()) if same.any() else float("nan"),
                "false_accepts": int(accepted[different].sum()),
                "true_accepts": int(accepted[same].sum()),
            }
        )
    return rows


def table_path(pack: str, directory: Path | None = None) -> Path:
    return (directory or CALIBRATION_DIR) / f"{pack}.similarity.json"


def load_similarity_table(pack: str) -> dict[str, Any] | None:
    """The stored table of ``pack`` (None when none was measured)."""
    try:
        text = resources.files("faceatlas.models").joinpath(f"calibration/{pack}.similarity.json").read_text()
    except (FileNotFoundError, OSError):
        return None
    data: dict[str, Any] = json.loads(text)
    return data


def measure_lfw(pack: str, root: Path) -> dict[str, Any]:
    """The table on LFW View-2 pairs of ``root`` (embeddings from the evaluation cache when present)."""
    from faceatlas.engine import Engine
    from faceatlas.evaluation.embeddings import embed_images
    from faceatlas.evaluation.lfw import find_images_dir, pair_similarities, parse_pairs

    engine = Engine(pack)
    pairs = parse_pairs(root / "pairs.txt")
    images_dir = find_images_dir(root, pairs)
    embedded = embed_images(engine, images_dir, pairs.images())
    cosines = pair_similarities(pairs, embedded.index(), embedded.embeddings, embedded.found)
    return {
        "pack": pack,
        "c0": engine.pack.c0,
        "c1": engine.pack.c1,
        "pairs": {"same": int(pairs.same.sum()), "different": int((~pairs.same).sum())},
        "table": similarity_table(cosines, pairs.same, engine.pack.c0, engine.pack.c1),
        "source": {
            "dataset": f"{root.name} ({pairs.folds} folds, {len(pairs)} pairs)",
            "command": f"python -m faceatlas.evaluation.similarity_table --root {root} --pack {pack}",
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="LFW folder: pairs.txt, images")
    parser.add_argument("--pack", default="sface")
    parser.add_argument("--out", type=Path, default=None, help="folder to write to (default: the package's)")
    args = parser.parse_args()
    data = measure_lfw(args.pack, args.root)
    path = table_path(args.pack, args.out)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data["table"], indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
