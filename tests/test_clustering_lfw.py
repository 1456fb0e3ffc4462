"""Clustering a library full of strangers: a fifth of LFW-dev's identities (every 5th, so the share of
people seen once, twice, ... is LFW-dev's), every photo, scored on each photo's main face.

Measured on this subset (1,410 photos, 710 identities, 2026-12-01): BCubed P 0.9987 / R 0.9449, no fake
people, people with >= 5 photos P 0.9983 / R 0.9934; incremental (half, then all) P 0.9987 / R 0.9426.
The floors below are those numbers minus a small margin. The whole of LFW-dev (6,922 photos) is measured
by ``faceatlas eval cluster --distractors`` (docs/clustering.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceatlas.evaluation.cluster_metrics import distractor_scores
from faceatlas.evaluation.embeddings import embed_images
from faceatlas.evaluation.runs import cluster_library_like, people_with_images


@pytest.fixture(scope="module")
def lfw_fifth(engine, shared: Path) -> tuple[np.ndarray, np.ndarray]:
    images = shared / "data" / "lfw-dev" / "images"
    people = people_with_images(images, 1)
    chosen = sorted(people)[::5]
    names = [name for person in chosen for name in people[person]]
    embedded = embed_images(engine, images, names)
    identity = np.array([name.split("/", 1)[0] for name in names])
    assert embedded.found.all()
    return embedded.embeddings, identity


def test_strangers_do_not_become_people(engine, lfw_fifth):
    x, identity = lfw_fifth
    labels, threshold = cluster_library_like(x, threshold=engine.pack.threshold)
    scores = distractor_scores(labels, identity)
    overall = scores.overall
    print(
        f"\nLFW-dev 1/5 with strangers: threshold {threshold:.4f}, BCubed P={overall.bcubed_precision:.4f} "
        f"R={overall.bcubed_recall:.4f}, {overall.clusters} clusters, {scores.fake_people} fake, "
        f"{scores.strangers_in_a_person}/{scores.strangers} strangers in a person; >=5 photos: "
        f"P={scores.frequent_bcubed_precision:.4f} R={scores.frequent_bcubed_recall:.4f}"
    )
    assert threshold > engine.pack.threshold  # the 1:N correction made it stricter
    assert scores.overall.bcubed_precision >= 0.99 and scores.overall.bcubed_recall >= 0.93
    assert scores.fake_people_share <= 0.02
    assert scores.strangers_in_a_person <= 0.01 * scores.strangers
    assert scores.frequent_bcubed_precision >= 0.99 and scores.frequent_bcubed_recall >= 0.98


def test_incremental_run_matches_a_single_run(engine, lfw_fifth):
    x, identity = lfw_fifth
    single, _ = cluster_library_like(x, threshold=engine.pack.threshold)
    first = np.random.default_rng(0).random(len(x)) < 0.5
    labels = np.full(len(x), -1, dtype=np.int64)
    labels[first], _ = cluster_library_like(x[first], threshold=engine.pack.threshold)
    kept = labels.copy()
    labels, _ = cluster_library_like(x, threshold=engine.pack.threshold, labels=labels, new=~first)
    assert (labels[kept >= 0] == kept[kept >= 0]).all()  # people of the first run keep their faces and ids
    a, b = distractor_scores(single, identity), distractor_scores(labels, identity)
    print(
        f"\nsingle P={a.overall.bcubed_precision:.4f} R={a.overall.bcubed_recall:.4f}; "
        f"incremental P={b.overall.bcubed_precision:.4f} R={b.overall.bcubed_recall:.4f}"
    )
    assert abs(a.overall.bcubed_precision - b.overall.bcubed_precision) <= 0.01
    assert abs(a.overall.bcubed_recall - b.overall.bcubed_recall) <= 0.01
    assert b.frequent_bcubed_precision >= 0.99 and b.frequent_bcubed_recall >= 0.98


def test_quality_gate_keeps_low_quality_faces_out(engine, lfw_fifth):
    x, _ = lfw_fifth
    eligible = np.ones(len(x), dtype=bool)
    eligible[::7] = False  # as if every 7th face were below the gate
    labels, _ = cluster_library_like(x, threshold=engine.pack.threshold, eligible=eligible)
    assert (labels[~eligible] == -1).all()
    assert (labels[eligible] >= 0).sum() > 0.4 * eligible.sum()
