"""Exact float k-NN mAP@k of embeddings: the ceiling a hash code of them is measured against.

The data set is split by the protocol of :func:`deephash.data.load_data` (docs/protocol.md); each query
ranks the database by cosine similarity (descending; equal similarities in row order, a stable sort) and
AP@k is docs/metrics.md's (precision at each relevant rank among the first k, over the relevant rows
among them; 0 when there are none), averaged over all queries.

    python benchmarks/bench_float_knn.py --data fashion-mnist            # raw pixels
    python benchmarks/bench_float_knn.py --data runs/ssl.npz -k 1000
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deephash.data import load_data  # noqa: E402


def float_knn_map(xq, xdb, yq, ydb, k: int = 1000, chunk: int = 100) -> float:
    """mAP@k of the cosine ranking of ``xdb`` for each row of ``xq`` (class-id labels)."""
    q = torch.nn.functional.normalize(torch.as_tensor(xq, dtype=torch.float32), dim=1)
    db = torch.nn.functional.normalize(torch.as_tensor(xdb, dtype=torch.float32), dim=1)
    yq, ydb = torch.as_tensor(yq), torch.as_tensor(ydb)
    kk = min(k, db.shape[0]) if k > 0 else db.shape[0]
    ranks = torch.arange(1, kk + 1, dtype=torch.float64)
    aps = []
    for s in range(0, q.shape[0], chunk):
        sim = q[s:s + chunk] @ db.T
        order = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :kk]
        rel = (ydb[order] == yq[s:s + chunk, None]).double()
        hits = rel.cumsum(1)
        r = rel.sum(1)
        aps.append(torch.where(r > 0, (hits / ranks * rel).sum(1) / r.clamp(min=1), torch.zeros_like(r)))
    return float(torch.cat(aps).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--split-seed", type=int, default=None)
    ap.add_argument("-k", type=int, default=1000)
    args = ap.parse_args()
    split = load_data(args.data, seed=args.split_seed)
    m = float_knn_map(split.x_query, split.x_db, split.y_query, split.y_db, args.k)
    print(f"{args.data}: exact float k-NN (cosine) mAP@{args.k} = {m:.4f} "
          f"({len(split.x_query)} queries, {len(split.x_db)} database items, {split.dim}-d)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
