"""The ``deephash`` command line (also ``python -m deephash``).

    deephash train  --data D --bits B [--method NAME] [--filter F] [--epochs E] [--paper-recipe] --out RUN
                    (hagcn: --epochs 0 is the closed form, N > 0 trains it: [--lr] [--theta-lr] [--objective O]
                    [--freeze-theta])
    torchrun --nproc-per-node N -m deephash train ...      (data-parallel: deephash.training.data_parallel)
    deephash encode --model RUN (--data D --split query|db|train | --input X.npy|X.npz) --out CODES.npz
    deephash index  --codes CODES.npz --out DB.idx
    deephash search --index DB.idx|SHARD_DIR --codes Q.npz [-k K] [--out RESULTS.npz] [--grid PNG [--data D]]
    deephash shard  --index DB.idx --shards N|N1,N2,... --out SHARD_DIR
    deephash eval   --query Q.npz --db DB.npz [--out DIR]
    deephash demo   [--data fashion-mnist] [--bits 64] [--embeddings pixels|self-supervised [--quick]] [--out runs/demo]
    deephash embed  --images DIR --out FILE.npz [--weights PATH | --untrained] [--arch vit_b_16]
    deephash embed  --self-supervised [--data fashion-mnist] [--quick] [--epochs E] [--width W] --out FILE.npz
    deephash report RUN [RUN ...] [--out FILE.html] [--grid PNG] [--data D]

Every subcommand also takes ``--debug``. The subcommands live by group: :mod:`~deephash.cli.train` (train,
encode, demo, embed), :mod:`~deephash.cli.search` (index, search, shard, eval), :mod:`~deephash.cli.report`
(report); :mod:`~deephash.cli.args` holds what they share. This module builds the parser and runs a command.

``D`` is ``fashion-mnist`` (default), a folder ``DIR/<class>/<i>.npy`` or a ``.npz`` file (see
:mod:`deephash.data`). Codes files (:mod:`deephash.codes`), model files, index files and run directories
are described in docs/formats.md.

Errors. A user error (a bad argument, a missing or unreadable path, a file of the wrong content, training
that diverges) prints ONE line ``deephash CMD: error: ...`` naming the argument or file and what is wrong,
and exits with status 2. User errors are the ``ValueError`` subclasses the package raises where it detects
the problem (:class:`~deephash.cli.args.UsageError`, ``DataError``, ``IndexError_``, ``ReportError``, ...),
``EmbedError`` and operating-system errors (``OSError``: the message names the path). Anything else is a
bug in deephash: it prints one line ``deephash CMD: internal error: ...`` and exits with status 1.
``--debug`` prints the traceback as well, in both cases.
"""
from __future__ import annotations

import argparse
import sys
import traceback

import torch

from .args import Parser, UsageError
from .report import add_report
from .search import add_eval, add_index, add_search, add_shard
from .train import add_demo, add_embed, add_encode, add_train

__all__ = ["main", "build_parser", "user_errors", "UsageError"]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="deephash", description="HAGCN binary hash codes and Hamming search")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (add_train, add_encode, add_index, add_search, add_shard, add_eval, add_demo, add_embed, add_report):
        add(sub)
    for sp in sub.choices.values():
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of an error")
    return p


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one line; an ``OSError`` as ``PATH: reason``."""
    if isinstance(e, OSError) and e.filename is not None:
        paths = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        msg = f"{paths}: {e.strerror or e}"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())


def user_errors() -> tuple:
    """The exception types that mean bad input rather than a bug in deephash."""
    from ..data.embed import EmbedError

    return ValueError, OSError, EmbedError, torch.OutOfMemoryError


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"deephash {args.command}: interrupted", file=sys.stderr)
        return 130
    except user_errors() as e:
        if debug:
            traceback.print_exc()
        print(f"deephash {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug: one line for the user, the traceback with --debug
        if debug:
            traceback.print_exc()
        print(f"deephash {args.command}: internal error: {type(e).__name__}: {_one_line(e)} "
              f"(a bug in deephash; --debug shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
