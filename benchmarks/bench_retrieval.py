"""Retrieval ops against their pure-PyTorch references, FAISS IndexBinaryFlat and the numpy evaluation loop
of the deep-hashing literature (deephash_ext.reference.literature_topk_map).

Prints one markdown table of medians and ratios (baseline time / ours, so > 1 means we are faster).

    python benchmarks/bench_retrieval.py                 # the full run recorded in benchmarks/results/
    python benchmarks/bench_retrieval.py --quick         # small sizes, a smoke run
    python benchmarks/bench_retrieval.py --only faiss --faiss-sizes 1000000   # one group, one size
    python benchmarks/bench_retrieval.py --no-baselines  # our ops only: before/after runs of two builds
    python benchmarks/bench_retrieval.py --only peers    # hamming_topk vs FAISS, usearch, simsimd, 8..256 bits

The peers group times exact k-NN (Q=1000, k=100) at each width of --peer-bits against FAISS
IndexBinaryFlat (and both at --peer-n-fast, 1e6 codes), and with usearch's exact search and simsimd's
cdist + a numpy top-k at --peer-n-slow (1e5) codes, where all four run: those two take a minute per
width at 1e6. FAISS, usearch and simsimd read the same packed bytes; a width that is not a whole
number of bytes runs as its byte width (the zero padding adds nothing to a distance). A peer whose
first call takes over 2 s is timed by that one call (FAISS takes 20-40 s at some widths at 1e6).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import deephash_ext as de  # noqa: E402
from deephash_ext import reference as ref  # noqa: E402
from benchmarks.baselines import faiss_binary_knn, simsimd_knn, usearch_knn  # noqa: E402


# The clock of median_time: wall time, or with --clock cpu the CPU time of the process, which a busy
# neighbour on a shared machine does not stretch (with --threads 1 it is the op's own time).
CLOCK = time.perf_counter


def median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return statistics.median(times)


def codes(n, bits, seed):
    g = torch.Generator().manual_seed(seed)
    return de.pack_bits(torch.randint(0, 2, (n, bits), generator=g, dtype=torch.uint8))


class Table:
    def __init__(self, baselines=True):
        self.rows = []
        self.baselines = baselines  # False: time our ops only (e.g. to compare two builds)

    def base(self, fn, repeats):
        """Median time of a baseline (repeats=0: one call, no warm-up), or None when baselines are off."""
        if not self.baselines:
            return None
        return median_time(fn, 1, warmup=0) if repeats == 0 else median_time(fn, repeats)

    def add(self, op, config, ours, base_name, base, note=""):
        if base is None:
            print(f"| {op} | {config} | {ours * 1e3:.2f} | {base_name} | - | - | not run |", flush=True)
            return
        ratio = base / ours if ours > 0 else float("inf")
        self.rows.append((op, config, ours * 1e3, base_name, base * 1e3, ratio, note))
        print(f"| {op} | {config} | {ours * 1e3:.2f} | {base_name} | {base * 1e3:.2f} | {ratio:.2f}x | {note} |",
              flush=True)


def bench_bits_ops(t, quick, repeats):
    n = 20_000 if quick else 200_000
    x = torch.randn(n, 64)
    t.add("pack_bits", f"[{n}, 64] float32", median_time(lambda: de.pack_bits(x), repeats), "reference",
          t.base(lambda: ref.pack_bits(x), repeats))
    p = de.pack_bits(x)
    t.add("unpack_bits", f"[{n}, 8] -> 64 bits", median_time(lambda: de.unpack_bits(p, 64), repeats), "reference",
          t.base(lambda: ref.unpack_bits(p, 64), repeats))
    q, db = codes(100, 64, 1), codes(2_000 if quick else 20_000, 64, 2)
    t.add("hamming_distance", f"Q=100 N={db.shape[0]} 64b", median_time(lambda: de.hamming_distance(q, db), repeats),
          "reference", t.base(lambda: ref.hamming_distance(q, db), repeats))
    t.add("hamming_topk", f"Q=100 N={db.shape[0]} 64b k=10", median_time(lambda: de.hamming_topk(q, db, 10), repeats),
          "reference", t.base(lambda: ref.hamming_topk(q, db, 10), repeats))


def bench_topk_vs_faiss(t, quick, repeats, sizes=None):
    try:
        import faiss
    except ImportError:
        print("faiss-cpu is not installed: skipping the FAISS comparison", file=sys.stderr)
        return
    faiss.omp_set_num_threads(torch.get_num_threads())
    Q = 100 if quick else 1000
    sizes = sizes or ([100_000] if quick else [1_000_000, 10_000_000])
    for N in sizes:
        for bits in (64, 128):
            q, db = codes(Q, bits, 3), codes(N, bits, 4)
            qn, dbn = q.numpy(), db.numpy()
            index = faiss.IndexBinaryFlat(bits)
            index.add(dbn)
            for k in (10, 100, 1000):
                ours = median_time(lambda: de.hamming_topk(q, db, k), repeats)
                theirs = t.base(lambda: faiss_binary_knn(qn, dbn, k, index), repeats)
                # Same distances (FAISS orders ties its own way, so rows may differ inside a tie).
                same = t.baselines and np.array_equal(faiss_binary_knn(qn[:20], dbn, k, index)[0],
                                                      de.hamming_topk(q[:20], db, k)[0].numpy())
                pairs = Q * N / ours
                t.add("hamming_topk", f"Q={Q} N={N:.0e} {bits}b k={k}", ours, "faiss IndexBinaryFlat", theirs,
                      f"{pairs / 1e9:.2f}e9 pairs/s; distances equal: {same}")


def bench_topk_map(t, quick, repeats):
    Q, N, bits, C = (100, 10_000, 64, 10) if quick else (1000, 69_000, 64, 10)
    g = torch.Generator().manual_seed(5)
    q, db = codes(Q, bits, 6), codes(N, bits, 7)
    ql, dl = torch.randint(0, C, (Q,), generator=g), torch.randint(0, C, (N,), generator=g)
    signs = lambda c: de.unpack_bits(c, bits).to(torch.float32).numpy() * 2 - 1
    onehot = lambda y: torch.nn.functional.one_hot(y, C).to(torch.float32).numpy()
    qs, dbs, qo, dbo = signs(q), signs(db), onehot(ql), onehot(dl)
    # k = 100 (<= N/256) takes the threshold scan shared with hamming_topk, k = 1000 and all the one pass.
    for k in (1000, 100, 0):
        kk = N if k == 0 else k
        ours = median_time(lambda: de.topk_map(q, db, ql, dl, k, "index"), repeats)
        mine = de.topk_map(q, db, ql, dl, k, "index").mean().item()
        config = f"Q={Q} N={N} {bits}b k={'all' if k == 0 else k}"
        if not t.baselines:
            t.add("topk_map", config, ours, "literature numpy loop", None)
        else:
            loop_t0 = time.perf_counter()
            theirs_map = ref.literature_topk_map(qs, dbs, qo, dbo, kk)
            loop_time = time.perf_counter() - loop_t0  # one run: the loop takes seconds
            t.add("topk_map", config, ours, "literature numpy loop", loop_time,
                  f"mAP {mine:.6f} vs {theirs_map:.6f}, |diff| {abs(mine - theirs_map):.1e}")
        if k == 0 or Q * N <= 100 * 69_000:
            sub = slice(0, 100)
            t.add("topk_map", f"Q=100 N={N} {bits}b k={'all' if k == 0 else k}",
                  median_time(lambda: de.topk_map(q[sub], db, ql[sub], dl, k, "index"), repeats), "reference",
                  t.base(lambda: ref.topk_map(q[sub], db, ql[sub], dl, k, "index"), repeats))
    ours = median_time(lambda: de.topk_map(q, db, ql, dl, 0, "average"), repeats)
    t.add("topk_map", f"Q={Q} N={N} {bits}b all, ties=average", ours, "(no other library has it)", ours,
          "tie-aware")


PEER_BITS = (8, 12, 16, 24, 32, 48, 64, 72, 96, 128, 256)


def bench_peers(t, quick, repeats, bits_list=PEER_BITS, n_fast=1_000_000, n_slow=100_000):
    """hamming_topk against every outside exact k-NN at each width; a peer that is not installed is n/a."""
    peers = {}
    try:
        import faiss
        faiss.omp_set_num_threads(torch.get_num_threads())
        peers["faiss IndexBinaryFlat"] = lambda qn, dbn, k: faiss_binary_knn(qn, dbn, k)
    except ImportError:
        print("faiss-cpu is not installed: FAISS is n/a", file=sys.stderr)
    # simsimd before usearch: usearch imports numkong, after which simsimd.cdist refuses every input
    # ("Input tensors must have matching datatypes"; simsimd 6.5.16, usearch 2.26.6, numkong 7.8.6).
    try:
        import simsimd  # noqa: F401
        peers["simsimd cdist + numpy top-k"] = lambda qn, dbn, k: simsimd_knn(qn, dbn, k, torch.get_num_threads())
    except ImportError:
        print("simsimd is not installed: simsimd is n/a", file=sys.stderr)
    try:
        import usearch  # noqa: F401
        peers["usearch exact"] = lambda qn, dbn, k: usearch_knn(qn, dbn, k, torch.get_num_threads())
    except ImportError:
        print("usearch is not installed: usearch is n/a", file=sys.stderr)
    slow = {"usearch exact", "simsimd cdist + numpy top-k"}
    Q, k = (100, 10) if quick else (1000, 100)
    if quick:
        n_fast, n_slow = 100_000, 10_000
    for N in (n_fast, n_slow):
        for bits in bits_list:
            q, db = codes(Q, bits, 30 + bits), codes(N, bits, 40 + bits)
            qn, dbn = q.numpy(), db.numpy()
            ours = median_time(lambda: de.hamming_topk(q, db, k), repeats)
            want = de.hamming_topk(q[:20], db, k)[0].numpy()
            for name in ("faiss IndexBinaryFlat", "usearch exact", "simsimd cdist + numpy top-k"):
                config = f"Q={Q} N={N:.0e} {bits}b k={k}"
                if name not in peers or (name in slow and N != n_slow):
                    if name not in peers:
                        print(f"| hamming_topk | {config} | {ours * 1e3:.2f} | {name} | n/a | n/a | not installed |",
                              flush=True)
                    continue
                fn = peers[name]
                theirs = t.base(lambda: fn(qn, dbn, k), 0) if t.baselines else None
                if theirs is not None and theirs < 2.0:  # one call of seconds is its own warm-up and median
                    theirs = t.base(lambda: fn(qn, dbn, k), repeats)
                # Same distances (peers order ties their own way, so rows may differ inside a tie).
                same = t.baselines and np.array_equal(np.asarray(fn(qn[:20], dbn, k)[0]).astype(np.int64), want)
                t.add("hamming_topk", config, ours, name, theirs,
                      f"{Q * N / ours / 1e9:.2f}e9 pairs/s; distances equal: {same}")


def machine():
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=["bits", "faiss", "map", "peers"], help="run one group")
    ap.add_argument("--peer-bits", type=lambda v: [int(b) for b in v.split(",")], default=list(PEER_BITS),
                    help="code widths of the peers group (default 8..256)")
    ap.add_argument("--peer-n-fast", type=float, default=1e6, help="peers group: codes for ours and FAISS")
    ap.add_argument("--peer-n-slow", type=float, default=1e5, help="peers group: codes where all peers run")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: the process's CPU time, steadier than wall time on a shared machine")
    ap.add_argument("--no-baselines", action="store_true",
                    help="time our ops only (the references, FAISS and the numpy loop take most of a run)")
    ap.add_argument("--faiss-sizes", type=lambda v: [int(float(n)) for n in v.split(",")],
                    help="comma-separated database sizes of the FAISS group (default 1e6,1e7; --quick 1e5)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"machine: {machine()}; torch {torch.__version__}; simd {de.simd_level()}; "
          f"date {datetime.date.today()}; command: python {' '.join(sys.argv)}\n")
    print("| op | config | ours (ms) | baseline | baseline (ms) | speed-up | note |")
    print("|---|---|---|---|---|---|---|")
    t = Table(baselines=not args.no_baselines)
    if args.only in (None, "bits"):
        bench_bits_ops(t, args.quick, args.repeats)
    if args.only in (None, "map"):
        bench_topk_map(t, args.quick, args.repeats)
    if args.only in (None, "faiss"):
        bench_topk_vs_faiss(t, args.quick, 3 if not args.quick else args.repeats, args.faiss_sizes)
    if args.only in (None, "peers"):
        bench_peers(t, args.quick, 3 if not args.quick else args.repeats, args.peer_bits, int(args.peer_n_fast),
                    int(args.peer_n_slow))


if __name__ == "__main__":
    main()
