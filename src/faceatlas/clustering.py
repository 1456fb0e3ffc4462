"""Grouping face embeddings into people from a k-nearest-neighbour graph, with earned people.

Why not plain DBSCAN or average linkage over all pairs: in a real photo library most faces are
strangers seen once, and with n faces a pair threshold is crossed by chance about
``n²/2 · FAR`` times, so single-link rules invent people out of look-alike pairs and chains. Here:

* **k-NN graph, exact and blocked** (:func:`knn_graph`): each face keeps its ``k`` most similar faces
  above the threshold; similarities are computed block by block (``block × n`` float32), so memory
  is ``O(n·k)`` and never an ``n × n`` matrix.
* **Average linkage restricted to the graph** (:func:`average_linkage_graph`): two groups merge
  only when the *average* similarity over all their pairs reaches the threshold. For unit vectors
  that average is exact and cheap, ``sum_A · sum_B / (|A|·|B|)``, so no pair is ever approximated;
  the graph only proposes which groups to try. One look-alike pair cannot glue two people together.
  A second round proposes pairs of groups from a k-NN search over the groups' mean vectors, which
  finds the merges the faces' own neighbour lists were too short to propose.
* **A person is earned** (:func:`cluster_faces`): a group becomes a person only with at least
  ``min_cluster_size`` *core* faces, a core face having ``min_cluster_size - 1`` graph neighbours above
  the threshold inside its group (the Immich / DBSCAN core rule, checked within the group so a chain
  does not qualify).
* **Two faces of one photo are never one person** (cannot-link): groups sharing a photo do not
  merge, except that when a single face conflicts (a reflection, a poster) it is left out and the
  rest merges.
* **Joining an existing person** (:func:`assign_to_people`) needs a k-NN vote above the threshold,
  an average similarity to the whole person above it, *and* a margin over the next-best person.

The threshold for an ``n``-face comparison is the pack's 1:1 threshold corrected for ``n``
(:func:`one_to_n_threshold`; derivation and measurements in ``docs/clustering.md``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from faceatlas.vectors import normalize_rows

#: Neighbours kept per face in the k-NN graph.
DEFAULT_K = 16
#: Memory for one block of similarities (rows × reference faces × 4 bytes).
BLOCK_BYTES = 256 * 1024 * 1024
MAX_BLOCK_ROWS = 4096


#: Chance neighbours per face a clustering run tolerates (see :func:`one_to_n_threshold`).
CHANCE_NEIGHBOURS = 0.1


def one_to_n_threshold(
    threshold: float,
    n: int,
    *,
    far: float,
    spread: float,
    chance_neighbours: float = CHANCE_NEIGHBOURS,
) -> float:
    """The cosine two faces must reach to be linked when each face is compared with ``n`` others.

    ``threshold`` is the pack's calibrated 1:1 threshold, at which a fraction ``far`` of
    different-person pairs is accepted. Among ``n`` faces a face then has ``n · far`` chance
    neighbours on average (thousands of chance pairs in a library), so the threshold is raised
    until the expected number of chance neighbours per face is ``chance_neighbours``:
    ``far_n = min(far, chance_neighbours / n)``. Different-person cosines are close to normal
    with standard deviation ``spread`` (measured on LFW-dev: normal to within 1.5x down to
    FAR 3e-6), so moving from ``far`` to ``far_n`` moves the threshold by
    ``spread · (z(far_n) - z(far))`` with ``z`` the upper-tail normal quantile. Never looser than
    the 1:1 threshold. Derivation and measurements: ``docs/clustering.md``.
    """
    if n <= 1 or spread <= 0:
        return float(threshold)
    far_n = min(far, chance_neighbours / n)
    normal = NormalDist()
    shift = normal.inv_cdf(1.0 - far_n) - normal.inv_cdf(1.0 - far)
    return float(threshold + spread * max(shift, 0.0))


def impostor_spread(x: np.ndarray, *, sample: int = 20_000, seed: int = 0) -> float:
    """Standard deviation of different-person cosines, estimated from random pairs of ``x``.

    Almost every random pair of a library's faces is two different people; the same-person pairs
    sit far up in the distribution, so the spread is read from its lower side (the 2.3rd to the
    15.9th percentile, one standard deviation of a normal), which they do not reach.
    Returns 0 for fewer than 50 faces (too few to estimate; no correction is needed there either).
    """
    n = x.shape[0]
    if n < 50:
        return 0.0
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, sample)
    b = rng.integers(0, n, sample)
    distinct = a != b
    sims = np.einsum("ij,ij->i", x[a[distinct]], x[b[distinct]])
    low, one_sd_below = np.percentile(sims, [2.275, 15.866])
    return float(max(one_sd_below - low, 0.0))


@dataclass(frozen=True, slots=True)
class KnnGraph:
    """Each query row's neighbours, most similar first; ``-1`` / ``-inf`` pad rows with fewer."""

    indices: np.ndarray  # (m, k) int64
    similarities: np.ndarray  # (m, k) float32

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, neighbour, similarity) of every real edge."""
        rows, slots = np.nonzero(self.indices >= 0)
        return rows, self.indices[rows, slots], self.similarities[rows, slots]


def _block_rows(reference_rows: int) -> int:
    return int(max(1, min(MAX_BLOCK_ROWS, BLOCK_BYTES // max(4 * reference_rows, 1))))


def knn_graph(
    queries: np.ndarray,
    reference: np.ndarray | None = None,
    *,
    k: int = DEFAULT_K,
    floor: float = -np.inf,
    exclude_self: bool | None = None,
    block_rows: int | None = None,
) -> KnnGraph:
    """The ``k`` most similar reference rows (inner product) of each query row, at least ``floor``.

    Exact: blocked matrix products (float32), then a top-k per row. Rows of ``queries`` and
    ``reference`` are used as given (normalise them for cosines). With ``reference=None`` the
    queries are their own reference and a row is never its own neighbour.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    self_ref = reference is None
    r = q if reference is None else np.ascontiguousarray(reference, dtype=np.float32)
    if exclude_self is None:
        exclude_self = self_ref
    m, n = q.shape[0], r.shape[0]
    k = int(max(0, min(k, n - (1 if exclude_self else 0))))
    indices = np.full((m, max(k, 1)), -1, dtype=np.int64)[:, :k]
    sims = np.full((m, max(k, 1)), -np.inf, dtype=np.float32)[:, :k]
    if m == 0 or n == 0 or k == 0:
        return KnnGraph(indices, sims)
    step = block_rows or _block_rows(n)
    if self_ref and exclude_self and np.isfinite(floor):
        _symmetric_top_k(q, k, floor, step, indices, sims)
        return KnnGraph(indices, sims)
    for start in range(0, m, step):
        block = q[start : start + step] @ r.T
        rows_in_block = block.shape[0]
        if exclude_self:
            block[np.arange(rows_in_block), np.arange(start, start + rows_in_block)] = -np.inf
        _top_k_into(
            block, k, floor, indices[start : start + rows_in_block], sims[start : start + rows_in_block]
        )
    return KnnGraph(indices, sims)


#: Candidate edges kept in memory before they are cut down to the top k of each row.
MAX_PENDING_EDGES = 20_000_000


def _symmetric_top_k(
    x: np.ndarray, k: int, floor: float, step: int, out_idx: np.ndarray, out_sim: np.ndarray
) -> None:
    """Top-k neighbours above ``floor`` of every row of ``x`` among the others, computing each pair once.

    Similarity is symmetric, so each block of rows is multiplied only with the rows from its own
    start on (the upper triangle: half the products and half the scanning); every pair found
    above the floor is recorded in both directions.
    """
    n = x.shape[0]
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending_count = 0
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = x[start:stop] @ x[start:].T
        width = stop - start
        block[:, :width][np.tril(np.ones((width, width), dtype=bool))] = -np.inf  # j <= i: done elsewhere
        rows, cols = np.nonzero(block >= floor)
        vals = block[rows, cols]
        rows += start
        cols += start
        pending.append(
            (np.concatenate([rows, cols]), np.concatenate([cols, rows]), np.concatenate([vals, vals]))
        )
        pending_count += 2 * rows.size
        if pending_count > MAX_PENDING_EDGES:
            pending = [_keep_top_k(*_concatenate(pending), k)]
            pending_count = pending[0][0].size
    if not pending:
        return
    rows, cols, vals = _keep_top_k(*_concatenate(pending), k)
    rank = np.arange(rows.size) - np.searchsorted(rows, rows)
    out_idx[rows, rank] = cols
    out_sim[rows, rank] = vals


def _concatenate(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def _keep_top_k(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` largest ``vals`` of each row, sorted by row then decreasing value."""
    order = np.lexsort((-vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = np.arange(rows.size) - np.searchsorted(rows, rows)
    keep = rank < k
    return rows[keep], cols[keep], vals[keep]


def _top_k_into(block: np.ndarray, k: int, floor: float, out_idx: np.ndarray, out_sim: np.ndarray) -> None:
    """Write the top ``k`` entries (``>= floor``) of each row of ``block``, sorted, into the outputs."""
    rows_n = block.shape[0]
    if np.isfinite(floor):
        rows, cols = np.nonzero(block >= floor)
        if rows.size <= 4 * k * rows_n:  # sparse above the floor: sort only the candidates
            vals = block[rows, cols]
            order = np.lexsort((-vals, rows))
            rows, cols, vals = rows[order], cols[order], vals[order]
            rank = np.arange(rows.size) - np.searchsorted(rows, rows)
            keep = rank < k
            out_idx[rows[keep], rank[keep]] = cols[keep]
            out_sim[rows[keep], rank[keep]] = vals[keep]
            return
    top = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < block.shape[1] else np.argsort(-block, axis=1)
    top_sims = np.take_along_axis(block, top, axis=1)
    order = np.argsort(-top_sims, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    top_sims = np.take_along_axis(top_sims, order, axis=1)
    valid = top_sims >= floor
    out_idx[:] = np.where(valid, top, -1)
    out_sim[:] = np.where(valid, top_sims, -np.inf)


def group_sums(vectors: np.ndarray, index: np.ndarray, count: int) -> np.ndarray:
    """(count, d) float64 sums of the rows of ``vectors`` per group ``index`` (reduceat: add.at is slow)."""
    out = np.zeros((count, vectors.shape[1]), np.float64)
    if vectors.shape[0] == 0:
        return out
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
    out[sorted_index[starts]] = np.add.reduceat(vectors[order].astype(np.float64), starts, axis=0)
    return out


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


class _Groups:
    """Union-find over faces with, per group, the sum of its vectors and the photos it holds."""

    def __init__(self, x: np.ndarray, photo_ids: np.ndarray) -> None:
        n = x.shape[0]
        self.x = x
        self.parent = np.arange(n)
        self.sums: dict[int, np.ndarray] = {}
        self.size = np.ones(n, dtype=np.int64)
        self.photo_ids = photo_ids
        self.photos: dict[int, dict[int, int]] = {}  # root -> photo id -> face index
        self.members: dict[int, list[int]] = {}  # root -> faces (absent: just the root)

    def root(self, i: int) -> int:
        parent = self.parent
        r = i
        while parent[r] != r:
            r = int(parent[r])
        while parent[i] != r:  # path compression
            parent[i], i = r, int(parent[i])
        return r

    def vector_sum(self, r: int) -> np.ndarray:
        s = self.sums.get(r)
        return self.x[r].astype(np.float64) if s is None else s

    def photo_map(self, r: int) -> dict[int, int]:
        got = self.photos.get(r)
        return {int(self.photo_ids[r]): r} if got is None else got

    def average(self, a: int, b: int) -> float:
        return float(self.vector_sum(a) @ self.vector_sum(b)) / float(self.size[a] * self.size[b])

    def conflicts(self, a: int, b: int) -> list[int]:
        """Faces of the smaller of two groups that share a photo with the other group."""
        pa, pb = self.photo_map(a), self.photo_map(b)
        if len(pa) < len(pb):
            pa, pb = pb, pa
        return [face for photo, face in pb.items() if photo in pa]

    def detach(self, face: int, r: int) -> int:
        """Take ``face`` out of group ``r``; returns the root of what remains of the group."""
        members = [m for m in self.members.pop(r, [r]) if m != face]
        new_root = members[0]
        total = self.vector_sum(r) - self.x[face]
        photos = dict(self.photo_map(r))
        photos.pop(int(self.photo_ids[face]), None)
        for store in (self.sums, self.photos):
            store.pop(r, None)
        self.parent[members] = new_root
        self.sums[new_root] = total
        self.photos[new_root] = photos
        self.size[new_root] = len(members)
        self.members[new_root] = members
        self.parent[face] = face
        self.size[face] = 1
        self.sums.pop(face, None)
        self.photos.pop(face, None)
        self.members.pop(face, None)
        return new_root

    def merge(self, a: int, b: int) -> int:
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.sums[a] = self.vector_sum(a) + self.vector_sum(b)
        self.size[a] += self.size[b]
        photos = dict(self.photo_map(a))
        photos.update(self.photo_map(b))
        self.photos[a] = photos
        self.sums.pop(b, None)
        self.photos.pop(b, None)
        members = self.members.pop(a, [a])
        members.extend(self.members.pop(b, [b]))
        self.members[a] = members
        return a


def average_linkage_graph(
    x: np.ndarray,
    graph: KnnGraph,
    threshold: float,
    photo_ids: np.ndarray | None = None,
    *,
    rounds: int = 3,
    k: int = DEFAULT_K,
) -> np.ndarray:
    """Average-linkage groups (a root index per face) with merges proposed by ``graph``.

    Two groups merge, best pair first, while the exact average similarity over all their pairs is
    ``>= threshold`` and they share no photo (a single conflicting face of the smaller group is
    left out instead, so a reflection does not keep a person split in two).
    """
    n = x.shape[0]
    photos = np.arange(n) if photo_ids is None else np.asarray(photo_ids)
    groups = _Groups(x, photos)
    rows, cols, sims = graph.edges()
    keep = (sims >= threshold) & (rows != cols) & (photos[rows] != photos[cols])
    heap = [(-float(s), int(a), int(b)) for a, b, s in zip(rows[keep], cols[keep], sims[keep], strict=True)]
    blocked: set[tuple[int, int]] = set()
    for round_number in range(rounds):
        merged = _run_heap(groups, heap, threshold, blocked)
        if round_number == rounds - 1 or n < 2:
            break
        # Merges the faces' neighbour lists could not propose: k-NN over the groups' mean vectors,
        # whose inner products are exactly the average pair similarities.
        roots = np.unique([groups.root(i) for i in range(n)])
        roots = roots[groups.size[roots] >= 2]  # a single face's own neighbour list already proposed it
        if roots.size < 2:
            break
        means = np.stack([groups.vector_sum(int(r)) / groups.size[r] for r in roots]).astype(np.float32)
        group_graph = knn_graph(means, k=min(k, 8), floor=threshold)
        g_rows, g_cols, g_sims = group_graph.edges()
        heap = [
            (-float(s), int(roots[a]), int(roots[b]))
            for a, b, s in zip(g_rows, g_cols, g_sims, strict=True)
            if (min(int(roots[a]), int(roots[b])), max(int(roots[a]), int(roots[b]))) not in blocked
        ]
        if not heap or (not merged and round_number > 0):
            break
    return np.array([groups.root(i) for i in range(n)], dtype=np.int64)


def _run_heap(
    groups: _Groups, heap: list[tuple[float, int, int]], threshold: float, blocked: set[tuple[int, int]]
) -> int:
    heapq.heapify(heap)
    merges = 0
    while heap:
        negative, a, b = heapq.heappop(heap)
        ra, rb = groups.root(a), groups.root(b)
        if ra == rb:
            continue
        key = (min(ra, rb), max(ra, rb))
        if key in blocked:
            continue
        current = groups.average(ra, rb)
        if current < threshold:
            continue
        if current < -negative - 1e-6:
            heapq.heappush(heap, (-current, ra, rb))  # the groups grew since: re-queue at the true value
            continue
        conflicts = groups.conflicts(ra, rb)
        if conflicts:
            small, big = (ra, rb) if groups.size[ra] < groups.size[rb] else (rb, ra)
            if len(conflicts) > 1 or groups.size[small] < 2:
                blocked.add(key)
                continue
            rest = groups.detach(conflicts[0], small)
            if groups.average(rest, big) < threshold:
                blocked.add((min(rest, big), max(rest, big)))
                continue
            ra, rb = rest, big
        groups.merge(ra, rb)
        merges += 1
    return merges


def cluster_faces(
    embeddings: np.ndarray,
    *,
    threshold: float,
    photo_ids: np.ndarray | None = None,
    min_cluster_size: int = 2,
    k: int = DEFAULT_K,
) -> np.ndarray:
    """Cluster face embeddings into people.

    ``embeddings``: (n, d) vectors of one pack (normalised here). ``threshold``: cosine similarity
    at which two faces are the same person. ``photo_ids``: the photo of each face; faces of one
    photo never share a cluster. A cluster is kept only with at least ``min_cluster_size`` core faces
    (faces with ``min_cluster_size - 1`` neighbours above the threshold in their own cluster).
    Returns int labels ``0..k-1`` (largest cluster first) and ``-1`` for unassigned faces.
    """
    x = normalize_rows(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {x.shape}")
    n = x.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if photo_ids is not None and len(photo_ids) != n:
        raise ValueError("photo_ids must have one entry per embedding")
    photos = np.arange(n) if photo_ids is None else np.asarray(photo_ids)
    min_size = max(int(min_cluster_size), 1)
    graph = knn_graph(x, k=max(k, min_size), floor=float(threshold))
    group = average_linkage_graph(x, graph, float(threshold), photos, k=k)
    group = _require_core_faces(group, graph, photos, min_size)
    return compact_labels(group, min_cluster_size=min_size)


def _require_core_faces(group: np.ndarray, graph: KnnGraph, photos: np.ndarray, min_size: int) -> np.ndarray:
    """Dissolve groups with fewer than ``min_size`` core faces (their faces become singletons)."""
    if min_size <= 1:
        return group
    rows, cols, _ = graph.edges()
    inside = (group[rows] == group[cols]) & (photos[rows] != photos[cols])
    neighbours_inside = np.bincount(rows[inside], minlength=group.size)
    core = neighbours_inside >= min_size - 1
    uniq, inverse = np.unique(group, return_inverse=True)
    core_per_group = np.bincount(inverse, weights=core.astype(np.float64), minlength=uniq.size)
    failed = core_per_group[inverse] < min_size
    out = group.copy()
    out[failed] = np.flatnonzero(failed)
    return out


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


@dataclass(frozen=True, slots=True)
class Assignment:
    """Result of :func:`assign_to_people`: a label (or -1) and the winning similarity per query."""

    labels: np.ndarray
    strength: np.ndarray


def assign_to_people(
    queries: np.ndarray,
    reference: np.ndarray,
    reference_labels: np.ndarray,
    *,
    threshold: float,
    k: int = DEFAULT_K,
    min_votes: int = 3,
    margin: float = 0.05,
    average_threshold: float | None = None,
    query_photos: np.ndarray | None = None,
    reference_photos: np.ndarray | None = None,
    forbidden: dict[int, set[int]] | None = None,
) -> Assignment:
    """Give each query face to an existing person, or -1.

    A person wins a face when (1) at least ``min(min_votes, its face count)`` of the face's ``k``
    nearest labelled faces above ``threshold`` are that person's (the most votes wins, ties by
    similarity), (2) its best similarity beats every other person's by ``margin``, and (3) the
    face's average similarity to *all* the person's faces reaches ``average_threshold`` (default
    ``threshold``). Faces of one photo never join the same person (nor a person that already has a
    face of that photo); the strongest match wins. ``forbidden`` maps a query row to labels it
    must not get ("not this person").
    """
    q = normalize_rows(queries)
    r = normalize_rows(reference)
    ref_labels = np.asarray(reference_labels, dtype=np.int64)
    m = q.shape[0]
    winner = np.full(m, -1, dtype=np.int64)
    strength = np.zeros(m, dtype=np.float32)
    if m == 0 or r.shape[0] == 0:
        return Assignment(winner, strength)
    graph = knn_graph(q, r, k=k, floor=float(threshold) - margin)
    labels = np.where(graph.indices >= 0, ref_labels[np.maximum(graph.indices, 0)], -1)
    sims = graph.similarities
    if forbidden:
        for row, banned in forbidden.items():
            if 0 <= row < m:
                labels[row, np.isin(labels[row], list(banned))] = -1
    valid = labels >= 0
    voting = valid & (sims >= threshold)
    person_ids, sizes = np.unique(ref_labels, return_counts=True)
    same = labels[:, :, None] == labels[:, None, :]
    votes = np.where(valid, (same & voting[:, None, :]).sum(axis=2), 0)
    # The most votes wins; among equal votes the most similar (slots are sorted, so slot 0 is best).
    score = np.where(voting, votes * 4.0 + sims, -np.inf)
    best_slot = np.argmax(score, axis=1)
    rows = np.arange(m)
    best_label = np.where(np.isfinite(score[rows, best_slot]), labels[rows, best_slot], -1)
    best_votes = votes[rows, best_slot]
    size_of = sizes[np.clip(np.searchsorted(person_ids, best_label), 0, person_ids.size - 1)]
    enough = (best_label >= 0) & (best_votes >= np.minimum(min_votes, size_of))
    best_sim = np.where(valid & (labels == best_label[:, None]), sims, -np.inf).max(axis=1)
    runner_up = np.where(valid & (labels != best_label[:, None]), sims, -np.inf).max(axis=1)
    gap = np.where(np.isfinite(runner_up), best_sim - np.where(np.isfinite(runner_up), runner_up, 0), np.inf)
    clear = np.isfinite(best_sim) & (gap >= margin)
    candidates = np.flatnonzero(enough & clear)
    if candidates.size:
        slot = np.searchsorted(person_ids, best_label[candidates])
        sums = group_sums(r, np.searchsorted(person_ids, ref_labels), person_ids.size)
        mean_sim = np.einsum("ij,ij->i", q[candidates], sums[slot]) / sizes[slot]
        needed = threshold if average_threshold is None else average_threshold
        accepted = candidates[mean_sim >= needed]
        winner[accepted] = best_label[accepted]
        strength[accepted] = best_sim[accepted]
    if query_photos is not None:
        _one_face_per_photo(winner, strength, np.asarray(query_photos), ref_labels, reference_photos)
    return Assignment(winner, strength)


def _one_face_per_photo(
    winner: np.ndarray,
    strength: np.ndarray,
    query_photos: np.ndarray,
    reference_labels: np.ndarray,
    reference_photos: np.ndarray | None,
) -> None:
    occupied: set[tuple[int, int]] = set()
    if reference_photos is not None:
        occupied = {(int(p), int(lab)) for p, lab in zip(reference_photos, reference_labels, strict=True)}
    for idx in np.argsort(-strength, kind="stable"):
        if winner[idx] < 0:
            continue
        key = (int(query_photos[idx]), int(winner[idx]))
        if key in occupied:
            winner[idx] = -1
            strength[idx] = 0.0
        else:
            occupied.add(key)


@dataclass(slots=True)
class IncrementalResult:
    labels: np.ndarray  # existing labels kept, new people numbered from max(existing) + 1
    joined_existing: int = 0  # faces that joined a person that existed before the run
    clustered: int = 0  # faces in people created by the run
    new_people: int = 0


def cluster_incremental(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    threshold: float,
    photo_ids: np.ndarray | None = None,
    eligible: np.ndarray | None = None,
    min_faces: int = 3,
    k: int = DEFAULT_K,
    min_votes: int = 3,
    margin: float = 0.05,
    average_threshold: float | None = None,
    forbidden: dict[int, set[int]] | None = None,
    new: np.ndarray | None = None,
) -> IncrementalResult:
    """One clustering run over a library's faces: keep ``labels >= 0``, place the rest.

    1. Unlabelled eligible faces join existing people by :func:`assign_to_people`.
    2. The faces still unlabelled are clustered (:func:`cluster_faces`, ``min_faces`` core faces).
    3. A new group whose average similarity to an existing person reaches ``average_threshold``
       (with ``margin`` over the next person, and no shared photo) joins that person; the others
       become new people.

    ``eligible`` (default all) marks faces allowed to join or found people (the quality gate);
    ``forbidden`` maps a face row to labels it must not get. ``new`` marks the faces added since the
    last run: unlabelled faces that are not new already failed to form a person among themselves,
    so steps 1 and 2 then only look at the new faces and the old unlabelled faces within two links
    of them, and a run costs in proportion to the new faces. Runs in ``O(n·k)`` memory.
    """
    x = normalize_rows(embeddings)
    n = x.shape[0]
    labels = np.asarray(labels, dtype=np.int64).copy()
    photos = np.arange(n) if photo_ids is None else np.asarray(photo_ids)
    ok = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    avg_needed = threshold if average_threshold is None else average_threshold
    result = IncrementalResult(labels)
    if n == 0:
        return result
    forbidden = forbidden or {}

    assigned = np.flatnonzero(labels >= 0)
    todo = np.flatnonzero((labels < 0) & ok)
    if new is not None:
        # Old unlabelled faces could only newly qualify through new faces near them.
        todo = _near_new_faces(x, todo, np.asarray(new, dtype=bool), threshold, k)
    if assigned.size and todo.size:
        position = {int(face): row for row, face in enumerate(todo)}
        vote = assign_to_people(
            x[todo],
            x[assigned],
            labels[assigned],
            threshold=threshold,
            k=k,
            min_votes=min_votes,
            margin=margin,
            average_threshold=avg_needed,
            query_photos=photos[todo],
            reference_photos=photos[assigned],
            forbidden={position[f]: banned for f, banned in forbidden.items() if f in position},
        )
        joined = vote.labels >= 0
        labels[todo[joined]] = vote.labels[joined]
        result.joined_existing += int(joined.sum())

    rest = todo[labels[todo] < 0]
    if rest.size < max(min_faces, 1):
        return result
    groups = cluster_faces(
        x[rest], threshold=threshold, photo_ids=photos[rest], min_cluster_size=min_faces, k=k
    )
    if groups.max(initial=-1) < 0:
        return result
    next_label = int(labels.max(initial=-1)) + 1
    existing = np.flatnonzero(labels >= 0)
    target = _match_groups(x, labels, photos, existing, rest, groups, avg_needed, margin, k)
    for group in range(int(groups.max()) + 1):
        members = rest[groups == group]
        person = int(target[group])
        if person >= 0 and any(person in forbidden.get(int(face), ()) for face in members):
            person = -1  # the user said (some of) these faces are not that person: a person of their own
        if person < 0:
            person, next_label = next_label, next_label + 1
            result.new_people += 1
            result.clustered += members.size
        else:
            result.joined_existing += members.size
        for face in members:
            if person not in forbidden.get(int(face), ()):
                labels[face] = person
    return result


def _near_new_faces(x: np.ndarray, rest: np.ndarray, new: np.ndarray, threshold: float, k: int) -> np.ndarray:
    """The new faces of ``rest`` and the old ones of ``rest`` within two links (>= threshold) of them."""
    seeds = rest[new[rest]]
    old = rest[~new[rest]]
    if seeds.size == 0 or old.size == 0:
        return seeds
    chosen = np.zeros(x.shape[0], dtype=bool)
    chosen[seeds] = True
    frontier = seeds
    for _hop in range(2):
        graph = knn_graph(x[frontier], x[old], k=k, floor=threshold)
        reached = old[np.unique(graph.indices[graph.indices >= 0])]
        frontier = reached[~chosen[reached]]
        chosen[frontier] = True
        if frontier.size == 0:
            break
    return np.flatnonzero(chosen)


def _match_groups(
    x: np.ndarray,
    labels: np.ndarray,
    photos: np.ndarray,
    existing: np.ndarray,
    rest: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    margin: float,
    k: int,
) -> np.ndarray:
    """For each new group, the existing person it is (average similarity + margin), or -1."""
    count = int(groups.max()) + 1
    target = np.full(count, -1, dtype=np.int64)
    if existing.size == 0:
        return target
    person_ids, person_index = np.unique(labels[existing], return_inverse=True)
    person_sums = group_sums(x[existing], person_index, person_ids.size)
    person_means = person_sums / np.bincount(person_index)[:, None]
    member = groups >= 0
    sums = group_sums(x[rest[member]], groups[member], count)
    group_means = sums / np.maximum(np.bincount(groups[member], minlength=count), 1)[:, None]
    graph = knn_graph(group_means, person_means, k=min(2, person_ids.size), floor=threshold - margin)
    person_photos: dict[int, set[int]] = {}
    for face, person in zip(existing, labels[existing], strict=True):
        person_photos.setdefault(int(person), set()).add(int(photos[face]))
    for group in range(count):
        best, sim = int(graph.indices[group, 0]), float(graph.similarities[group, 0])
        if best < 0 or sim < threshold:
            continue
        second = float(graph.similarities[group, 1]) if graph.indices.shape[1] > 1 else -np.inf
        if sim - second < margin:
            continue
        person = int(person_ids[best])
        group_photos = {int(p) for p in photos[rest[groups == group]]}
        if group_photos & person_photos.get(person, set()):
            continue
        target[group] = person
    return target
