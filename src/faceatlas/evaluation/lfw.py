"""LFW View-2 verification protocol: ``pairs.txt`` parsing and pair scoring.

``pairs.txt`` starts with ``N P`` (N folds of P same-person then P different-person lines); a header with
one number ``P`` (``pairsDevTrain.txt``) is one fold. Same-person lines are ``name idx1 idx2``, different
ones ``name1 idx1 name2 idx2``; images are ``name/name_%04d.jpg`` under the images folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceatlas.evaluation.calibration import calibrate
from faceatlas.evaluation.errors import DatasetError
from faceatlas.evaluation.metrics import (
    best_threshold,
    equal_error,
    kfold_accuracy,
    roc_auc,
    tar_at_far,
)
from faceatlas.vectors import cosine_to_distance

# Pairs whose image had no detectable face get this score: the most "different" a cosine can be.
MISSING_SIMILARITY = -1.0
IMAGE_FOLDERS = ("images", "lfw-deepfunneled", "lfw_funneled", "lfw")


def image_path(name: str, index: int) -> str:
    return f"{name}/{name}_{index:04d}.jpg"


@dataclass(frozen=True, slots=True)
class LfwPairs:
    left: tuple[str, ...]
    right: tuple[str, ...]
    same: np.ndarray  # bool per pair
    fold: np.ndarray  # fold id per pair, 0-based

    def __len__(self) -> int:
        return len(self.left)

    @property
    def folds(self) -> int:
        return int(self.fold.max()) + 1 if len(self) else 0

    def images(self) -> list[str]:
        """Every image the pairs use, once, in a stable order."""
        return sorted(set(self.left) | set(self.right))

    def select(self, mask: np.ndarray) -> LfwPairs:
        idx = np.flatnonzero(mask)
        return LfwPairs(
            left=tuple(self.left[i] for i in idx),
            right=tuple(self.right[i] for i in idx),
            same=self.same[idx],
            fold=self.fold[idx],
        )


def parse_pairs(path: Path, *, folds: int | None = None) -> LfwPairs:
    """Read a View-2 ``pairs.txt``; ``folds`` keeps only the first that many folds."""
    try:
        lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise DatasetError(f"cannot read LFW pairs file {path}: {exc}") from exc
    if not lines:
        raise DatasetError(f"{path} is empty")
    try:
        header = [int(v) for v in lines[0]]
    except ValueError as exc:
        raise DatasetError(
            f"{path}: header must be 'folds pairs_per_class', got {' '.join(lines[0])!r}"
        ) from exc
    if len(header) == 2:
        n_folds, per_class = header
    elif len(header) == 1:
        n_folds, per_class = 1, header[0]
    else:
        raise DatasetError(f"{path}: header must be 'folds pairs_per_class'")
    body = lines[1:]
    if len(body) != n_folds * 2 * per_class:
        raise DatasetError(f"{path}: header promises {n_folds * 2 * per_class} pairs, file holds {len(body)}")
    if folds is not None:
        if not 1 <= folds <= n_folds:
            raise DatasetError(f"{path} holds {n_folds} folds; cannot use {folds}")
        n_folds = folds
        body = body[: n_folds * 2 * per_class]

    left, right = [], []
    for number, tokens in enumerate(body, start=2):
        same = (number - 2) % (2 * per_class) < per_class
        try:
            if same and len(tokens) == 3:
                left.append(image_path(tokens[0], int(tokens[1])))
                right.append(image_path(tokens[0], int(tokens[2])))
            elif not same and len(tokens) == 4:
                left.append(image_path(tokens[0], int(tokens[1])))
                right.append(image_path(tokens[2], int(tokens[3])))
            else:
                kind = "same-person (name idx idx)" if same else "different-person (name idx name idx)"
                raise DatasetError(f"{path}:{number}: expected a {kind} line, got {' '.join(tokens)!r}")
        except ValueError as exc:
            if isinstance(exc, DatasetError):
                raise
            raise DatasetError(f"{path}:{number}: image numbers must be integers") from exc
    n = len(body)
    position = np.arange(n)
    return LfwPairs(
        left=tuple(left),
        right=tuple(right),
        same=(position % (2 * per_class)) < per_class,
        fold=position // (2 * per_class),
    )


def find_images_dir(root: Path, pairs: LfwPairs) -> Path:
    """The folder under ``root`` holding the pairs' images (``images/``, ``lfw/``, ..., root)."""
    root = Path(root)
    probe = pairs.left[0]
    for candidate in [*(root / name for name in IMAGE_FOLDERS), root]:
        if (candidate / probe).is_file():
            return candidate
    raise DatasetError(
        f"cannot find {probe} under {root} (looked in {', '.join(IMAGE_FOLDERS)} and the root)"
    )


def pair_similarities(
    pairs: LfwPairs, index: dict[str, int], embeddings: np.ndarray, found: np.ndarray
) -> np.ndarray:
    """Cosine similarity per pair; a pair with an image where no face was found scores -1 ("different")."""
    left = np.array([index[p] for p in pairs.left], dtype=np.int64)
    right = np.array([index[p] for p in pairs.right], dtype=np.int64)
    similarity = np.einsum(
        "ij,ij->i", embeddings[left].astype(np.float64), embeddings[right].astype(np.float64)
    )
    both = found[left] & found[right]
    return np.where(both, np.clip(similarity, -1.0, 1.0), MISSING_SIMILARITY)


def verification_report(
    similarity: np.ndarray, same: np.ndarray, fold: np.ndarray, *, pack: str, far: float = 1e-3
) -> dict[str, Any]:
    """Every LFW number we publish, from per-pair similarities."""
    kfold = kfold_accuracy(similarity, same, fold)
    global_threshold, global_accuracy = best_threshold(similarity, same)
    distance = cosine_to_distance(similarity)
    eer = equal_error(similarity, same)
    tar_rates = {}
    for target in (1e-3, 1e-2):
        tar, threshold, achieved = tar_at_far(similarity, same, target)
        tar_rates[f"{target:g}"] = {
            "tar": tar,
            "threshold": threshold,
            "distance_threshold": float(cosine_to_distance(threshold)),
            "far": achieved,
        }
    calibration = calibrate(pack, distance, same, far=far)
    return {
        "pairs": len(similarity),
        "same_pairs": int(np.sum(same)),
        "folds": len(kfold.folds),
        "accuracy": {
            # with one fold the threshold is chosen on the pairs it is scored on (optimistic)
            "cross_validated": len(kfold.folds) > 1,
            "mean": kfold.mean,
            "std": kfold.std,
            "per_fold": [
                {"fold": f.fold, "accuracy": f.accuracy, "threshold": f.threshold} for f in kfold.folds
            ],
        },
        "auc": roc_auc(similarity, same),
        "eer": {
            "rate": eer.rate,
            "threshold": eer.threshold,
            "distance_threshold": float(cosine_to_distance(eer.threshold)),
        },
        "best_threshold": {
            "threshold": global_threshold,
            "distance_threshold": float(cosine_to_distance(global_threshold)),
            "accuracy": global_accuracy,
        },
        "tar_at_far": tar_rates,
        "calibration": calibration.to_dict(),
    }
