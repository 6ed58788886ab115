"""The default HAGCN's six filters against ITQ: mAP@1000 and mAP@all at 16/32/64 bits, per data set.

    python benchmarks/bench_hagcn_filters.py --data fashion-mnist digits-800 digits-all \
        --out benchmarks/results/hagcn-filters-X.md

Data sets: ``fashion-mnist`` (standard protocol, ``--split-seed``), ``digits-800`` and ``digits-all``
(scikit-learn's 8x8 digits, 1,797 items: 30 queries per class, the rest the database; training items are
80 per class drawn from the database, or all of it; needs scikit-learn). Every row fits the method on
the training split with the defaults (nothing is tuned per data set), encodes queries and database and
ranks with ties by database index. The record is rewritten after every row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _record import emit, header  # noqa: E402

from deephash.data import Split, load_data  # noqa: E402
from deephash.methods import get_method  # noqa: E402
from deephash.metrics import mean_average_precision  # noqa: E402
from deephash.models.filtered_projection import FILTERS  # noqa: E402


def digits_split(train_per_class: int | None, queries_per_class: int = 30, seed: int = 0) -> Split:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    q, tr = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        q.append(idx[:queries_per_class])
        rest = idx[queries_per_class:]
        tr.append(rest if train_per_class is None else rest[:train_per_class])
    q, tr = np.sort(np.concatenate(q)), np.sort(np.concatenate(tr))
    db = np.setdiff1d(np.arange(len(x)), q)
    return Split(x[tr], y[tr], x[q], y[q], x[db], y[db], source=f"digits-{len(tr)}").validate()


def load(name: str, split_seed: int | None) -> Split:
    if name == "digits-800":
        return digits_split(80, seed=split_seed or 0)
    if name == "digits-all":
        return digits_split(None, seed=split_seed or 0)
    return load_data(name, seed=split_seed)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", nargs="+", default=["fashion-mnist"])
    p.add_argument("--filters", nargs="+", default=list(FILTERS), choices=list(FILTERS))
    p.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64])
    p.add_argument("--split-seed", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--jsonl", default=None, help="also append one JSON line per row here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    lines = [header("HAGCN filters against ITQ"), "",
             "mAP@1000 / mAP@all (ties by database index); fit: seconds to fit (one thread), per bits.", ""]
    for name in a.data:
        split = load(name, a.split_seed)
        lines += [f"## {name} (split seed {a.split_seed if a.split_seed is not None else 'default'}): "
                  f"{len(split.x_train)} training, {len(split.x_query)} queries, {len(split.x_db)} database, "
                  f"{split.dim}-d", "",
                  "| method | " + " | ".join(f"{b} bits" for b in a.bits) + " | fit s |",
                  "|---|" + "---|" * (len(a.bits) + 1)]
        for method, opts in [("itq", {})] + [("hagcn", {"filter": f}) for f in a.filters]:
            cells, fits = [], []
            for b in a.bits:
                m = get_method(method, b, seed=a.seed, **opts)
                t0 = time.perf_counter()
                m.fit(split.x_train)
                fits.append(time.perf_counter() - t0)
                qc, dc = m.encode(split.x_query), m.encode(split.x_db)
                r = [mean_average_precision(qc, dc, split.y_query, split.y_db, k) for k in (1000, 0)]
                cells.append(f"{r[0]:.4f} / {r[1]:.4f}")
                if a.jsonl:
                    with open(a.jsonl, "a") as f:
                        f.write(json.dumps({"data": name, "split_seed": a.split_seed, "method": method, **opts,
                                            "bits": b, "map1000": r[0], "map_all": r[1], "fit_s": fits[-1]}) + "\n")
            label = "ITQ" if method == "itq" else f"hagcn {opts['filter']}"
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {'/'.join(f'{t:.1f}' for t in fits)} |")
            print(lines[-1], flush=True)
            if a.out:  # an interrupted run keeps what it measured
                with open(a.out, "w") as f:
                    f.write("\n".join(lines) + "\n")
        lines.append("")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
