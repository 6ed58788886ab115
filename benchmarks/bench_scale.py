"""Scale benchmark: an index of N random codes on disk (default 1e8 x 64 bits = 1.6 GB with ids).

Build (chunked adds), save, open (time and resident memory after open), exact search of Q queries
(k nearest) by one process against the index cut into 2 shards searched by 2 gloo ranks, and range
search against a numpy scan and FAISS's range_search. Every phase runs in a fresh process, so the
memory figures are that phase's alone; repeats interleave the contenders.

    python benchmarks/bench_scale.py --dir /tmp/dh-scale --n 100000000 --out benchmarks/results/scale-cpu.md

The files (index, shards: about 3.2 GB at 1e8) stay in --dir until --clean.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "python")]


def rss() -> dict:
    """Resident memory of this process, MiB: total, anonymous (heap), file-backed (mapped pages), peak."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(val.split()[0]) / 1024
    return out


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


# ---------------------------------------------------------------------------------------------
# Phases (each one process)


def phase_build(a) -> dict:
    from deephash.search.index import Index

    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    nbytes = (a.bits + 7) // 8
    idx = Index(a.bits)
    t = time.perf_counter()
    for lo in range(0, a.n, a.chunk):
        n = min(a.chunk, a.n - lo)
        idx.add(torch.randint(0, 256, (n, nbytes), dtype=torch.uint8, generator=g))
    build = time.perf_counter() - t
    peak_build = rss()["VmHWM"]
    path = Path(a.dir) / "db.idx"
    save, _ = timed(lambda: idx.save(path))
    after_save = rss()
    shard, _ = timed(lambda: idx.shard(2, Path(a.dir) / "shards2"))
    return {"build_s": build, "save_s": save, "shard2_s": shard, "file_bytes": path.stat().st_size,
            "peak_build_mib": peak_build, "rss_after_save": after_save}


def phase_open(a) -> dict:
    from deephash.search.index import Index

    torch.set_num_threads(a.threads)
    path = Path(a.dir) / "db.idx"
    before = rss()
    times = []
    for _ in range(5):
        t, idx = timed(lambda: Index.load(path))
        times.append(t)
    after = rss()
    verify, blocks = timed(idx.verify)
    return {"open_s": times, "rss_before": before, "rss_after_open": after, "rows": len(idx),
            "verify_s": verify, "blocks": blocks, "rss_after_verify": rss()}


def _queries(a, nbytes):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (a.queries, nbytes), dtype=torch.uint8, generator=g)


def phase_search1(a) -> dict:
    from deephash.search.index import Index

    torch.set_num_threads(a.threads)
    idx = Index.load(Path(a.dir) / "db.idx", verify="none")
    q = _queries(a, idx.nbytes)
    idx.search(q[:16], a.k)  # page the mapping in
    t, (d, ids) = timed(lambda: idx.search(q, a.k))
    np.savez(Path(a.dir) / f"res1-{a.threads}.npz", d=d.numpy(), ids=ids.numpy())
    return {"search_s": t, "rss": rss()}


def phase_search_shard(a) -> dict:
    import torch.distributed as dist

    from deephash.search.distributed import ShardedIndex

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=3600))
    try:
        s = ShardedIndex(Path(a.dir) / "shards2", verify="none")
        q = _queries(a, s.nbytes) if s.rank == 0 else None
        s.search(q[:16] if q is not None else None, a.k, dst=0)
        dist.barrier()
        t, res = timed(lambda: s.search(q, a.k, dst=0))
        if s.rank == 0:
            np.savez(Path(a.dir) / "res2.npz", d=res[0].numpy(), ids=res[1].numpy())
            return {"search_s": t, "rss": rss()}
        return {}
    finally:
        dist.destroy_process_group()


def phase_range(a) -> dict:
    import faiss

    from deephash.search.index import Index

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    idx = Index.load(Path(a.dir) / "db.idx", verify="none")
    g = torch.Generator().manual_seed(2)
    q = torch.randint(0, 256, (a.range_queries, idx.nbytes), dtype=torch.uint8, generator=g)
    codes = idx.codes.numpy()
    words = codes.view(np.uint64).reshape(-1) if idx.nbytes == 8 else None

    def numpy_scan():
        out = []
        for row in q.numpy():
            if words is not None:
                d = np.bitwise_count(words ^ row.view(np.uint64)[0])
            else:
                d = np.bitwise_count(codes ^ row).sum(1, dtype=np.int32)
            hit = np.flatnonzero(d <= a.radius)
            out.append((d[hit], hit))
        return out

    flat = faiss.IndexBinaryFlat(8 * idx.nbytes)
    add_s, _ = timed(lambda: flat.add(codes))
    times = {"ours": [], "numpy": [], "faiss": []}
    for _ in range(a.repeats):
        t, ours = timed(lambda: idx.range_search(q, a.radius))
        times["ours"].append(t)
        t, npy = timed(numpy_scan)
        times["numpy"].append(t)
        t, fs = timed(lambda: flat.range_search(q.numpy(), a.radius + 1))  # FAISS's radius is exclusive
        times["faiss"].append(t)
    lims, d, ids = ours
    same_np = all(sorted(zip(d[lims[i]:lims[i + 1]].tolist(), ids[lims[i]:lims[i + 1]].tolist()))
                  == sorted(zip(npy[i][0].tolist(), npy[i][1].tolist())) for i in range(len(q)))
    fl, fd, fi = fs
    same_faiss = np.array_equal(fl, lims.numpy()) and all(
        sorted(zip(fd[fl[i]:fl[i + 1]].astype(int).tolist(), fi[fl[i]:fl[i + 1]].tolist()))
        == sorted(zip(d[lims[i]:lims[i + 1]].tolist(), ids[lims[i]:lims[i + 1]].tolist())) for i in range(len(q)))
    return {"times": times, "hits": int(lims[-1]), "same_numpy": same_np, "same_faiss": same_faiss,
            "faiss_add_s": add_s, "faiss_version": faiss.__version__}


PHASES = {"build": phase_build, "open": phase_open, "search1": phase_search1, "search_shard": phase_search_shard,
          "range": phase_range}


# ---------------------------------------------------------------------------------------------
# Driver


def run_phase(a, name, threads=1, world=1) -> dict:
    argv = [sys.executable, __file__, "--phase", name, "--dir", a.dir, "--n", str(a.n), "--bits", str(a.bits),
            "--queries", str(a.queries), "-k", str(a.k), "--range-queries", str(a.range_queries),
            "--radius", str(a.radius), "--repeats", str(a.repeats), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": f"{ROOT}:{ROOT / 'python'}"}
    if world == 1:
        r = subprocess.run(argv, env=env, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"phase {name} failed:\n{r.stderr}")
        return json.loads(r.stdout.strip().splitlines()[-1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), GLOO_SOCKET_IFNAME="lo")
    procs = [subprocess.Popen(argv, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in range(world)]
    outs = [p.communicate() for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"phase {name} failed:\n" + "\n".join(e for _, e in outs))
    return json.loads(outs[0][0].strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=list(PHASES), default=None)
    p.add_argument("--dir", required=True)
    p.add_argument("--n", type=float, default=1e8)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--chunk", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--range-queries", type=int, default=10)
    p.add_argument("--radius", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--clean", action="store_true", help="delete --dir at the end")
    p.add_argument("--out", default=None, help="markdown record")
    a = p.parse_args()
    a.n = int(a.n)
    if a.phase:
        print(json.dumps(PHASES[a.phase](a)))
        return
    Path(a.dir).mkdir(parents=True, exist_ok=True)
    facts = {"args": vars(a)}
    if not a.skip_build:
        facts["build"] = run_phase(a, "build", threads=2)
        print("build", facts["build"], flush=True)
    facts["open"] = run_phase(a, "open")
    print("open", facts["open"], flush=True)
    runs = {"1 process, 1 thread": [], "1 process, 2 threads": [], "2 shards x 1 thread (gloo)": []}
    for _ in range(a.repeats):
        runs["1 process, 1 thread"].append(run_phase(a, "search1", threads=1))
        runs["2 shards x 1 thread (gloo)"].append(run_phase(a, "search_shard", world=2))
        runs["1 process, 2 threads"].append(run_phase(a, "search1", threads=2))
        print({k: [r["search_s"] for r in v] for k, v in runs.items()}, flush=True)
    facts["search"] = runs
    r1, r2 = np.load(Path(a.dir) / "res1-1.npz"), np.load(Path(a.dir) / "res2.npz")
    facts["search_equal"] = bool(np.array_equal(r1["d"], r2["d"]) and np.array_equal(r1["ids"], r2["ids"]))
    facts["range"] = run_phase(a, "range")
    print("range", facts["range"], flush=True)
    if a.out:
        write_record(a, facts)
    if a.clean:
        shutil.rmtree(a.dir)


def write_record(a, f) -> None:
    from benchmarks._record import header

    med = statistics.median
    b, o, s, r = f.get("build"), f["open"], f["search"], f["range"]
    lines = [header(f"Index at scale: {a.n:.0e} codes of {a.bits} bits"), ""]
    if b:
        lines += ["## Build, save, open", "",
                  "| step | time | memory |", "|---|---|---|",
                  f"| build: {a.n // a.chunk} adds of {a.chunk} codes | {b['build_s']:.1f} s | peak RSS {b['peak_build_mib']:.0f} MiB |",
                  f"| save (write {b['file_bytes'] / 2**30:.2f} GiB + CRC-32, fsync, rename) | {b['save_s']:.1f} s | RSS after {b['rss_after_save']['VmRSS']:.0f} MiB |",
                  f"| shard into 2 files | {b['shard2_s']:.1f} s | |"]
    lines += [f"| open (median of 5) | {med(o['open_s']) * 1e3:.2f} ms | RSS {o['rss_before']['VmRSS']:.0f} -> {o['rss_after_open']['VmRSS']:.0f} MiB "
              f"(anonymous {o['rss_after_open']['RssAnon']:.0f}, file-backed {o['rss_after_open']['RssFile']:.0f}) |",
              f"| verify() ({o['blocks']} blocks of 64 MiB) | {o['verify_s']:.2f} s | RSS after {o['rss_after_verify']['VmRSS']:.0f} MiB "
              f"(file-backed {o['rss_after_verify']['RssFile']:.0f}: the mapped pages read) |", ""]
    base = med([x["search_s"] for x in s["1 process, 1 thread"]])
    lines += [f"## Exact search, Q={a.queries}, k={a.k}", "",
              f"Same results in every configuration: {f['search_equal']} (1 process vs 2 shards, bit for bit).", "",
              "| configuration | median (s) | runs (s) | speed-up vs 1 process, 1 thread |", "|---|---|---|---|"]
    for name, runs in s.items():
        t = [x["search_s"] for x in runs]
        lines.append(f"| {name} | {med(t):.2f} | {', '.join(f'{x:.2f}' for x in t)} | {base / med(t):.2f}x |")
    t = r["times"]
    lines += ["", f"## Range search, {a.range_queries} queries, radius {a.radius} ({r['hits']} hits), one thread each", "",
              f"Same hits as numpy: {r['same_numpy']}; as FAISS {r['faiss_version']}: {r['same_faiss']} "
              f"(FAISS's radius is exclusive: it was given radius + 1). FAISS first copied the codes in "
              f"({r['faiss_add_s']:.1f} s).", "",
              "| implementation | median (s) | runs (s) | ratio (theirs / ours) |", "|---|---|---|---|"]
    for name in ("ours", "numpy", "faiss"):
        lines.append(f"| {name} | {med(t[name]):.2f} | {', '.join(f'{x:.2f}' for x in t[name])} | "
                     f"{med(t[name]) / med(t['ours']):.2f}x |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
