"""How dense the HNSW graph must be: build time, recall and latency against the beam, per (M, ef_c).

    PYTHONPATH=src python benchmarks/hnsw_params.py --faces 1000000 --m 32 --ef-construction 200 [--dim 128]
        [--beams 64,128,256]

Same clustered vectors and queries as ``benchmarks/search.py`` (so the figures compare), through
``faceatlas.index.HnswIndex`` itself (usearch; float16 vectors, or at 512-d the binary graph with its
re-rank) with every core building and 1 query thread, 300 queries, recall against the exact float32 top 5.
Appends one entry to ``benchmarks/results/hnsw_params.json``. This is how ``HNSW_M`` and
``HNSW_EF_CONSTRUCTION`` in ``faceatlas/index/memory.py`` were chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks.common import RESULTS, machine
from benchmarks.search import faces_and_queries


def main() -> None:
    from faceatlas.index import HnswIndex

    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, help="default: the index's own for this width")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--beams", default="64,128,256,384,512,768,1024", help="search beams (ef) to measure")
    args = parser.parse_args()
    n, dim = args.faces, args.dim
    vectors, _, queries, truth = faces_and_queries(n, dim, args.queries)
    graph = HnswIndex(dim, m=args.m, ef_construction=args.ef_construction)
    graph.reserve(n)
    started = time.perf_counter()
    graph.add(np.arange(n), np.zeros(n, np.int64), vectors)
    entry: dict[str, object] = {
        "library": "usearch",
        "faces": n,
        "dim": dim,
        "m": args.m,
        "ef_construction": graph.ef_construction,
        "graph_vectors": graph.graph_vectors,
        "build_s": round(time.perf_counter() - started, 1),
        "build_threads": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "by_ef": {},
    }
    print(json.dumps(entry), flush=True)
    for ef in (int(beam) for beam in args.beams.split(",")):
        graph.ef_search = ef
        times, found = [], []
        for query in queries:
            t = time.perf_counter()
            hits = graph.search(query[None], 5)[0]
            times.append((time.perf_counter() - t) * 1e3)
            found.append(hits.keys)
        measured = {
            "p50_ms": round(float(np.median(times)), 3),
            "p99_ms": round(float(np.percentile(times, 99)), 3),
            "recall_at_1": float(np.mean([f[0] == t[0] for f, t in zip(found, truth, strict=True)])),
            "recall_at_5": float(
                np.mean([len(set(f) & set(t)) / 5 for f, t in zip(found, truth, strict=True)])
            ),
        }
        entry["by_ef"][ef] = measured  # type: ignore[index]
        print(ef, json.dumps(measured), flush=True)
    path = RESULTS / "hnsw_params.json"
    results = json.loads(path.read_text()) if path.is_file() else {"machine": machine(), "runs": []}
    results["runs"].append(entry)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
