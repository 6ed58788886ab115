"""The CPU kernels share work out with at::parallel_for; the rest of the suite runs on one thread
(conftest), so this file runs every op on several threads against its reference. It also proves the
extension was compiled with OpenMP: without -fopenmp, at::parallel_for silently stays serial."""
import pytest
import torch

import deephash_ext as de
from deephash_ext import reference as ref
from op_inputs import random_codes


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(4)  # more threads than the CI machine's cores: uneven shares, interleavings
    yield
    torch.set_num_threads(before)


def test_built_with_openmp():
    assert de.openmp_compiled()


@pytest.mark.parametrize("bits", [20, 64, 128])
def test_retrieval_ops_on_threads(threads, bits):
    gen = torch.Generator().manual_seed(bits)
    for Q, N in ((3, 50_000), (70, 9_000)):  # few queries: the database is split; many: the queries are
        q, db = random_codes(Q, bits, gen), random_codes(N, bits, gen)
        torch.testing.assert_close(de.hamming_distance(q, db), ref.hamming_distance(q, db))
        for k in (1, 100, 5_000):
            d, i = de.hamming_topk(q, db, k)
            rd, ri = ref.hamming_topk(q, db, k)
            assert torch.equal(d, rd) and torch.equal(i, ri)
        ql, dl = torch.randint(0, 7, (Q,), generator=gen), torch.randint(0, 7, (N,), generator=gen)
        for k, ties in ((100, "index"), (0, "index"), (0, "average")):
            torch.testing.assert_close(de.topk_map(q, db, ql, dl, k, ties), ref.topk_map(q, db, ql, dl, k, ties),
                                       rtol=1e-12, atol=1e-12)
    x = torch.randn(30_000, bits, generator=gen)
    assert torch.equal(de.pack_bits(x), ref.pack_bits(x))
    p = de.pack_bits(x)
    assert torch.equal(de.unpack_bits(p, bits), ref.unpack_bits(p, bits))


@pytest.mark.parametrize("n", [24, 80])  # our own solver, and LAPACK slices
def test_spectral_ops_on_threads(threads, n):
    gen = torch.Generator().manual_seed(n)
    A = torch.rand(37, n, n, generator=gen, dtype=torch.float64)
    A = (A + A.mT) / 2
    L = de.normalized_laplacian(A)
    torch.testing.assert_close(L, ref.normalized_laplacian(A))
    w, V = de.eigh(L)
    torch.testing.assert_close(w, torch.linalg.eigvalsh(L))
    torch.testing.assert_close(V @ torch.diag_embed(w) @ V.mT, L, atol=1e-10, rtol=0)
    x = torch.randn(37, n, 5, generator=gen, dtype=torch.float64)
    for basis, K in (("chebyshev", 6), ("spline", 6), ("fourier", 4)):
        th = torch.randn(37, K, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(de.spectral_filter(x, L, th, basis), ref.spectral_filter(x, L, th, basis))
