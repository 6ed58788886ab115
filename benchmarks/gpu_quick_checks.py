"""The first minute of a GPU run: the checks that expose the failures a reading of the CUDA kernels
found, each printed as one PASS/FAIL line, then every op once against the CPU op.

    python benchmarks/gpu_quick_checks.py --device cuda
    python benchmarks/gpu_quick_checks.py --device cuda --only sanitizer   # tiny cases for compute-sanitizer

Exit status 1 if any check failed (all checks run regardless). --device cpu runs the same code on
the CPU ops (the dry run of benchmarks/gpu_check.sh).
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import deephash_ext as de

F32, F64 = torch.float32, torch.float64
RESULTS: list[tuple[str, bool, str]] = []


def check(name):
    def wrap(fn):
        def run(*a, **kw):
            t0 = time.perf_counter()
            try:
                fn(*a, **kw)
                ok, msg = True, ""
            except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the others
                ok, msg = False, f"{type(e).__name__}: {e}".splitlines()[0][:300]
                traceback.print_exc()
            dt = time.perf_counter() - t0
            RESULTS.append((name, ok, msg))
            print(f"{'PASS' if ok else 'FAIL'} {name} ({dt:.2f} s){' - ' + msg if msg else ''}", flush=True)
        return run
    return wrap


def laplacian(Bt, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.rand(Bt, n, n, generator=g, dtype=F64)
    A = torch.maximum(A, A.mT) * (torch.rand(Bt, n, n, generator=g, dtype=F64) > 0.5)
    return de.normalized_laplacian(torch.maximum(A, A.mT)).to(dtype)


@check("eigh: eigenvector strides equal the fake kernel's (column-major)")
def eigh_strides(dev):
    for dtype, n in [(F32, 5), (F32, 64), (F32, 128), (F32, 200), (F32, 250), (F64, 64), (F64, 128), (F64, 180)]:
        L = laplacian(3, n, dtype, seed=n).to(dev)
        w, V = de.eigh(L)
        with FakeTensorMode() as mode:
            _, fV = de.eigh(mode.from_tensor(L))
        assert V.stride() == fV.stride() == (n * n, 1, n), (dtype, n, V.stride(), fV.stride())
        err = (V @ torch.diag_embed(w) @ V.mT - L).abs().max().item()
        assert err < (5e-4 if dtype == F32 else 1e-9), (dtype, n, "reconstruction", err)
    x = torch.randn(2, 9, 3, dtype=F64, device=dev)
    _, _, V, _ = torch.ops.deephash_ext._spectral_filter_forward(x, laplacian(2, 9, F64).to(dev),
                                                                 torch.randn(4, dtype=F64, device=dev), "chebyshev")
    assert V.stride() == (81, 1, 9), ("spectral_filter eigenvectors", V.stride())


@check("eigh: [[0, s], [s, 0]] float32 for s = 1e20, 1e-24 (and random 6x6 at 1e21)")
def eigh_scaled(dev):
    for s in (1e20, 1e-24, 1e30, 1e-30):
        w, V = de.eigh(torch.tensor([[[0.0, s], [s, 0.0]]], dtype=F32, device=dev))
        assert torch.allclose(w.cpu(), torch.tensor([[-s, s]]), rtol=1e-6, atol=0), (s, w)
        assert torch.allclose(V.abs().cpu(), torch.full((1, 2, 2), 2 ** -0.5), rtol=1e-6, atol=0), (s, V)
    M = torch.randn(1, 6, 6, generator=torch.Generator().manual_seed(0))
    L = (M + M.mT) * 1e21
    w = de.eigh(L.to(dev))[0].cpu()
    ref = torch.linalg.eigvalsh(L.double()).float()
    assert torch.isfinite(w).all() and torch.allclose(w, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item()), (w, ref)


@check("hamming_topk: Q = 1, every row tied (k = 20,000 and 1,000 of 40,000), looped")
def topk_all_tied(dev, loops=50):
    N = 40_000
    row = torch.randint(0, 256, (1, 8), dtype=torch.uint8)
    db = row.expand(N, 8).contiguous().to(dev)
    q = torch.randint(0, 256, (1, 8), dtype=torch.uint8).to(dev)
    dist = int(de.hamming_distance(q.cpu(), row)[0, 0])
    for k in (20_000, 1000):
        want = torch.arange(k)[None]
        for it in range(loops):
            d, i = de.hamming_topk(q, db, k)
            assert torch.equal(i.cpu(), want), (k, it, "rows")
            assert bool((d == dist).all()), (k, it, "distances")


@check("hamming_topk: 1, 9, 17 queries (a last group of one) against the CPU op")
def topk_groups(dev):
    g = torch.Generator().manual_seed(1)
    for Q in (1, 9, 17):
        pool = de.pack_bits(torch.randint(0, 2, (5, 64), generator=g))
        q = pool[torch.randint(0, 5, (Q,), generator=g)]
        db = pool[torch.randint(0, 5, (50_000,), generator=g)]
        for k in (1, 100, 7000):
            d, i = de.hamming_topk(q.to(dev), db.to(dev), k)
            rd, ri = de.hamming_topk(q, db, k)
            assert torch.equal(d.cpu(), rd) and torch.equal(i.cpu(), ri), (Q, k)


@check("every op once against the CPU op")
def ops_once(dev):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 100, generator=g)
    packed = de.pack_bits(x)
    assert torch.equal(de.pack_bits(x.to(dev)).cpu(), packed)
    assert torch.equal(de.unpack_bits(packed.to(dev), 100).cpu(), de.unpack_bits(packed, 100))
    q, db = de.pack_bits(torch.randn(20, 128, generator=g)), de.pack_bits(torch.randn(3000, 128, generator=g))
    assert torch.equal(de.hamming_distance(q.to(dev), db.to(dev)).cpu(), de.hamming_distance(q, db))
    d, i = de.hamming_topk(q.to(dev), db.to(dev), 50)
    rd, ri = de.hamming_topk(q, db, 50)
    assert torch.equal(d.cpu(), rd) and torch.equal(i.cpu(), ri)
    for radius in (0, 50, 64, 200):
        got = de.hamming_range(q.to(dev), db.to(dev), radius)
        for a, b in zip(got, de.hamming_range(q, db, radius), strict=True):
            assert torch.equal(a.cpu(), b), ("hamming_range", radius)
    ql, dl = torch.randint(0, 4, (20,), generator=g), torch.randint(0, 4, (3000,), generator=g)
    for k, ties in ((0, "index"), (100, "index"), (0, "average")):
        got = de.topk_map(q.to(dev), db.to(dev), ql.to(dev), dl.to(dev), k, ties).cpu()
        assert torch.allclose(got, de.topk_map(q, db, ql, dl, k, ties), rtol=1e-10, atol=1e-12), ties
    A = torch.rand(4, 20, 20, dtype=F64, generator=g)
    A = A + A.mT
    assert torch.allclose(de.normalized_laplacian(A.to(dev)).cpu(), de.normalized_laplacian(A))
    L = de.normalized_laplacian(A)
    w = de.eigh(L.to(dev))[0].cpu()
    assert torch.allclose(w, de.eigh(L)[0], atol=1e-10)
    xs = torch.randn(4, 20, 6, dtype=F64, generator=g)
    th = torch.randn(5, dtype=F64, generator=g)
    y = de.spectral_filter(xs.to(dev), L.to(dev), th.to(dev), "chebyshev").cpu()
    assert torch.allclose(y, de.spectral_filter(xs, L, th, "chebyshev"), atol=1e-9)


@check("the default HAGCN fits on the device as on the CPU (every filter)")
def hagcn_fit(dev):
    from deephash.methods import get_method

    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 24, generator=g) + 2 * torch.randint(0, 4, (300, 1), generator=g).float()
    for filt in ("chebyshev", "spline", "fourier", "gcn", "lanczos", "none"):
        opts = {"filter": filt, **({"order": 12} if filt == "fourier" else {})}
        a = get_method("hagcn", 16, device=str(dev), **opts).fit(x)
        b = get_method("hagcn", 16, device="cpu", **opts).fit(x)
        # μ (the filtered energy per direction) is free of the eigenvectors' signs: compare that.
        assert all(abs(u - v) <= 1e-6 * max(1.0, abs(v)) for u, v in zip(a.history, b.history)), filt
        codes = a.encode(x)
        assert set(codes.unique().tolist()) <= {-1.0, 1.0} and torch.equal(a.encode(x[5:6]), codes[5:6]), filt


@check("sanitizer: tiny hamming_topk (fast and exact paths), eigh and topk_map")
def sanitizer_cases(dev):
    db = torch.full((20_000, 8), 7, dtype=torch.uint8, device=dev)  # all tied: k = 10 takes the exact path
    q = torch.zeros(1, 8, dtype=torch.uint8, device=dev)
    for k in (10, 19_000):
        _, i = de.hamming_topk(q, db, k)
        assert torch.equal(i.cpu(), torch.arange(k)[None]), k
    q9 = torch.randint(0, 256, (9, 8), dtype=torch.uint8, device=dev)
    d, i = de.hamming_topk(q9, db[:3000], 5)
    assert torch.equal(i.cpu(), torch.arange(5).expand(9, 5))
    L = laplacian(2, 16, F32).to(dev)
    w, V = de.eigh(L)
    assert (V @ torch.diag_embed(w) @ V.mT - L).abs().max().item() < 1e-4
    ql, dl = torch.randint(0, 3, (9,), device=dev), torch.randint(0, 3, (3000,), device=dev)
    for ties in ("index", "average"):
        de.topk_map(q9, db[:3000], ql, dl, 0, ties)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--only", choices=["all", "sanitizer"], default="all")
    p.add_argument("--loops", type=int, default=50)
    args = p.parse_args()
    dev = args.device
    print(f"torch {torch.__version__}, device {dev}"
          f"{' (' + torch.cuda.get_device_name() + ')' if dev == 'cuda' else ''}, cuda_compiled={de.cuda_compiled()}",
          flush=True)
    if dev == "cuda" and not (torch.cuda.is_available() and de.cuda_compiled()):
        print("FAIL no CUDA device or no CUDA kernels in this build")
        return 1
    if args.only == "sanitizer":
        sanitizer_cases(dev)
    else:
        eigh_strides(dev)
        eigh_scaled(dev)
        topk_all_tied(dev, args.loops)
        topk_groups(dev)
        ops_once(dev)
        hagcn_fit(dev)
        sanitizer_cases(dev)
    if dev == "cuda":
        torch.cuda.synchronize()
    failed = [r for r in RESULTS if not r[1]]
    print(f"quick checks: {len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
