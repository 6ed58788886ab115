"""HAGCN's default model: a code projection that a spectral filter over kNN graphs shapes.

Fitting (training items only, no labels), in float64:

1. unit features ``F = unit(x - mean)`` (cosine geometry, as the rest of HAGCN);
2. a sparse kNN graph over the training items (``knn`` neighbours, Gaussian weights ``exp(-d²/σ²)`` with
   σ² the mean kNN squared distance, symmetrised by max; a CSR matrix, O(n·knn) memory, no n x n matrix
   anywhere) and ``L = I - D^-1/2 A D^-1/2``; training sets larger than ``MAX_GRAPH_NODES`` are split into
   equal random parts, one graph each (``subgraphs``);
3. the filtered signal ``T = g_θ(L) F`` by sparse products: chebyshev by its three-term recurrence (the
   polynomial ``spectral_filter`` would apply after an eigendecomposition), spline through the Chebyshev
   expansion of its spline (``SPLINE_TERMS``), fourier on the ``order`` lowest eigenvectors found by
   Chebyshev-filtered subspace iteration (:func:`lowest_eigenvectors`, Rayleigh-Ritz through our ``eigh``),
   Kipf and Welling's renormalised one-hop propagation for gcn, the chebyshev filter on a Lanczos
   tridiagonalisation (Krylov subspace of ``LANCZOS_STEPS``) for lanczos, ``T = F`` for none;
4. the projection that keeps the most filtered energy per unit of total energy, the generalised
   eigenproblem ``Fᵀ T w = μ (FᵀF + ρ·mean diag·I) w`` solved by a Cholesky whitening and our ``eigh``;
   ``W = [w_1 .. w_D]``, columns scaled by ``μ^POWER``;
5. ``passes`` > 1: the graph is rebuilt in the space the filter shaped (``unit(F [w_1 .. w_64])``) and
   3-4 run again -- the graph is built dynamically, from the model's own features;
6. ITQ's rotation ``R`` of the first ``bits`` projected dimensions.

Encoding an item: its projection ``z = f W``, then (``anchors`` = m > 0) a subgraph of the item and its
m nearest training items in the projected space, ``[N, m+1, m+1]`` through ``normalized_laplacian`` and a
heat-kernel ``spectral_filter``; the item's row of that filter mixes its projection with the anchors'.
The code is ``sign(z[:bits] R)``. An item's code depends on the item and the stored anchors only, never on
what else is encoded with it; an anchor identical to the item (a training item encoding itself) is
skipped, so training items are encoded like any other item.

With ``filter="none"`` every filter is the identity (no graph at all): ``T = F`` makes step 4 PCA, and the
model is ITQ on the unit features -- the ablation that shows what filtering buys.

The heat kernel ``exp(-t λ)`` sets θ: its Chebyshev coefficients (``e^{-t}(-1)^k I_k(t)``, doubled for
k > 0), or the spline's control points at the Greville abscissae; fourier keeps the ``order`` lowest
eigenvectors (θ = 1). θ is fixed, not learned.
"""
from __future__ import annotations

import math
import warnings

import deephash_ext.reference as _reference
import torch
from torch import Tensor

from . import graphs

FILTERS = ("chebyshev", "spline", "fourier", "gcn", "lanczos", "none")
DEFAULT_ORDER = {"chebyshev": 16, "spline": 16, "lanczos": 16, "fourier": 64}
# Training graphs are sparse (O(n·knn) memory); what grows is the exact kNN search, n² d: one graph per
# MAX_GRAPH_NODES items (Fashion-MNIST's 60,000 training items in one graph: ~1 min on 2 threads).
MAX_GRAPH_NODES = 100_000
KNN_BLOCK = 2048  # rows and columns of one block of the kNN search's distances
KNN_MARGIN = 8  # candidates per item beyond knn from the float32 search, ranked again in float64
SPLINE_TERMS = 128  # Chebyshev terms the spline filter goes through (max error ~1e-6 at heat 10; 64 terms,
# ~1e-5, moved Fashion-MNIST's 32-bit spline codes by 0.002 mAP@all from the eigendecomposition's)
CHEBYSHEV_NODES = 1024  # quadrature points of chebyshev_fit
EIG_DEGREE = 20  # lowest_eigenvectors: the Chebyshev filter's degree per iteration
EIG_ITERATIONS = 100  # at most (a handful reach EIG_TOL)
EIG_TOL = 1e-6  # residual ‖L u - λ u‖ of each eigenvector (1e-4 changed the fourier codes on digits)
EIG_DENSE_NODES = 600  # graphs this small are decomposed whole
LANCZOS_STEPS = 96
LOCAL_ORDER = 12  # Chebyshev terms of the encoding subgraphs' heat kernel
GRAPH_DIMS = 64  # projected dimensions the rebuilt graph is measured in
RIDGE = 1.0  # ρ of step 4
POWER = 0.5  # μ^POWER scales the projection's columns


def unit(f: Tensor) -> Tensor:
    return f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def sq_dists(a: Tensor, b: Tensor) -> Tensor:
    return ((a * a).sum(-1)[..., :, None] - 2 * a @ b.transpose(-1, -2) + (b * b).sum(-1)[..., None, :]).clamp_min(0)


def heat_theta(basis: str, t: float, order: int, dtype=torch.float64) -> Tensor:
    """θ of ``exp(-t λ)`` on [0, 2] in ``basis``'s ``order`` functions (fourier: ``order`` ones)."""
    if basis == "chebyshev":  # T_k(λ - 1): e^{-t}(-1)^k I_k(t), the k = 0 term once
        def bessel_i(k: int) -> float:
            return sum((t / 2) ** (2 * m + k) / (math.factorial(m) * math.factorial(m + k)) for m in range(80))
        c = [math.exp(-t) * bessel_i(0)] + [2 * math.exp(-t) * (-1) ** k * bessel_i(k) for k in range(1, order)]
        return torch.tensor(c, dtype=dtype)
    if basis == "spline":  # clamped cubic B-splines on [0, 2]: control points at the Greville abscissae
        inner = torch.linspace(0, 2, order - 2, dtype=torch.float64)
        knots = torch.cat([torch.zeros(3, dtype=torch.float64), inner, torch.full((3,), 2.0, dtype=torch.float64)])
        greville = torch.stack([knots[i + 1:i + 4].mean() for i in range(order)])
        return torch.exp(-t * greville).to(dtype)
    if basis == "fourier":
        return torch.ones(order, dtype=dtype)
    raise ValueError(f"no heat kernel for basis {basis!r}")


def knn_graph(f: Tensor, k: int) -> Tensor:
    """Symmetric Gaussian kNN adjacency of the rows of ``f[n, d]``, sparse CSR ``[n, n]`` (no self loops,
    O(n·k) memory): ``exp(-d²/σ²)`` with σ² the mean kNN squared distance, symmetrised by max.

    The neighbours are searched in float32 (``KNN_MARGIN`` extra candidates per item) and ranked by their
    distances in ``f``'s dtype, so the graph is the exact kNN graph unless float32 reorders items beyond
    the margin."""
    n = f.shape[0]
    cand = knn_candidates(f.float(), min(k + KNN_MARGIN, n - 1))
    sq = (f * f).sum(-1)
    step = max(1, (1 << 22) // (cand.shape[1] * max(1, f.shape[1])))  # [step, k + margin, d]: 32 MB in float64
    # bmm, not a broadcast product and sum: that one left 6 GB resident on 60,000 items.
    dist = torch.cat([(sq[s:s + step, None] - 2 * torch.bmm(f[cand[s:s + step]], f[s:s + step, :, None])[..., 0]
                       + sq[cand[s:s + step]]).clamp_min(0) for s in range(0, n, step)])
    d, j = dist.topk(k, dim=1, largest=False)
    i = cand.gather(1, j)
    w = torch.exp(-d / d.mean().clamp_min(1e-12))
    rows = torch.arange(n, device=f.device).repeat_interleave(k)
    return symmetric_max(rows, i.reshape(-1), w.reshape(-1), n)


def knn_candidates(f: Tensor, k: int) -> Tensor:
    """Indices ``[n, k]`` of each row's ``k`` nearest other rows of ``f[n, d]`` (squared Euclidean), from
    ``KNN_BLOCK``-square blocks of distances: each block of the upper triangle is computed once and serves
    its rows and, transposed, its columns; memory O(n·k + KNN_BLOCK²)."""
    n = f.shape[0]
    sq = (f * f).sum(-1)
    best_d = torch.full((n, k), float("inf"), dtype=f.dtype, device=f.device)
    best_i = torch.zeros(n, k, dtype=torch.long, device=f.device)

    def merge(r: int, d: Tensor, c: int) -> None:  # rows r.. of the running top-k against columns c..
        v, j = d.topk(min(k, d.shape[1]), dim=1, largest=False)  # the block's own top-k first: no copy of d
        rows = slice(r, r + d.shape[0])
        v, jj = torch.cat([best_d[rows], v], 1).topk(k, dim=1, largest=False)
        best_i[rows] = torch.cat([best_i[rows], j + c], 1).gather(1, jj)
        best_d[rows] = v

    B = KNN_BLOCK
    for r in range(0, n, B):
        for c in range(r, n, B):
            d = sq[r:r + B, None] - 2 * f[r:r + B] @ f[c:c + B].T + sq[None, c:c + B]
            if c == r:
                d.fill_diagonal_(float("inf"))
            merge(r, d, c)
            if c != r:
                merge(c, d.T.contiguous(), r)  # topk along contiguous rows: 1.6x faster than on the view
    return best_i


def symmetric_max(rows: Tensor, cols: Tensor, w: Tensor, n: int) -> Tensor:
    """The sparse CSR ``[n, n]`` matrix ``max(W, Wᵀ)`` of the entries ``W[rows, cols] = w`` (one per pair)."""
    key, inv = torch.unique(torch.cat([rows * n + cols, cols * n + rows]), return_inverse=True)  # sorted
    v = torch.zeros(key.shape[0], dtype=w.dtype, device=w.device).scatter_reduce_(
        0, inv, torch.cat([w, w]), "amax", include_self=False)
    r = key // n
    crow = torch.zeros(n + 1, dtype=torch.long, device=w.device)
    crow[1:] = torch.bincount(r, minlength=n).cumsum(0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, key % n, v, (n, n))


def scaled(A: Tensor, s: Tensor) -> Tensor:
    """``diag(s) A diag(s)`` of a sparse CSR ``A[n, n]``."""
    crow, col = A.crow_indices(), A.col_indices()
    row = torch.repeat_interleave(torch.arange(A.shape[0], device=A.device), crow.diff())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, col, s[row] * A.values() * s[col], A.shape)


def degrees(A: Tensor) -> Tensor:
    """Row sums of a sparse CSR ``A[n, n]``."""
    return (A @ torch.ones(A.shape[1], 1, dtype=A.dtype, device=A.device))[:, 0]


def normalized_adjacency(A: Tensor) -> Tensor:
    """``S = D^-1/2 A D^-1/2`` (sparse CSR), so that ``L = I - S`` is the normalized Laplacian of
    ``normalized_laplacian`` (an isolated node's row stays 0)."""
    d = degrees(A)
    return scaled(A, torch.where(d > 0, d.clamp_min(torch.finfo(d.dtype).tiny).rsqrt(), torch.zeros_like(d)))


def chebyshev_filter(S: Tensor, F: Tensor, theta: Tensor) -> Tensor:
    """``Σ θ_k T_k(L - I) F`` with ``L - I = -S``, by the three-term recurrence (no eigendecomposition):
    the chebyshev basis of ``spectral_filter`` on the sparse graph."""
    prev, cur = F, -(S @ F)
    out = theta[0] * F
    for k in range(1, theta.shape[0]):
        if k > 1:  # in place: the same arithmetic as -2 (S cur) - prev with fewer [n, d] temporaries
            prev, cur = cur, (S @ cur).mul_(-2).sub_(prev)
        out += theta[k] * cur
    return out


def chebyshev_fit(g, terms: int, dtype=torch.float64) -> Tensor:
    """The first ``terms`` Chebyshev coefficients (basis ``T_k(λ - 1)``) of a function ``g`` of λ on
    [0, 2], by Chebyshev-Gauss quadrature on ``CHEBYSHEV_NODES`` points."""
    j = torch.arange(CHEBYSHEV_NODES, dtype=torch.float64)
    lam = torch.cos(math.pi * (j + 0.5) / CHEBYSHEV_NODES) + 1
    c = 2 / CHEBYSHEV_NODES * (_reference.chebyshev_basis(lam, terms).T @ g(lam))
    c[0] /= 2
    return c.to(dtype)


def lowest_eigenvectors(S: Tensor, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """The ``k`` lowest eigenvalues (ascending) and eigenvectors ``[n, k]`` of ``L = I - S`` (sparse ``S``):
    Chebyshev-filtered subspace iteration on a block of ``k + max(16, k/2)`` vectors from a seeded start.
    Each iteration applies the degree-``EIG_DEGREE`` Chebyshev polynomial that stays within ±1 on
    [a, 2] (a: the block's largest Ritz value; 2 bounds L's spectrum) and grows fast below a, so the
    block turns towards the lowest eigenvectors; then QR and a Rayleigh-Ritz step through our ``eigh``,
    until the residuals ``‖L u - λ u‖`` of the ``k`` lowest fall below ``EIG_TOL``. Graphs of at most
    ``EIG_DENSE_NODES`` nodes (or twice the block) are decomposed whole."""
    n = S.shape[0]
    b = min(n, k + max(16, k // 2))
    if n <= max(EIG_DENSE_NODES, 2 * b):
        Q = torch.eye(n, dtype=S.dtype, device=S.device)
        lam, V = graphs.eigh(_sym(Q - S @ Q)[None])
        return lam[0, :k], V[0, :, :k]
    g = torch.Generator().manual_seed(seed)
    X = torch.linalg.qr(torch.randn(n, b, generator=g, dtype=S.dtype).to(S.device)).Q
    for it in range(EIG_ITERATIONS + 1):
        LX = X - S @ X
        lam, V = graphs.eigh(_sym(X.T @ LX)[None])
        lam, V = lam[0], V[0]
        X, LX = X @ V, LX @ V
        if it == EIG_ITERATIONS or float((LX[:, :k] - X[:, :k] * lam[:k]).norm(dim=0).max()) < EIG_TOL:
            break
        c, e = (float(lam[-1]) + 2) / 2, (2 - float(lam[-1])) / 2  # the damped interval's centre, half-width
        prev, cur = X, (LX - c * X) / e
        for _ in range(EIG_DEGREE - 1):
            prev, cur = cur, 2 * ((cur - S @ cur) - c * cur) / e - prev
        X = torch.linalg.qr(cur).Q
    return lam[:k], X[:, :k]


def _sym(M: Tensor) -> Tensor:
    return (M + M.T) / 2


def filtered_signal(F: Tensor, A: Tensor, filt: str, theta: Tensor | None, seed: int) -> Tensor:
    """``g(L) F`` for one graph ``A[n, n]`` (sparse CSR as :func:`knn_graph` builds it; a dense one is
    converted) and its node signals ``F[n, d]``. Nothing of size n x n is formed."""
    if A.layout == torch.strided:
        A = A.to_sparse_csr()
    n = A.shape[0]
    if filt == "gcn":  # (I - L_{A+I}) F = D̃^-1/2 (A + I) D̃^-1/2 F, D̃ = D + I
        s = (degrees(A) + 1).rsqrt()[:, None]
        return s * (A @ (s * F) + s * F)
    S = normalized_adjacency(A)
    if filt == "chebyshev":
        return chebyshev_filter(S, F, theta)
    if filt == "spline":  # the spline g(λ) = Σ θ_k B_k(λ) through its Chebyshev expansion
        return chebyshev_filter(S, F, chebyshev_fit(lambda lam: _reference.spline_basis(lam, theta.shape[0])
                                                     @ theta.double().cpu(), SPLINE_TERMS, F.dtype).to(F.device))
    if filt == "fourier":  # θ on the ``order`` lowest eigenvectors
        _, U = lowest_eigenvectors(S, theta.shape[0], seed)
        return U @ (theta[:, None] * (U.T @ F))
    if filt == "lanczos":  # V g(T) Vᵀ F on the Krylov subspace of a seeded start vector
        g = torch.Generator().manual_seed(seed)
        v0 = torch.rand(1, n, generator=g, dtype=F.dtype).to(F.device)
        V, Tm = graphs.lanczos(lambda v: v - (S @ v.T).T, LANCZOS_STEPS, v0)
        return (V @ graphs.spectral_filter(V.mT @ F[None], Tm, theta, "chebyshev"))[0]
    raise ValueError(f"unknown filter {filt!r}")


def projection(F: Tensor, T: Tensor) -> tuple[Tensor, Tensor]:
    """Generalised eigenvectors of ``(Fᵀ T, FᵀF + ρ·mean diag·I)``, leading first (unscaled ``[d, d]``) and
    their eigenvalues μ (descending)."""
    C = F.T @ F
    G = F.T @ T
    G = (G + G.T) / 2
    B = C + RIDGE * C.diagonal().mean().clamp_min(1e-12) * torch.eye(C.shape[0], dtype=C.dtype, device=C.device)
    Linv = torch.linalg.inv(torch.linalg.cholesky(B))
    M = Linv @ G @ Linv.T
    mu, V = graphs.eigh(((M + M.T) / 2)[None])
    mu, V = mu[0].flip(0), V[0].flip(1)
    return Linv.T @ V, mu


def parts(n: int, subgraphs: int, seed: int) -> list[Tensor]:
    """The training items in ``subgraphs`` random parts of (nearly) equal size, one graph each."""
    if subgraphs == 1:
        return [torch.arange(n)]
    g = torch.Generator().manual_seed(seed)
    return list(torch.randperm(n, generator=g).tensor_split(subgraphs))


def subgraph_filter(z: Tensor, anchor_z: Tensor, m: int, theta: Tensor, rows=None) -> Tensor:
    """Each row of ``z[N, D]`` through a subgraph of itself and its ``m`` nearest anchors (rows of
    ``anchor_z[n, D]``, in the cosine geometry of the projection): the item's row of ``g(L)`` of the
    subgraph, with the filter's Chebyshev coefficients ``theta``, applied to the nodes' projections.
    Returns ``[N, D]``. The closed form's encoding (:func:`local_filter`) and the trained model
    (models/trained_projection.py) both run this one function. ``rows(i)``,
    where given, returns the anchors ``i [N, m]`` as ``(projections, unit projections)`` ``[N, m, D]``
    with their gradient (training: the anchors move with ``W``); ``anchor_z`` (no gradient) is then only
    searched."""
    if z.shape[0] == 0:
        return z
    zu, au = unit(z), unit(anchor_z)
    d = sq_dists(zu, au)
    d = d.masked_fill(d < 1e-9, float("inf"))  # the item itself, when it is a training item
    d, i = d.topk(m, dim=1, largest=False)
    near, near_u = (anchor_z[i], au[i]) if rows is None else rows(i)
    nodes = torch.cat([zu[:, None], near_u], 1)  # [N, m+1, D]
    D2 = sq_dists(nodes, nodes)
    if rows is not None:  # σ²'s gradient through the differentiable distances, its value the search's, exactly
        d = d.detach() + (D2[:, 0, 1:] - D2[:, 0, 1:].detach())
    A = torch.exp(-D2 / d.mean(1).clamp_min(1e-12)[:, None, None])
    A = A * (1 - torch.eye(m + 1, dtype=A.dtype, device=A.device))
    L = graphs.normalized_laplacian(A)  # [N, m+1, m+1]
    e0 = torch.zeros(z.shape[0], m + 1, 1, dtype=z.dtype, device=z.device)
    e0[:, 0] = 1
    w = graphs.spectral_filter(e0, L, theta, "chebyshev")[..., 0]  # [N, m+1]: the item's row of g(L)
    signal = torch.cat([z[:, None], near], 1)  # [N, m+1, D]
    return (w[:, :, None] * signal).sum(1)


def local_filter(z: Tensor, anchor_z: Tensor, m: int, t: float) -> Tensor:
    """:func:`subgraph_filter` with the heat kernel ``exp(-t λ)`` (Chebyshev order LOCAL_ORDER): the
    closed form's encoding. Returns ``[N, D]``."""
    return subgraph_filter(z, anchor_z, m, heat_theta("chebyshev", t, LOCAL_ORDER, z.dtype).to(z.device))



def itq_rotation(v: Tensor, iterations: int, generator: torch.Generator) -> Tensor:
    """ITQ (Gong & Lazebnik 2011): the orthogonal ``R`` that minimises ``||sign(vR) - vR||`` by alternating
    codes and the Procrustes step, from a random orthogonal start. ``v[n, b]``, float64."""
    b = v.shape[1]
    r, _ = torch.linalg.qr(torch.randn(b, b, generator=generator, dtype=torch.float64))
    r = r.to(v.device)
    for _ in range(int(iterations)):
        codes = torch.where(v @ r > 0, 1.0, -1.0).to(torch.float64)
        s, _, sh_t = torch.linalg.svd(v.T @ codes)
        r = s @ sh_t
    return r
