"""Hostile op inputs: every op refuses mixed devices, too-wide codes, non-finite graphs and the rest of a
table of bad arguments with a RuntimeError or ValueError whose message names the culprit, on the
real kernels and on the fake (meta) kernels alike; and pack_bits reads every real dtype (docs/ops.md)."""
import re

import numpy as np
import pytest
import torch

import deephash_ext as de
from deephash_ext import reference as ref

ops = torch.ops.deephash_ext
F64 = torch.float64
META = torch.device("meta")


def codes(n, bytes_, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, bytes_), generator=g, dtype=torch.uint8)


def spd_graph(Bt=2, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.rand(Bt, n, n, generator=g, dtype=F64)
    return A + A.mT


def backward_args(basis="chebyshev", Bt=2, n=5, d=3, K=4):
    """The arguments of _spectral_filter_backward as the forward leaves them."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(Bt, n, d, generator=g, dtype=F64)
    L = de.normalized_laplacian(spd_graph(Bt, n))
    theta = torch.randn(K, generator=g, dtype=F64)
    _y, evals, evecs, zx = ops._spectral_filter_forward(x, L, theta, basis)
    return [torch.randn_like(x), x, zx, theta, evals, evecs]


def moved(args, i, device):
    """args with the i-th tensor moved to `device`."""
    return [a.to(device) if j == i else a for j, a in enumerate(args)]


# ------------------------------------------------------------------------------------------------
# Mixed devices: a meta tensor among CPU ones sends the call to the fake kernel, which must refuse it
# rather than hand back uninitialised memory on the CPU.


def mixed_device_cases():
    q, db = codes(3, 8), codes(5, 8)
    ql, dl = torch.arange(3), torch.arange(5)
    mh_q, mh_db = torch.ones(3, 4, dtype=torch.bool), torch.ones(5, 4, dtype=torch.bool)
    x, L, th = torch.randn(2, 5, 3, dtype=F64), de.normalized_laplacian(spd_graph()), torch.randn(4, dtype=F64)
    A = spd_graph()
    cases = []
    for i in range(2):
        cases.append((f"hamming_distance/{i}", ops.hamming_distance.default, [q, db], i))
        cases.append((f"hamming_topk/{i}", lambda a, b: ops.hamming_topk.default(a, b, 2), [q, db], i))
    for i in range(4):
        cases.append((f"topk_map/class/{i}", lambda *a: ops.topk_map.default(*a, 0, "index"), [q, db, ql, dl], i))
        cases.append((f"topk_map/multihot/{i}", lambda *a: ops.topk_map.default(*a, 2, "index"),
                      [q, db, mh_q, mh_db], i))
    for i in range(3):
        cases.append((f"spectral_filter/{i}", lambda *a: ops.spectral_filter.default(*a, "chebyshev"), [x, L, th], i))
        cases.append((f"_spectral_filter_forward/{i}", lambda *a: ops._spectral_filter_forward.default(*a, "spline"),
                      [x, L, th], i))
    for i in range(2):
        cases.append((f"_normalized_laplacian_backward/{i}", ops._normalized_laplacian_backward.default,
                      [torch.randn_like(A), A], i))
    for basis in ("chebyshev", "fourier"):
        for i in range(6):
            cases.append((f"_spectral_filter_backward/{basis}/{i}",
                          lambda *a, basis=basis: ops._spectral_filter_backward.default(*a, basis, [True] * 3),
                          backward_args(basis), i))
    return cases


# With a CUDA tensor among CPU ones the dispatcher picks the CUDA kernel, which must refuse the CPU ones.
DEVICES = ["meta", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,fn,args,i", mixed_device_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_mixed_devices_are_refused(name, fn, args, i, device):
    with pytest.raises(RuntimeError, match=rf"(?s)(cpu.*{device}|{device}.*cpu)"):
        fn(*moved(args, i, device))


def test_mixed_devices_issue_reproduction():
    # The exact call of the report: it printed values like 1.6e-294.
    q = torch.zeros(3, 8, dtype=torch.uint8)
    l = torch.arange(3, device="meta")
    with pytest.raises(RuntimeError, match="q_labels must be on cpu like the codes, got meta"):
        de.topk_map(q, q, l, l, 0, "index")


def test_all_meta_still_traces():
    # One device throughout, meta included, stays fine: that is how torch.compile traces the ops.
    q, db = codes(3, 8).to(META), codes(5, 8).to(META)
    assert de.topk_map(q, db, torch.arange(3, device=META), torch.arange(5, device=META), 0).device == META
    gy, *rest = [a.to(META) for a in backward_args()]
    gx, gL, gth = ops._spectral_filter_backward(gy, *rest, "chebyshev", [True, True, True])
    assert gx.shape == gy.shape and gL.shape == (2, 5, 5) and gth.shape == (4,)


# ------------------------------------------------------------------------------------------------
# Codes too wide for int32 distances: 2^31 bits. An expanded row has the shape without the memory,
# and the width is refused before any kernel reads a byte.

WIDE = 2**28  # bytes: 2^31 bits


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("op", ["hamming_distance", "hamming_topk", "topk_map"])
def test_codes_of_2_31_bits_are_refused(op, device):
    zeros = torch.zeros(1, 1, dtype=torch.uint8, device=device).expand(1, WIDE)
    ones = torch.full((1, 1), 255, dtype=torch.uint8, device=device).expand(1, WIDE)
    labels = torch.zeros(1, dtype=torch.long, device=device)
    call = {"hamming_distance": lambda: de.hamming_distance(zeros, ones),
            "hamming_topk": lambda: de.hamming_topk(zeros, ones, 1),
            "topk_map": lambda: de.topk_map(zeros, ones, labels, labels, 0, "index")}[op]
    with pytest.raises(RuntimeError, match=r"q holds codes of 268435456 bytes \(2147483648 bits\), too wide"):
        call()


@pytest.mark.slow
def test_widest_codes_give_exact_distances():
    # 2^28 - 1 bytes, the widest accepted: distance 2^31 - 8 fits int32 (and 512 MiB of codes).
    zeros = torch.zeros(1, 1, dtype=torch.uint8).expand(1, WIDE - 1)
    ones = torch.full((1, 1), 255, dtype=torch.uint8).expand(1, WIDE - 1)
    assert de.hamming_distance(zeros, ones).item() == 2**31 - 8


@pytest.mark.slow
def test_topk_map_codes_of_2_24_bits():
    # ties="index" packs a row's distance and its rank among equal distances into one 64-bit word; with
    # a fixed split, distances of 2^24 or more (2 MiB codes) wrapped to 0 and ranked first.
    q = torch.zeros(1, 2**21, dtype=torch.uint8)
    db = torch.zeros(3, 2**21, dtype=torch.uint8)
    db[0] = 255  # distance 2^24, relevant
    db[2, :7] = 255  # distance 56
    ql, dl = torch.tensor([1]), torch.tensor([1, 0, 0])
    for ties in ("index", "average"):
        assert de.topk_map(q, db, ql, dl, 0, ties).item() == pytest.approx(1 / 3)
        assert ref.topk_map(q, db, ql, dl, 0, ties).item() == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------------
# pack_bits reads every real dtype: the unsigned 16/32/64-bit integers and float8 included.

EXTRA_DTYPES = [torch.uint16, torch.uint32, torch.uint64] + [
    getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")
    if hasattr(torch, n)]


@pytest.mark.parametrize("dtype", EXTRA_DTYPES, ids=str)
@pytest.mark.parametrize("bits", [1, 9, 64, 77])
def test_pack_bits_every_real_dtype(dtype, bits):
    g = torch.Generator().manual_seed(bits)
    if dtype.is_floating_point:
        x = (torch.randn(4, 3, bits, generator=g) * 4).to(dtype)
    else:  # 0, small values, and values with only a high bit set (2^15, 2^31, 2^62)
        x = torch.randint(0, 3, (4, 3, bits), generator=g)
        high = 2 ** {torch.uint16: 15, torch.uint32: 31}.get(dtype, 62)
        x = torch.where(torch.rand(4, 3, bits, generator=g) < 0.2, high, x).to(dtype)
    positive = x.double() > 0
    expect = torch.from_numpy(np.packbits(positive.numpy(), axis=-1, bitorder="little"))
    assert torch.equal(de.pack_bits(x), expect)
    assert torch.equal(ref.pack_bits(x), expect)
    assert torch.equal(de.pack_bits(x.mT.contiguous().mT), expect)  # a strided view
    assert de.pack_bits(x.to(META)).shape == expect.shape


NO_SIGN = [torch.complex64, torch.complex128, torch.uint1, torch.int4, torch.bits8] + [
    getattr(torch, n) for n in ("float4_e2m1fn_x2",) if hasattr(torch, n)]


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("dtype", NO_SIGN, ids=str)
def test_pack_bits_refuses_what_has_no_sign(dtype, device):
    with pytest.raises(RuntimeError, match="pack_bits: x must be real or bool, got"):
        de.pack_bits(torch.empty(2, 16, dtype=dtype, device=device))


# ------------------------------------------------------------------------------------------------
# normalized_laplacian: a non-finite weight is refused as such (+Inf gave a NaN L, NaN was "negative").


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_normalized_laplacian_refuses_non_finite(value, dtype):
    A = spd_graph(3, 4).to(dtype)
    A[2, 0, 1] = A[2, 1, 0] = value
    with pytest.raises(RuntimeError, match=r"A must be finite, but graph 2 has a non-finite entry A\[0, 1\]"):
        de.normalized_laplacian(A)


# ------------------------------------------------------------------------------------------------
# A table of bad arguments, op by op: each is refused, with the argument named, by the CPU kernel and
# (where the mistake shows in shapes, dtypes or options) by the fake kernel.


def bad_input_table():
    q, db = codes(3, 8), codes(5, 8)
    ql, dl = torch.zeros(3, dtype=torch.long), torch.zeros(5, dtype=torch.long)
    x, L, th = torch.randn(2, 5, 3, dtype=F64), de.normalized_laplacian(spd_graph()), torch.randn(4, dtype=F64)
    A = spd_graph()
    neg = A.clone()
    neg[0, 1, 2] = neg[0, 2, 1] = -1
    asym = A.clone()
    asym[1, 0, 3] += 1
    nan_L = L.clone()
    nan_L[0, 1, 1] = float("nan")
    gy, xb, zx, thb, evals, evecs = backward_args("fourier", K=3)
    sfb = lambda *a, basis="fourier": ops._spectral_filter_backward(*a, basis, [True, True, True])  # noqa: E731
    rows = [
        # pack_bits / unpack_bits
        ("pack_bits scalar", de.pack_bits, (torch.tensor(1.0),), "x must have at least one dimension", True),
        ("pack_bits complex", de.pack_bits, (torch.zeros(2, 3, dtype=torch.complex64),), "x must be real or bool", True),
        ("unpack_bits dtype", de.unpack_bits, (q.int(), 8), "packed must be uint8", True),
        ("unpack_bits scalar", de.unpack_bits, (torch.tensor(3, dtype=torch.uint8), 8), "at least one dimension", True),
        ("unpack_bits bits<0", de.unpack_bits, (q, -1), "bits must be >= 0", True),
        ("unpack_bits bits>8B", de.unpack_bits, (q, 65), "asked for 65 bits but the codes hold only 64", True),
        # hamming_distance / hamming_topk
        ("distance q dtype", de.hamming_distance, (q.int(), db), "q must hold packed codes of dtype uint8", True),
        ("distance db dtype", de.hamming_distance, (q, db.bool()), "db must hold packed codes of dtype uint8", True),
        ("distance q 1-D", de.hamming_distance, (q[0], db), "q must be 2-D", True),
        ("distance db 3-D", de.hamming_distance, (q, db[None]), "db must be 2-D", True),
        ("distance widths", de.hamming_distance, (q, db[:, :4]), "same byte width, got 8 and 4", True),
        ("topk k=0", de.hamming_topk, (q, db, 0), "k must be >= 1, got 0", True),
        ("topk k<0", de.hamming_topk, (q, db, -7), "k must be >= 1, got -7", True),
        ("topk dtype", de.hamming_topk, (q.float(), db, 2), "q must hold packed codes", True),
        ("topk widths", de.hamming_topk, (q[:, :3], db, 2), "same byte width", True),
        # topk_map
        ("map ties", de.topk_map, (q, db, ql, dl, 0, "random"), 'ties must be "index" or "average", got "random"', True),
        ("map average k", de.topk_map, (q, db, ql, dl, 3, "average"), "full ranking only", True),
        ("map q_labels rows", de.topk_map, (q, db, ql[:2], dl, 0, "index"), "q_labels has 2 rows but q has 3", True),
        ("map db_labels rows", de.topk_map, (q, db, ql, dl[:4], 0, "index"), "db_labels has 4 rows but db has 5", True),
        ("map class dtype", de.topk_map, (q, db, ql.int(), dl.int(), 0, "index"), "class-id labels must be int64", True),
        ("map kinds", de.topk_map, (q, db, ql, torch.zeros(5, 4), 0, "index"), "same kind", True),
        ("map classes", de.topk_map, (q, db, torch.zeros(3, 3), torch.zeros(5, 4), 0, "index"),
         "same number of classes, got 3 and 4", True),
        ("map labels 3-D", de.topk_map, (q, db, torch.zeros(3, 3, 2), torch.zeros(5, 3, 2), 0, "index"),
         "class ids \\[rows\\] or multi-hot", True),
        ("map multi-hot dtype", de.topk_map,
         (q, db, torch.zeros(3, 3, dtype=torch.int32), torch.zeros(5, 3, dtype=torch.int32), 0, "index"),
         "multi-hot labels must be bool, uint8 or floating", True),
        ("map codes dtype", de.topk_map, (q, db.long(), ql, dl, 0, "index"), "db must hold packed codes", True),
        # normalized_laplacian
        ("laplacian dtype", de.normalized_laplacian, (A.long(),), "A must be float32 or float64", True),
        ("laplacian 2-D", de.normalized_laplacian, (A[0],), "A must be a batch of matrices", True),
        ("laplacian square", de.normalized_laplacian, (A[:, :, :4],), "A must be square", True),
        ("laplacian negative", de.normalized_laplacian, (neg,), "A must be non-negative, but graph 0", False),
        ("laplacian asymmetric", de.normalized_laplacian, (asym,), "A must be symmetric, but graph 1", False),
        ("laplacian backward shape", ops._normalized_laplacian_backward.default, (A[:, :4, :4], A),
         "grad_L must match A", True),
        ("laplacian backward dtype", ops._normalized_laplacian_backward.default, (A.float(), A),
         "grad_L must match A", True),
        # eigh
        ("eigh dtype", de.eigh, (L.half(),), "L must be float32 or float64", True),
        ("eigh square", de.eigh, (L[:, :3],), "L must be square", True),
        ("eigh 4-D", de.eigh, (L[None],), "L must be a batch of matrices", True),
        ("eigh non-finite", de.eigh, (nan_L,), "L must be finite", False),
        ("eigh asymmetric", de.eigh, (L + torch.triu(torch.ones(5, 5, dtype=F64)),), "L must be symmetric", False),
        # spectral_filter
        ("filter basis", de.spectral_filter, (x, L, th, "legendre"), 'basis must be "chebyshev", "spline" or "fourier"',
         True),
        ("filter x 2-D", de.spectral_filter, (x[0], L, th), "x must be \\[Bt, n, d\\]", True),
        ("filter dtypes", de.spectral_filter, (x.float(), L, th), "same dtype", True),
        ("filter batch", de.spectral_filter, (x[:1], L, th), "same batch size", True),
        ("filter nodes", de.spectral_filter, (x[:, :4], L, th), "nodes per graph", True),
        ("filter theta 3-D", de.spectral_filter, (x, L, th[None, None]), "theta must be \\[K\\]", True),
        ("filter theta rows", de.spectral_filter, (x, L, th.expand(3, 4)), "one row per graph", True),
        ("filter chebyshev K", de.spectral_filter, (x, L, th[:0]), "K >= 1", True),
        ("filter spline K", de.spectral_filter, (x, L, th[:3], "spline"), "K >= 4", True),
        ("filter fourier K", de.spectral_filter, (x, L, torch.randn(6, dtype=F64), "fourier"), "1 <= K <= n", True),
        ("filter L dtype", de.spectral_filter, (x.int(), L.int(), th.int()), "L must be float32 or float64", True),
        ("filter L asymmetric", de.spectral_filter, (x, L + torch.triu(torch.ones(5, 5, dtype=F64)), th), "symmetric",
         False),
        ("filter L non-finite", de.spectral_filter, (x, nan_L, th), "L must be finite", False),
        # the backward op, as autograd hands it its arguments
        ("backward grad_y shape", sfb, (gy[:, :, :2], xb, zx, thb, evals, evecs), "grad_y must have the shape of x",
         True),
        ("backward grad_y dtype", sfb, (gy.float(), xb, zx, thb, evals, evecs), "must have the dtype of x", True),
        ("backward zx shape", sfb, (gy, xb, zx[:, :2], thb, evals, evecs), "zx must be \\[Bt, 3, d\\]", True),
        ("backward evals shape", sfb, (gy, xb, zx, thb, evals[:, :3], evecs), "evals must be \\[Bt, n\\]", True),
        ("backward evals dtype", sfb, (gy, xb, zx, thb, evals.float(), evecs), "must have the dtype of x", True),
        ("backward basis", lambda *a: sfb(*a, basis="wavelet"), (gy, xb, zx, thb, evals, evecs), "basis must be", True),
    ]
    return rows


@pytest.mark.parametrize("name,fn,args,message,shape_level", bad_input_table(), ids=lambda v: v if isinstance(v, str)
                         and " " in v else "")
def test_bad_op_input(name, fn, args, message, shape_level):
    with pytest.raises((RuntimeError, ValueError), match=message):
        fn(*args)
    if shape_level:  # the fake kernel refuses it too, with the same words
        meta = [a.to(META) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises((RuntimeError, ValueError), match=message):
            fn(*meta)
