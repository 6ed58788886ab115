"""Pure-PyTorch references of every deephash_ext op, with the same signatures.

They are written for clarity, not speed: the tests compare the kernels against them, and the
benchmarks time the kernels against them. They use only documented torch operations and share no
code with the kernels.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pack_bits", "unpack_bits", "hamming_distance", "hamming_topk", "hamming_range", "topk_map",
           "normalized_laplacian", "eigh", "spectral_filter", "chebyshev_basis", "spline_basis", "mih_build",
           "mih_search", "literature_topk_map"]

_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int32)


def pack_bits(x: Tensor) -> Tensor:
    if x.dtype in (torch.uint16, torch.uint32, torch.uint64) or (x.dtype.is_floating_point and x.element_size() == 1):
        x = x.double()  # torch has no comparisons for these dtypes; float64 keeps every value's sign
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


def hamming_range(q: Tensor, db: Tensor, radius: int) -> tuple[Tensor, Tensor, Tensor]:
    if radius < 0:
        raise ValueError(f"hamming_range: radius must be >= 0, got {radius}")
    Q = q.shape[0]
    d = hamming_distance(q, db)
    # No distance exceeds 8 bytes-per-code; beyond int32, a comparison with the tensor would wrap.
    qi, rows = torch.nonzero(d <= min(radius, 8 * q.shape[1]), as_tuple=True)  # row-major: by query, then row
    dist = d[qi, rows]
    # A stable sort by (query, distance) keeps rows ascending within a distance.
    order = torch.sort(qi * (8 * q.shape[1] + 1) + dist, stable=True).indices
    lims = torch.zeros(Q + 1, dtype=torch.int64, device=q.device)
    lims[1:] = torch.bincount(qi, minlength=Q).cumsum(0)
    return lims, dist[order].to(torch.int32), rows[order]


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


# ---------------------------------------------------------------------------------------------
# Spectral graph filtering: the pure-PyTorch formulation (torch.linalg.eigh, the basis by hand,
# autograd through both). Its L-gradient differentiates through the eigenvectors and so turns to
# NaN/inf on repeated eigenvalues; the kernels' does not.


def normalized_laplacian(A: Tensor) -> Tensor:
    d = A.sum(-1)
    # where() keeps the degree-0 branch's gradient at 0 instead of inf * 0.
    s = torch.where(d > 0, d.clamp(min=torch.finfo(A.dtype).tiny).rsqrt(), torch.zeros_like(d))
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return eye - s[..., :, None] * A * s[..., None, :]


def eigh(L: Tensor) -> tuple[Tensor, Tensor]:
    return torch.linalg.eigh((L + L.mT) / 2)


def chebyshev_basis(lam: Tensor, K: int) -> Tensor:
    """``[..., K]``: T_k(λ - 1), k < K."""
    x = lam - 1
    T = [torch.ones_like(x), x]
    while len(T) < K:
        T.append(2 * x * T[-1] - T[-2])
    return torch.stack(T[:K], dim=-1)


def spline_basis(lam: Tensor, K: int) -> Tensor:
    """``[..., K]``: the clamped cubic B-splines on ``[0,0,0] + linspace(0,2,K-2) + [2,2,2]`` at λ
    clamped into [0, 2], by the Cox–de Boor recursion."""
    t = torch.cat([torch.zeros(3, dtype=lam.dtype), torch.linspace(0, 2, K - 2, dtype=lam.dtype),
                   torch.full((3,), 2.0, dtype=lam.dtype)]).to(lam.device)
    x = lam.clamp(0, 2)[..., None]
    # Degree 0: indicator of [t_i, t_{i+1}); x = 2 belongs to the last non-empty interval, K - 1.
    B = ((x >= t[:-1]) & (x < t[1:])).to(lam.dtype)
    B[..., K - 1] = torch.where(x[..., 0] >= 2, torch.ones_like(lam), B[..., K - 1])
    for p in range(1, 4):
        m = len(t) - 1 - p  # basis functions of degree p
        den_l = t[p:p + m] - t[:m]
        den_r = t[p + 1:p + 1 + m] - t[1:1 + m]
        safe_l = torch.where(den_l > 0, den_l, torch.ones_like(den_l))
        safe_r = torch.where(den_r > 0, den_r, torch.ones_like(den_r))
        left = torch.where(den_l > 0, (x - t[:m]) / safe_l, torch.zeros_like(x - t[:m])) * B[..., :m]
        right = torch.where(den_r > 0, (t[p + 1:p + 1 + m] - x) / safe_r, torch.zeros_like(x - t[:m])) * B[..., 1:m + 1]
        B = left + right
    return B


def spectral_filter(x: Tensor, L: Tensor, theta: Tensor, basis: str = "chebyshev") -> Tensor:
    if basis not in ("chebyshev", "spline", "fourier"):
        raise ValueError(f'basis must be "chebyshev", "spline" or "fourier", got "{basis}"')
    K = theta.shape[-1]
    if basis == "chebyshev" and K < 1:
        raise ValueError(f"chebyshev needs K >= 1, got K={K}")
    if basis == "fourier" and not 1 <= K <= L.shape[-1]:
        raise ValueError(f"fourier needs 1 <= K <= n, got K={K}, n={L.shape[-1]}")
    lam, U = torch.linalg.eigh((L + L.mT) / 2)
    th = theta if theta.dim() == 2 else theta.expand(L.shape[0], K)
    if basis == "fourier":
        UK = U[..., :K]
        return UK @ (th[..., None] * (UK.mT @ x))
    if basis == "spline" and K < 4:
        raise ValueError(f"spline needs K >= 4, got K={K}")
    phi = chebyshev_basis(lam, K) if basis == "chebyshev" else spline_basis(lam, K)
    g = (phi * th[:, None, :]).sum(-1)
    return U @ (g[..., None] * (U.mT @ x))


# ---------------------------------------------------------------------------------------------
# Multi-index hashing: the tables built the slow, obvious way, and the search's answer (the exact
# top-k: the tables only make it faster).


def mih_build(codes: Tensor, bits: int, m: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if not 1 <= bits or (bits + 7) // 8 != codes.shape[1]:
        raise ValueError(f"mih_build: {bits}-bit codes need {(bits + 7) // 8} bytes, got {codes.shape[1]}")
    if not -(-bits // 32) <= m <= bits:
        raise ValueError(f"mih_build: m={m} out of range for {bits}-bit codes")
    n = codes.shape[0]
    b = unpack_bits(codes, bits).long()
    sorted_rows, buckets = [], []
    base, longer = divmod(bits, m)
    lengths = [base + (z < longer) for z in range(m)]
    for z, length in enumerate(lengths):
        start = sum(lengths[:z])
        values = (b[:, start:start + length] << torch.arange(length)).sum(1)
        order = torch.sort(values, stable=True).indices
        distinct, counts = torch.unique_consecutive(values[order], return_counts=True)
        sorted_rows.append(order.to(torch.int32))
        buckets.append((distinct.tolist(), (counts.cumsum(0) - counts).tolist()))
    u = max(len(d) for d, _ in buckets)
    p = 2
    while p < 2 * u:
        p *= 2
    log2p = p.bit_length() - 1
    rows = torch.stack(sorted_rows) if sorted_rows else torch.zeros(0, n, dtype=torch.int32)
    offsets = torch.full((m, u + 1), n, dtype=torch.int32)
    slots = torch.full((m, p), -1, dtype=torch.int64)
    for z, (distinct, starts) in enumerate(buckets):
        offsets[z, :len(starts)] = torch.tensor(starts, dtype=torch.int32)
        for bucket, value in enumerate(distinct):
            i = ((value * 0x9E3779B97F4A7C15) % (1 << 64)) >> (64 - log2p)
            while slots[z, i] != -1:
                i = (i + 1) % p
            entry = (value << 32) | bucket
            slots[z, i] = entry - (1 << 64) if entry >= 1 << 63 else entry  # the int64 of those 64 bits
    return rows, offsets, slots, codes[rows.long()]


def mih_search(q: Tensor, codes: Tensor, rows: Tensor, offsets: Tensor, slots: Tensor, bucket_codes: Tensor,
               bits: int, k: int, mode: str = "auto") -> tuple[Tensor, Tensor]:
    if mode not in ("auto", "probe"):
        raise ValueError(f'mih_search: mode must be "auto" or "probe", got "{mode}"')
    return hamming_topk(q, codes, k)


# ---------------------------------------------------------------------------------------------
# The evaluation loop of the deep-hashing literature, against which topk_map is checked (tests) and
# timed (benchmarks/bench_retrieval.py).


def literature_topk_map(q_codes, db_codes, q_labels, db_labels, topk: int) -> float:
    """mAP@topk by the numpy loop that deep-hashing repositories copy (DeepHash-pytorch's CalcTopMap).

    numpy arrays: codes in {-1, +1} ``[rows, bits]``, labels one-hot / multi-hot ``[rows, C]``.
    Differences from the original, both needed for the result to be well defined: argsort is stable
    (ties ordered by database row, as topk_map's ``ties="index"``; the original's quicksort leaves them
    arbitrary), and a query with no relevant row in its top-k counts as 0 while the mean still runs
    over all queries (as the original does).
    """
    import numpy as np

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
