"""Spectral ops against the pure-PyTorch formulation (deephash_ext.reference: torch.linalg.eigh,
the basis by hand, autograd through both).

Prints a markdown table of median wall times and ratios (reference / deephash_ext, > 1 means the
kernel is faster). Example:

    python benchmarks/bench_spectral.py --threads 2 --reps 5
    python benchmarks/bench_spectral.py --profile --shapes 64x128x256   # where fwd+bwd spends its time
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import deephash_ext as dh
from deephash_ext import reference as R

SHAPES = [(64, 128, 256), (16, 256, 256), (256, 32, 64)]
BASES = ["chebyshev", "spline", "fourier"]


def median_ms(fns, reps: int, warmup: int, clock=time.perf_counter) -> list[float]:
    """Median time (ms) of each function on `clock`, the functions interleaved rep by rep so that the
    load of a shared machine falls on all of them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, t in zip(fns, times):
            t0 = clock()
            fn()
            t.append(clock() - t0)
    return [1e3 * statistics.median(t) for t in times]


def graphs(Bt: int, n: int, dtype, seed: int = 0) -> torch.Tensor:
    """A batch of normalized Laplacians of random kNN-like graphs (as HAGCN builds per mini-batch)."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(Bt, n, 16, generator=g, dtype=dtype), dim=-1)
    S = (emb @ emb.mT).clamp(min=0)
    A = S * (S >= S.kthvalue(max(1, n - 8), dim=-1, keepdim=True).values)
    A = torch.maximum(A, A.mT)
    return R.normalized_laplacian(A)


def profile(Bt: int, n: int, d: int, dtype, K: int, reps: int, warmup: int, clock) -> None:
    """The parts of chebyshev fwd+bwd timed alone, interleaved with the whole: the eigendecomposition
    (ours and torch's) and one batched product of each shape the op runs (forward: Uᵀ x and U g Z, two
    [n, n] x [n, d]; backward: Uᵀ ∂y and U g Zg (two more), Zg Zxᵀ ([n, d] x [d, n]) and U W Uᵀ (two
    [n, n] x [n, n]))."""
    L = graphs(Bt, n, dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(Bt, n, d, generator=g, dtype=dtype)
    theta = torch.randn(K, generator=g, dtype=dtype)
    _, U = torch.linalg.eigh(L)
    W = torch.randn(Bt, n, n, generator=g, dtype=dtype)

    def fwd_bwd(f):
        xs, Ls, ts = (t.detach().requires_grad_() for t in (x, L, theta))
        y = f(xs, Ls, ts, "chebyshev")
        torch.autograd.grad(y, (xs, Ls, ts), torch.ones_like(y))

    parts = {
        "deephash_ext eigh": lambda: dh.eigh(L),
        "torch.linalg.eigh": lambda: torch.linalg.eigh(L),
        "bmm [n,n]x[n,d] (x4 per fwd+bwd)": lambda: torch.bmm(U.mT, x),
        "bmm [n,d]x[d,n] (x1)": lambda: torch.bmm(x, x.mT),
        "bmm [n,n]x[n,n] (x2)": lambda: torch.bmm(U, W),
        "deephash_ext fwd+bwd": lambda: fwd_bwd(dh.spectral_filter),
        "reference fwd+bwd": lambda: fwd_bwd(R.spectral_filter),
    }
    times = median_ms(list(parts.values()), reps, warmup, clock)
    print(f"| part ({Bt}x{n}x{d}, chebyshev) | ms |")
    print("|---|---:|")
    for name, t in zip(parts, times):
        print(f"| {name} | {t:.1f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--K", type=int, default=8)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES),
                   help="comma-separated BtxNxD list")
    p.add_argument("--bases", default=",".join(BASES))
    p.add_argument("--profile", action="store_true", help="time the parts of chebyshev fwd+bwd instead")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: the process's CPU time, steadier than wall time on a shared machine")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    dtype = getattr(torch, args.dtype)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    bases = args.bases.split(",")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, K={args.K}, "
          f"median of {args.reps} (after {args.warmup} warm-up), {args.clock} clock\n")
    if args.profile:
        for Bt, n, d in shapes:
            profile(Bt, n, d, dtype, args.K, args.reps, args.warmup, clock)
        return
    print("| op | Bt x n x d | basis | deephash_ext ms | reference ms | ratio |")
    print("|---|---|---|---:|---:|---:|")

    def row(op, shape, basis, ours, ref):
        print(f"| {op} | {'x'.join(map(str, shape))} | {basis} | {ours:.1f} | {ref:.1f} | {ref / ours:.2f}x |",
              flush=True)

    for Bt, n, d in shapes:
        L = graphs(Bt, n, dtype)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(Bt, n, d, generator=g, dtype=dtype)
        theta = torch.randn(args.K, generator=g, dtype=dtype)
        row("eigh", (Bt, n, n), "", *median_ms([lambda: dh.eigh(L), lambda: torch.linalg.eigh(L)],
                                               args.reps, args.warmup, clock))
        for basis in bases:
            with torch.no_grad():
                fwd = median_ms([lambda f=f: f(x, L, theta, basis) for f in (dh.spectral_filter, R.spectral_filter)],
                                args.reps, args.warmup, clock)
            row("spectral_filter fwd", (Bt, n, d), basis, *fwd)

            def fwd_bwd(f):
                xs, Ls, ts = (t.detach().requires_grad_() for t in (x, L, theta))
                y = f(xs, Ls, ts, basis)
                torch.autograd.grad(y, (xs, Ls, ts), torch.ones_like(y))

            both = median_ms([lambda f=f: fwd_bwd(f) for f in (dh.spectral_filter, R.spectral_filter)],
                             args.reps, args.warmup, clock)
            row("spectral_filter fwd+bwd", (Bt, n, d), basis, *both)

if __name__ == "__main__":
    main()
