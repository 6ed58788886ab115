"""Outside baselines the benchmarks compare against: FAISS's binary index. (The deep-hashing
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
