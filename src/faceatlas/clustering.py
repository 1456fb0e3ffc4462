"""Grouping face embeddings into people: average-linkage agglomeration with cannot-link constraints.

Why average linkage rather than DBSCAN/HDBSCAN: single-link style methods (DBSCAN with small
``min_samples``) chain look-alikes together through one ambiguous face, which is the most common
complaint about photo-library clustering; average linkage merges two groups only when the faces
are similar *on average*, so one bad pair cannot glue two people together. The stopping rule is
the pack's calibrated cosine threshold, so no per-dataset tuning is needed.

Two faces of the same photo are never the same person. That constraint is enforced exactly by
giving such pairs a similarity of ``-inf``: the Lance-Williams update of average linkage is a
weighted mean of the two merged rows, so ``-inf`` propagates to every group that contains either
face, and such groups are never merged.

The similarity matrix is dense (``n x n`` float32: 10,000 faces = 400 MB), which covers the
unassigned faces of a photo library; the incremental assignment in :mod:`faceatlas.library.people`
keeps ``n`` small after the first run.
"""

from __future__ import annotations

import numpy as np

from faceatlas.vectors import normalize_rows

#: Above this many faces the dense similarity matrix would need more than ~2.5 GB.
MAX_DENSE_FACES = 25_000


def cannot_link_mask(photo_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i != j``, of faces that share a photo."""
    ids = np.asarray(photo_ids)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    # Group boundaries of equal photo ids; only groups with 2+ faces produce pairs.
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    sizes = np.diff(np.r_[starts, len(ids)])
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
        members = order[start : start + size]
        a, b = np.meshgrid(members, members, indexing="ij")
        off = a != b
        rows.append(a[off])
        cols.append(b[off])
    if not rows:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    return np.concatenate(rows), np.concatenate(cols)


def average_linkage(similarity: np.ndarray, threshold: float) -> np.ndarray:
    """Merge groups while their average pairwise similarity is ``>= threshold``.

    ``similarity`` is a square float32 matrix that is modified in place; ``-inf`` entries are
    cannot-link pairs. Returns a group index per row (not compacted).
    """
    n = similarity.shape[0]
    s = similarity
    np.fill_diagonal(s, -np.inf)
    sizes = np.ones(n, dtype=np.float64)
    group = np.arange(n)
    active = np.ones(n, dtype=bool)
    best_idx = s.argmax(axis=1)
    best_val = s[np.arange(n), best_idx]
    best_val[~active] = -np.inf
    while True:
        i = int(best_val.argmax())
        if not best_val[i] >= threshold:
            break
        j = int(best_idx[i])
        # Lance-Williams update for average linkage; -inf (cannot-link) propagates.
        merged = (sizes[i] * s[i] + sizes[j] * s[j]) / (sizes[i] + sizes[j])
        s[i] = merged
        s[:, i] = merged
        s[i, i] = -np.inf
        s[j] = -np.inf
        s[:, j] = -np.inf
        sizes[i] += sizes[j]
        active[j] = False
        group[group == j] = i
        best_val[j] = -np.inf
        # Rows whose best partner was i or j may have lost it; no other row can have gained,
        # because an average never exceeds the larger of the two values it averages.
        stale = np.flatnonzero(active & ((best_idx == i) | (best_idx == j)))
        stale = np.union1d(stale, [i])
        if stale.size:
            sub = s[stale]
            best_idx[stale] = sub.argmax(axis=1)
            best_val[stale] = sub[np.arange(stale.size), best_idx[stale]]
    return group


def cluster_faces(
    embeddings: np.ndarray,
    *,
    threshold: float,
    photo_ids: np.ndarray | None = None,
    min_cluster_size: int = 2,
) -> np.ndarray:
    """Cluster face embeddings into people.

    ``embeddings``: (n, d) vectors of one pack (normalised here). ``threshold``: cosine similarity
    at which two faces are the same person (the pack's calibrated threshold). ``photo_ids``: the
    photo of each face; faces of one photo never share a cluster. Clusters smaller than
    ``min_cluster_size`` are dropped. Returns int labels ``0..k-1`` (largest cluster first) and
    ``-1`` for unassigned faces.
    """
    x = normalize_rows(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {x.shape}")
    n = x.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if n > MAX_DENSE_FACES:
        raise ValueError(f"{n} faces exceed the dense clustering limit of {MAX_DENSE_FACES}")
    if photo_ids is not None and len(photo_ids) != n:
        raise ValueError("photo_ids must have one entry per embedding")
    s = x @ x.T
    if photo_ids is not None:
        rows, cols = cannot_link_mask(np.asarray(photo_ids))
        s[rows, cols] = -np.inf
    group = average_linkage(s, float(threshold))
    if photo_ids is not None:
        del s
        group = repair_blocked_merges(x, group, np.asarray(photo_ids), float(threshold))
    return compact_labels(group, min_cluster_size=min_cluster_size)


def repair_blocked_merges(
    x: np.ndarray, group: np.ndarray, photo_ids: np.ndarray, threshold: float
) -> np.ndarray:
    """Join groups that a single same-photo conflict kept apart.

    Greedy agglomeration can let one face of a photo grab a look-alike first (a reflection, a
    poster of the same person); the cannot-link then keeps that small group away from the person's
    main group forever. Two groups whose average similarity reaches ``threshold`` are joined when
    only a few faces conflict (at most one, or a quarter of the smaller group); the conflicting
    faces are left on their own. Groups with many shared photos (siblings photographed together)
    stay apart.
    """
    group = group.copy()
    forbidden: set[tuple[int, int]] = set()
    while True:
        reps, inverse = np.unique(group, return_inverse=True)
        if reps.size < 2:
            return group
        sums = np.zeros((reps.size, x.shape[1]), dtype=np.float64)
        np.add.at(sums, inverse, x)
        sizes = np.bincount(inverse).astype(np.float64)
        avg = (sums @ sums.T) / np.outer(sizes, sizes)
        np.fill_diagonal(avg, -np.inf)
        for a, b in forbidden:
            ia, ib = np.searchsorted(reps, [a, b])
            if ia < reps.size and ib < reps.size and reps[ia] == a and reps[ib] == b:
                avg[ia, ib] = avg[ib, ia] = -np.inf
        flat = int(avg.argmax())
        ia, ib = divmod(flat, reps.size)
        if not avg[ia, ib] >= threshold:
            return group
        if sizes[ia] < sizes[ib]:
            ia, ib = ib, ia
        big, small = int(reps[ia]), int(reps[ib])
        big_photos = photo_ids[group == big]
        small_members = np.flatnonzero(group == small)
        conflict = np.isin(photo_ids[small_members], big_photos)
        if conflict.sum() > max(1, small_members.size // 4) or conflict.all():
            forbidden.add((min(big, small), max(big, small)))
            continue
        group[small_members[~conflict]] = big
        # Conflicting faces become their own groups, represented by themselves.
        group[small_members[conflict]] = small_members[conflict]
        forbidden.update((min(big, int(m)), max(big, int(m))) for m in small_members[conflict])


def compact_labels(group: np.ndarray, *, min_cluster_size: int = 1) -> np.ndarray:
    """Renumber groups ``0..k-1`` by decreasing size; groups below ``min_cluster_size`` become -1."""
    uniq, inverse, counts = np.unique(group, return_inverse=True, return_counts=True)
    keep = counts >= max(min_cluster_size, 1)
    # Largest first; ties broken by first member so results are deterministic.
    first = np.full(uniq.size, group.size)
    np.minimum.at(first, inverse, np.arange(group.size))
    order = np.lexsort((first, -counts))
    order = order[keep[order]]
    new_label = np.full(uniq.size, -1, dtype=np.int64)
    new_label[order] = np.arange(order.size)
    return new_label[inverse]
