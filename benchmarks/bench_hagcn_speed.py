"""The default HAGCN's cost on Fashion-MNIST: fit time (median of rounds), peak memory and the codes' quality,
encoding throughput, and its batched spectral ops against their pure-PyTorch references, with the paper
recipe's epoch time beside it.

    OMP_NUM_THREADS=2 python benchmarks/bench_hagcn_speed.py --threads 2 --out benchmarks/results/hagcn-speed-X.md
    OMP_NUM_THREADS=2 python benchmarks/bench_hagcn_speed.py --threads 2 --train-per-class 6000 --fit-only

- fit: ``hagcn`` (default options, 64 bits) on the training items (``--train-per-class``: the standard
  protocol's 500 per class, 5,000 items, by default; 6000: 60,000 items), median of ``--rounds`` fits;
  the process's peak resident memory after them (``getrusage`` maxrss: the whole process, the 70,000
  images included); the codes' mAP@1000 / mAP@all on the protocol's queries and database;
- the paper recipe (``hagcn-paper``, the paper code's model and training loop as deephash runs it): the
  median epoch time over ``--paper-epochs`` epochs on the same items;
- encoding: all 70,000 items (queries + database), items/s, with ``graphs.set_backend("ops")`` and
  ``("reference")`` alternating over ``--rounds``;
- the ops on that path, alone, ops against references (medians of ``--rounds``): the encoding subgraphs
  (``normalized_laplacian`` and ``spectral_filter`` on ``[70000, 9, 9]``); and one training graph's
  chebyshev filter: on the sparse graph by its recurrence (what the fit runs) against the dense graph
  through ``spectral_filter`` (an eigendecomposition: the fit before 2026-12-08), the latter once.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _record import emit, header  # noqa: E402

import deephash_ext  # noqa: E402
import deephash_ext.reference as ref  # noqa: E402
from deephash.models import graphs  # noqa: E402
from deephash.data import load_data  # noqa: E402
from deephash.methods import get_method  # noqa: E402
from deephash.metrics import mean_average_precision  # noqa: E402
from deephash.models import filtered_projection as fp  # noqa: E402


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def alternate(fns: dict, rounds: int) -> dict:
    """Median seconds of each function, run in turn ``rounds`` times (ops and references interleaved)."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def with_backend(name: str, fn):
    def run():
        graphs.set_backend(name)
        try:
            fn()
        finally:
            graphs.set_backend("ops")
    return run


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--paper-epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-per-class", default=None, help="N or all (the standard protocol's; default 500)")
    p.add_argument("--fit-only", action="store_true", help="the fit, its memory and its codes' quality only")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    per_class = a.train_per_class if a.train_per_class in (None, "all") else int(a.train_per_class)
    split = load_data("fashion-mnist", train_per_class=per_class)
    x_train = torch.from_numpy(split.x_train)
    items = torch.from_numpy(np.concatenate([split.x_query, split.x_db]))
    lines = [header("HAGCN (default model): fit, encoding and its spectral ops"),
             f"Fashion-MNIST standard protocol: {len(x_train)} training items, {len(items)} items encoded, "
             f"784-d; {a.bits} bits; medians of {a.rounds} rounds where rounds are stated.", ""]

    fits, cpus = [], []
    for _ in range(a.rounds):
        m = get_method("hagcn", a.bits)
        c = cpu_seconds()
        fits.append(timed(lambda: m.fit(x_train)))
        cpus.append(cpu_seconds() - c)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    fit_s, passes = statistics.median(fits), m.config["passes"]
    qc, dc = m.encode(split.x_query), m.encode(split.x_db)
    quality = [mean_average_precision(qc, dc, split.y_query, split.y_db, k) for k in (1000, 0)]
    lines += ["## Fit", "", "(fits, s: every round's wall seconds; CPU s: the median fit's user + system seconds over "
              "all threads, which a loaded machine does not inflate as much)", "",
              "| model | fit | per pass / epoch | fits, s | CPU s | peak RSS | mAP@1000 / mAP@all |",
              "|---|---|---|---|---|---|---|",
              f"| hagcn chebyshev ({passes} passes, ITQ {m.config['iterations']} iterations; {len(x_train)} "
              f"items) | {fit_s:.1f} s | {fit_s / passes:.1f} s per pass | {', '.join(f'{t:.1f}' for t in fits)} | "
              f"{statistics.median(cpus):.1f} | {rss:.2f} GiB | {quality[0]:.4f} / {quality[1]:.4f} |"]
    print("\n".join(lines), flush=True)
    if a.fit_only:
        emit(lines, a.out)
        return

    paper = get_method("hagcn-paper", a.bits)
    net, _ = paper.build(x_train, targets=False)
    opt = torch.optim.Adam(net.parameters(), lr=float(net.config["lr"]))
    bs = int(net.config["batch_size"])
    epoch_s = []
    for e in range(a.paper_epochs):
        perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(e))
        t = time.perf_counter()
        for s in range(max(1, len(x_train) // bs)):
            loss = paper.step_loss(net, x_train, None, perm[s * bs:(s + 1) * bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epoch_s.append(time.perf_counter() - t)
    med = statistics.median(epoch_s)
    lines += [f"| hagcn-paper chebyshev (batch {bs}, {net.config['epochs']} epochs by default) | "
              f"{med * int(net.config['epochs']):.1f} s for its default epochs | {med:.2f} s per epoch "
              f"(median of {a.paper_epochs}) | | | | |", ""]
    print("\n".join(lines[-2:]), flush=True)

    enc = alternate({"ops": with_backend("ops", lambda: m.encode(items)),
                     "reference": with_backend("reference", lambda: m.encode(items))}, a.rounds)
    lines += ["## Encoding 70,000 items (projection, subgraph of 9 nodes each, rotation, sign)", "",
              "| backend | seconds | items/s |", "|---|---|---|"]
    lines += [f"| {k} | {v:.2f} | {len(items) / v:,.0f} |" for k, v in enc.items()]
    lines += [f"| ratio reference / ops | {enc['reference'] / enc['ops']:.2f}x | |", ""]
    print("\n".join(lines[-6:]), flush=True)

    # The encoding subgraphs' ops alone, in float64 as encoding runs them.
    f = fp.unit(items.double() - m.mean.double()) @ m.W.double()
    k = m.config["anchors"]
    zu, au = fp.unit(f), fp.unit(m.anchor_z.double())
    near = [fp.sq_dists(zu[s:s + 8192], au).topk(k, 1, largest=False) for s in range(0, len(f), 8192)]
    dist, idx = torch.cat([n.values for n in near]), torch.cat([n.indices for n in near])
    nodes = torch.cat([zu[:, None], au[idx]], 1)
    A = torch.exp(-fp.sq_dists(nodes, nodes) / dist.mean(1)[:, None, None]) * (1 - torch.eye(k + 1, dtype=f.dtype))
    e0 = torch.zeros(len(f), k + 1, 1, dtype=f.dtype)
    e0[:, 0] = 1
    theta = fp.heat_theta("chebyshev", m.config["local_heat"], fp.LOCAL_ORDER, torch.float64)
    L = deephash_ext.normalized_laplacian(A)
    sub = alternate({"normalized_laplacian ops": lambda: deephash_ext.normalized_laplacian(A),
                     "normalized_laplacian reference": lambda: ref.normalized_laplacian(A),
                     "spectral_filter ops": lambda: deephash_ext.spectral_filter(e0, L, theta, "chebyshev"),
                     "spectral_filter reference": lambda: ref.spectral_filter(e0, L, theta, "chebyshev")}, a.rounds)
    lines += ["## The batched spectral ops on the encoding path, ops against references", "",
              "| call | shape | ops s | reference s | reference / ops |", "|---|---|---|---|---|"]
    for name, shape in (("normalized_laplacian", f"[{len(f)}, {k + 1}, {k + 1}] float64"),
                        ("spectral_filter chebyshev", f"[{len(f)}, {k + 1}, {k + 1}] x [.., 1] float64")):
        op = name.split()[0]
        o, r = sub[f"{op} ops"], sub[f"{op} reference"]
        lines.append(f"| {name} | {shape} | {o:.3f} | {r:.3f} | {r / o:.2f}x |")
    print("\n".join(lines[-7:]), flush=True)

    # One training graph's filter (the first pass's graph): the sparse recurrence the fit runs, and the
    # dense graph's eigendecomposition as the fit ran it before (once: about a minute).
    F = fp.unit(x_train - x_train.mean(0)).double()
    G = fp.knn_graph(F, m.config["knn"])
    th = fp.heat_theta("chebyshev", m.config["heat"], m.config["order"])
    sparse = alternate({"s": lambda: fp.filtered_signal(F, G, "chebyshev", th, 0)}, a.rounds)["s"]
    LG = deephash_ext.normalized_laplacian(G.to_dense()[None])
    dense = timed(lambda: deephash_ext.spectral_filter(F[None], LG, th, "chebyshev"))
    lines += ["", f"## One training graph's chebyshev filter (first pass, {len(F)} nodes, 784 signals, float64)", "",
              "| how | seconds |", "|---|---|",
              f"| sparse kNN graph ({G._nnz()} entries), three-term recurrence (median of {a.rounds}) | {sparse:.3f} |",
              f"| dense [1, {len(F)}, {len(F)}] graph, spectral_filter (eigendecomposition), once | {dense:.3f} |",
              f"| ratio | {dense / sparse:.0f}x |"]
    emit(lines, a.out)


if __name__ == "__main__":
    main()
