"""A training run of any hashing method: fit, encode, evaluate, and the run directory.

:func:`fit_and_evaluate` fits a method on a split's training part (labels only for supervised methods),
encodes queries and database and evaluates them (:func:`deephash.metrics.evaluate`); the comparison
benchmark uses it as it is. :func:`train_and_evaluate` does the same and writes the run directory
(docs/formats.md): ``model.pt`` (:meth:`HashMethod.save`), ``config.json``, ``metrics.json`` (the metrics,
``train_seconds``, the loss per epoch where the method trains in epochs, the PR curve), ``pr_curve.png``,
and, for a method that trains in epochs, ``checkpoint.pt`` after every epoch (:class:`Checkpoint`), from
which ``resume=True`` continues.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from .data import Split
from .methods import METHODS
from .methods.base import HashMethod
from .metrics import evaluate, plot_pr_curve

CHECKPOINT = "checkpoint.pt"


def _plain(config: dict):
    """``config`` as it reads back from JSON (tuples become lists), so a saved one compares equal."""
    return json.loads(json.dumps(config, default=str))


class Checkpoint:
    """A training state saved after every epoch (``torch.save``, replaced atomically), read to resume.

    ``restore`` returns the saved state only when ``resume`` is set and the file exists, and refuses a
    state written under another configuration or seed. ``on_epoch(epoch)`` runs after each save.
    """

    def __init__(self, path, resume: bool = False, on_epoch=None):
        self.path = Path(path)
        self.resume = resume
        self.on_epoch = on_epoch

    def restore(self, config: dict, seed: int, map_location="cpu") -> dict | None:
        if not (self.resume and self.path.exists()):
            return None
        state = torch.load(self.path, map_location=map_location, weights_only=True)
        if _plain(state["config"]) != _plain(config) or state["seed"] != seed:
            raise ValueError(f"{self.path}: the checkpoint was written with another configuration or seed")
        return state

    def save(self, config: dict, seed: int, epoch: int, history: list, **state) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"config": config, "seed": seed, "epoch": epoch, "history": history, **state}, tmp)
        os.replace(tmp, self.path)
        if self.on_epoch is not None:
            self.on_epoch(epoch)


def method_options(name: str, **given) -> dict:
    """The given options (``None`` = not given) that method ``name`` takes; others are refused."""
    cls = METHODS[name]
    opts = {k: v for k, v in given.items() if v is not None}
    bad = sorted(k for k in opts if k not in cls.options)
    if bad:
        raise ValueError(f"{name} has no option {', '.join('--' + b.replace('_', '-') for b in bad)}")
    return opts


def fit_and_evaluate(method: HashMethod, split: Split, checkpoint: Checkpoint | None = None):
    """Fit ``method`` on the training split, encode queries and database, evaluate.
    Returns ``(metrics, curve)``; ``metrics["train_seconds"]`` is the fit time."""
    y_train = split.y_train if method.supervised else None
    t0 = time.perf_counter()
    if checkpoint is not None and method.resumable:
        method.fit(split.x_train, y_train, checkpoint=checkpoint)
    else:
        method.fit(split.x_train, y_train)
    train_s = time.perf_counter() - t0
    metrics, curve = evaluate(method.encode(split.x_query), method.encode(split.x_db), split.y_query, split.y_db,
                              method.bits)
    metrics["train_seconds"] = train_s
    return metrics, curve


def train_and_evaluate(split: Split, method: HashMethod, run_dir, *, resume: bool = False,
                       extra_config: dict | None = None, on_epoch=None):
    """The ``deephash train`` job: :func:`fit_and_evaluate`, then write the run directory ``run_dir``.
    Returns ``(metrics, curve)``."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(run / CHECKPOINT, resume=resume, on_epoch=on_epoch) if method.resumable else None
    metrics, curve = fit_and_evaluate(method, split, checkpoint)
    if getattr(method, "history", None):
        metrics["loss_history"] = list(method.history)
    method.save(run / "model.pt")
    with open(run / "config.json", "w") as f:
        json.dump({"model": method.config, "seed": method.seed, "torch": torch.__version__, **(extra_config or {})},
                  f, indent=2, default=str)
    with open(run / "metrics.json", "w") as f:
        json.dump({**metrics, "pr_curve": curve}, f, indent=2)
    plot_pr_curve({f"{method.label} {method.bits}b": curve}, run / "pr_curve.png")
    return metrics, curve
