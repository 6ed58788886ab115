"""Graphs for HAGCN: per-step similarity graphs, spectral operators, Lanczos, and the training-set graph.

Every spectral computation goes through the deephash_ext ops (``normalized_laplacian``, ``eigh``,
``spectral_filter``); ``set_backend("reference")`` swaps in their pure-PyTorch references from
``deephash_ext.reference`` (used by the step-time benchmark and to cross-check).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

import deephash_ext
import deephash_ext.reference as _reference

_BACKEND = {"name": "ops"}


def set_backend(name: str) -> None:
    """``"ops"`` (deephash_ext, the default) or ``"reference"`` (deephash_ext.reference)."""
    if name not in ("ops", "reference"):
        raise ValueError(f"backend must be 'ops' or 'reference', got {name!r}")
    _BACKEND["name"] = name


def _op(name: str):
    mod = deephash_ext if _BACKEND["name"] == "ops" else _reference
    fn = getattr(mod, name, None)
    if fn is None:
        raise RuntimeError(f"deephash_ext{'' if mod is deephash_ext else '.reference'}.{name} is not available "
                           f"in this build (the spectral ops are needed for the chebyshev, spline, fourier "
                           f"and lanczos filters and the default graphs)")
    return fn


def normalized_laplacian(A: Tensor) -> Tensor:
    """``I - D^-1/2 A D^-1/2`` of a batch of symmetric non-negative adjacencies ``[Bt, n, n]``."""
    return _op("normalized_laplacian")(A)


def spectral_filter(x: Tensor, L: Tensor, theta: Tensor, basis: str) -> Tensor:
    """``U g(Λ) Uᵀ x`` on ``x[Bt, n, d]``, ``L[Bt, n, n]`` with ``g = Σ θ_k φ_k`` (the bases of docs/ops.md)."""
    return _op("spectral_filter")(x, L, theta, basis)


def eigh(L: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors of a batch of symmetric matrices ``[Bt, n, n]``."""
    return _op("eigh")(L)


def default_k(n: int) -> int:
    """Neighbours per node of a kNN graph over ``n`` nodes: ``ceil(log2 n)``, within 1..n-1."""
    return int(max(1, min(n - 1, math.ceil(math.log2(max(n, 2))))))


def cosine_features(x: Tensor, mean: Tensor) -> Tensor:
    """Centred, L2-normalised features (cosine similarity on centred features = their inner product)."""
    z = x - mean
    return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def knn_adjacency(f: Tensor, k: int | None = None) -> Tensor:
    """Symmetric 0/1 kNN adjacency ``[Bt, n, n]`` (no self loops) of unit features ``f[Bt, n, d]``:
    i ~ j when either is among the other's k most cosine-similar nodes."""
    n = f.shape[-2]
    k = default_k(n) if k is None else max(1, min(int(k), n - 1))
    sim = f @ f.transpose(-1, -2)
    eye = torch.eye(n, dtype=torch.bool, device=f.device)
    sim = sim.masked_fill(eye, float("-inf"))
    idx = sim.topk(k, dim=-1).indices
    A = torch.zeros_like(sim).scatter_(-1, idx, 1.0)
    return torch.maximum(A, A.transpose(-1, -2))


def paper_operator(h: Tensor) -> tuple[Tensor, Tensor]:
    """The HAGCN paper code's graph: ``S = h hᵀ / n``, ``A = 1 + S``, operator ``M = D^-1/2 A D^-1/2``
    (``D`` = row sums of ``A``). Returns ``(M, S)`` for ``h[Bt, n, d]``."""
    n = h.shape[-2]
    S = h @ h.transpose(-1, -2) / n
    A = 1.0 + S
    dinv = A.sum(-1).clamp_min(1e-12).rsqrt()
    return dinv[..., :, None] * A * dinv[..., None, :], S


def lanczos(L, steps: int, v0: Tensor) -> tuple[Tensor, Tensor]:
    """``steps`` Lanczos iterations (full re-orthogonalisation) on symmetric ``L[Bt, n, n]`` from ``v0[Bt, n]``.
    ``L`` may instead be a function ``v[Bt, n] -> (L v)[Bt, n]`` (a sparse graph's product).

    Returns ``V[Bt, n, m]`` (orthonormal Krylov basis) and the tridiagonal ``T = Vᵀ L V`` ``[Bt, m, m]``,
    ``m = min(steps, n)``. Differentiable (plain torch ops). A breakdown (invariant subspace found) continues
    with a vector orthogonal to the basis so ``V`` stays orthonormal.
    """
    n = v0.shape[-1]
    matvec = L if callable(L) else (lambda v: (L @ v[..., None])[..., 0])
    m = min(int(steps), n)
    q = v0 / v0.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    Q = [q]
    alphas, betas = [], []
    for j in range(m):
        w = matvec(Q[-1])
        a = (w * Q[-1]).sum(-1)
        alphas.append(a)
        if j == m - 1:
            break
        Vs = torch.stack(Q, -1)
        w = w - (Vs @ (Vs.transpose(-1, -2) @ w[..., None]))[..., 0]
        w = w - (Vs @ (Vs.transpose(-1, -2) @ w[..., None]))[..., 0]
        b = w.norm(dim=-1)
        # Breakdown: restart with a fixed basis vector made orthogonal to Q.
        e = torch.zeros_like(w)
        e[..., (j + 1) % n] = 1.0
        e = e - (Vs @ (Vs.transpose(-1, -2) @ e[..., None]))[..., 0]
        small = (b < 1e-6)[..., None]
        w = torch.where(small, e, w)
        b_eff = torch.where(small[..., 0], torch.zeros_like(b), b)
        betas.append(b_eff)
        Q.append(w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    V = torch.stack(Q, -1)
    T = torch.diag_embed(torch.stack(alphas, -1))
    if betas:
        off = torch.diag_embed(torch.stack(betas, -1), offset=1)
        T = T + off + off.transpose(-1, -2)
    return V, T


# ---------------------------------------------------------------------------------------------
# The training-set graph: graph structure beyond one mini-batch


def _knn_sparse(f: np.ndarray, k: int, chunk: int = 2048):
    import scipy.sparse as sp

    n = f.shape[0]
    rows, cols = [], []
    for s in range(0, n, chunk):
        sim = f[s:s + chunk] @ f.T
        sim[np.arange(sim.shape[0]), np.arange(s, s + sim.shape[0])] = -np.inf
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        rows.append(np.repeat(np.arange(s, s + sim.shape[0]), k))
        cols.append(nn.reshape(-1))
    W = sp.coo_matrix((np.ones(n * k), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    return W.maximum(W.T)


def spectral_codes(f: Tensor, bits: int, k: int | None = None, seed: int = 0, itq_iters: int = 50) -> Tensor:
    """Target bits ``±1 float32[n, bits]`` of the training set from its kNN graph (spectral hashing's
    relaxation): the ``bits`` lowest non-trivial eigenvectors of the graph's normalized Laplacian,
    standardised, rotated by ITQ (Gong & Lazebnik 2011) and signed. Code inner products then follow
    the graph's diffusion geometry over the whole training set. ``f`` are unit features ``[n, d]``.
    With fewer than ``bits`` non-trivial eigenvectors (tiny sets) they are mixed by a random projection.
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    fn = f.detach().cpu().double().numpy()
    n = fn.shape[0]
    if n < 3:
        raise ValueError(f"the training-set graph needs at least 3 items, got {n}")
    k = default_k(n) if k is None else max(1, min(int(k), n - 1))
    W = _knn_sparse(fn, k)
    d = np.asarray(W.sum(1)).ravel()
    dm = sp.diags(1.0 / np.sqrt(np.maximum(d, 1e-12)))
    L = sp.eye(n) - dm @ W @ dm
    m = min(bits + 1, n - 1)
    rng = np.random.RandomState(seed)
    if n <= 2000 or m >= n // 2:
        vals, vecs = np.linalg.eigh(L.toarray())
        vals, vecs = vals[:m], vecs[:, :m]
    else:
        vals, vecs = sla.eigsh(L.tocsc(), k=m, sigma=-1e-3, which="LM", v0=rng.rand(n))
        order = np.argsort(vals)
        vals, vecs = vals[order], vecs[:, order]
    Y = torch.from_numpy(vecs[:, 1:]).float()
    g = torch.Generator().manual_seed(seed)
    if Y.shape[1] < bits:
        Y = Y @ torch.randn(Y.shape[1], bits, generator=g)
    Y = (Y - Y.mean(0)) / Y.std(0).clamp_min(1e-12)
    R = torch.linalg.qr(torch.randn(bits, bits, generator=g))[0]
    for _ in range(itq_iters):
        B = torch.where(Y @ R >= 0, 1.0, -1.0)
        U, _, Vt = torch.linalg.svd(B.T @ Y)
        R = (U @ Vt).T
    return torch.where(Y @ R >= 0, 1.0, -1.0)
