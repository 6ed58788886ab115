"""HAGCN training-step time per filter: deephash_ext ops against their pure-PyTorch references.

    python benchmarks/bench_hagcn_step.py --out benchmarks/results/hagcn_step.md

A step is forward (per-step graph, spectral filter, decoder, hash head), loss, backward and Adam
update on a batch of 128 Fashion-MNIST training items (784-d), exactly as `deephash train` runs it.
The same model and batch are timed with ``graphs.set_backend("ops")`` and ``("reference")`` in one
process, alternating, and the median step time is reported.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _record import emit, header  # noqa: E402

from deephash.models import graphs  # noqa: E402
from deephash.data import load_data  # noqa: E402
from deephash.methods import get_method  # noqa: E402
from deephash.models.hagcn import FILTERS  # noqa: E402


def time_steps(model, opt, x, targets, steps: int) -> list[float]:
    """Time full training steps; the model and optimiser are restored after each (untimed), so every
    step sees the same weights whatever the backend's gradients."""
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        o = model.forward_train(x, generator=torch.Generator().manual_seed(0))
        loss, _ = model.loss(o, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out.append(time.perf_counter() - t)
        model.load_state_dict(model_state)
        opt.load_state_dict(opt_state)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--filters", nargs="+", default=list(FILTERS))
    p.add_argument("--modes", nargs="+", default=["default", "paper"], choices=["default", "paper"])
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    split = load_data("fashion-mnist")
    x_train = split.x_train
    rows = []
    for mode in args.modes:
        for filt in args.filters:
            name = "hagcn-paper" if mode == "paper" else "hagcn-net"
            model, targets = get_method(name, args.bits, filter=filt).build(x_train)
            cfg = model.config
            opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))
            x = torch.as_tensor(x_train[:cfg["batch_size"]])
            tb = targets[:cfg["batch_size"]] if targets is not None else None
            times = {"ops": [], "reference": []}
            for backend in ("ops", "reference"):  # warm-up
                graphs.set_backend(backend)
                time_steps(model, opt, x, tb, 2)
            for _ in range(args.rounds):
                for backend in ("ops", "reference"):
                    graphs.set_backend(backend)
                    times[backend] += time_steps(model, opt, x, tb, args.steps)
            graphs.set_backend("ops")
            ops, ref = statistics.median(times["ops"]), statistics.median(times["reference"])
            rows.append((filt, "paper recipe" if mode == "paper" else "default", ops * 1e3, ref * 1e3, ref / ops))
            print(rows[-1], flush=True)
    lines = [header("HAGCN training step: deephash_ext ops vs pure-PyTorch references"),
             f"Batch {cfg['batch_size']}, {args.bits} bits, {args.threads} thread(s), median of "
             f"{args.rounds} x {args.steps} steps per backend (interleaved), forward + backward + Adam.",
             "Default graphs: batch + 128 anchors (256 nodes); paper recipe: the batch (128 nodes).",
             "The paper recipe's gcn and lanczos steps use no spectral op (ratio ~1 by construction).",
             "", "| filter | mode | ops ms/step | reference ms/step | reference / ops |", "|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.2f} |" for r in rows]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
