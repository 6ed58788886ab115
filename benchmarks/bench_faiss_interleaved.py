"""hamming_topk against FAISS IndexBinaryFlat, interleaved: one call of each per round, 7 rounds, medians.

On a shared machine whose speed drifts between runs, alternating the two within a run keeps the
ratio honest where bench_retrieval.py (all of ours, then all of theirs) can catch them in different
states. Q=1000, N=1e6, 64 and 128 bits, k=10/100/1000, 2 threads. Prints markdown rows:
bits | k | ours ms | FAISS ms | FAISS / ours | range of the per-round ratios.
"""
import statistics
import time

import torch

import deephash_ext as de


def main():
    import faiss  # faiss-cpu, installed with the benchmark extras

    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    g = torch.Generator().manual_seed(11)
    print("| bits | k | ours ms | FAISS ms | FAISS / ours | per-round range |")
    print("|---|---|---:|---:|---:|---:|")
    for bits in (64, 128):
        q = de.pack_bits(torch.randint(0, 2, (1000, bits), generator=g, dtype=torch.uint8))
        db = de.pack_bits(torch.randint(0, 2, (1_000_000, bits), generator=g, dtype=torch.uint8))
        index = faiss.IndexBinaryFlat(bits)
        index.add(db.numpy())
        qn = q.numpy()
        for k in (10, 100, 1000):
            de.hamming_topk(q, db, k)
            index.search(qn, k)
            ours, theirs = [], []
            for _ in range(7):
                t = time.perf_counter()
                de.hamming_topk(q, db, k)
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                index.search(qn, k)
                theirs.append(time.perf_counter() - t)
            a, b = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
            ratios = sorted(y / x for x, y in zip(ours, theirs))
            print(f"| {bits} | {k} | {a:.0f} | {b:.0f} | {b / a:.2f}x | {ratios[0]:.2f}-{ratios[-1]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
