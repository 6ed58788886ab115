"""Data-parallel training step time: one process against 2 ranks (gloo, 1 thread each) on this machine.

    python benchmarks/bench_ddp_step.py --out benchmarks/results/ddp-step-cpu-DATE.md

A step is what ``deephash train`` runs per global mini-batch: forward, loss, backward, Adam update; on 2
ranks also the gather of per-item outputs (and its backward), the gradient all-reduce and the loss
all-reduce (:mod:`deephash.training.data_parallel`). Global batch of Fashion-MNIST training items (784-d, default
batch 128), default networks: HAGCN (chebyshev, hidden 1024, 128 anchors) and DSH (hidden 1024). Training
targets of HAGCN are random codes (the step's cost does not depend on them). Every configuration runs in
fresh processes (``torch.distributed.run``'s environment: 127.0.0.1, gloo); rounds alternate 1 process
and 2 ranks; the step times of rank 0 after the warm-up steps are pooled, the median reported.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))


def worker(cfg: dict) -> None:
    import torch.distributed as dist

    from deephash.data import load_data
    from deephash.training.data_parallel import DataParallel
    from deephash.methods import get_method

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    par = None
    if world > 1:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=600))
        par = DataParallel()
    split = load_data("fashion-mnist")
    bs = cfg["batch"]
    x = torch.as_tensor(split.x_train[:cfg["pool"]])
    y = torch.as_tensor(split.y_train[:cfg["pool"]])
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if cfg["method"] == "hagcn-net":
        m = get_method("hagcn-net", cfg["bits"], seed=0, batch_size=bs)
        net, _ = m.build(x, targets=False)
        targets = torch.where(torch.randn(len(x), cfg["bits"], generator=g) > 0, 1.0, -1.0)
        if par is not None:
            par.broadcast_module(net)
        params = list(net.parameters())
        lr = float(net.config["lr"])
        step_loss = lambda idx, step: m.step_loss(net, x, targets, idx, generator=g, parallel=par)  # noqa: E731
    else:
        m = get_method(cfg["method"], cfg["bits"], seed=0, batch_size=bs, threads=1)
        xn, yy = m.setup(x, y, par)
        net, params, lr = m.net, list(m.net.parameters()), m.lr
        step_loss = lambda idx, step: m.batch_loss(xn, yy, idx, step, par)  # noqa: E731
    net.train()
    opt = torch.optim.Adam(params, lr=lr)
    times = []
    for step in range(cfg["warmup"] + cfg["steps"]):
        idx = torch.randperm(len(x), generator=g)[:bs]
        t = time.perf_counter()
        loss = step_loss(idx, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if par is not None:
            par.sync_gradients(params)
            par.total(loss)
        else:
            float(loss.detach())
        opt.step()
        times.append(time.perf_counter() - t)
    if par is None or par.is_main:
        print("TIMES " + json.dumps(times[cfg["warmup"]:]), flush=True)
    if par is not None:
        dist.destroy_process_group()


def run(cfg: dict, world: int) -> list[float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": str(world)}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(cfg)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(world)]
    outs = []
    try:
        for p in procs:
            o, _ = p.communicate(timeout=1200)
            if p.returncode != 0:
                raise RuntimeError(f"worker failed:\n{o}")
            outs.append(o)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    line = next(ln for o in outs for ln in o.splitlines() if ln.startswith("TIMES "))
    return json.loads(line[6:])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--methods", nargs="+", default=["hagcn-net", "dsh"])
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pool", type=int, default=6000, help="training items the batches are drawn from")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.worker is not None:
        worker(json.loads(args.worker))
        return
    from _record import emit, header

    torch.set_num_threads(1)
    load0 = os.getloadavg()
    t0 = time.strftime("%H:%M UTC", time.gmtime())
    times = {(m, w): [] for m in args.methods for w in (1, 2)}
    for _ in range(args.rounds):
        for m in args.methods:
            for w in (1, 2):
                cfg = {"method": m, "bits": args.bits, "batch": args.batch, "steps": args.steps,
                       "warmup": args.warmup, "pool": args.pool}
                times[(m, w)] += run(cfg, w)
    load1 = os.getloadavg()
    lines = [header("Data-parallel training step: 1 process vs 2 ranks (gloo, 1 thread each)"),
             f"- run {t0} - {time.strftime('%H:%M UTC', time.gmtime())}; load average (1 min) at start "
             f"{load0[0]:.1f}, at end {load1[0]:.1f}",
             f"- global batch {args.batch} Fashion-MNIST items (784-d), {args.bits} bits; {args.rounds} rounds "
             f"alternating 1 process and 2 ranks, each {args.warmup} warm-up + {args.steps} timed steps; "
             f"median over the pooled timed steps of rank 0",
             "",
             "| method | 1 process, ms/step | 2 ranks, ms/step | speed-up (1 process / 2 ranks) |",
             "|---|---|---|---|"]
    for m in args.methods:
        one, two = statistics.median(times[(m, 1)]), statistics.median(times[(m, 2)])
        lines.append(f"| {m} | {one * 1e3:.1f} | {two * 1e3:.1f} | {one / two:.2f} |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
