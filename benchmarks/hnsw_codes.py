"""What an HNSW graph of wide (512-d) faces should hold: float16 vectors, int8, or binary codes.

    PYTHONPATH=src python benchmarks/hnsw_codes.py [--faces 1000000] [--dim 512]
        [--codes f16,i8,b512,b1024,b2048] [--ef 64,128,192,256,384] [--rerank 64] [--queries 300]

Each graph is a plain usearch index (M=32, ef_construction=200, 2 build threads) on the clustered faces
of ``benchmarks/search.py``. ``f16``: the graph's inner products are the answer. ``i8``: int8 vectors,
``bN``: N-bit SimHash codes (``b512`` at 512-d: the signs themselves, else the signs of N random
projections) walked by Hamming distance; for both, the graph's best ``--rerank`` candidates are re-ranked
by exact cosine on float16 rows. One query thread; recall@5 against exact float32 search. A check
without any graph, ``contains``, says what share of the exact top 5 lies in each code's brute-force top
``--rerank``: when that is high and the graph's recall is low, the walk is what fails, not the code.
Results go to benchmarks/results/hnsw_codes.json. ``faceatlas.index.HnswIndex`` uses ``b1024`` for 512-d
faces because of these numbers (``docs/scale.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import onnxruntime  # noqa: F401  (before usearch: see faceatlas.index.memory)
from threadpoolctl import threadpool_limits
from usearch.index import Index

from benchmarks.search import faces_and_queries

RESULTS = Path(__file__).resolve().parent / "results"


Encoder = Callable[[np.ndarray], np.ndarray]


def encoder(code: str, dim: int) -> tuple[Encoder, int]:
    """(a function from unit rows to what the graph stores, the graph's ndim)."""
    if code in ("f16", "i8"):
        return (lambda x: x), dim
    bits = int(code[1:])
    projection = None if bits == dim else np.random.default_rng(7).standard_normal((dim, bits), np.float32)
    return (lambda x: np.packbits((x if projection is None else x @ projection) > 0, axis=-1)), bits


def contains(encode: Encoder, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, top: int) -> float:
    """Share of the exact top 5 inside a binary code's brute-force top ``top`` (no graph)."""
    signs = np.unpackbits(encode(queries), axis=1).astype(np.float32) * 2 - 1
    agree = np.zeros((len(queries), len(vectors)), np.float32)
    for start in range(0, len(vectors), 100_000):
        block = np.unpackbits(encode(vectors[start : start + 100_000]), axis=1).astype(np.float32) * 2 - 1
        agree[:, start : start + len(block)] = signs @ block.T
    found = np.argpartition(-agree, top - 1, axis=1)[:, :top]
    return float(
        np.mean([len(set(f.tolist()) & set(t.tolist())) / 5 for f, t in zip(found, truth, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--codes", default="f16,i8,b512,b1024,b2048")
    parser.add_argument("--ef", default="64,128,192,256,384")
    parser.add_argument("--rerank", type=int, default=64)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    n, dim = args.faces, args.dim
    vectors, _, queries, truth = faces_and_queries(n, dim, args.queries)
    rows = vectors.astype(np.float16)
    path = RESULTS / "hnsw_codes.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for code in args.codes.split(","):
        encode, ndim = encoder(code, dim)
        binary = code.startswith("b")
        graph: Any = Index(  # (usearch's Index is typed loosely)
            ndim=ndim,
            metric="hamming" if binary else "ip",
            dtype="b1" if binary else code,
            connectivity=32,
            expansion_add=200,
        )
        started = time.perf_counter()
        serial = min(n, 10_000)  # the first faces one at a time, as HnswIndex inserts them
        graph.add(np.arange(serial), encode(vectors[:serial]), threads=1)
        for start in range(serial, n, 100_000):
            stop = min(n, start + 100_000)
            graph.add(np.arange(start, stop), encode(vectors[start:stop]), threads=0)
        entry: dict[str, object] = {
            "faces": n,
            "dim": dim,
            "code": code,
            "build_s": round(time.perf_counter() - started, 1),
            "rerank": None if code == "f16" else args.rerank,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "by_ef": {},
        }
        fetch = 5 if code == "f16" else args.rerank
        with threadpool_limits(1, user_api="blas"):
            for ef in [int(e) for e in args.ef.split(",")]:
                graph.expansion_search = ef
                latency, recall = [], []
                for q, t in zip(queries, truth, strict=True):
                    begun = time.perf_counter()
                    keys = np.asarray(graph.search(encode(q), fetch, threads=1).keys, np.int64)
                    if code != "f16":
                        keys = keys[np.argsort(-(rows[keys].astype(np.float32) @ q))[:5]]
                    latency.append(time.perf_counter() - begun)
                    recall.append(len(set(keys.tolist()) & set(t.tolist())) / 5)
                entry["by_ef"][ef] = {  # type: ignore[index]
                    "p50_ms": round(1000 * float(np.median(latency)), 3),
                    "recall_at_5": round(float(np.mean(recall)), 4),
                }
        del graph
        if binary:
            entry["contains"] = round(contains(encode, vectors, queries, truth, args.rerank), 4)
        print(json.dumps(entry), flush=True)
        results[f"{n}x{dim}/{code}"] = entry
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
