"""Inputs of the op tests (test_retrieval_ops.py, test_spectral.py, test_threads.py), made on the CPU from
seeded generators; the tests move them to the device under test (the ``device`` fixture of conftest.py)."""
import torch

import deephash_ext as de

F64 = torch.float64
BASES = [("chebyshev", 5), ("spline", 6), ("fourier", 3)]  # spectral_filter bases with a K each can use


def random_codes(n, bits, gen, distinct=None):
    """Packed codes; with `distinct`, rows are drawn from that many patterns, so distances tie heavily."""
    if distinct is None:
        return de.pack_bits(torch.randint(0, 2, (n, bits), generator=gen))
    pool = de.pack_bits(torch.randint(0, 2, (distinct, bits), generator=gen))
    return pool[torch.randint(0, distinct, (n,), generator=gen)]


def random_adjacency(Bt, n, dtype=F64, seed=0, isolated=()):
    """Symmetric non-negative [Bt, n, n] with about 60% of the edges; (graph, node) pairs in `isolated`
    get degree 0."""
    g = torch.Generator().manual_seed(seed)
    A = torch.rand(Bt, n, n, generator=g, dtype=dtype)
    A = (A + A.mT) * (torch.rand(Bt, n, n, generator=g, dtype=dtype) > 0.4).to(dtype)
    A = torch.maximum(A, A.mT)  # symmetric after masking
    for b, i in isolated:
        A[b, i, :] = 0
        A[b, :, i] = 0
    return A


def twin_graph(dtype=F64):
    """One graph with repeated eigenvalues: two identical 3-node components (every eigenvalue
    twice, 0 included) and an isolated node (an extra eigenvalue 1), n = 7."""
    P = torch.tensor([[0, 1, 2], [1, 0, 0.5], [2, 0.5, 0]], dtype=dtype)
    A = torch.zeros(7, 7, dtype=dtype)
    A[:3, :3] = P
    A[3:6, 3:6] = P
    return A[None]


def spectral_inputs(Bt=3, n=8, d=4, K=5, per_graph=False, dtype=F64, seed=0):
    """(x [Bt, n, d], L [Bt, n, n] a normalized Laplacian, theta [K] or [Bt, K]) for spectral_filter."""
    g = torch.Generator().manual_seed(seed)
    L = de.normalized_laplacian(random_adjacency(Bt, n, dtype, seed))
    x = torch.randn(Bt, n, d, generator=g, dtype=dtype)
    theta = torch.randn(*((Bt, K) if per_graph else (K,)), generator=g, dtype=dtype)
    return x, L, theta


def to(device, *tensors):
    return tuple(t.to(device) for t in tensors)
