"""Outside baselines the benchmarks (and a few tests) compare against: the deep-hashing papers'
numpy evaluation loop and FAISS's binary index.
"""
from __future__ import annotations

import numpy as np


def seed_topk_map(q_codes: np.ndarray, db_codes: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
                  topk: int) -> float:
    """The numpy loop that deep-hashing repositories copy (DeepHash-pytorch's CalcTopMap).

    Codes are in {-1, +1}, labels one-hot / multi-hot. Differences from the original, both needed
    for the result to be well defined: argsort is stable (ties ordered by database row, the
    original's quicksort leaves them arbitrary), and a query with no relevant row in its top-k
    counts as 0 while the mean still runs over all queries (as the original does).
    """
    bits = q_codes.shape[1]
    total = 0.0
    for i in range(q_codes.shape[0]):
        gnd = (q_labels[i] @ db_labels.T > 0).astype(np.float32)
        hamm = 0.5 * (bits - q_codes[i] @ db_codes.T)
        ind = np.argsort(hamm, kind="stable")
        tgnd = gnd[ind][:topk]
        tsum = int(tgnd.sum())
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.asarray(np.where(tgnd == 1)) + 1.0
        total += np.mean(count / tindex)
    return total / q_codes.shape[0]


def faiss_binary_knn(q_packed: np.ndarray, db_packed: np.ndarray, k: int, index=None):
    """Exact Hamming k-NN with faiss.IndexBinaryFlat (same packed byte layout as ours)."""
    import faiss

    if index is None:
        index = faiss.IndexBinaryFlat(db_packed.shape[1] * 8)
        index.add(db_packed)
    return index.search(q_packed, k)
