"""Pure-PyTorch references of every deephash_ext op, with the same signatures.

They are written for clarity, not speed: the tests compare the kernels against them, and the
benchmarks time the kernels against them. They use only documented torch operations and share no
code with the kernels.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pack_bits", "unpack_bits", "hamming_distance", "hamming_topk", "topk_map"]

_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int32)


def pack_bits(x: Tensor) -> Tensor:
    bits = x.shape[-1]
    nbytes = (bits + 7) // 8
    b = (x > 0).to(torch.int32)
    b = torch.nn.functional.pad(b, (0, nbytes * 8 - bits))
    b = b.reshape(*x.shape[:-1], nbytes, 8)
    weights = (1 << torch.arange(8, device=x.device, dtype=torch.int32))
    return (b * weights).sum(-1).to(torch.uint8)


def unpack_bits(packed: Tensor, bits: int) -> Tensor:
    if bits < 0 or bits > 8 * packed.shape[-1]:
        raise ValueError(f"unpack_bits: asked for {bits} bits but the codes hold only {8 * packed.shape[-1]}")
    shifts = torch.arange(8, device=packed.device, dtype=torch.uint8)
    b = (packed.unsqueeze(-1) >> shifts) & 1
    return b.reshape(*packed.shape[:-1], 8 * packed.shape[-1])[..., :bits].contiguous()


def hamming_distance(q: Tensor, db: Tensor) -> Tensor:
    if q.shape[0] == 0 or db.shape[0] == 0:
        return torch.zeros(q.shape[0], db.shape[0], dtype=torch.int32, device=q.device)
    x = q[:, None, :] ^ db[None, :, :]
    return _POPCOUNT.to(q.device)[x.long()].sum(-1, dtype=torch.int32)


def hamming_topk(q: Tensor, db: Tensor, k: int) -> tuple[Tensor, Tensor]:
    if k < 1:
        raise ValueError(f"hamming_topk: k must be >= 1, got {k}")
    kk = min(k, db.shape[0])
    d = hamming_distance(q, db)
    # A stable sort orders equal distances by row index.
    dist, rows = torch.sort(d, dim=1, stable=True)
    return dist[:, :kk].contiguous(), rows[:, :kk].contiguous()


def relevance(q_labels: Tensor, db_labels: Tensor) -> Tensor:
    """bool[Q, N]: same class id, or at least one shared label (multi-hot)."""
    if q_labels.dim() == 1:
        return q_labels[:, None] == db_labels[None, :]
    return (q_labels.ne(0).double() @ db_labels.ne(0).double().T) > 0


def topk_map(q: Tensor, db: Tensor, q_labels: Tensor, db_labels: Tensor, k: int = 0,
             ties: str = "index") -> Tensor:
    Q, N = q.shape[0], db.shape[0]
    if ties not in ("index", "average"):
        raise ValueError(f'ties must be "index" or "average", got "{ties}"')
    full = k <= 0 or k >= N
    if ties == "average" and not full:
        raise ValueError('ties="average" is defined over the full ranking only')
    kk = N if full else k
    if Q == 0 or N == 0:
        return torch.zeros(Q, dtype=torch.float64, device=q.device)
    d = hamming_distance(q, db).long()
    rel = relevance(q_labels, db_labels)
    dist, order = torch.sort(d, dim=1, stable=True)
    r = rel.gather(1, order).double()
    pos = torch.arange(1, N + 1, device=q.device, dtype=torch.float64)
    if ties == "index":
        r = r[:, :kk]
        hits = r.sum(1)
        ap = (r.cumsum(1) / pos[:kk] * r).sum(1)
        return torch.where(hits > 0, ap / hits.clamp(min=1), torch.zeros_like(ap))
    # Tie-aware: each position i of the sorted ranking sits in the group of its distance; a
    # relevant row placed there at random has precision (R_before + 1 + E[relevant ahead in the
    # group]) / (i + 1), and the group puts a relevant row on each of its places with
    # probability r_g / n_g.
    bins = 8 * q.shape[1] + 1
    n_g = torch.zeros(Q, bins, dtype=torch.float64, device=q.device).scatter_add_(1, d, torch.ones_like(d, dtype=torch.float64))
    r_g = torch.zeros(Q, bins, dtype=torch.float64, device=q.device).scatter_add_(1, d, rel.double())
    n_before = n_g.cumsum(1) - n_g
    r_before = r_g.cumsum(1) - r_g
    n, rr = n_g.gather(1, dist), r_g.gather(1, dist)
    nb, rb = n_before.gather(1, dist), r_before.gather(1, dist)
    place = pos[None, :] - nb  # 1-based place inside the group
    slope = torch.where(n > 1, (rr - 1) / (n - 1).clamp(min=1), torch.zeros_like(n))
    term = rr / n * (rb + 1 + (place - 1) * slope) / pos[None, :]
    total = rel.double().sum(1)
    ap = term.sum(1)
    return torch.where(total > 0, ap / total.clamp(min=1), torch.zeros_like(ap))
