"""Per-pack calibration: the same-person threshold and CompreFace's similarity coefficients ``c0, c1``.

CompreFace maps the Euclidean distance ``d`` of two unit embeddings to
``similarity = (tanh((c0 - d) * c1) + 1) / 2``. Because ``(tanh(z) + 1) / 2 == sigmoid(2 z)``, this is a
logistic model in ``d`` with slope ``-2 c1`` and its 0.5 crossing at ``d = c0``. We pin the crossing at
the equal-error distance (so 0.5 means "as likely a false accept as a false reject") and fit ``c1`` by
maximum likelihood, which makes the similarity a calibrated probability of "same person" under the
evaluation set's class balance (LFW: one half).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_expit

from faceatlas.evaluation.metrics import equal_error, tar_at_far
from faceatlas.vectors import compreface_similarity, distance_to_cosine

CALIBRATION_DIR = Path(__file__).resolve().parents[1] / "models" / "calibration"


def fit_c1(distances: np.ndarray, labels: np.ndarray, c0: float) -> float:
    """Maximum-likelihood slope ``c1`` of the CompreFace curve with its crossing fixed at ``c0``."""
    distances = np.asarray(distances, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    if distances.shape != labels.shape or distances.size == 0:
        raise ValueError("distances and labels must be non-empty and of equal length")
    if labels.all() or not labels.any():
        raise ValueError("need both same-person and different-person pairs")
    x = c0 - distances
    sign = np.where(labels, 1.0, -1.0)

    def negative_log_likelihood(c1: float) -> float:
        return float(-log_expit(sign * 2.0 * c1 * x).sum())

    # the likelihood is concave in c1; a perfectly separated set pushes c1 to the bound, which is capped
    result = minimize_scalar(
        negative_log_likelihood, bounds=(1e-3, 200.0), method="bounded", options={"xatol": 1e-6}
    )
    return float(result.x)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Mean |predicted - observed| over equal-width probability bins, weighted by bin size."""
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=probabilities, minlength=bins)
    observed = np.bincount(index, weights=labels, minlength=bins)
    used = counts > 0
    return float(np.sum(np.abs(predicted[used] - observed[used])) / probabilities.size)


@dataclass(frozen=True, slots=True)
class CalibrationFit:
    """A measured calibration with its metrics (a pack reads back a ``models.packs.Calibration``)."""

    pack: str
    threshold: float  # cosine similarity at the target FAR
    distance_threshold: float  # the same threshold as a Euclidean distance
    c0: float
    c1: float
    far: float
    eer_distance: float
    metrics: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(pack: str, distances: np.ndarray, labels: np.ndarray, *, far: float = 1e-3) -> CalibrationFit:
    """Fit the threshold at ``far`` and ``c0, c1`` from pair distances of unit embeddings."""
    distances = np.asarray(distances, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    eer = equal_error(-distances, labels)
    c0 = -eer.threshold
    c1 = fit_c1(distances, labels, c0)
    tar, neg_distance_threshold, achieved_far = tar_at_far(-distances, labels, far)
    distance_threshold = -neg_distance_threshold
    probabilities = compreface_similarity(distances, c0, c1)
    eps = 1e-12
    log_loss = -np.mean(np.where(labels, np.log(probabilities + eps), np.log(1 - probabilities + eps)))
    return CalibrationFit(
        pack=pack,
        threshold=float(distance_to_cosine(distance_threshold)),
        distance_threshold=float(distance_threshold),
        c0=float(c0),
        c1=float(c1),
        far=far,
        eer_distance=float(c0),
        metrics={
            "eer": eer.rate,
            "tar_at_far": tar,
            "achieved_far": achieved_far,
            "log_loss": float(log_loss),
            "brier": float(np.mean((probabilities - labels) ** 2)),
            "ece": expected_calibration_error(probabilities, labels),
            "similarity_at_threshold": float(compreface_similarity(distance_threshold, c0, c1)),
            "pairs": int(labels.size),
        },
    )


def calibration_path(pack: str, directory: Path | None = None) -> Path:
    return (directory or CALIBRATION_DIR) / f"{pack}.json"


def write_calibration(
    calibration: CalibrationFit,
    *,
    dataset: str,
    command: str,
    directory: Path | None = None,
    extra_metrics: dict[str, Any] | None = None,
) -> Path:
    """Store a pack's calibration where the pack registry reads it, with its provenance."""
    data = calibration.to_dict()
    data["source"] = {
        "dataset": dataset,
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    data["metrics"] = {**data["metrics"], **(extra_metrics or {})}
    path = calibration_path(calibration.pack, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
