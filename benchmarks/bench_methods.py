"""Every hashing method x code length on one data set: one markdown table and a PR-curve plot.

Each method (HAGCN and its paper recipe included) is fitted on the training split (supervised methods
get the training labels only), then encodes the queries and the database, by
:func:`deephash.training.run.fit_and_evaluate` as ``deephash train`` does; the metrics come from
:mod:`deephash.metrics` (the deephash_ext ops): mAP@1000, mAP@all, tie-aware mAP@all, P@r2 (a query
with nothing within radius 2 counts 0), and the training time (fit only, seconds). A method that refuses
the data (e.g. hybridhash on embeddings that are not images) gets a row saying so.

    python benchmarks/bench_methods.py                                  # all methods, 16/32/64 bits, Fashion-MNIST
    python benchmarks/bench_methods.py --methods itq csq --bits 64 --epochs 10
    python benchmarks/bench_methods.py --data my.npz --output table.md --plot pr.png
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deephash import metrics  # noqa: E402
from deephash.data import load_data  # noqa: E402
from deephash.methods import METHODS, get_method  # noqa: E402
from deephash.training.run import fit_and_evaluate  # noqa: E402

COLUMNS = ("mAP@1000", "mAP@all", "mAP@all-tie-aware", "P@r2")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001
        pass
    return platform.processor() or "unknown"


def run_one(name, bits, split, args):
    kwargs = {"seed": args.seed}
    if "epochs" in METHODS[name].options:
        if args.epochs is not None:
            kwargs["epochs"] = args.epochs
        if name == "hybridhash" and args.hybrid_epochs is not None:
            kwargs["epochs"] = args.hybrid_epochs
    method = get_method(name, bits, **kwargs)
    try:
        m, curve = fit_and_evaluate(method, split)
    except ValueError as e:
        return {"method": name, "bits": bits, "error": str(e)}, None
    row = {"method": name, "bits": bits, "train_s": m["train_seconds"], **{k: m[k] for k in COLUMNS},
           "P@r2-empty": m["P@r2-empty"]}
    return row, curve


def markdown(rows) -> str:
    lines = ["| method | bits | mAP@1000 | mAP@all | mAP@all tie-aware | P@r2 | train (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['bits']} | refused: {r['error']} | | | | |")
        else:
            lines.append(f"| {r['method']} | {r['bits']} | {r['mAP@1000']:.4f} | {r['mAP@all']:.4f} | "
                         f"{r['mAP@all-tie-aware']:.4f} | {r['P@r2']:.4f} | {r['train_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64])
    ap.add_argument("--data", default="fashion-mnist", help="fashion-mnist, a .npz file or an embedding folder")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of every deep method (default: each method's own)")
    ap.add_argument("--hybrid-epochs", type=int, default=None, help="epochs of hybridhash (default: --epochs, else its own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--pr-bits", type=int, default=None, help="code length of the PR plot (default: the largest of --bits)")
    ap.add_argument("--plot", default=None, help="PR-curve PNG (default: pr-<data>-<bits>bits.png in the current folder)")
    ap.add_argument("--output", default=None, help="also write the markdown report here")
    ap.add_argument("--json", default=None, help="also write the rows and PR curves as JSON here")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    pr_bits = args.pr_bits or max(args.bits)
    split = load_data(args.data)
    print(f"# {split.source}: train {len(split.x_train)}, query {len(split.x_query)}, database {len(split.x_db)}, "
          f"dim {split.dim}", flush=True)
    rows, curves = [], {}
    for bits in args.bits:
        for name in args.methods:
            row, curve = run_one(name, bits, split, args)
            rows.append(row)
            if curve is not None and bits == pr_bits:
                curves[name] = curve
            msg = row.get("error") or " ".join(f"{k} {row[k]:.4f}" for k in COLUMNS) + f" train {row['train_s']:.1f}s"
            print(f"{name:>10} {bits:3d} bits: {msg}", flush=True)

    table = markdown(rows)
    print()
    print(table)
    safe = os.path.basename(str(args.data)).replace(".", "-") or "data"
    plot = args.plot or f"pr-{safe}-{pr_bits}bits.png"
    if curves:
        metrics.plot_pr_curve(curves, plot, title=f"{split.source}, {pr_bits} bits")
        print(f"\nPR curves at {pr_bits} bits: {plot}")
    if args.output:
        head = [f"# Hashing methods on {split.source}", "",
                f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
                f"- machine: {cpu_model()}, torch threads {torch.get_num_threads()}, {os.cpu_count()} logical CPUs",
                f"- torch {torch.__version__}, Python {platform.python_version()}",
                f"- command: `python {' '.join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:]))}`",
                f"- split: train {len(split.x_train)}, query {len(split.x_query)}, database {len(split.x_db)}, dim {split.dim}",
                "- P@r2: a query with no item within Hamming radius 2 counts precision 0; train = fit time in seconds",
                "", table, "", f"PR curves at {pr_bits} bits: `{os.path.basename(plot)}`", ""]
        with open(args.output, "w") as f:
            f.write("\n".join(head))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "pr_curves": curves}, f)
    return rows


if __name__ == "__main__":
    main()
