"""``deephash train --method NAME``: fit any method of :data:`METHODS`, encode, evaluate, write the run.

The run directory holds what the HAGCN job writes: ``model.pt`` (``HashMethod.save``), ``config.json``,
``metrics.json`` (the metrics of :func:`deephash.metrics.evaluate`, ``train_seconds``, the PR curve) and
``pr_curve.png``. :func:`load_model` reads either kind of ``model.pt`` (a method's or HAGCN's).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..data import Split
from ..metrics import evaluate, plot_pr_curve
from . import METHODS, get_method
from .base import HashMethod


def method_options(name: str, **given) -> dict:
    """The given options (``None`` = not given) that method ``name`` takes; others are refused."""
    cls = METHODS[name]
    opts = {k: v for k, v in given.items() if v is not None}
    bad = sorted(k for k in opts if k not in cls.options)
    if bad:
        raise ValueError(f"{name} has no option {', '.join('--' + b.replace('_', '-') for b in bad)}")
    return opts


def train_and_evaluate(split: Split, name: str, bits: int, run_dir, *, seed: int = 0, options: dict | None = None,
                       extra_config: dict | None = None):
    """Fit method ``name`` on the training split (labels only for supervised methods), encode queries and
    database, evaluate, and write the run directory. Returns ``(method, metrics, curve)``."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    method = get_method(name, bits, seed=seed, **(options or {}))
    t0 = time.time()
    method.fit(split.x_train, split.y_train if method.supervised else None)
    train_s = time.time() - t0
    method.save(run / "model.pt")
    qc, dc = method.encode(split.x_query), method.encode(split.x_db)
    metrics, curve = evaluate(qc, dc, split.y_query, split.y_db, bits)
    metrics["train_seconds"] = train_s
    with open(run / "config.json", "w") as f:
        json.dump({"model": method.config, "seed": seed, "torch": torch.__version__, **(extra_config or {})},
                  f, indent=2, default=str)
    with open(run / "metrics.json", "w") as f:
        json.dump({**metrics, "pr_curve": curve}, f, indent=2)
    plot_pr_curve({f"{name} {bits}b": curve}, run / "pr_curve.png")
    return method, metrics, curve


def load_model(path):
    """A trained model from ``RUN`` or ``RUN/model.pt``: a :class:`HashMethod` or a HAGCN model."""
    from ..train import hagcn_from_saved, read_model_file

    p, blob = read_model_file(path)
    if isinstance(blob, dict) and "method" in blob:
        return HashMethod.from_saved(blob, p)
    return hagcn_from_saved(p, blob)
