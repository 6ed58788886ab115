"""Multi-index hashing against our scan (hamming_topk) and FAISS IndexBinaryFlat, interleaved.

For each code set (benchmarks/mih_data.py: Fashion-MNIST-derived and Gaussian-mixture codes, which have
neighbourhood structure, and uniform random codes, which have none), N and bits: the tables are built
once (timed, their memory counted); then for each k, ``--rounds`` rounds each call the scan, MIH
(``mode="auto"``, the cost model on) and FAISS in turn, and the medians are reported. Every MIH answer is
checked equal to the scan's (distances and rows) and FAISS's distances equal to ours. FAISS is the slowest
side: it runs in the first ``--faiss-rounds`` rounds only, on the first ``--faiss-queries`` queries (per N),
and its time is scaled to the full batch (a flat scan's cost is linear in the queries). ``--probe-queries``
(per N) also times ``mode="probe"`` (the multi-index search alone, no cost model) once on that many
queries, to show what the cost model saves. ``--save-load`` times the two ways an index file could give
the tables: rebuilding them from the codes, against mapping them from the file and checking their
CRC-32s per 64 MiB block (what a version-2 index file does for its codes). Prints markdown; all times
are of one thread unless ``--threads`` says otherwise.
"""
from __future__ import annotations

import argparse
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import torch

import deephash_ext as de

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mih_data  # noqa: E402
from _record import header  # noqa: E402

from deephash.search.mih import MultiIndex  # noqa: E402


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


def save_load(db, bits, mi: MultiIndex, rounds: int) -> tuple[float, float, float, int]:
    """(rebuild s, map-and-check s, write s, bytes of the stored tables), medians."""
    block = 64 << 20
    with tempfile.TemporaryDirectory(dir=os.environ.get("MIH_TMP")) as d:
        p = Path(d) / "tables.bin"

        def write():
            crcs = []
            with open(p, "wb") as f:
                for t in mi.tables:
                    raw = memoryview(t.numpy()).cast("B")
                    for s in range(0, len(raw), block):
                        crcs.append(zlib.crc32(raw[s:s + block]))
                        f.write(raw[s:s + block])
                f.flush()
                os.fsync(f.fileno())
            return crcs

        def load(crcs):
            with open(p, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            view, off, out, i = memoryview(mm), 0, [], 0
            for t in mi.tables:
                n = t.numel() * t.element_size()
                for s in range(off, off + n, block):
                    if zlib.crc32(view[s:min(off + n, s + block)]) != crcs[i]:
                        raise RuntimeError("checksum")
                    i += 1
                # Read-only like an index file's mapping (the warning about it says so).
                out.append(torch.frombuffer(view[off:off + n], dtype=t.dtype, count=t.numel()).reshape(t.shape)
                           if n else t.new_empty(t.shape))
                off += n
            return out

        build, read, wrote = [], [], []
        for _ in range(rounds):
            build.append(timed(lambda: de.mih_build(db, bits, mi.m))[0])
            t, crcs = timed(write)
            wrote.append(t)
            t, back = timed(lambda: load(crcs))
            read.append(t)
            del back
        size = sum(t.numel() * t.element_size() for t in mi.tables)
        return statistics.median(build), statistics.median(read), statistics.median(wrote), size


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=float, nargs="+", default=[1e6, 1e7])
    p.add_argument("--bits", type=int, nargs="+", default=[64, 128])
    p.add_argument("--kinds", nargs="+", default=["fmnist", "gmm", "uniform"])
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--rounds", type=int, nargs="+", default=[3, 2], help="rounds per N (the last one repeats)")
    p.add_argument("--faiss-rounds", type=int, default=1, help="FAISS in the first rounds only (it is the slowest)")
    p.add_argument("--faiss-queries", type=int, nargs="+", default=[1000, 100],
                   help="FAISS on the first queries only, per N (the last one repeats); scaled to --queries")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--probe-queries", type=int, nargs="+", default=[100, 20], help="per N (the last one repeats)")
    p.add_argument("--no-faiss", action="store_true")
    p.add_argument("--save-load", action="store_true")
    p.add_argument("--cache", type=Path, default=None, help="folder for the generated codes")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", message="The given buffer is not writable")
    faiss = None
    if not a.no_faiss:
        import faiss

        faiss.omp_set_num_threads(a.threads)
    print(header("Multi-index hashing against the scan and FAISS"))
    print(f"- load average at the start: {load_average()}")
    print()
    print(f"- threads: {a.threads} (torch and FAISS); Q = {a.queries}; FAISS timed on the first "
          f"{a.faiss_queries} queries per N, scaled to Q; probe-only on the first {a.probe_queries} per N")
    print()
    print("| set | N | bits | m | k | scan ms | MIH ms | FAISS ms | MIH vs scan | MIH vs FAISS | per round "
          "| probe-only ms/q | scan ms/q |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    for i, n in enumerate(int(x) for x in a.n):
        rounds = a.rounds[min(i, len(a.rounds) - 1)]
        nf = min(a.queries, a.faiss_queries[min(i, len(a.faiss_queries) - 1)])
        npq = a.probe_queries[min(i, len(a.probe_queries) - 1)]
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
                            t, (fd, _) = timed(lambda: index.search(q[:nf].numpy(), k))
                            tf.append(t * len(q) / nf)
                            if not (torch.from_numpy(fd) == want[0][:nf]).all():
                                raise AssertionError(f"FAISS distances differ: {kind} N={n} {bits}b k={k}")
                    s, mm = statistics.median(ts) * 1e3, statistics.median(tm) * 1e3
                    f = statistics.median(tf) * 1e3 if tf else float("nan")
                    per = sorted(y / x for x, y in zip(tm, ts))
                    probe = scan_pq = float("nan")
                    if npq:
                        qp = q[:npq]
                        tp, got = timed(lambda: mi.search(qp, db, k, mode="probe"))
                        tsp, want = timed(lambda: de.hamming_topk(qp, db, k))
                        if not (torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])):
                            raise AssertionError(f"probe differs from the scan: {kind} N={n} {bits}b k={k}")
                        probe, scan_pq = tp * 1e3 / len(qp), tsp * 1e3 / len(qp)
                    print(f"| {kind} | {n:.0e} | {bits} | {mi.m} | {k} | {s:.0f} | {mm:.0f} | {f:.0f} | "
                          f"{s / mm:.2f}x | {f / mm:.2f}x | {per[0]:.2f}-{per[-1]:.2f}x | {probe:.2f} | {scan_pq:.2f} |",
                          flush=True)
                if a.save_load:
                    b, r, w, size = save_load(db, bits, mi, rounds)
                    notes.append(f"{kind} N={n:.0e} {bits}b: rebuild the tables {b:.2f} s; stored instead: "
                                 f"{size / 2**20:.0f} MiB more in the file ({size / (db.numel() + 8 * n):.1f}x the "
                                 f"codes and ids), written + CRC-32 + fsync {w:.2f} s, mapped + CRC-32 checked "
                                 f"{r:.2f} s (page cache warm)")
                del index, mi
    print()
    print(f"- load average at the end: {load_average()}")
    for line in notes:
        print(f"- {line}")


if __name__ == "__main__":
    main()
