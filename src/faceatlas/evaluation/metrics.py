"""Verification metrics on pair scores: ROC, AUC, TAR at a FAR, equal-error point, k-fold accuracy.

Every function takes ``scores`` where higher means "more likely the same person" (cosine similarity,
or the negated distance) and boolean ``labels`` (True = same person). A pair is accepted when
``score >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def _as_arrays(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length: {scores.size} vs {labels.size}")
    if scores.size == 0:
        raise ValueError("no pairs to evaluate")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    return scores, labels


def _require_both_classes(labels: np.ndarray) -> None:
    if labels.all() or not labels.any():
        raise ValueError("need both same-person and different-person pairs")


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct scores, plus one below and one above all of them.

    Thresholds at midpoints never tie with a score, so the accepted set at each one is unambiguous.
    """
    unique = np.unique(np.asarray(scores, dtype=np.float64))
    mids = (unique[1:] + unique[:-1]) / 2
    return np.concatenate(([unique[0] - 1.0], mids, [unique[-1] + 1.0]))


def rates_at(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-accept and true-accept rates at each threshold (vectorised with a sorted search)."""
    scores, labels = _as_arrays(scores, labels)
    _require_both_classes(labels)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    pos = np.sort(scores[labels])
    neg = np.sort(scores[~labels])
    # count of scores >= t is n - (number strictly below t)
    tar = (pos.size - np.searchsorted(pos, thresholds, side="left")) / pos.size
    far = (neg.size - np.searchsorted(neg, thresholds, side="left")) / neg.size
    return far, tar


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds) with thresholds descending, from accept-nothing to accept-everything."""
    thresholds = candidate_thresholds(np.asarray(scores))[::-1]
    far, tar = rates_at(scores, labels, thresholds)
    return far, tar, thresholds


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half)."""
    scores, labels = _as_arrays(scores, labels)
    _require_both_classes(labels)
    ranks = rankdata(scores)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    scores, labels = _as_arrays(scores, labels)
    return float(np.mean((scores >= threshold) == labels))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold with the highest accuracy on these pairs, and that accuracy.

    Among equally good thresholds the middle one of the best run is taken, so that a gap between the
    classes is split in half rather than hugging one side.
    """
    scores, labels = _as_arrays(scores, labels)
    thresholds = candidate_thresholds(scores)
    pos = np.sort(scores[labels])
    neg = np.sort(scores[~labels])
    true_accepts = pos.size - np.searchsorted(pos, thresholds, side="left")
    true_rejects = np.searchsorted(neg, thresholds, side="left")
    correct = true_accepts + true_rejects
    best = np.flatnonzero(correct == correct.max())
    # the longest run of consecutive best thresholds, then its middle
    runs = np.split(best, np.flatnonzero(np.diff(best) != 1) + 1)
    run = max(runs, key=len)
    if len(run) % 2 == 1:
        threshold = float(thresholds[run[len(run) // 2]])
    else:
        threshold = float((thresholds[run[len(run) // 2 - 1]] + thresholds[run[len(run) // 2]]) / 2)
    return threshold, float(correct.max() / scores.size)


def tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> tuple[float, float, float]:
    """(TAR, threshold, achieved FAR) at the lowest threshold whose false-accept rate is <= ``far``.

    With ``n`` different-person pairs, ``floor(far * n)`` of them may be accepted; the threshold sits
    just above the next-highest different-person score.
    """
    scores, labels = _as_arrays(scores, labels)
    _require_both_classes(labels)
    if not 0 <= far < 1:
        raise ValueError("far must be in [0, 1)")
    neg = np.sort(scores[~labels])[::-1]
    allowed = int(np.floor(far * neg.size + 1e-9))
    threshold = float(np.nextafter(neg[allowed], np.inf))
    achieved_far, tar = rates_at(scores, labels, np.array([threshold]))
    return float(tar[0]), threshold, float(achieved_far[0])


@dataclass(frozen=True, slots=True)
class EqualError:
    rate: float
    threshold: float


def equal_error(scores: np.ndarray, labels: np.ndarray) -> EqualError:
    """The point where false-accept rate equals false-reject rate, linearly interpolated."""
    scores, labels = _as_arrays(scores, labels)
    thresholds = candidate_thresholds(scores)  # ascending
    far, tar = rates_at(scores, labels, thresholds)
    frr = 1.0 - tar
    gap = far - frr  # non-increasing in the threshold, from +1 to -1
    zero = np.flatnonzero(gap == 0)
    if zero.size:
        # a flat stretch where both rates agree: take its middle threshold
        lo, hi = thresholds[zero[0]], thresholds[zero[-1]]
        return EqualError(rate=float(far[zero[0]]), threshold=float((lo + hi) / 2))
    j = int(np.flatnonzero(gap < 0)[0])
    i = j - 1
    w = gap[i] / (gap[i] - gap[j])
    threshold = thresholds[i] + w * (thresholds[j] - thresholds[i])
    rate = far[i] + w * (far[j] - far[i])
    return EqualError(rate=float(rate), threshold=float(threshold))


@dataclass(frozen=True, slots=True)
class FoldResult:
    fold: int
    threshold: float
    accuracy: float


@dataclass(frozen=True, slots=True)
class KFoldResult:
    folds: tuple[FoldResult, ...]

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([f.accuracy for f in self.folds])

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        """Population standard deviation over folds (as InsightFace's and FaceNet's LFW scripts report)."""
        return float(self.accuracies.std())


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """LFW View-2 style accuracy: each fold is scored at the threshold that is best on all other folds."""
    scores, labels = _as_arrays(scores, labels)
    folds = np.asarray(folds).ravel()
    if folds.shape != scores.shape:
        raise ValueError("folds must give one fold id per pair")
    fold_ids = np.unique(folds)
    results = []
    for fold in fold_ids:
        test = folds == fold
        train = ~test
        if not train.any():
            # a single fold has nothing else to train on: fall back to its own best threshold
            train = test
        threshold, _ = best_threshold(scores[train], labels[train])
        results.append(
            FoldResult(
                fold=int(fold),
                threshold=threshold,
                accuracy=accuracy_at(scores[test], labels[test], threshold),
            )
        )
    return KFoldResult(folds=tuple(results))
