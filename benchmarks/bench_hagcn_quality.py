"""HAGCN retrieval quality: filters x bits, the default and the paper recipe, with an LSH floor.

    python benchmarks/bench_hagcn_quality.py --bits 64 --modes default paper --out benchmarks/results/x.md

Each row trains on the data set's training split (default: Fashion-MNIST, standard protocol), encodes
queries and database, and reports mAP@1000 and mAP@all (ties by index) plus the training time. The
markdown record is rewritten after every row, so an interrupted run keeps what it measured.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _record import header  # noqa: E402

from deephash.data import load_data  # noqa: E402
from deephash.methods import LSH, get_method  # noqa: E402
from deephash.metrics import mean_average_precision  # noqa: E402
from deephash.models.hagcn import FILTERS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--filters", nargs="+", default=list(FILTERS))
    p.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64])
    p.add_argument("--modes", nargs="+", default=["default", "paper"], choices=["default", "paper"])
    p.add_argument("--epochs", type=int, default=None, help="override the configurations' epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="markdown file to write")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    split = load_data(args.data)
    rows = []

    def record():
        lines = [header(f"HAGCN quality on {args.data}"),
                 f"Split: {len(split.x_train)} train / {len(split.x_query)} queries / {len(split.x_db)} database, "
                 f"{split.dim}-d. mAP over all queries, ranking ties by database index.",
                 "", "| method | mode | bits | epochs | mAP@1000 | mAP@all | train s |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.4f} | {r[5]:.4f} | {r[6]:.0f} |" for r in rows]
        text = "\n".join(lines) + "\n"
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        return text

    for bits in args.bits:
        lsh = LSH(bits, seed=args.seed).fit(split.x_train)
        qc, dc = lsh.encode(split.x_query), lsh.encode(split.x_db)
        rows.append(("LSH", "-", bits, "-", mean_average_precision(qc, dc, split.y_query, split.y_db, 1000),
                     mean_average_precision(qc, dc, split.y_query, split.y_db, 0), 0.0))
        print(rows[-1], flush=True)
        record()
        for mode in args.modes:
            for filt in args.filters:
                name = "hagcn-paper" if mode == "paper" else "hagcn-net"
                model = get_method(name, bits, seed=args.seed, filter=filt,
                                   epochs=args.epochs or None)
                t = time.time()
                model.fit(split.x_train)
                dt = time.time() - t
                qc, dc = model.encode(split.x_query), model.encode(split.x_db)
                rows.append((f"HAGCN {filt}", "paper recipe" if mode == "paper" else "default", bits,
                             model.config["epochs"], mean_average_precision(qc, dc, split.y_query, split.y_db, 1000),
                             mean_average_precision(qc, dc, split.y_query, split.y_db, 0), dt))
                print(rows[-1], flush=True)
                record()
    print(record())


if __name__ == "__main__":
    main()
