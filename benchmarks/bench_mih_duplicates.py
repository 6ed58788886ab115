"""MIH against the flat scan on heavily duplicated codes (issue 26, item 14): a few distinct codes repeated
over N rows put most rows of each substring's table in one bucket, every row tied with the others.
Interleaved rounds of ``hamming_topk`` and ``MultiIndex.search`` (mode "auto"), medians, minima (on a
loaded machine the scheduler's 10 ms quantum shows in the medians of short calls) and the ratio;
every MIH answer is checked equal to the scan's. One thread. Prints markdown (``--out`` writes it too)."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import deephash_ext as de

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import emit, header  # noqa: E402

from deephash.search.mih import MultiIndex  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--bits", type=int, nargs="+", default=[64])
    p.add_argument("--distinct", type=int, nargs="+", default=[1, 4, 64])
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    lines = [header("MIH on duplicated codes against the scan"), "",
             "| bits | distinct codes | N | Q | k | scan ms (median / min) | MIH ms (median / min) | MIH / scan (medians) |",
             "|---|---|---|---|---|---|---|---|"]
    for bits in a.bits:
        for distinct in a.distinct:
            pool = de.pack_bits(torch.randint(0, 2, (distinct, bits), generator=g))
            db = pool[torch.randint(0, distinct, (a.n,), generator=g)].contiguous()
            q = pool[torch.randint(0, distinct, (a.queries,), generator=g)].contiguous()
            mi = MultiIndex(db, bits)
            for k in a.k:
                ts, tm = [], []
                for _ in range(a.rounds):
                    t0 = time.perf_counter()
                    want = de.hamming_topk(q, db, k)
                    ts.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    got = mi.search(q, db, k)
                    tm.append(time.perf_counter() - t0)
                    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
                s, m = statistics.median(ts) * 1e3, statistics.median(tm) * 1e3
                lines.append(f"| {bits} | {distinct} | {a.n} | {a.queries} | {k} | {s:.1f} / {min(ts) * 1e3:.1f} | "
                             f"{m:.1f} / {min(tm) * 1e3:.1f} | {m / s:.2f} |")
                print(lines[-1], flush=True)
    emit(lines, a.out)


if __name__ == "__main__":
    main()
