"""A training run of any hashing method: fit, encode, evaluate, and the run directory.

:func:`fit_and_evaluate` fits a method on a split's training part (labels only for supervised methods),
encodes queries and database and evaluates them (:func:`deephash.metrics.evaluate`); the comparison
benchmark uses it as it is. :func:`train_and_evaluate` does the same and writes the run directory
(docs/formats.md): ``model.pt`` (:meth:`HashMethod.save`), ``config.json``, ``metrics.json`` (the metrics,
``train_seconds``, the loss per epoch where the method trains in epochs, the PR curve), ``pr_curve.png``,
and, for a method that trains in epochs, ``checkpoint.pt`` after every epoch (:class:`Checkpoint`), from
which ``resume=True`` continues. Under data-parallel training (``parallel=``, :mod:`deephash.training.data_parallel`)
rank 0 alone evaluates and writes these files.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..data import Split
from ..methods import METHODS
from ..methods.base import HashMethod, describe_load_error, load_weights
from ..metrics import evaluate, plot_pr_curve

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
        try:
            state = load_weights(self.path, map_location=map_location)
        except Exception as e:  # noqa: BLE001 - unpickling, zip and OS errors all mean "cannot resume from it"
            raise ValueError(f"{self.path}: cannot read the checkpoint ({describe_load_error(e)}); "
                             f"delete it to start afresh") from e
        if not isinstance(state, dict) or any(k not in state for k in ("config", "seed", "epoch", "history")):
            raise ValueError(f"{self.path}: not a deephash checkpoint; delete it to start afresh")
        if _plain(state["config"]) != _plain(config) or state["seed"] != seed:
            raise ValueError(f"{self.path}: the checkpoint was written with another configuration or seed")
        return state

    @contextlib.contextmanager
    def reading(self):
        """Around putting a restored state to use: a state that does not fit is the file's fault."""
        try:
            yield
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            raise ValueError(f"{self.path}: a damaged checkpoint ({type(e).__name__}: {e}); "
                             f"delete it to start afresh") from e

    def save(self, config: dict, seed: int, epoch: int, history: list, **state) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A reader (or a resume after a kill) sees the old checkpoint or the new one, never half of one,
        # even with two writers on one run directory.
        with atomic_write(self.path) as f:
            torch.save({"config": config, "seed": seed, "epoch": epoch, "history": history, **state}, f)
        if self.on_epoch is not None:
            self.on_epoch(epoch)


def method_options(name: str, **given) -> dict:
    """The given options (``None`` = not given) that method ``name`` takes; others are refused."""
    cls = METHODS[name]
    opts = {k: v for k, v in given.items() if v is not None}
    bad = sorted(k for k in opts if k not in cls.options)
    if bad:
        hint = ""
        other, why = getattr(cls, "options_elsewhere", (None, ""))
        if other is not None and all(b in METHODS[other].options for b in bad):
            hint = f" ({why})"
        raise ValueError(f"{name} has no option {', '.join('--' + b.replace('_', '-') for b in bad)}{hint}")
    return opts


def _fit(method: HashMethod, split: Split, checkpoint, parallel) -> float:
    y_train = split.y_train if method.supervised else None
    kwargs = {}
    if checkpoint is not None and method.resumable:
        kwargs["checkpoint"] = checkpoint
    if parallel is not None and parallel.world > 1:
        if not method.data_parallel:
            raise ValueError(f"{method.name} does not train data-parallel (the methods that do: "
                             f"{', '.join(n for n, c in METHODS.items() if c.data_parallel)}); "
                             f"run it in one process")
        kwargs["parallel"] = parallel
    t0 = time.perf_counter()
    method.fit(split.x_train, y_train, **kwargs)
    return time.perf_counter() - t0


def _evaluate(method: HashMethod, split: Split, train_s: float):
    metrics, curve = evaluate(method.encode(split.x_query), method.encode(split.x_db), split.y_query, split.y_db,
                              method.bits)
    metrics["train_seconds"] = train_s
    return metrics, curve


def fit_and_evaluate(method: HashMethod, split: Split, checkpoint: Checkpoint | None = None, parallel=None):
    """Fit ``method`` on the training split, encode queries and database, evaluate.
    Returns ``(metrics, curve)``; ``metrics["train_seconds"]`` is the fit time.

    ``parallel`` (:class:`deephash.training.data_parallel.DataParallel`, every rank calling with the same split):
    the method trains data-parallel; rank 0 evaluates and every rank returns its result."""
    train_s = _fit(method, split, checkpoint, parallel)
    if parallel is None:
        return _evaluate(method, split, train_s)
    return parallel.on_main(_evaluate, method, split, train_s)


def _write_run(run: Path, method: HashMethod, metrics: dict, curve, extra_config: dict | None) -> None:
    method.save(run / "model.pt")
    with open(run / "config.json", "w") as f:
        json.dump({"model": method.config, "seed": method.seed, "torch": torch.__version__, **(extra_config or {})},
                  f, indent=2, default=str)
    with open(run / "metrics.json", "w") as f:
        json.dump({**metrics, "pr_curve": curve}, f, indent=2)
    plot_pr_curve({f"{method.label} {method.bits}b": curve}, run / "pr_curve.png")


def train_and_evaluate(split: Split, method: HashMethod, run_dir, *, resume: bool = False,
                       extra_config: dict | None = None, on_epoch=None, parallel=None):
    """The ``deephash train`` job: :func:`fit_and_evaluate`, then write the run directory ``run_dir``.
    Returns ``(metrics, curve)``.

    ``parallel``: data-parallel training (:mod:`deephash.training.data_parallel`); every rank calls with the same
    arguments, rank 0 alone reads and writes ``run_dir`` (checkpoint included) and evaluates, and every
    rank returns rank 0's result. ``on_epoch`` runs on every rank."""
    run = Path(run_dir)
    main = parallel is None or parallel.is_main
    if main:
        run.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(run / CHECKPOINT, resume=resume, on_epoch=on_epoch) if method.resumable else None
    metrics, curve = fit_and_evaluate(method, split, checkpoint, parallel)
    if getattr(method, "history", None) and getattr(method, "history_is_loss", True):
        metrics["loss_history"] = list(method.history)
    if getattr(method, "filter_response", None):  # a trained filter: g(λ) before and after
        metrics["filter_response"] = method.filter_response
    if parallel is None:
        _write_run(run, method, metrics, curve, extra_config)
    else:
        parallel.on_main(_write_run, run, method, metrics, curve, extra_config)
    return metrics, curve
