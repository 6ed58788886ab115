"""The trained HAGCN's training path: the batched subgraph ops forward + backward against their pure-PyTorch
references, a training step and an epoch, in the same run.

    python benchmarks/bench_hagcn_trained.py --model CLOSED_FORM_MODEL.pt --data fashion-mnist [--out FILE.md]

``--model``: a fitted closed-form ``hagcn`` model file (``deephash train --out RUN`` writes RUN/model.pt) of
the data's training split; training starts from it as ``--epochs N`` does after the fit. Times are medians
over ``--reps`` (one thread); the spectral ops are timed on the subgraphs of one training batch
(``--batch-size`` items and as many partners, ``[2B, m+1, m+1]`` in float64, the training dtype):
``normalized_laplacian`` then ``spectral_filter`` (which decomposes with our ``eigh``) with the learnable θ,
forward and backward to the edge weights and θ.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _record import emit, header  # noqa: E402

from bench_hagcn_filters import load  # noqa: E402
from deephash.models import graphs  # noqa: E402
from deephash.training.data_parallel import ONE_PROCESS  # noqa: E402
from deephash.methods import load_model  # noqa: E402
from deephash.methods.hagcn import _gen  # noqa: E402
from deephash.models import filtered_projection as fp  # noqa: E402
from deephash.models import trained_projection as tp  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--split-seed", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--epoch-rounds", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    split = load(a.data, a.split_seed)
    m = load_model(a.model)
    x = torch.as_tensor(split.x_train)
    F = graphs.cosine_features(x.double(), m.mean.double())
    enc = tp.Encoder(m.W, m.R, m.anchor_z, F, m.fitted["anchors"], m.fitted["local_heat"])
    enc.set_scale()
    g = torch.Generator().manual_seed(0)
    P = torch.randperm(F.shape[0], generator=g)[:a.batch_size]
    nn_, mutual = tp.input_neighbours(F, tp.TARGET_KNN)
    Q = tp.draw_partners(nn_, mutual, P, g)
    # The subgraphs of the batch as training builds them (edge weights from the model's projections).
    items = torch.cat([P, Q])
    bank = enc.bank()
    z = (F[items] @ enc.W).detach()
    zu, au = fp.unit(z), fp.unit(bank)
    d = fp.sq_dists(zu, au).masked_fill(fp.sq_dists(zu, au) < 1e-9, float("inf"))
    d, i = d.topk(enc.m, dim=1, largest=False)
    nodes = torch.cat([zu[:, None], au[i]], 1)
    eye = torch.eye(enc.m + 1, dtype=torch.float64)
    A0 = torch.exp(-fp.sq_dists(nodes, nodes) / d.mean(1)[:, None, None]) * (1 - eye)
    e0 = torch.zeros(A0.shape[0], enc.m + 1, 1, dtype=torch.float64)
    e0[:, 0] = 1

    def ops_path():
        A = A0.clone().requires_grad_()
        theta = enc.filter.theta()
        w = graphs.spectral_filter(e0, graphs.normalized_laplacian(A), theta, "chebyshev")
        w.sum().backward()

    teacher = enc.teacher()
    enc.straight_through = True  # the default objective (distill) as training runs it

    def step():
        loss = tp.step_loss(enc, enc.bank(), P, Q, nn_, teacher, ONE_PROCESS)
        enc.zero_grad()
        loss.backward()

    # The backends alternate, rep by rep, so that the shared machine's load falls on both alike.
    times = {(b, what): [] for b in ("ops", "reference") for what in ("ops", "step")}
    for r in range(a.reps + 1):
        for backend in ("ops", "reference"):
            graphs.set_backend(backend)
            try:
                for what, fn in (("ops", ops_path), ("step", step)):
                    if what == "step" and r > max(3, a.reps // 4):
                        continue
                    t0 = time.perf_counter()
                    fn()
                    if r:  # the first round warms up
                        times[backend, what].append(time.perf_counter() - t0)
            finally:
                graphs.set_backend("ops")
    rows = [(b, statistics.median(times[b, "ops"]), statistics.median(times[b, "step"])) for b in ("ops", "reference")]
    epochs = {"ops": [], "reference": []}
    for _ in range(a.epoch_rounds):  # alternating, as above
        for backend in ("ops", "reference"):
            graphs.set_backend(backend)
            try:
                e = tp.Encoder(m.W, m.R, m.anchor_z, F, m.fitted["anchors"], m.fitted["local_heat"])
                cfg = {**tp.TRAIN_DEFAULTS, "epochs": 1, "batch_size": a.batch_size}
                t0 = time.perf_counter()
                tp.train(e, cfg, 0, _gen, ONE_PROCESS)
                epochs[backend].append(time.perf_counter() - t0)
            finally:
                graphs.set_backend("ops")
    epoch = {b: statistics.median(t) for b, t in epochs.items()}
    shape = f"[{A0.shape[0]}, {enc.m + 1}, {enc.m + 1}]"
    lines = [header("Trained HAGCN: training path timings"), "",
             f"- data: {a.data} (split seed {a.split_seed}), {F.shape[0]} training items; model {a.model}",
             f"- batch {a.batch_size} items + {a.batch_size} partners: subgraphs {shape} float64; one thread; "
             f"medians of {a.reps} (ops) and {max(3, a.reps // 4)} (steps), the backends alternating; the "
             f"epoch (one epoch of training from the closed form with the default options, its setup included: "
             f"input neighbours, teacher, scale, two held-out evaluations): median of {a.epoch_rounds}, alternating", "",
             "| backend | normalized_laplacian + spectral_filter fwd+bwd (ms) | training step fwd+bwd (ms) | "
             "epoch incl. setup (s) |", "|---|---|---|---|"]
    for backend, t_ops, t_step in rows:
        lines.append(f"| {backend} | {1e3 * t_ops:.2f} | {1e3 * t_step:.1f} | {epoch[backend]:.1f} |")
    lines += ["", f"ops faster than references: subgraph ops {rows[1][1] / rows[0][1]:.2f}x, step "
              f"{rows[1][2] / rows[0][2]:.2f}x, epoch {epoch['reference'] / epoch['ops']:.2f}x", ""]
    emit(lines, a.out)


if __name__ == "__main__":
    main()
