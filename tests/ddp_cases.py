"""What tests/test_data_parallel.py computes in one process and tests/ddp_worker.py on each rank."""
import json
import os

import torch

import conftest
from deephash.methods import get_method
from deephash.training.run import train_and_evaluate

HAGCN_NAMES = ("hagcn-net", "hagcn-paper")


def one_step_gradients(case: dict, x, y, parallel=None):
    """One training step's loss (the global one) and float64 gradients, on the global batch
    ``case["batch"]`` (indices into x); with ``parallel``, the gradients summed over its ranks."""
    torch.manual_seed(0)
    name = case["method"]
    idx = torch.as_tensor(case["batch"], dtype=torch.int64)
    m = get_method(name, case["bits"], seed=3, **case["options"])
    if name in HAGCN_NAMES:
        net, targets = m.build(x)
        net = net.double()
        targets = None if targets is None else targets.double()
        xx = torch.as_tensor(x, dtype=torch.float64)
        loss = m.step_loss(net, xx, targets, idx, generator=torch.Generator().manual_seed(11), parallel=parallel)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(m.seed)
            xn, yy = m.setup(x, y if m.supervised else None, parallel)
        net = m.net.double()
        xn = xn.double()
        if getattr(m, "_targets", None) is not None:
            m._targets = m._targets.double()
        loss = m.batch_loss(xn, yy, idx, 7, parallel)
    loss.backward()
    if parallel is not None:
        parallel.sync_gradients(net.parameters())
        total = parallel.total(loss)
    else:
        total = float(loss.detach())
    return total, {k: p.grad.detach().clone() for k, p in net.named_parameters()}


def load_split(path):
    from deephash.data import load_data
    return load_data(str(path))


def train_run(spec: dict, split, run_dir, parallel=None, kill_after=None):
    """Train ``spec`` ({"method", "bits", "options"}) with train_and_evaluate into ``run_dir``; with
    ``kill_after``, interrupt it after that epoch and resume. Returns (method, metrics)."""
    make = lambda: get_method(spec["method"], spec["bits"], seed=5, **spec["options"])  # noqa: E731
    if kill_after is not None:
        try:
            train_and_evaluate(split, make(), run_dir, parallel=parallel, on_epoch=conftest.kill_after(kill_after))
            raise AssertionError("the run was not interrupted")
        except conftest.Killed:
            pass
    m = make()
    metrics, _ = train_and_evaluate(split, m, run_dir, parallel=parallel, resume=kill_after is not None)
    return m, metrics


def train_cases(cfg: dict, parallel, rank: int) -> None:
    """Each of cfg["runs"] ({"tag", "spec", "kill_after"}) under ``parallel``, into cfg["out"]/TAG.rank{rank}
    (rank 0 alone should write there); the rank's final model and metrics go to cfg["out"]/rank{rank}.TAG.*"""
    split = load_split(cfg["data"])
    for run in cfg["runs"]:
        tag = run["tag"]
        m, metrics = train_run(run["spec"], split, os.path.join(cfg["out"], f"{tag}.rank{rank}"), parallel,
                               run.get("kill_after"))
        torch.save(m.state_dict(), os.path.join(cfg["out"], f"rank{rank}.{tag}.pt"))
        with open(os.path.join(cfg["out"], f"rank{rank}.{tag}.json"), "w") as f:
            json.dump({k: v for k, v in metrics.items() if k != "train_seconds"}, f)


def flat_state(state: dict, prefix: str = "") -> dict:
    """The tensors of a (nested) state dict, by dotted key."""
    out = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out.update(flat_state(v, f"{prefix}{k}."))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
    return out


def resume_mismatch(cfg: dict, parallel, rank: int) -> str:
    """Resume cfg["runs"][0] with another learning rate: rank 0 refuses the checkpoint; every rank must
    raise (none waits). Returns what this rank raised."""
    from deephash.training.data_parallel import DataParallelError

    run = cfg["runs"][0]
    spec = {**run["spec"], "options": {**run["spec"]["options"], "lr": 0.5}}
    m = get_method(spec["method"], spec["bits"], seed=5, **spec["options"])
    try:
        train_and_evaluate(load_split(cfg["data"]), m, os.path.join(cfg["out"], f"{run['tag']}.rank{rank}"),
                           parallel=parallel, resume=True)
    except (ValueError, DataParallelError) as e:
        return f"{type(e).__name__}: {e}"
    return "no error"

