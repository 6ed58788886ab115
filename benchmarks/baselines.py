"""Outside baselines the benchmarks compare against: FAISS's binary index, usearch's exact search and
simsimd's cdist (with a numpy top-k), all on the packed bytes of deephash's codes. (The deep-hashing
literature's numpy evaluation loop is deephash_ext.reference.literature_topk_map.)
"""
from __future__ import annotations

import numpy as np


def faiss_binary_knn(q_packed: np.ndarray, db_packed: np.ndarray, k: int, index=None):
    """Exact Hamming k-NN with faiss.IndexBinaryFlat (same packed byte layout as ours)."""
    import faiss

    if index is None:
        index = faiss.IndexBinaryFlat(db_packed.shape[1] * 8)
        index.add(db_packed)
    return index.search(q_packed, k)


def usearch_knn(q_packed: np.ndarray, db_packed: np.ndarray, k: int, threads: int = 1):
    """Exact Hamming k-NN with usearch's brute-force search (its b1 vectors are packed bytes)."""
    from usearch.index import MetricKind, search

    m = search(db_packed, q_packed, k, MetricKind.Hamming, exact=True, threads=threads)
    return m.distances, m.keys


def simsimd_knn(q_packed: np.ndarray, db_packed: np.ndarray, k: int, threads: int = 1, block: int = 100):
    """Hamming k-NN by simsimd.cdist (all distances, float64) and numpy's argpartition + sort, a block of
    queries at a time so that the distance matrix stays small."""
    import simsimd

    k = min(k, db_packed.shape[0])
    dist = np.empty((q_packed.shape[0], k), np.float64)
    rows = np.empty((q_packed.shape[0], k), np.int64)
    for i in range(0, q_packed.shape[0], block):
        d = np.asarray(simsimd.cdist(q_packed[i:i + block], db_packed, metric="hamming", dtype="bin8",
                                     threads=threads))
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        dp = np.take_along_axis(d, part, 1)
        order = np.lexsort((part, dp), axis=1)
        dist[i:i + block] = np.take_along_axis(dp, order, 1)
        rows[i:i + block] = np.take_along_axis(part, order, 1)
    return dist, rows
