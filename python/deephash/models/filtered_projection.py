"""HAGCN's default model: a code projection that a spectral filter over kNN graphs shapes.

Fitting (training items only, no labels), in float64:

1. unit features ``F = unit(x - mean)`` (cosine geometry, as the rest of HAGCN);
2. a kNN graph over the training items (``knn`` neighbours, Gaussian weights ``exp(-d²/σ²)`` with σ² the
   mean kNN squared distance, symmetrised by max) and ``L = normalized_laplacian(A)``; training sets
   larger than ``MAX_GRAPH_NODES`` are split into equal random parts, one graph each (``subgraphs``);
3. the filtered signal ``T = g_θ(L) F``: ``spectral_filter`` (our eigendecomposition) for chebyshev,
   spline and fourier, Kipf and Welling's renormalised one-hop propagation for gcn, the chebyshev filter
   on a Lanczos tridiagonalisation (Krylov subspace of ``LANCZOS_STEPS``) for lanczos, ``T = F`` for none;
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

import torch
from torch import Tensor

from . import graphs

FILTERS = ("chebyshev", "spline", "fourier", "gcn", "lanczos", "none")
DEFAULT_ORDER = {"chebyshev": 16, "spline": 16, "lanczos": 16, "fourier": 64}
MAX_GRAPH_NODES = 6000  # a dense float64 graph of 6,000 nodes and its eigendecomposition: ~0.9 GB, ~1 min
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
    """Symmetric Gaussian kNN adjacency ``[n, n]`` of the rows of ``f[n, d]`` (no self loops)."""
    n = f.shape[0]
    dist, idx = [], []
    for s in range(0, n, 2048):
        d = sq_dists(f[s:s + 2048], f)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        v, i = d.topk(k, dim=1, largest=False)
        dist.append(v)
        idx.append(i)
    d, i = torch.cat(dist), torch.cat(idx)
    A = torch.zeros(n, n, dtype=f.dtype, device=f.device).scatter_(1, i, torch.exp(-d / d.mean().clamp_min(1e-12)))
    return torch.maximum(A, A.T)


def filtered_signal(F: Tensor, A: Tensor, filt: str, theta: Tensor | None, seed: int) -> Tensor:
    """``g(L) F`` for one graph ``A[n, n]`` and its node signals ``F[n, d]``."""
    n = A.shape[0]
    if filt == "gcn":  # (I - L_{A+I}) F = D̃^-1/2 (A + I) D̃^-1/2 F
        eye = torch.eye(n, dtype=A.dtype, device=A.device)
        return F - graphs.normalized_laplacian((A + eye)[None])[0] @ F
    L = graphs.normalized_laplacian(A[None])
    if filt == "lanczos":  # V g(T) Vᵀ F on the Krylov subspace of a seeded start vector
        g = torch.Generator().manual_seed(seed)
        v0 = torch.rand(1, n, generator=g, dtype=A.dtype).to(A.device)
        V, Tm = graphs.lanczos(L, LANCZOS_STEPS, v0)
        return (V @ graphs.spectral_filter(V.mT @ F[None], Tm, theta, "chebyshev"))[0]
    return graphs.spectral_filter(F[None], L, theta, filt)[0]


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


def local_filter(z: Tensor, anchor_z: Tensor, m: int, t: float) -> Tensor:
    """Each row of ``z[N, D]`` through a subgraph of itself and its ``m`` nearest anchors (rows of
    ``anchor_z[n, D]``, in the cosine geometry of the projection): the row of the item in the subgraph's
    heat kernel, applied to the nodes' projections. Returns ``[N, D]``."""
    if z.shape[0] == 0:
        return z
    zu, au = unit(z), unit(anchor_z)
    d = sq_dists(zu, au)
    d = d.masked_fill(d < 1e-9, float("inf"))  # the item itself, when it is a training item
    d, i = d.topk(m, dim=1, largest=False)
    nodes = torch.cat([zu[:, None], au[i]], 1)  # [N, m+1, D]
    A = torch.exp(-sq_dists(nodes, nodes) / d.mean(1).clamp_min(1e-12)[:, None, None])
    A = A * (1 - torch.eye(m + 1, dtype=A.dtype, device=A.device))
    L = graphs.normalized_laplacian(A)  # [N, m+1, m+1]
    e0 = torch.zeros(z.shape[0], m + 1, 1, dtype=z.dtype, device=z.device)
    e0[:, 0] = 1
    w = graphs.spectral_filter(e0, L, heat_theta("chebyshev", t, LOCAL_ORDER, z.dtype).to(z.device),
                               "chebyshev")[..., 0]  # [N, m+1]: the item's row of g(L) (symmetric)
    signal = torch.cat([z[:, None], anchor_z[i]], 1)  # [N, m+1, D]
    return (w[:, :, None] * signal).sum(1)


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
