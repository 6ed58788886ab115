"""Codes for the multi-index hashing benchmarks, at any size, with and without neighbourhood structure.

- ``fmnist``: Fashion-MNIST expanded to N codes by small perturbations. The 60,000 training images are
  centred and projected on their top ``bits`` principal directions; item i is the projection of a
  training image drawn at random plus isotropic Gaussian noise whose norm is about ``noise`` times the
  median distance from a training image to its nearest other one (so that copies of neighbouring
  images intermix: a denser sampling of the same manifold, not clusters of near-duplicates); codes are
  the signs after an ITQ rotation fitted on the 60,000 projections. Queries: test images (not in the
  database, no noise), through the same projection and rotation.
- ``gmm``: LSH codes (signs of random Gaussian projections) of a mixture of ``clusters`` isotropic
  Gaussians in 32 dimensions (centres N(0, I), spread ``spread``); queries are fresh draws from the
  mixture.
- ``uniform``: independent fair bits, database and queries: multi-index hashing's worst case (no
  neighbourhood structure; the k-th distance is large, buckets hold about one code each).

``python benchmarks/mih_data.py`` prints, per set, the mean distance of the queries' 1st, 10th,
100th and 1000th neighbours (the quantity that decides how far the probing must go).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import deephash_ext as de

KINDS = ("fmnist", "gmm", "uniform")
_CHUNK = 1 << 20


def codes(kind: str, n: int, bits: int, n_queries: int = 1000, seed: int = 0, noise: float = 0.5,
          clusters: int = 10_000, spread: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """``(database uint8[n, bits/8], queries uint8[n_queries, bits/8])``, packed codes."""
    if kind == "uniform":
        g = torch.Generator().manual_seed(seed)
        db = torch.empty(n, (bits + 7) // 8, dtype=torch.uint8)
        for s in range(0, n, _CHUNK):
            e = min(n, s + _CHUNK)
            db[s:e] = de.pack_bits(torch.randint(0, 2, (e - s, bits), generator=g, dtype=torch.uint8))
        return db, de.pack_bits(torch.randint(0, 2, (n_queries, bits), generator=g, dtype=torch.uint8))
    if kind == "fmnist":
        return _fmnist(n, bits, n_queries, seed, noise)
    if kind == "gmm":
        return _gmm(n, bits, n_queries, seed, clusters, spread)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _itq_rotation(v: torch.Tensor, seed: int, iterations: int = 50) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r, _ = torch.linalg.qr(torch.randn(v.shape[1], v.shape[1], generator=g, dtype=torch.float64))
    for _ in range(iterations):
        b = torch.where(v @ r > 0, 1.0, -1.0).to(torch.float64)
        s, _, vt = torch.linalg.svd(v.T @ b)
        r = s @ vt
    return r


def _median_nn_distance(x: torch.Tensor, g: torch.Generator, sample: int = 2000) -> float:
    idx = torch.randperm(x.shape[0], generator=g)[:sample]
    d = torch.cdist(x[idx], x)
    d[torch.arange(len(idx)), idx] = float("inf")
    return float(d.min(1).values.median())


def _fmnist(n, bits, n_queries, seed, noise):
    from deephash.data import load_fashion_mnist

    x, _ = load_fashion_mnist()
    x = torch.from_numpy(x).to(torch.float64)
    train, test = x[:60_000], x[60_000:]
    mean = train.mean(0)
    vals, vecs = torch.linalg.eigh((train - mean).T @ (train - mean) / (len(train) - 1))
    w = vecs[:, torch.argsort(vals, descending=True)[:bits]]
    v = (train - mean) @ w
    rot = _itq_rotation(v, seed)
    g = torch.Generator().manual_seed(seed)
    sigma = noise * _median_nn_distance(v.float(), g) / np.sqrt(bits)
    proj = rot.float()
    v = v.float()
    db = torch.empty(n, (bits + 7) // 8, dtype=torch.uint8)
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        base = v[torch.randint(0, len(v), (e - s,), generator=g)]
        db[s:e] = de.pack_bits((base + sigma * torch.randn(e - s, bits, generator=g)) @ proj)
    qi = torch.randperm(len(test), generator=g)[:n_queries]
    return db, de.pack_bits((((test[qi] - mean) @ w).float()) @ proj)


def _gmm(n, bits, n_queries, seed, clusters, spread, dim=32):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    w = torch.randn(dim, bits, generator=g)

    def draw(count):
        c = centres[torch.randint(0, clusters, (count,), generator=g)]
        return de.pack_bits((c + spread * torch.randn(count, dim, generator=g)) @ w)

    db = torch.empty(n, (bits + 7) // 8, dtype=torch.uint8)
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        db[s:e] = draw(e - s)
    return db, draw(n_queries)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--bits", type=int, nargs="+", default=[64, 128])
    p.add_argument("--kinds", nargs="+", default=list(KINDS))
    p.add_argument("--queries", type=int, default=200)
    a = p.parse_args()
    torch.set_num_threads(2)
    print("| set | N | bits | mean d_1 | d_10 | d_100 | d_1000 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in a.kinds:
        for bits in a.bits:
            db, q = codes(kind, a.n, bits, a.queries)
            d, _ = de.hamming_topk(q, db, 1000)
            cols = " | ".join(f"{d[:, j].float().mean():.1f}" for j in (0, 9, 99, 999))
            print(f"| {kind} | {a.n:.0e} | {bits} | {cols} |", flush=True)


if __name__ == "__main__":
    main()
