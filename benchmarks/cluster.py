"""Clustering at library scale: 200 000 faces (synthetic people drawn to match LFW, plus the real LFW-dev
embeddings), a first run and an incremental run with 1 000 new faces; time, peak memory, quality.

    PYTHONPATH=src python benchmarks/cluster.py [--faces 200000] [--new 1000]

Synthetic faces: ``normalize(a·m + b_p·c_p + e_p·n)`` with ``m`` the mean direction of the real LFW
embeddings, ``c_p`` a random direction per person and ``n`` random noise per face; ``a²`` is set to the
measured mean different-person cosine, each person's noise share ``e_p²`` is drawn so that the
same-person cosines have LFW's mean and spread. People sizes are drawn from LFW-dev's photos-per-person
distribution (most people appear once: strangers). The real LFW embeddings come from the evaluation cache
(``faceatlas eval cluster --distractors`` fills it). Writes ``benchmarks/results/cluster.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, machine, peak_rss_mb, rss_mb, write_result


def lfw_embeddings() -> tuple[np.ndarray, np.ndarray]:
    from faceatlas.engine import Engine
    from faceatlas.evaluation.embeddings import embed_images
    from faceatlas.evaluation.runs import people_with_images

    root = SHARED / "data" / "lfw-dev" / "images"
    names = [n for files in people_with_images(root, 1).values() for n in files]
    embedded = embed_images(Engine("sface", attributes=False), root, names)
    identity = np.array([n.split("/", 1)[0] for n in names])
    return embedded.embeddings[embedded.found], identity[embedded.found]


def pair_stats(x: np.ndarray, truth: np.ndarray, rng: np.random.Generator, pairs: int = 200_000) -> dict:
    a = rng.integers(0, len(x), pairs)
    b = rng.integers(0, len(x), pairs)
    keep = a != b
    sims = np.einsum("ij,ij->i", x[a[keep]], x[b[keep]])
    different = truth[a[keep]] != truth[b[keep]]
    # same-person pairs: every pair inside each identity of a sample of identities
    order = np.argsort(truth, kind="stable")
    sorted_truth = truth[order]
    starts = np.flatnonzero(np.r_[True, sorted_truth[1:] != sorted_truth[:-1]])
    ends = np.r_[starts[1:], len(truth)]
    same: list[np.ndarray] = []
    for s, e in zip(starts, ends, strict=True):
        if e - s >= 2 and len(same) < 3000:
            members = x[order[s:e]]
            g = members @ members.T
            same.append(g[np.triu_indices(e - s, 1)])
    genuine = np.concatenate(same)
    imp = sims[different]
    return {
        "different_mean": round(float(imp.mean()), 4),
        "different_std": round(float(imp.std()), 4),
        "different_far_at_0.4": float((imp >= 0.4).mean()),
        "same_mean": round(float(genuine.mean()), 4),
        "same_std": round(float(genuine.std()), 4),
    }


def synthetic(
    count: int, real: np.ndarray, real_truth: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    from faceatlas.vectors import normalize_rows

    dim = real.shape[1]
    _, sizes_lfw = np.unique(real_truth, return_counts=True)
    same_mean = pair_stats(real, real_truth, rng)["same_mean"]
    mean_direction = normalize_rows(real.mean(axis=0, keepdims=True))[0]
    between = float(np.median(real @ mean_direction)) ** 2  # a²: the shared component
    sizes: list[int] = []
    while sum(sizes) < count:
        sizes.append(int(rng.choice(sizes_lfw)))
    sizes[-1] -= sum(sizes) - count
    truth = np.repeat(np.arange(len(sizes)), sizes)
    people = len(sizes)
    centres = normalize_rows(rng.normal(size=(people, dim)).astype(np.float32))
    # per-person noise share: mean 1 - same_mean, spread so the same-person cosines vary like LFW's
    noise_share = np.clip(rng.normal(1.0 - same_mean, 0.08, people), 0.05, 0.9)
    identity_share = np.clip(1.0 - between - noise_share, 0.05, None)
    noise = normalize_rows(rng.normal(size=(count, dim)).astype(np.float32))
    x = (
        np.sqrt(between) * mean_direction[None, :]
        + np.sqrt(identity_share)[truth, None] * centres[truth]
        + np.sqrt(noise_share)[truth, None] * noise
    )
    return normalize_rows(x.astype(np.float32)), truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=200_000)
    parser.add_argument("--new", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from faceatlas.clustering import cluster_incremental, impostor_spread, one_to_n_threshold
    from faceatlas.evaluation.cluster_metrics import distractor_scores
    from faceatlas.models.packs import get_pack

    rng = np.random.default_rng(args.seed)
    calibration = get_pack("sface").calibration()
    real, real_truth = lfw_embeddings()
    synth, synth_truth = synthetic(args.faces - len(real), real, real_truth, rng)
    x = np.concatenate([synth, real]).astype(np.float32)
    # truth labels: synthetic person ids, then LFW names (never equal to a synthetic id)
    truth = np.concatenate([synth_truth.astype(str), np.char.add("lfw:", real_truth.astype(str))])
    is_real = np.r_[np.zeros(len(synth), bool), np.ones(len(real), bool)]
    order = rng.permutation(len(x))
    x, truth, is_real = x[order], truth[order], is_real[order]
    new = np.zeros(len(x), bool)
    new[rng.choice(len(x), args.new, replace=False)] = True
    baseline_rss = rss_mb()

    first_x = x[~new]
    spread = impostor_spread(first_x)
    threshold = one_to_n_threshold(calibration.threshold, len(first_x), far=1e-3, spread=spread)
    started = time.perf_counter()
    first = cluster_incremental(first_x, np.full(len(first_x), -1), threshold=threshold)
    first_seconds = time.perf_counter() - started
    first_peak = peak_rss_mb()

    labels = np.full(len(x), -1, dtype=np.int64)
    labels[~new] = first.labels
    threshold_all = one_to_n_threshold(calibration.threshold, len(x), far=1e-3, spread=spread)
    started = time.perf_counter()
    second = cluster_incremental(x, labels, threshold=threshold_all, new=new)
    incremental_seconds = time.perf_counter() - started

    def quality(labels: np.ndarray, truth: np.ndarray) -> dict:
        s = distractor_scores(labels, truth)
        return {
            "bcubed_precision": round(s.overall.bcubed_precision, 4),
            "bcubed_recall": round(s.overall.bcubed_recall, 4),
            "clusters": s.overall.clusters,
            "identities": s.overall.identities,
            "fake_people": s.fake_people,
            "fake_people_share": round(s.fake_people_share, 4),
            "strangers": s.strangers,
            "strangers_in_a_person": s.strangers_in_a_person,
            "frequent_bcubed_precision": round(s.frequent_bcubed_precision, 4),
            "frequent_bcubed_recall": round(s.frequent_bcubed_recall, 4),
        }

    result = {
        "faces": len(x),
        "synthetic_faces": int((~is_real).sum()),
        "lfw_faces": int(is_real.sum()),
        "new_faces": args.new,
        "machine": machine(),
        "distributions": {
            "lfw": pair_stats(real, real_truth, rng),
            "synthetic": pair_stats(synth, synth_truth, rng),
        },
        "impostor_spread_estimate": round(spread, 4),
        "threshold_first": round(threshold, 4),
        "threshold_incremental": round(threshold_all, 4),
        "first_run": {
            "seconds": round(first_seconds, 1),
            "peak_rss_mb": round(first_peak, 0),
            "rss_before_mb": round(baseline_rss, 0),
            "new_people": first.new_people,
        },
        "incremental_run": {
            "seconds": round(incremental_seconds, 2),
            "joined_existing": second.joined_existing,
            "new_people": second.new_people,
            "peak_rss_mb": round(peak_rss_mb(), 0),
        },
        "quality_all": quality(second.labels, truth),
        "quality_synthetic_only": quality(second.labels[~is_real], truth[~is_real]),
        "quality_lfw_only": quality(second.labels[is_real], truth[is_real]),
    }
    path = write_result("cluster", result)
    print(path)
    import json

    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
