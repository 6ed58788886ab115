"""What the subcommands of the ``deephash`` command line share: the parser class, argument types, the
model and neighbour-grid options, and the checks of ``--device`` and ``--out RUN``."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch


class UsageError(ValueError):
    """A command-line argument deephash refuses; the message names it."""


class Parser(argparse.ArgumentParser):
    """Argument errors print one line (``--help`` shows the usage)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def int_in(lo: int, hi: int | None = None):
    """An argparse type: an integer in ``lo..hi``."""
    def parse(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {v!r}") from None
        if n < lo or (hi is not None and n > hi):
            allowed = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {n}")
        return n
    parse.__name__ = "integer"
    return parse


def positive_float(v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {v!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {v}")
    return x


BITS = int_in(8, 1024)
SEED = int_in(0, 2**32 - 1)  # what numpy's and torch's generators take


def device(spec: str | None) -> str:
    """``--device``: ``cpu`` or an available ``cuda[:N]`` (default: cuda when available)."""
    if spec is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        d = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device {spec}: not a device (expected cpu or cuda[:N])") from None
    if d.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {spec}: deephash trains on cpu or cuda[:N]")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available here")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: there are {torch.cuda.device_count()} CUDA devices")
    return str(d)


def default_device() -> str:
    """Where self-supervised training runs unless ``--device`` says: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_dir(path) -> Path:
    """``--out RUN``: a directory that may exist (``--resume``) but must not be a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"--out {p}: exists and is not a directory")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--out {p}: {parent} is not a directory")
            break
    return p


def print_table(rows, first="method"):
    from ..metrics import format_table

    print(format_table(rows, first=first))


GRID_DEFAULTS = {"data": "fashion-mnist", "per_class": 2, "seed": 0}


def grid_args(p: argparse.ArgumentParser, data_default, only_with_grid: bool = False) -> None:
    """The neighbour grid's options. ``only_with_grid``: they default to None, so that giving one without
    ``--grid`` can be refused (see :func:`grid_options`)."""
    unset = only_with_grid
    p.add_argument("--data", default=None if unset else data_default,
                   help="the data set of the codes (the grid's pictures and labels)"
                   + (f"; default {GRID_DEFAULTS['data']}" if unset else ""))
    p.add_argument("--split-seed", type=SEED, default=None)
    p.add_argument("--per-class", type=int, default=None if unset else GRID_DEFAULTS["per_class"],
                   help=f"grid queries per class (default {GRID_DEFAULTS['per_class']})")
    p.add_argument("--seed", type=SEED, default=None if unset else GRID_DEFAULTS["seed"],
                   help=f"seed of the grid's query draw (default {GRID_DEFAULTS['seed']})")


def grid_options(args) -> dict:
    """``search``'s grid options, defaults filled in; given without ``--grid`` they would do nothing, so
    they are refused."""
    given = {"--data": args.data, "--split-seed": args.split_seed, "--per-class": args.per_class, "--seed": args.seed}
    if not args.grid:
        named = [opt for opt, v in given.items() if v is not None]
        if named:
            raise UsageError(f"{', '.join(named)}: only the neighbour grid uses {'them' if len(named) > 1 else 'it'} "
                             f"(add --grid PNG)")
        return {}
    return {key: GRID_DEFAULTS[key] if getattr(args, key) is None else getattr(args, key) for key in GRID_DEFAULTS}
