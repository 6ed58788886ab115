"""Multi-index hashing against our scan (hamming_topk) and FAISS IndexBinaryFlat, interleaved.

For each code set (benchmarks/mih_data.py: Fashion-MNIST-derived and Gaussian-mixture codes, which have
neighbourhood structure, and uniform random codes, which have none), N and bits: the tables are built
once (timed, their memory counted); then for each k, ``--rounds`` rounds each call the scan, MIH
(``mode="auto"``, the cost model on) and FAISS in turn, and the medians are reported. Every MIH answer is
checked equal to the scan's (distances and rows) and FAISS's distances equal to ours (FAISS runs in the first
``--faiss-rounds`` rounds only: it is the slowest). ``--probe-queries``
also times ``mode="probe"`` (the multi-index search alone, no cost model) once on that many queries, to
show what the cost model saves. ``--save-load`` times rebuilding the tables against reading them back from
a file with a SHA-256 check (the two ways an index file could give them). Prints markdown.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import deephash_ext as de

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mih_data  # noqa: E402
from _record import header  # noqa: E402

from deephash.mih import MultiIndex  # noqa: E402


def cached_codes(kind, n, bits, cache: Path | None):
    if cache is None:
        return mih_data.codes(kind, n, bits, 1000)
    p = cache / f"{kind}-{n}-{bits}.pt"
    if p.exists():
        return torch.load(p)
    cache.mkdir(parents=True, exist_ok=True)
    db, q = mih_data.codes(kind, n, bits, 1000)
    torch.save((db, q), p)
    return db, q


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def load_average() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip().split("load ")[-1]
    except Exception:  # noqa: BLE001
        return "?"


def save_load(db, bits, mi: MultiIndex, rounds: int) -> tuple[float, float, int]:
    """(rebuild s, read-and-verify s, bytes of the stored tables), medians."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "tables.bin"
        body = b"".join(t.numpy().tobytes() for t in mi.tables)
        p.write_bytes(body + hashlib.sha256(body).digest())
        del body

        def load():
            raw = bytearray(p.stat().st_size)
            with open(p, "rb") as f:
                f.readinto(raw)
            if hashlib.sha256(memoryview(raw)[:-32]).digest() != raw[-32:]:
                raise RuntimeError("checksum")
            off, out = 0, []
            for t in mi.tables:
                n = t.numel() * t.element_size()
                out.append(torch.frombuffer(raw, dtype=t.dtype, count=t.numel(), offset=off).reshape(t.shape))
                off += n
            return out

        build, read = [], []
        for _ in range(rounds):
            build.append(timed(lambda: de.mih_build(db, bits, mi.m))[0])
            read.append(timed(load)[0])
        return statistics.median(build), statistics.median(read), sum(t.numel() * t.element_size() for t in mi.tables)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=float, nargs="+", default=[1e6, 1e7])
    p.add_argument("--bits", type=int, nargs="+", default=[64, 128])
    p.add_argument("--kinds", nargs="+", default=["fmnist", "gmm", "uniform"])
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--rounds", type=int, nargs="+", default=[3, 2], help="rounds per N (the last one repeats)")
    p.add_argument("--faiss-rounds", type=int, default=1, help="FAISS in the first rounds only (it is the slowest)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--probe-queries", type=int, default=100)
    p.add_argument("--no-faiss", action="store_true")
    p.add_argument("--save-load", action="store_true")
    p.add_argument("--cache", type=Path, default=None, help="folder for the generated codes")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    faiss = None
    if not a.no_faiss:
        import faiss

        faiss.omp_set_num_threads(a.threads)
    print(header("Multi-index hashing against the scan and FAISS"))
    print(f"- load average at the start: {load_average()}")
    print()
    print("| set | N | bits | m | k | scan ms | MIH ms | FAISS ms | MIH vs scan | MIH vs FAISS | per round "
          "| probe-only ms/q | scan ms/q |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    for i, n in enumerate(int(x) for x in a.n):
        rounds = a.rounds[min(i, len(a.rounds) - 1)]
        for bits in a.bits:
            for kind in a.kinds:
                db, q = cached_codes(kind, n, bits, a.cache)
                q = q[:a.queries]
                tb, mi = timed(lambda: MultiIndex(db, bits))
                notes.append(f"{kind} N={n:.0e} {bits}b: m={mi.m}, build {tb:.2f} s, tables "
                             f"{mi.nbytes / 2**20:.0f} MiB = {mi.nbytes / db.numel():.1f}x the codes "
                             f"({db.numel() / 2**20:.0f} MiB)")
                index = None
                if faiss is not None:
                    index = faiss.IndexBinaryFlat(bits)
                    index.add(db.numpy())
                for k in a.k:
                    ts, tm, tf = [], [], []
                    for round_ in range(rounds):
                        t, want = timed(lambda: de.hamming_topk(q, db, k))
                        ts.append(t)
                        t, got = timed(lambda: mi.search(q, db, k))
                        tm.append(t)
                        if not (torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])):
                            raise AssertionError(f"MIH differs from the scan: {kind} N={n} {bits}b k={k}")
                        if index is not None and round_ < a.faiss_rounds:
                            t, (fd, _) = timed(lambda: index.search(q.numpy(), k))
                            tf.append(t)
                            if not (torch.from_numpy(fd) == want[0]).all():
                                raise AssertionError(f"FAISS distances differ: {kind} N={n} {bits}b k={k}")
                    s, mm = statistics.median(ts) * 1e3, statistics.median(tm) * 1e3
                    f = statistics.median(tf) * 1e3 if tf else float("nan")
                    per = sorted(y / x for x, y in zip(tm, ts))
                    probe = scan_pq = float("nan")
                    if a.probe_queries:
                        qp = q[:a.probe_queries]
                        tp, got = timed(lambda: mi.search(qp, db, k, mode="probe"))
                        tsp, want = timed(lambda: de.hamming_topk(qp, db, k))
                        if not (torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])):
                            raise AssertionError(f"probe differs from the scan: {kind} N={n} {bits}b k={k}")
                        probe, scan_pq = tp * 1e3 / len(qp), tsp * 1e3 / len(qp)
                    print(f"| {kind} | {n:.0e} | {bits} | {mi.m} | {k} | {s:.0f} | {mm:.0f} | {f:.0f} | "
                          f"{s / mm:.2f}x | {f / mm:.2f}x | {per[0]:.2f}-{per[-1]:.2f}x | {probe:.2f} | {scan_pq:.2f} |",
                          flush=True)
                if a.save_load:
                    b, r, size = save_load(db, bits, mi, rounds)
                    notes.append(f"{kind} N={n:.0e} {bits}b: rebuild the tables {b:.2f} s; read "
                                 f"{size / 2**20:.0f} MiB of stored tables + SHA-256 {r:.2f} s")
                del index, mi
    print()
    print(f"- load average at the end: {load_average()}")
    for line in notes:
        print(f"- {line}")


if __name__ == "__main__":
    main()
