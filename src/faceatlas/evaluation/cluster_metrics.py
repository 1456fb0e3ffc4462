"""Clustering quality against true identities: BCubed and pairwise precision / recall / F.

Predicted label ``-1`` means "left unassigned"; each such item counts as a cluster of its own, so
leaving a face out costs recall but never precision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class ClusterScores:
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f: float
    items: int
    clusters: int  # predicted clusters, not counting unassigned items
    unassigned: int
    identities: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _noise_as_singletons(predicted: np.ndarray) -> np.ndarray:
    predicted = predicted.astype(np.int64, copy=True)
    noise = predicted == -1
    if noise.any():
        predicted[noise] = predicted.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return predicted


def _pairs(counts: np.ndarray) -> float:
    return float(np.sum(counts * (counts - 1)) / 2)


def cluster_scores(predicted: np.ndarray, truth: np.ndarray) -> ClusterScores:
    """Score predicted cluster labels against true identity labels (any hashable values for truth)."""
    predicted = np.asarray(predicted).ravel()
    truth = np.asarray(truth).ravel()
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted and truth differ in length: {predicted.size} vs {truth.size}")
    if predicted.size == 0:
        raise ValueError("no items to score")
    if not np.issubdtype(predicted.dtype, np.integer):
        raise ValueError("predicted labels must be integers (-1 = unassigned)")
    if (predicted < -1).any():
        raise ValueError("predicted labels must be >= -1")

    clusters = _noise_as_singletons(predicted)
    _, cluster_index = np.unique(clusters, return_inverse=True)
    _, truth_index = np.unique(truth, return_inverse=True)
    cluster_size = np.bincount(cluster_index)
    truth_size = np.bincount(truth_index)
    # contingency cells: how many items share each (cluster, identity) combination
    cells, cell_count = np.unique(np.stack([cluster_index, truth_index]), axis=1, return_counts=True)
    n = predicted.size

    bcubed_precision = float(np.sum(cell_count**2 / cluster_size[cells[0]]) / n)
    bcubed_recall = float(np.sum(cell_count**2 / truth_size[cells[1]]) / n)

    true_positive = _pairs(cell_count)
    predicted_pairs = _pairs(cluster_size)
    true_pairs = _pairs(truth_size)
    pairwise_precision = true_positive / predicted_pairs if predicted_pairs else 1.0
    pairwise_recall = true_positive / true_pairs if true_pairs else 1.0

    unassigned = int(np.sum(predicted == -1))
    return ClusterScores(
        bcubed_precision=bcubed_precision,
        bcubed_recall=bcubed_recall,
        bcubed_f=_f(bcubed_precision, bcubed_recall),
        pairwise_precision=pairwise_precision,
        pairwise_recall=pairwise_recall,
        pairwise_f=_f(pairwise_precision, pairwise_recall),
        items=n,
        clusters=int(np.unique(predicted[predicted != -1]).size),
        unassigned=unassigned,
        identities=int(truth_size.size),
    )


def bcubed_subset(predicted: np.ndarray, truth: np.ndarray, subset: np.ndarray) -> tuple[float, float]:
    """BCubed precision / recall averaged over the items in ``subset`` only, each judged against its
    *whole* cluster and identity (so strangers put into a subset person's cluster cost that person
    precision). Unassigned items (-1) are clusters of their own."""
    clusters = _noise_as_singletons(np.asarray(predicted).ravel())
    _, cluster_index = np.unique(clusters, return_inverse=True)
    _, truth_index = np.unique(np.asarray(truth).ravel(), return_inverse=True)
    cluster_size = np.bincount(cluster_index)
    truth_size = np.bincount(truth_index)
    pair_key = cluster_index.astype(np.int64) * (truth_index.max() + 1) + truth_index
    _, cell_of_item, cell_count = np.unique(pair_key, return_inverse=True, return_counts=True)
    same = cell_count[cell_of_item].astype(np.float64)
    chosen = np.asarray(subset, dtype=bool).ravel()
    if not chosen.any():
        raise ValueError("empty subset")
    precision = float(np.mean(same[chosen] / cluster_size[cluster_index[chosen]]))
    recall = float(np.mean(same[chosen] / truth_size[truth_index[chosen]]))
    return precision, recall


@dataclass(frozen=True, slots=True)
class DistractorScores:
    """Clustering a library where most identities are strangers seen once or twice."""

    overall: ClusterScores
    frequent_min_photos: int
    frequent_items: int
    frequent_bcubed_precision: float  # over faces of identities with >= frequent_min_photos photos
    frequent_bcubed_recall: float
    fake_people: int  # clusters of 2+ faces that are all different identities
    fake_people_share: float  # of all clusters
    strangers: int  # faces whose identity has a single photo
    strangers_in_a_person: int  # ... that were put into a cluster
    intruders: int  # assigned faces that are not their cluster's majority identity

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["overall"] = self.overall.to_dict()
        return out


def distractor_scores(
    predicted: np.ndarray, truth: np.ndarray, *, frequent_min_photos: int = 5
) -> DistractorScores:
    """Scores of :class:`DistractorScores` for predicted labels (-1 = unassigned) against identities."""
    predicted = np.asarray(predicted).ravel().astype(np.int64)
    truth = np.asarray(truth).ravel()
    overall = cluster_scores(predicted, truth)
    _, truth_index, truth_counts = np.unique(truth, return_inverse=True, return_counts=True)
    frequent = truth_counts[truth_index] >= frequent_min_photos
    if frequent.any():
        fp, fr = bcubed_subset(predicted, truth, frequent)
    else:
        fp = fr = float("nan")
    fake = intruders = 0
    assigned = predicted >= 0
    labels, label_index = np.unique(predicted[assigned], return_inverse=True)
    ids = truth_index[assigned]
    for cluster in range(labels.size):
        members = ids[label_index == cluster]
        counts = np.bincount(members)
        if members.size >= 2 and counts.max() == 1:
            fake += 1
        intruders += int(members.size - counts.max())
    single = truth_counts[truth_index] == 1
    return DistractorScores(
        overall=overall,
        frequent_min_photos=frequent_min_photos,
        frequent_items=int(frequent.sum()),
        frequent_bcubed_precision=fp,
        frequent_bcubed_recall=fr,
        fake_people=fake,
        fake_people_share=fake / labels.size if labels.size else 0.0,
        strangers=int(single.sum()),
        strangers_in_a_person=int((single & assigned).sum()),
        intruders=intruders,
    )
