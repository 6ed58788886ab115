"""Edge cases that a reading of the CUDA kernels found, run on every device there is: the CPU always,
CUDA where a GPU and a CUDA build are present, the CUDA kernels under emulation where it is built. Each test states the failure it would catch.

On the CPU these pin down the contract the CUDA kernels must meet (eigenvector strides, scaling,
ties, determinism, non-contiguous inputs, zero-width codes); on a GPU they exercise the kernels'
risky paths (a one-query group of hamming_topk, several query batches of topk_map, the
eigensolver's three shared/global/cuSOLVER regimes).
"""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import deephash_ext as de
from deephash_ext import reference as ref

F32, F64 = torch.float32, torch.float64
HAS_CUDA = torch.cuda.is_available() and de.cuda_compiled()
# `device` is conftest's: cpu, cuda (with a GPU) and emu (with the emulation build).


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def codes(n, bits, g, distinct=None):
    if distinct is None:
        return de.pack_bits(torch.randint(0, 2, (n, bits), generator=g))
    pool = de.pack_bits(torch.randint(0, 2, (distinct, bits), generator=g))
    return pool[torch.randint(0, distinct, (n,), generator=g)]


def sym(Bt, n, dtype, seed=0):
    M = torch.randn(Bt, n, n, generator=gen(seed), dtype=F64)
    return (M + M.mT).to(dtype)


def laplacian(Bt, n, dtype, seed=0):
    A = torch.rand(Bt, n, n, generator=gen(seed), dtype=F64)
    A = torch.maximum(A, A.mT) * (torch.rand(Bt, n, n, generator=gen(seed + 1), dtype=F64) > 0.5)
    A = torch.maximum(A, A.mT)
    return de.normalized_laplacian(A).to(dtype)


# ------------------------------------------------------------------------------------------------
# eigh: layout (the CUDA kernel once returned row-major eigenvectors, against the fake kernel's
# column-major), scaling (sums of squares overflowed / underflowed), and the three CUDA regimes
# (V in shared memory, V in a global workspace, cuSOLVER) at their edges.


@pytest.mark.parametrize("dtype,n", [pytest.param(d, n, id=f"{str(d)[6:]}-{n}") for d, n in [
    (F32, 1), (F32, 5), (F32, 64), (F32, 128), (F32, 168), (F32, 170), (F32, 240),
    (F64, 2), (F64, 118), (F64, 120), (F64, 169), (F64, 180)]])
def test_eigh_vectors_are_column_major_like_the_fake_kernel(device, dtype, n):
    L = laplacian(3, n, dtype, seed=n).to(device)
    w, V = de.eigh(L)
    with FakeTensorMode() as mode:
        fw, fV = de.eigh(mode.from_tensor(L))
    assert V.shape == fV.shape and V.stride() == fV.stride() == (n * n, 1, n)
    assert w.stride() == fw.stride()
    tol = 5e-4 if dtype == F32 else 1e-9
    torch.testing.assert_close(V @ torch.diag_embed(w) @ V.mT, L, atol=tol, rtol=0)
    torch.testing.assert_close(V.mT @ V, torch.eye(n, dtype=dtype, device=device).expand(3, n, n), atol=tol, rtol=0)
    torch.testing.assert_close(w.cpu(), torch.linalg.eigvalsh(L.cpu().to(F64)).to(dtype), atol=tol, rtol=0)


def test_spectral_filter_eigenvectors_are_column_major(device):
    L = laplacian(2, 9, F64).to(device)
    x = torch.randn(2, 9, 3, dtype=F64, device=device)
    theta = torch.randn(4, dtype=F64, device=device)
    _, w, V, _ = torch.ops.deephash_ext._spectral_filter_forward(x, L, theta, "chebyshev")
    with FakeTensorMode() as mode:
        fake = torch.ops.deephash_ext._spectral_filter_forward(*(mode.from_tensor(t) for t in (x, L, theta)),
                                                               "chebyshev")
    assert V.stride() == fake[2].stride() == (81, 1, 9)
    torch.testing.assert_close(V @ torch.diag_embed(w) @ V.mT, L, atol=1e-10, rtol=0)


@pytest.mark.parametrize("s", [1e20, 1e-24, 1e30, 1e-30])
def test_eigh_scaled_2x2_float32(device, s):
    L = torch.tensor([[[0.0, s], [s, 0.0]]], dtype=F32, device=device)
    w, V = de.eigh(L)
    torch.testing.assert_close(w.cpu(), torch.tensor([[-s, s]], dtype=F32), rtol=1e-6, atol=0)
    r = 2 ** -0.5
    torch.testing.assert_close(V.abs().cpu(), torch.full((1, 2, 2), r, dtype=F32), rtol=1e-6, atol=0)
    torch.testing.assert_close((V @ torch.diag_embed(w) @ V.mT).cpu() / s, L.cpu() / s, atol=1e-6, rtol=0)


SCALES32 = [1e-30, 1e-20, 1e-10, 1.0, 1e10, 1e20, 1e21, 1e30]
SCALES64 = [1e-300, 1e-200, 1e-155, 1e-100, 1.0, 1e100, 1e155, 1e200, 1e300]


@pytest.mark.parametrize("dtype,scale", [pytest.param(F32, s, id=f"float32-{s:g}") for s in SCALES32]
                         + [pytest.param(F64, s, id=f"float64-{s:g}") for s in SCALES64])
@pytest.mark.parametrize("n", [6, 33])
def test_eigh_is_scale_invariant_like_torch(device, dtype, scale, n):
    """eigh((M + Mᵀ) * scale) against torch.linalg.eigh (LAPACK, which scales): NaN above ~1e20 in
    float32 and wrong digits below ~1e-155 in float64 before our solver scaled its input."""
    M = sym(4, n, dtype, seed=n)
    L = (M.to(F64) * scale).to(dtype)
    w, V = de.eigh(L.to(device))
    w, V = w.cpu(), V.cpu()
    w_ref = torch.linalg.eigvalsh(L)
    assert torch.isfinite(w).all() and torch.isfinite(V).all()
    eps = torch.finfo(dtype).eps
    top = w_ref.abs().amax(-1, keepdim=True)
    assert ((w - w_ref).abs() <= 64 * n * eps * top).all(), (w, w_ref)
    recon = (V.to(F64) @ torch.diag_embed(w.to(F64) / scale) @ V.to(F64).mT)
    assert ((recon - L.to(F64) / scale).abs().amax() <= 64 * n * eps * (top / scale).amax()).all()


def test_eigh_clusters_of_equal_eigenvalues(device):
    """Complete and star graphs: one eigenvalue of multiplicity n - 1 (n - 2 for the star)."""
    n = 96
    complete = torch.ones(n, n, dtype=F64) - torch.eye(n, dtype=F64)
    star = torch.zeros(n, n, dtype=F64)
    star[0, 1:] = star[1:, 0] = 1
    for dtype in (F32, F64):
        L = de.normalized_laplacian(torch.stack([complete, star])).to(dtype).to(device)
        w, V = de.eigh(L)
        tol = 1e-4 if dtype == F32 else 1e-10
        torch.testing.assert_close(w.cpu().to(F64), torch.linalg.eigvalsh(L.cpu().to(F64)), atol=tol, rtol=0)
        torch.testing.assert_close(V @ torch.diag_embed(w) @ V.mT, L, atol=tol, rtol=0)


def test_eigh_non_finite_is_refused_with_the_same_message(device):
    L = laplacian(2, 5, F64)
    L[1, 2, 3] = L[1, 3, 2] = float("inf")
    with pytest.raises(RuntimeError, match=r"eigh: L must be finite, but graph 1 has L\[2, 3\] = inf"):
        de.eigh(L.to(device))


def test_normalized_laplacian_inf_and_nan_refused(device):
    """Symmetric inf once passed the CPU checks (inf - inf is NaN, which compares false) and was
    refused on CUDA: one rule for both, an entry must be finite."""
    A = torch.rand(2, 4, 4, dtype=F64)
    A = A + A.mT
    for bad in (float("inf"), float("nan")):
        B = A.clone()
        B[1, 0, 2] = B[1, 2, 0] = bad
        with pytest.raises(RuntimeError, match=rf"A must be finite, but graph 1 has a non-finite entry A\[0, 2\] = {bad}"):
            de.normalized_laplacian(B.to(device))
    B = A.clone()
    B[0, 3, 1] = B[0, 1, 3] = -1
    with pytest.raises(RuntimeError, match=r"non-negative, but graph 0 has A\[1, 3\] = -1"):
        de.normalized_laplacian(B.to(device))


# ------------------------------------------------------------------------------------------------
# spectral_filter in float32 (the CUDA tests only ran float64)


@pytest.mark.parametrize("basis,K", [("chebyshev", 5), ("spline", 6), ("fourier", 3)])
def test_spectral_filter_float32(device, basis, K):
    Bt, n, d = 4, 24, 5
    L = laplacian(Bt, n, F64, seed=3)
    x = torch.randn(Bt, n, d, generator=gen(4), dtype=F64)
    theta = torch.randn(K, generator=gen(5), dtype=F64)
    gy = torch.randn(Bt, n, d, generator=gen(6), dtype=F64)
    outs = {}
    for dt, dev in ((F64, "cpu"), (F32, device)):
        xs, Ls, ts = (t.to(dt).to(dev).detach().clone().requires_grad_() for t in (x, L, theta))
        y = de.spectral_filter(xs, Ls, ts, basis)
        y.backward(gy.to(dt).to(dev))
        outs[dt] = [t.detach().cpu().to(F64) for t in (y, xs.grad, Ls.grad, ts.grad)]
    for name, a, b in zip(("y", "x.grad", "L.grad", "theta.grad"), outs[F64], outs[F32]):
        scale = a.abs().max().clamp(min=1)
        assert ((a - b).abs().max() / scale) < 2e-3, name


# ------------------------------------------------------------------------------------------------
# hamming_topk: every row tied (tie ranks across chunks and warps; on CUDA a block's last group
# held one query, where a barrier was missing), one query group of 1, 9 and 17 queries.


@pytest.mark.parametrize("k", [20_000, 1000, 1])
def test_hamming_topk_all_rows_tied_looped(device, k):
    N = 40_000
    row = torch.randint(0, 256, (1, 8), generator=gen(1), dtype=torch.uint8)
    db = row.expand(N, 8).contiguous().to(device)
    q = torch.randint(0, 256, (1, 8), generator=gen(2), dtype=torch.uint8).to(device)
    expect_d = int(de.hamming_distance(q.cpu(), row)[0, 0])
    loops = 20 if device == "cuda" else 2
    for _ in range(loops):
        d, i = de.hamming_topk(q, db, k)
        assert torch.equal(i.cpu(), torch.arange(k)[None]), "tied rows must come in row order, once each"
        assert (d == expect_d).all()


@pytest.mark.parametrize("Q", [1, 9, 17])
@pytest.mark.parametrize("bits,distinct", [(64, 3), (128, None), (72, 5)])
def test_hamming_topk_last_group_of_one_query(device, Q, bits, distinct):
    g = gen(Q + bits)
    q, db = codes(Q, bits, g, distinct), codes(50_000, bits, g, distinct)
    for k in (1, 100, 7000):
        d, i = de.hamming_topk(q.to(device), db.to(device), k)
        rd, ri = ref.hamming_topk(q, db, k)
        assert torch.equal(d.cpu(), rd) and torch.equal(i.cpu(), ri)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and a CUDA build")
def test_hamming_topk_beyond_8_million_queries_cuda():
    """A per-query kernel without a grid-stride loop left queries past 65535 x 128 unplanned."""
    Q, N = 9_000_000, 5
    q = torch.randint(0, 256, (Q, 8), dtype=torch.uint8, device="cuda")
    db = torch.randint(0, 256, (N, 8), dtype=torch.uint8, device="cuda")
    d, i = de.hamming_topk(q, db, 2)
    full = de.hamming_distance(q, db).to(torch.int64)
    keys = full * 8 + torch.arange(N, device="cuda")
    best = keys.sort(1).values[:, :2]
    assert torch.equal(d.to(torch.int64), best // 8) and torch.equal(i, best % 8)


# ------------------------------------------------------------------------------------------------
# topk_map: several query batches, wide codes, determinism


def labels(n, g, classes=5):
    return torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("ties,k", [("index", 0), ("index", 500), ("average", 0)])
def test_topk_map_wide_codes_and_query_batches(device, ties, k):
    """320-bit codes (40 bytes) take the padded 48-byte scan on the CPU and any-width row loads on CUDA;
    on CUDA, 1,200 queries of 320 bits over 1e6 rows need two query batches of the index path's
    counters (1 GiB budget): the split must not show."""
    big = device == "cuda"
    Q, N, bits = (1200, 1_000_000, 320) if big else (40, 3000, 320)
    g = gen(7)
    q, db = codes(Q, bits, g, 9), codes(N, bits, g, 9)
    ql, dl = labels(Q, g), labels(N, g)
    qd, dbd, qld, dld = (t.to(device) for t in (q, db, ql, dl))
    full = de.topk_map(qd, dbd, qld, dld, k, ties)
    h = Q // 2
    halves = torch.cat([de.topk_map(qd[:h], dbd, qld[:h], dld, k, ties),
                        de.topk_map(qd[h:], dbd, qld[h:], dld, k, ties)])
    torch.testing.assert_close(full, halves, rtol=1e-12, atol=0)
    sub = slice(0, 12)
    torch.testing.assert_close(full[sub].cpu(), de.topk_map(q[sub], db, ql[sub], dl, k, ties), rtol=1e-10, atol=1e-12)
    if not big:
        torch.testing.assert_close(full.cpu(), ref.topk_map(q, db, ql, dl, k, ties), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ties,k", [("index", 0), ("index", 100), ("average", 0)])
@pytest.mark.parametrize("multi", [False, True])
def test_topk_map_is_deterministic(device, ties, k, multi):
    """Two runs agree to the bit (the CUDA kernel once summed doubles with atomics)."""
    g = gen(11)
    Q, N = 50, 30_000
    q, db = codes(Q, 64, g, 40), codes(N, 64, g, 40)
    if multi:
        ql, dl = torch.rand(Q, 70, generator=g) < 0.05, torch.rand(N, 70, generator=g) < 0.05
    else:
        ql, dl = labels(Q, g), labels(N, g)
    args = [t.to(device) for t in (q, db, ql, dl)]
    a = de.topk_map(*args, k, ties)
    b = de.topk_map(*args, k, ties)
    assert torch.equal(a, b)
    torch.testing.assert_close(a.cpu(), de.topk_map(q, db, ql, dl, k, ties), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# non-contiguous inputs and zero-width codes


def test_non_contiguous_inputs(device):
    g = gen(13)
    q, db = codes(30, 128, g, 6), codes(5000, 128, g, 6)
    # Strided views: every other row, a start one byte off the word boundary, a transposed copy.
    qs = torch.stack([q, torch.zeros_like(q)], 1).reshape(-1, 16).to(device)[::2]
    buf = torch.zeros(db.numel() + 1, dtype=torch.uint8)
    buf[1:] = db.flatten()
    dbs = buf.to(device)[1:].view(db.shape)
    dbt = db.T.contiguous().to(device).T
    for a, b in ((qs, dbs), (qs, dbt)):
        assert not a.is_contiguous() and (b.storage_offset() % 8 or not b.is_contiguous())
        assert torch.equal(de.hamming_distance(a, b).cpu(), de.hamming_distance(q, db))
        for k in (1, 50):
            d, i = de.hamming_topk(a, b, k)
            rd, ri = de.hamming_topk(q, db, k)
            assert torch.equal(d.cpu(), rd) and torch.equal(i.cpu(), ri)
    ql, dl = labels(30, g), labels(5000, g)
    qls = torch.stack([ql, ql], 1).to(device)[:, 0]
    got = de.topk_map(qs, dbt, qls, dl.to(device), 100, "index")
    torch.testing.assert_close(got.cpu(), de.topk_map(q, db, ql, dl, 100, "index"))
    x = torch.randn(8, 40, generator=g)
    assert torch.equal(de.pack_bits(x.to(device).T.contiguous().T).cpu(), de.pack_bits(x))
    assert torch.equal(de.pack_bits(x.to(device)[:, ::2]).cpu(), de.pack_bits(x[:, ::2]))
    packed = de.pack_bits(x)
    assert torch.equal(de.unpack_bits(packed.to(device).T.contiguous().T, 40).cpu(), de.unpack_bits(packed, 40))
    # Spectral ops on transposed batches (a symmetric L reads the same).
    L = laplacian(3, 10, F64)
    Lt = L.to(device).mT
    assert not Lt.is_contiguous()
    w, V = de.eigh(Lt)
    torch.testing.assert_close(w.cpu(), de.eigh(L)[0], atol=1e-10, rtol=0)
    A = torch.rand(3, 10, 10, dtype=F64)
    A = A + A.mT
    torch.testing.assert_close(de.normalized_laplacian(A.to(device).mT).cpu(), de.normalized_laplacian(A))
    xf = torch.randn(3, 4, 10, dtype=F64)
    y = de.spectral_filter(xf.to(device).mT, Lt, torch.randn(5, dtype=F64, generator=g).to(device), "chebyshev")
    assert y.shape == (3, 10, 4) and torch.isfinite(y).all()


def test_zero_width_codes(device):
    """bits = 0: every distance is 0, every row ties, rows come in index order."""
    x = torch.zeros(5, 0).to(device)
    packed = de.pack_bits(x)
    assert packed.shape == (5, 0) and packed.dtype == torch.uint8
    assert de.unpack_bits(packed, 0).shape == (5, 0)
    q, db = torch.zeros(3, 0, dtype=torch.uint8, device=device), torch.zeros(7, 0, dtype=torch.uint8, device=device)
    assert torch.equal(de.hamming_distance(q, db).cpu(), torch.zeros(3, 7, dtype=torch.int32))
    d, i = de.hamming_topk(q, db, 4)
    assert torch.equal(d.cpu(), torch.zeros(3, 4, dtype=torch.int32))
    assert torch.equal(i.cpu(), torch.arange(4).expand(3, 4))
    ql, dl = torch.tensor([0, 1, 2]), torch.tensor([1, 0, 0, 2, 1, 1, 2])
    for ties in ("index", "average"):
        got = de.topk_map(q, db, ql.to(device), dl.to(device), 0, ties)
        torch.testing.assert_close(got.cpu(), ref.topk_map(q.cpu(), db.cpu(), ql, dl, 0, ties))
