"""The clustering algorithm on synthetic embeddings (fast, no models)."""

from __future__ import annotations

import numpy as np
import pytest

from faceatlas.clustering import cannot_link_mask, cluster_faces, compact_labels


def blobs(people: int, per_person: int, dim: int = 64, noise: float = 0.08, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(people), per_person)
    points = centres[truth] + rng.normal(scale=noise, size=(truth.size, dim))
    return points.astype(np.float32), truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_recovers_well_separated_people():
    x, truth = blobs(40, 12)
    labels = cluster_faces(x, threshold=0.4)
    assert (labels >= 0).all()
    assert same_partition(labels, truth)


def test_labels_are_compact_and_largest_first():
    x, _ = blobs(3, 5)
    x = np.concatenate([x, x[:5] + 0.01])  # person 0 gets 10 faces
    labels = cluster_faces(x, threshold=0.4)
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    assert (labels[:5] == 0).all()


def test_faces_of_one_photo_are_never_merged():
    x, _ = blobs(1, 6, noise=0.01)
    photos = np.array([1, 1, 2, 3, 4, 5])  # faces 0 and 1 are in the same photo
    labels = cluster_faces(x, threshold=0.4, photo_ids=photos)
    assert labels[0] != labels[1] or labels[0] == -1
    # Without the constraint they are the same person.
    assert len(set(cluster_faces(x, threshold=0.4).tolist())) == 1


def test_constraint_holds_for_every_cluster():
    x, _ = blobs(10, 10, noise=0.15, seed=3)
    photos = np.random.default_rng(1).integers(0, 30, len(x))
    labels = cluster_faces(x, threshold=0.3, photo_ids=photos)
    for label in set(labels.tolist()) - {-1}:
        members = photos[labels == label]
        assert len(members) == len(set(members.tolist()))


def test_small_clusters_are_unassigned():
    x, _ = blobs(4, 1)  # four unrelated faces
    assert (cluster_faces(x, threshold=0.4, min_cluster_size=2) == -1).all()
    assert sorted(cluster_faces(x, threshold=0.4, min_cluster_size=1).tolist()) == [0, 1, 2, 3]


def test_average_linkage_does_not_chain():
    # A chain of points on a circle arc: each is close to its neighbours, the ends are far apart.
    angles = np.linspace(0, np.pi * 0.9, 30)
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    neighbour_sim = float(x[0] @ x[1])
    labels = cluster_faces(x, threshold=neighbour_sim - 1e-3)
    assert len(set(labels.tolist()) - {-1}) > 1


def test_empty_and_invalid_input():
    assert cluster_faces(np.zeros((0, 8)), threshold=0.5).shape == (0,)
    with pytest.raises(ValueError):
        cluster_faces(np.zeros((3, 4)), threshold=0.5, photo_ids=np.array([1, 2]))


def test_cannot_link_mask_lists_pairs_of_the_same_photo():
    rows, cols = cannot_link_mask(np.array([7, 3, 7, 9, 7]))
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == {
        (0, 2),
        (2, 0),
        (0, 4),
        (4, 0),
        (2, 4),
        (4, 2),
    }


def test_compact_labels_drops_small_groups():
    assert compact_labels(np.array([5, 5, 9, 2, 2, 2]), min_cluster_size=2).tolist() == [1, 1, -1, 0, 0, 0]


def test_knn_graph_is_exact_and_blocked():
    from faceatlas.clustering import knn_graph

    x, _ = blobs(30, 10, dim=16, noise=0.3, seed=5)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dense = x @ x.T
    np.fill_diagonal(dense, -np.inf)
    for floor in (-np.inf, 0.5):
        graph = knn_graph(x, k=6, floor=floor, block_rows=37)
        expected = -np.sort(-dense, axis=1)[:, :6]
        expected[expected < floor] = -np.inf
        np.testing.assert_allclose(graph.similarities, expected, atol=1e-5)
        rows = np.arange(len(x))[:, None]
        found = np.where(graph.indices >= 0, dense[rows, np.maximum(graph.indices, 0)], -np.inf)
        np.testing.assert_allclose(found, expected, atol=1e-5)


def test_pairs_and_chains_of_strangers_do_not_earn_a_person():
    rng = np.random.default_rng(2)
    strangers = rng.normal(size=(200, 64))
    strangers /= np.linalg.norm(strangers, axis=1, keepdims=True)
    # five look-alike pairs and a chain of four, each link just above the threshold
    pairs = [(strangers[i] + strangers[i + 1]) for i in range(0, 10, 2)]
    x = np.concatenate([strangers, np.stack(pairs)])
    labels = cluster_faces(x, threshold=0.6, min_cluster_size=3)
    assert (labels == -1).all()
    y, truth = blobs(5, 4, noise=0.05)
    labels = cluster_faces(np.concatenate([y, strangers]), threshold=0.6, min_cluster_size=3)
    assert same_partition(labels[:20], truth) and (labels[20:] == -1).all()


def test_one_to_n_threshold_grows_with_the_library():
    from faceatlas.clustering import one_to_n_threshold

    base = 0.3366
    values = [one_to_n_threshold(base, n, far=1e-3, spread=0.0875) for n in (1, 100, 1_000, 10_000, 200_000)]
    assert values[0] == values[1] == base  # up to chance_neighbours / far faces: the 1:1 threshold
    assert values == sorted(values) and values[-1] < 0.55
    assert abs(one_to_n_threshold(base, 6922, far=1e-3, spread=0.0875) - 0.432) < 0.002


def test_joining_needs_votes_and_a_margin():
    from faceatlas.clustering import assign_to_people

    x, truth = blobs(2, 6, noise=0.05, seed=4)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    between = (x[0] + x[6]) / 2  # as close to person 0 as to person 1
    clear = x[0] + 0.01
    result = assign_to_people(np.stack([between, clear]), x, truth, threshold=0.3, margin=0.05)
    assert result.labels.tolist() == [-1, 0]
    forbidden = assign_to_people(clear[None], x, truth, threshold=0.3, forbidden={0: {0}})
    assert forbidden.labels.tolist() == [-1]


def test_incremental_new_faces_match_a_full_pass():
    from faceatlas.clustering import cluster_incremental

    x, truth = blobs(20, 8, noise=0.08, seed=9)
    new = np.zeros(len(x), dtype=bool)
    new[::4] = True
    first = cluster_incremental(x[~new], np.full((~new).sum(), -1), threshold=0.5).labels
    labels = np.full(len(x), -1)
    labels[~new] = first
    with_hint = cluster_incremental(x, labels, threshold=0.5, new=new).labels
    without = cluster_incremental(x, labels, threshold=0.5).labels
    assert (with_hint == without).all() and same_partition(with_hint, truth)
