"""The Hamming ops at every code width: no width may cost much more than the next power-of-two width.

Times hamming_topk, topk_map (k=100 ties="index": the threshold scan; k=all ties="average": the
one pass), hamming_range and hamming_distance at each width of --bits, interleaved: each round
times every (op, width) once, in order, so that a busy neighbour on the shared machine stretches
all widths alike; the table holds medians over the rounds and each width's ratio to the nearest
power-of-two width at or above it (12 -> 16, 24 -> 32, 48 -> 64, 72 and 96 -> 128 bits).

    python benchmarks/bench_widths.py                        # 1e6 codes, Q=1000, k=100
    python benchmarks/bench_widths.py --n 10000 --q 100      # a smaller database
    python benchmarks/bench_widths.py --quick                # smoke run
    python benchmarks/bench_widths.py --json out.json        # also the raw times (for compare runs)

Ratios near 1 at 12, 24, 48 bits (and <= 1 at 72, 96 against 128) are the goal of issue 27.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import deephash_ext as de  # noqa: E402
from benchmarks import _record  # noqa: E402

WIDTHS = (8, 12, 16, 24, 32, 48, 64, 72, 96, 128, 256)


def codes(n, bits, seed):
    g = torch.Generator().manual_seed(seed)
    return de.pack_bits(torch.randint(0, 2, (n, bits), generator=g, dtype=torch.uint8))


def power_of_two_above(bits):
    p = 8
    while p < bits:
        p *= 2
    return p


def radius_for(bits):
    # About 1e-4 of random codes within: mean bits/2, sd sqrt(bits)/2, 3.7 sd below the mean.
    return max(0, int(bits / 2 - 3.7 * (bits ** 0.5) / 2))


def make_cases(widths, n, q, k, ops, dist_q):
    g = torch.Generator().manual_seed(11)
    ql, dl = torch.randint(0, 10, (q,), generator=g), torch.randint(0, 10, (n,), generator=g)
    cases = []
    for bits in widths:
        qc, dbc = codes(q, bits, 1000 + bits), codes(n, bits, 2000 + bits)
        qd = qc[:dist_q]
        r = radius_for(bits)
        table = {
            "hamming_topk": lambda qc=qc, dbc=dbc: de.hamming_topk(qc, dbc, k),
            "topk_map": lambda qc=qc, dbc=dbc: de.topk_map(qc, dbc, ql, dl, k, "index"),
            "topk_map_all": lambda qc=qc, dbc=dbc: de.topk_map(qc, dbc, ql, dl, 0, "average"),
            "hamming_range": lambda qc=qc, dbc=dbc, r=r: de.hamming_range(qc, dbc, r),
            "hamming_distance": lambda qd=qd, dbc=dbc: de.hamming_distance(qd, dbc),
        }
        for op in ops:
            cases.append((op, bits, table[op]))
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=float, default=1e6, help="database codes")
    ap.add_argument("--q", type=int, default=1000, help="queries")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--dist-q", type=int, default=16, help="queries of hamming_distance (its output is Q x N int32)")
    ap.add_argument("--bits", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--ops", default="hamming_topk,topk_map,topk_map_all,hamming_range,hamming_distance")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the raw times here")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: the process's CPU time, which a busy neighbour on a shared machine does not stretch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, q = int(args.n), args.q
    if args.quick:
        n, q, args.rounds = 20_000, 50, 2
    widths = [int(b) for b in args.bits.split(",")]
    ops = args.ops.split(",")
    cases = make_cases(widths, n, q, args.k, ops, min(args.dist_q, q))
    for _, _, fn in cases:  # warm-up (allocations, page faults)
        fn()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times = {(op, bits): [] for op, bits, _ in cases}
    for _ in range(args.rounds):
        for op, bits, fn in cases:
            t0 = clock()
            fn()
            times[(op, bits)].append(clock() - t0)
    med = {key: statistics.median(v) for key, v in times.items()}

    lines = [_record.header("Hamming ops across code widths").rstrip(), f"- simd: {de.simd_level()}",
             f"- N={n}, Q={q}, k={args.k}, hamming_distance Q={min(args.dist_q, q)}, hamming_range radius "
             f"bits/2 - 3.7 sd, {args.rounds} interleaved rounds, {args.clock} clock, {args.threads} thread(s), "
             f"medians (ms); ratio: time / time at the power-of-two width at or above", "",
             "| bits | " + " | ".join(f"{op} (ms) | ratio" for op in ops) + " |",
             "|---" * (1 + 2 * len(ops)) + "|"]
    for bits in widths:
        cells = []
        for op in ops:
            t = med[(op, bits)]
            p = power_of_two_above(bits)
            ratio = t / med[(op, p)] if (op, p) in med else float("nan")
            cells.append(f"{t * 1e3:.1f} | {ratio:.2f}")
        lines.append(f"| {bits} | " + " | ".join(cells) + " |")
    print("\n".join(lines), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{op}@{bits}": v for (op, bits), v in times.items()}, f)


if __name__ == "__main__":
    main()
