"""Training, checkpointing, encoding and evaluation of HAGCN.

Deterministic under ``seed``: the model's initialisation, the anchors, the training-set graph codes, each
epoch's shuffle and any random start vector come from generators derived from ``seed`` (and the epoch), so
``resume`` after a kill continues exactly where an uninterrupted run would be. A checkpoint
(``RUN/checkpoint.pt``: model, optimiser, targets, epoch, history) is written after every epoch.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import graphs
from .data import Split
from .metrics import METRIC_KEYS, evaluate, plot_pr_curve
from .models.hagcn import HAGCN
from .progress import training_progress

CHECKPOINT = "checkpoint.pt"


def _gen(*parts: int) -> torch.Generator:
    s = 0
    for p in parts:
        s = (s * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(s)


def build_model(config: dict, x_train, seed: int = 0) -> tuple[HAGCN, torch.Tensor | None]:
    """A freshly initialised model (deterministic in ``seed``) and its training targets (default config)."""
    torch.manual_seed(seed)
    model = HAGCN.from_config(config)
    x = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
    model.prepare(x, generator=_gen(seed, 1))
    targets = None
    if not model.seed_compatible:
        feats = graphs.cosine_features(x, model.mean)
        targets = graphs.spectral_codes(feats, model.bits, k=config.get("knn"), seed=seed)
    return model, targets


def fit(config: dict, x_train, *, seed: int = 0, run_dir=None, resume: bool = False, device: str = "cpu",
        progress: bool = True, epoch_callback=None) -> tuple[HAGCN, list]:
    """Train HAGCN on ``x_train``; returns the model (on CPU) and per-epoch mean losses.

    ``run_dir`` receives ``checkpoint.pt`` after each epoch; ``resume=True`` continues from it.
    ``epoch_callback(epoch, model)`` runs after each checkpoint (tests use it to interrupt a run).
    """
    x = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
    n = x.shape[0]
    epochs, bs = int(config["epochs"]), int(config["batch_size"])
    ckpt = Path(run_dir) / CHECKPOINT if run_dir is not None else None
    model, targets = build_model(config, x, seed)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(config["lr"]))
    start, history = 0, []
    if resume and ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if state["config"] != json.loads(json.dumps(config)) or state["seed"] != seed:
            raise ValueError(f"{ckpt}: the checkpoint was written with another configuration or seed")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        targets = state["targets"]
        start, history = int(state["epoch"]), list(state["history"])
    x = x.to(device)
    targets = targets.to(device) if targets is not None else None
    steps = max(1, n // bs) if n >= bs else 1
    bar = training_progress(f"HAGCN {model.filter} {model.bits}b", epochs, steps, start) if progress else None
    model.train()
    for epoch in range(start, epochs):
        g = _gen(seed, 2, epoch)
        perm = torch.randperm(n, generator=g).to(device)
        total = 0.0
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs] if n >= bs else perm
            out = model.forward_train(x[idx], generator=g)
            loss, parts = model.loss(out, targets[idx] if targets is not None else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = loss.item()
            if not math.isfinite(lv):
                raise FloatingPointError(f"the loss became {lv} at epoch {epoch + 1}, step {s + 1}")
            total += lv
            if bar is not None:
                bar.step(epoch + 1, lv)
        history.append(total / steps)
        if bar is not None:
            bar.end_epoch(epoch + 1, history[-1])
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"config": config, "seed": seed, "epoch": epoch + 1, "history": history,
                        "model": model.state_dict(), "optim": opt.state_dict(),
                        "targets": targets.cpu() if targets is not None else None}, tmp)
            os.replace(tmp, ckpt)
        if epoch_callback is not None:
            epoch_callback(epoch + 1, model)
    if bar is not None:
        bar.close()
    model.eval()
    return model.cpu(), history


def save_model(model: HAGCN, path) -> None:
    torch.save({"format": "deephash.HAGCN", "config": model.config, "state_dict": model.state_dict()}, path)


def read_model_file(path) -> tuple[Path, object]:
    """``RUN`` or ``RUN/model.pt`` read once: (the file's path, what it holds)."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    try:
        return p, torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{p}: cannot read a deephash model ({e})") from e


def load_model(path) -> HAGCN:
    return hagcn_from_saved(*read_model_file(path))


def hagcn_from_saved(p: Path, blob) -> HAGCN:
    if not isinstance(blob, dict) or blob.get("format") != "deephash.HAGCN":
        raise ValueError(f"{p}: not a deephash HAGCN model file")
    model = HAGCN.from_config(blob["config"])
    if "anchor_x" in blob["state_dict"]:
        model.anchor_x = torch.empty_like(blob["state_dict"]["anchor_x"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model


def format_table(rows: list[dict], keys=METRIC_KEYS, first: str = "method") -> str:
    head = f"| {first} | " + " | ".join(keys) + " |"
    sep = "|" + "---|" * (len(keys) + 1)
    body = [f"| {r[first]} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def train_and_evaluate(split: Split, config: dict, run_dir, *, seed: int = 0, resume: bool = False,
                       device: str = "cpu", progress: bool = True, extra_config: dict | None = None):
    """The ``deephash train`` job: fit, encode query and database, evaluate, write the run directory."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model, history = fit(config, split.x_train, seed=seed, run_dir=run, resume=resume, device=device,
                         progress=progress)
    train_s = time.time() - t0
    save_model(model, run / "model.pt")
    qc, dc = model.encode(split.x_query), model.encode(split.x_db)
    metrics, curve = evaluate(qc, dc, split.y_query, split.y_db, model.bits)
    metrics["train_seconds"] = train_s
    metrics["loss_history"] = history
    with open(run / "config.json", "w") as f:
        json.dump({"model": model.config, "seed": seed, "device": device, "torch": torch.__version__,
                   **(extra_config or {})}, f, indent=2)
    with open(run / "metrics.json", "w") as f:
        json.dump({**metrics, "pr_curve": curve}, f, indent=2)
    label = f"HAGCN {model.filter}{' (seed-compatible)' if model.seed_compatible else ''} {model.bits}b"
    plot_pr_curve({label: curve}, run / "pr_curve.png")
    return model, metrics, curve
