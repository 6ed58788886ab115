"""GPU benchmarks of the CUDA kernels against their PyTorch baselines (any device: --device cpu runs
the same code on the CPU ops, as the dry run of benchmarks/gpu_check.sh does with --size tiny).

- eigh: deephash_ext.eigh against torch.linalg.eigh, Bt = 64..4096, n = 32..128.
- spectral_filter forward + backward against the pure-PyTorch formulation (deephash_ext.reference:
  torch.linalg.eigh, the basis by hand, autograd through both), the same grid (d = 64) and the
  HAGCN shape 64 x 128 x 256.
- hamming_topk at N = 1e7 and 1e8, 64 and 128 bits, k = 100, against the memory bound (each code
  read once, at the copy bandwidth measured first) and against torch.topk over the distance matrix.
- topk_map at Q = 10,000, N = 1e6, 64 bits (ties "index", k = 0 and 100; ties "average").

Times are medians over repetitions timed with device events (CUDA) or the wall clock (CPU), the
two sides of a ratio interleaved. Each case checks its result against the baseline first. A time
budget per suite skips the remaining cases (marked "skipped: budget") rather than overrun.

    python benchmarks/bench_gpu.py --device cuda --out results.md
    python benchmarks/bench_gpu.py --device cpu --size tiny --out /tmp/dry.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import header  # noqa: E402

import deephash_ext as de  # noqa: E402
from deephash_ext import reference as R  # noqa: E402

SIZES = {
    "full": dict(batches=[64, 256, 1024, 4096], ns=[32, 64, 128], d=64, hagcn=(64, 128, 256),
                 topk_N=[10_000_000, 100_000_000], topk_Q=[1, 8, 64], torch_topk_max_cells=2_000_000_000,
                 map_Q=10_000, map_N=1_000_000, bw_bytes=2 << 30),
    "tiny": dict(batches=[4, 16], ns=[8, 16], d=4, hagcn=(4, 16, 8), topk_N=[20_000, 50_000], topk_Q=[1, 8],
                 torch_topk_max_cells=10_000_000, map_Q=20, map_N=2000, bw_bytes=16 << 20),
}


class Timer:
    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def once(self, fn) -> float:
        """Seconds for one call."""
        if self.cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def medians(self, fns, reps: int, slow: float = 2.0) -> list[float]:
        """Median seconds of each function, interleaved; one warm-up each. Functions slower than
        `slow` seconds get fewer repetitions (at least one after the warm-up)."""
        first = [self.once(fn) for fn in fns]
        r = max(1, min(reps, int(slow / max(max(first), 1e-9))))
        times = [[] for _ in fns]
        for _ in range(r):
            for fn, t in zip(fns, times):
                t.append(self.once(fn))
        return [statistics.median(t) for t in times]


def graphs(Bt: int, n: int, dtype, device, seed: int = 0) -> torch.Tensor:
    """Normalized Laplacians of random kNN-like graphs, as HAGCN builds per mini-batch."""
    g = torch.Generator(device=device).manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(Bt, n, 16, generator=g, device=device, dtype=dtype), dim=-1)
    S = (emb @ emb.mT).clamp(min=0)
    A = S * (S >= S.kthvalue(max(1, n - 8), dim=-1, keepdim=True).values)
    return de.normalized_laplacian(torch.maximum(A, A.mT))


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.end


def row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(title: str, head: list[str], rows: list[list]) -> str:
    lines = [f"## {title}", "", row(head), row(["---"] * len(head))] + [row(r) for r in rows]
    return "\n".join(lines) + "\n"


def ms(s: float) -> str:
    return f"{1e3 * s:.3f}" if s < 1 else f"{1e3 * s:.0f}"


def bench_eigh(dev, cfg, timer, reps, budget, dtypes):
    rows = []
    for dtype in dtypes:
        for n in cfg["ns"]:
            for Bt in cfg["batches"]:
                name = [str(dtype).replace("torch.", ""), Bt, n]
                if not budget.left():
                    rows.append(name + ["skipped: budget"] + [""] * 3)
                    continue
                L = graphs(Bt, n, dtype, dev, seed=Bt + n)
                w, V = de.eigh(L)
                w_ref = torch.linalg.eigvalsh(L)
                err = (w - w_ref).abs().max().item()
                res = (V @ torch.diag_embed(w) @ V.mT - L).abs().max().item()
                t_de, t_ref = timer.medians([lambda: de.eigh(L), lambda: torch.linalg.eigh(L)], reps)
                rows.append(name + [ms(t_de), ms(t_ref), f"{t_ref / t_de:.1f}x", f"{max(err, res):.1e}"])
                print(row(rows[-1]), flush=True)
    return table("eigh: deephash_ext.eigh vs torch.linalg.eigh",
                 ["dtype", "Bt", "n", "deephash ms", "torch.linalg.eigh ms", "speed-up", "max abs err"], rows)


def bench_spectral(dev, cfg, timer, reps, budget, dtypes, K=8, basis="chebyshev"):
    rows = []
    shapes = [(Bt, n, cfg["d"]) for n in cfg["ns"] for Bt in cfg["batches"]] + [cfg["hagcn"]]
    for dtype in dtypes:
        for Bt, n, d in shapes:
            name = [str(dtype).replace("torch.", ""), f"{Bt}x{n}x{d}"]
            if not budget.left():
                rows.append(name + ["skipped: budget"] + [""] * 4)
                continue
            L = graphs(Bt, n, dtype, dev, seed=n)
            g = torch.Generator(device=dev).manual_seed(1)
            x = torch.randn(Bt, n, d, generator=g, device=dev, dtype=dtype)
            theta = torch.randn(K, generator=g, device=dev, dtype=dtype) / K
            gy = torch.randn(Bt, n, d, generator=g, device=dev, dtype=dtype)

            def step(fn, x=x, L=L, theta=theta, gy=gy):
                xs, Ls, ts = (t.clone().requires_grad_() for t in (x, L, theta))
                y = fn(xs, Ls, ts, basis)
                y.backward(gy)
                return y, xs.grad, Ls.grad, ts.grad

            def rel(a, b):
                return ((a - b).abs().max() / b.abs().max().clamp(min=1)).item()

            ours, ref = step(de.spectral_filter), step(R.spectral_filter)
            # The reference's L gradient (autograd through torch.linalg.eigh) is undefined where the
            # graph has repeated eigenvalues (several components): L.grad is checked against the CPU
            # op (Daleckii-Krein, gradchecked) on the first graphs instead.
            err = max(rel(ours[i], ref[i]) for i in (0, 1, 3))
            few = [t[:4].cpu() for t in (x, L)] + [theta.cpu(), gy[:4].cpu()]
            cpu = step(de.spectral_filter, *few)
            err_gl = rel(ours[2][:4].cpu(), cpu[2])
            t_de, t_ref = timer.medians([lambda: step(de.spectral_filter), lambda: step(R.spectral_filter)], reps)
            rows.append(name + [ms(t_de), ms(t_ref), f"{t_ref / t_de:.1f}x", f"{err:.1e}", f"{err_gl:.1e}"])
            print(row(rows[-1]), flush=True)
    return table(f"spectral_filter forward + backward ({basis}, K = {K}) vs the pure-PyTorch formulation",
                 ["dtype", "Bt x n x d", "deephash ms", "reference ms", "speed-up", "max rel err y, x/θ grads",
                  "L grad vs CPU op (4 graphs)"], rows)


def copy_bandwidth(dev, nbytes, timer) -> float:
    """Bytes per second of a device-to-device copy, counting bytes read and written."""
    x = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    x.random_()
    y = torch.empty_like(x)
    t = timer.medians([lambda: y.copy_(x)], 10)[0]
    return 2 * nbytes / t


def bench_topk(dev, cfg, timer, reps, budget, k=100):
    bw = copy_bandwidth(dev, cfg["bw_bytes"], timer)
    rows = []
    for N in cfg["topk_N"]:
        for bits in (64, 128):
            B = bits // 8
            if not budget.left():
                rows.append([N, bits, "", "skipped: budget"] + [""] * 5)
                continue
            db = torch.randint(0, 256, (N, B), dtype=torch.uint8, device=dev)
            bound = N * B / bw
            for Q in cfg["topk_Q"]:
                if not budget.left():
                    rows.append([N, bits, Q, "skipped: budget"] + [""] * 5)
                    continue
                q = torch.randint(0, 256, (Q, B), dtype=torch.uint8, device=dev)
                d, i = de.hamming_topk(q, db, k)
                fns = [lambda: de.hamming_topk(q, db, k)]
                with_torch = Q * N <= cfg["torch_topk_max_cells"]
                if with_torch:
                    dist = de.hamming_distance(q, db)
                    td = torch.topk(dist, k, dim=1, largest=False).values
                    assert torch.equal(td.sort(1).values, d), "distances differ from torch.topk's"
                    del dist
                    fns.append(lambda: torch.topk(de.hamming_distance(q, db), k, dim=1, largest=False))
                ts = timer.medians(fns, reps)
                t_torch = ts[1] if with_torch else None
                rows.append([N, bits, Q, ms(ts[0]), ms(bound), f"{100 * bound / ts[0]:.0f}%",
                             ms(t_torch) if t_torch else "(matrix too large)",
                             f"{t_torch / ts[0]:.1f}x" if t_torch else "", f"{N * B / ts[0] / 1e9:.0f}"])
                print(row(rows[-1]), flush=True)
            del db
    return table(f"hamming_topk (k = {k}) vs the memory bound (one read of the codes at {bw / 1e9:.0f} GB/s "
                 "copy bandwidth) and torch.topk over hamming_distance",
                 ["N", "bits", "Q", "deephash ms", "bound ms", "% of bound", "distance matrix + torch.topk ms",
                  "speed-up", "GB/s of codes"], rows)


def bench_map(dev, cfg, timer, reps, budget):
    Q, N, bits = cfg["map_Q"], cfg["map_N"], 64
    g = torch.Generator(device=dev).manual_seed(3)
    pool = torch.randint(0, 256, (N // 50 + 1, bits // 8), dtype=torch.uint8, device=dev, generator=g)
    db = pool[torch.randint(0, pool.shape[0], (N,), device=dev, generator=g)]
    q = pool[torch.randint(0, pool.shape[0], (Q,), device=dev, generator=g)]
    ql = torch.randint(0, 10, (Q,), device=dev, generator=g)
    dl = torch.randint(0, 10, (N,), device=dev, generator=g)
    rows = []
    sub = slice(0, 50)
    for ties, k in (("index", 0), ("index", 100), ("average", 0)):
        if not budget.left():
            rows.append([Q, N, ties, k, "skipped: budget", ""])
            continue
        got = de.topk_map(q, db, ql, dl, k, ties)
        want = de.topk_map(q[sub].cpu(), db.cpu(), ql[sub].cpu(), dl.cpu(), k, ties)
        err = (got[sub].cpu() - want).abs().max().item()
        t = timer.medians([lambda: de.topk_map(q, db, ql, dl, k, ties)], reps)[0]
        rows.append([Q, N, ties, k, ms(t), f"{err:.1e}"])
        print(row(rows[-1]), flush=True)
    return table(f"topk_map ({bits} bits, 10 classes, ~50 rows per distinct code)",
                 ["Q", "N", "ties", "k", "deephash ms", "max abs err vs CPU (50 queries)"], rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--suites", default="eigh,spectral,topk,map")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--budget", type=float, default=60.0, help="seconds per suite before its remaining cases are skipped")
    p.add_argument("--out", help="markdown file to write (appended to if it exists)")
    args = p.parse_args()
    dev, cfg = args.device, SIZES[args.size]
    if dev.startswith("cuda") and not (torch.cuda.is_available() and de.cuda_compiled()):
        print("no CUDA device or no CUDA kernels in this build", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    timer = Timer(dev)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    gpu = torch.cuda.get_device_name() if dev.startswith("cuda") else "CPU ops"
    parts = [header(f"GPU benchmarks ({args.size}, device {dev}: {gpu})")]
    suites = {"eigh": lambda b: bench_eigh(dev, cfg, timer, args.reps, b, dtypes),
              "spectral": lambda b: bench_spectral(dev, cfg, timer, args.reps, b, dtypes),
              "topk": lambda b: bench_topk(dev, cfg, timer, args.reps, b),
              "map": lambda b: bench_map(dev, cfg, timer, args.reps, b)}
    status = 0
    for name in args.suites.split(","):
        t0 = time.monotonic()
        try:
            parts.append(suites[name](Budget(args.budget)))
        except Exception as e:  # noqa: BLE001 - a failed suite is recorded and the others still run
            import traceback
            traceback.print_exc()
            parts.append(f"## {name}\n\nFAILED: {type(e).__name__}: {str(e).splitlines()[0][:300]}\n")
            status = 1
        print(f"suite {name}: {time.monotonic() - t0:.1f} s", flush=True)
        text = "\n".join(parts)
        if args.out:
            Path(args.out).write_text(text)
    print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
