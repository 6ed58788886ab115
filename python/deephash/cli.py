"""The ``deephash`` command line (also ``python -m deephash``).

    deephash train  --data D --bits B [--method NAME] [--filter F] [--epochs E] [--paper-recipe] --out RUN
    torchrun --nproc-per-node N -m deephash train ...      (data-parallel: deephash.data_parallel)
    deephash encode --model RUN (--data D --split query|db|train | --input X.npy|X.npz) --out CODES.npz
    deephash index  --codes CODES.npz --out DB.idx
    deephash search --index DB.idx|SHARD_DIR --codes Q.npz [-k K] [--out RESULTS.npz] [--grid PNG [--data D]]
    deephash shard  --index DB.idx --shards N|N1,N2,... --out SHARD_DIR
    deephash eval   --query Q.npz --db DB.npz [--out DIR]
    deephash demo   [--data fashion-mnist] [--bits 64] [--embeddings pixels|self-supervised [--quick]] [--out runs/demo]
    deephash embed  --images DIR --out FILE.npz [--weights PATH | --untrained] [--arch vit_b_16]
    deephash embed  --self-supervised [--data fashion-mnist] [--quick] [--epochs E] [--width W] --out FILE.npz
    deephash report RUN [RUN ...] [--out FILE.html] [--grid PNG] [--data D]

Every subcommand also takes ``--debug``.

``D`` is ``fashion-mnist`` (default), a folder ``DIR/<class>/<i>.npy`` or a ``.npz`` file (see
:mod:`deephash.data`). Codes files (:mod:`deephash.codes`), model files, index files and run directories
are described in docs/formats.md.

Errors. A user error (a bad argument, a missing or unreadable path, a file of the wrong content, training
that diverges) prints ONE line ``deephash CMD: error: ...`` naming the argument or file and what is wrong,
and exits with status 2. User errors are the ``ValueError`` subclasses the package raises where it detects
the problem (:class:`UsageError` here, ``DataError``, ``IndexError_``, ``ReportError``, ...), ``EmbedError``
and operating-system errors (``OSError``: the message names the path). Anything else is a bug in deephash:
it prints one line ``deephash CMD: internal error: ...`` and exits with status 1. ``--debug`` prints the
traceback as well, in both cases.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch


class UsageError(ValueError):
    """A command-line argument deephash refuses; the message names it."""


class _Parser(argparse.ArgumentParser):
    """Argument errors print one line (``--help`` shows the usage)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_in(lo: int, hi: int | None = None):
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


def _positive_float(v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {v!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {v}")
    return x


_bits = _int_in(8, 1024)
_SEED = _int_in(0, 2**32 - 1)  # what numpy's and torch's generators take


def _add_model_args(p: argparse.ArgumentParser, bits_default: int | None = None) -> None:
    from .models.filtered_projection import FILTERS

    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist, DIR/<class>/<i>.npy or FILE.npz")
    p.add_argument("--bits", type=_bits, default=bits_default, required=bits_default is None)
    p.add_argument("--filter", default=None, choices=list(FILTERS) + ["cheby"],
                   help="HAGCN's filter (default chebyshev; none: the all-pass ablation, default model only)")
    p.add_argument("--paper-recipe", action="store_true",
                   help="HAGCN as the paper's code trains it (same as --method hagcn-paper)")
    p.add_argument("--seed-compatible", action="store_true", help="deprecated: use --paper-recipe")
    p.add_argument("--epochs", type=_int_in(1), default=None)
    p.add_argument("--batch-size", type=_int_in(2), default=None)
    p.add_argument("--lr", type=_positive_float, default=None)
    p.add_argument("--order", type=_int_in(1), default=None, help="filter order / number of basis functions")
    p.add_argument("--anchors", type=_int_in(0), default=None,
                   help="HAGCN: training items in each item's encoding subgraph (hagcn) or joined to each step's "
                        "graph (hagcn-net)")
    p.add_argument("--subgraphs", type=_int_in(1), default=None,
                   help="HAGCN: split the training items (hagcn) or each batch (hagcn-net; G must divide the "
                        "batch size) into G graphs")
    p.add_argument("--seed", type=_SEED, default=0, help="training seed (initialisation, batch order)")
    p.add_argument("--split-seed", type=_SEED, default=None, help="seed of the data split (default: the protocol's)")
    p.add_argument("--device", default=None,
                   help="cpu or cuda[:N], for methods that train on a device (default cuda when available)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true")


def _method(args, name: str = "hagcn"):
    """The method the model arguments describe (its options checked against what it takes)."""
    from .methods import METHODS, get_method
    from .run import method_options

    if args.seed_compatible:
        warnings.warn("--seed-compatible is deprecated and will be removed; use --paper-recipe", FutureWarning,
                      stacklevel=2)
    if args.paper_recipe or args.seed_compatible:
        if name not in ("hagcn", "hagcn-paper"):
            raise ValueError(f"--paper-recipe trains HAGCN; it does not apply to --method {name}")
        name = "hagcn-paper"
    given = {k: getattr(args, k) for k in ("filter", "epochs", "batch_size", "lr", "order", "anchors", "subgraphs",
                                            "device")}
    try:
        opts = method_options(name, **given)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if "device" in METHODS[name].options:
        opts["device"] = _device(args.device)
    if "progress" in METHODS[name].options:
        opts["progress"] = not args.no_progress
    return get_method(name, args.bits, seed=args.seed, **opts)


def _device(spec: str | None) -> str:
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


def _default_device() -> str:
    """Where self-supervised training runs unless ``--device`` says: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _run_dir(path) -> Path:
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


def _guard_divergence(args, fn):
    """Run training ``fn()``; a loss that stops being finite is the user's learning rate (or data)."""
    try:
        return fn()
    except FloatingPointError as e:
        lr = f"--lr {args.lr:g} is too large?" if args.lr is not None else "try a smaller --lr"
        raise UsageError(f"training diverged: {e} ({lr})") from e


def _print_table(rows, first="method"):
    from .metrics import format_table

    print(format_table(rows, first=first))


def cmd_train(args) -> int:
    """``deephash train``; under torchrun (``WORLD_SIZE`` > 1) data-parallel, one rank per process, over
    gloo (``--device cpu``) or NCCL (``--device cuda``, one GPU per rank)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from .data_parallel import run_distributed
        return run_distributed(lambda par: _train(args, par), str(args.device).startswith("cuda"), args.timeout)
    return _train(args, None)


def _train(args, parallel) -> int:
    from .data import load_data
    from .run import train_and_evaluate

    main = parallel is None or parallel.is_main
    method = _method(args, args.method)
    out = _run_dir(args.out)
    split = load_data(args.data, seed=args.split_seed)
    if not main:
        args.no_progress = True
    extra = {"data": str(args.data), "split_seed": args.split_seed}
    if parallel is not None:
        extra["ranks"] = parallel.world
    metrics, _ = _guard_divergence(args, lambda: train_and_evaluate(
        split, method, out, resume=args.resume, extra_config=extra, parallel=parallel))
    if main:
        _print_table([{"method": f"{method.label} {method.bits}b", **metrics}])
        print(f"wrote {args.out}/model.pt, config.json, metrics.json, pr_curve.png"
              + (f" ({parallel.world} ranks)" if parallel is not None else ""))
    return 0


def cmd_encode(args) -> int:
    from .codes import as_labels, save_codes
    from .data import DataError, load_data, load_embeddings
    from .methods import load_model

    model = load_model(args.model)
    if args.input is not None:
        x, labels = load_embeddings(args.input)
    else:
        split = load_data(args.data, seed=args.split_seed)
        x, labels = getattr(split, f"x_{args.split}"), getattr(split, f"y_{args.split}")
    if x.shape[1] != model.in_dim:
        raise DataError(f"{args.input or args.data}: embeddings have {x.shape[1]} dimensions, the model takes "
                        f"{model.in_dim}")
    if labels is not None:
        as_labels(labels, f"{args.input}: y")
        if len(labels) != len(x):
            raise DataError(f"{args.input}: {len(labels)} labels (y) for {len(x)} embeddings (x)")
    codes = model.encode(x)
    save_codes(args.out, codes, model.bits, labels)
    print(f"wrote {len(codes)} codes of {model.bits} bits to {args.out}")
    return 0


def cmd_index(args) -> int:
    from .codes import load_codes
    from .index import Index

    c = load_codes(args.codes)
    if args.substrings is not None and args.kind != "mih":
        raise UsageError("--substrings applies to --kind mih only")
    idx = Index(c["bits"], kind=args.kind, m=args.substrings).add(torch.from_numpy(c["codes"]), c.get("ids"))
    idx.save(args.out)
    kind = "" if args.kind == "flat" else " (multi-index hashing: its tables are built at the first search)"
    print(f"wrote an index of {len(idx)} codes of {idx.bits} bits to {args.out}{kind}")
    return 0


def cmd_search(args) -> int:
    from .codes import load_codes, write_npz
    from .index import Index

    grid = _grid_options(args)
    if Path(args.index).is_dir():  # a shard folder: sharded search (deephash.distributed)
        if args.grid:
            raise UsageError(f"--grid: draws the neighbours of an index file; {args.index} is a shard folder")
        from .distributed import cmd_search_sharded
        return cmd_search_sharded(args, load_codes)
    for opt, value in (("--device", args.device), ("--timeout", args.timeout)):
        if value is not None:
            raise UsageError(f"{opt} applies to sharded search only (--index SHARD_DIR); {args.index} is an index file")
    idx = Index.load(args.index)
    c = load_codes(args.codes)
    if c["bits"] != idx.bits:
        raise ValueError(f"{args.codes}: {c['bits']}-bit queries, the index holds {idx.bits}-bit codes")
    dist, ids = idx.search(torch.from_numpy(c["codes"]), args.k)
    if args.out:
        write_npz(args.out, distances=dist.numpy(), ids=ids.numpy(), query_ids=c["ids"])
        print(f"wrote the {ids.shape[1]} nearest of {len(ids)} queries to {args.out}")
    for q in range(min(len(ids), args.show)):
        pairs = ", ".join(f"{int(i)}:{int(d)}" for i, d in zip(ids[q], dist[q]))
        print(f"query {int(c['ids'][q])}: {pairs}")
    if args.grid:
        from .viz import grid_for_search

        print(grid_for_search(idx, c, codes_path=args.codes, index_path=args.index, data=grid["data"], out=args.grid,
                              split_seed=args.split_seed, k=args.k, per_class=grid["per_class"], seed=grid["seed"]))
    return 0


def cmd_eval(args) -> int:
    from .codes import load_codes
    from .metrics import evaluate, plot_pr_curve

    q, db = load_codes(args.query), load_codes(args.db)
    for name, c in ((args.query, q), (args.db, db)):
        if "labels" not in c:
            raise ValueError(f"{name}: has no labels; evaluation needs them")
        if len(c["codes"]) == 0:
            raise ValueError(f"{name}: holds no codes; evaluation needs at least one query and one database item")
    if q["bits"] != db["bits"]:
        raise ValueError(f"{args.query} has {q['bits']}-bit codes, {args.db} has {db['bits']}-bit codes")
    ql, dl = q["labels"], db["labels"]
    if ql.ndim != dl.ndim or ql.shape[1:] != dl.shape[1:]:
        def kind(a):
            return "class ids" if a.ndim == 1 else f"multi-hot labels of {a.shape[1]} classes"
        raise ValueError(f"{args.query} has {kind(ql)}, {args.db} has {kind(dl)}: the labels must be of one kind")
    metrics, curve = evaluate(torch.from_numpy(q["codes"]), torch.from_numpy(db["codes"]), q["labels"],
                              db["labels"], q["bits"])
    _print_table([{"method": f"{q['bits']}-bit codes", **metrics}])
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "metrics.json", "w") as f:
            json.dump({**metrics, "pr_curve": curve}, f, indent=2)
        plot_pr_curve({f"{q['bits']} bits": curve}, out / "pr_curve.png")
        print(f"wrote {out}/metrics.json and {out}/pr_curve.png")
    return 0


def cmd_demo(args) -> int:
    from .data import load_data
    from .methods import LSH
    from .metrics import plot_pr_curve
    from .run import fit_and_evaluate, train_and_evaluate

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("demo runs in one process; for data-parallel training use torchrun ... -m deephash train")
    method = _method(args)
    out = _run_dir(args.out)
    if args.quick and args.embeddings != "self-supervised":
        raise UsageError("--quick applies to --embeddings self-supervised only")
    if args.embeddings == "self-supervised":
        args.data = _self_supervised_data(args, out)
    split = load_data(args.data, seed=args.split_seed)
    print(f"data: {args.data}: {len(split.x_train)} training, {len(split.x_query)} queries, "
          f"{len(split.x_db)} database items, {split.dim}-d")
    metrics, curve = _guard_divergence(args, lambda: train_and_evaluate(
        split, method, out / "hagcn", resume=args.resume,
        extra_config={"data": str(args.data), "split_seed": args.split_seed}))
    lsh_metrics, lsh_curve = fit_and_evaluate(LSH(args.bits, seed=args.seed), split)
    lsh_metrics.pop("train_seconds")
    rows = [{"method": f"{method.label} {args.bits}b", **metrics}, {"method": f"LSH {args.bits}b", **lsh_metrics}]
    curves = {rows[0]["method"]: curve, rows[1]["method"]: lsh_curve}
    extra = {}
    if args.embeddings == "self-supervised":  # learned embeddings: ITQ too, the baseline to beat there
        from .methods import get_method

        itq_metrics, itq_curve = fit_and_evaluate(get_method("itq", args.bits, seed=args.seed), split)
        itq_metrics.pop("train_seconds")
        rows.append({"method": f"ITQ {args.bits}b", **itq_metrics})
        curves[rows[-1]["method"]] = itq_curve
        extra = {"itq": itq_metrics, "embeddings": "self-supervised"}
    _print_table(rows)
    plot_pr_curve(curves, out / "pr_curve.png")
    with open(out / "demo.json", "w") as f:
        json.dump({"hagcn": {k: metrics[k] for k in metrics if k != "loss_history"}, "lsh": lsh_metrics,
                   "data": str(args.data), "bits": args.bits, **extra}, f, indent=2)
    print(f"wrote {out}/pr_curve.png and {out}/demo.json")
    from .report import build_report

    r = build_report([out / "hagcn"], out / "report.html", data=args.data, split_seed=args.split_seed,
                     splits={(str(args.data), args.split_seed): split}, grid_out=out / "neighbours.png")
    print("\n".join(r["notes"] + [f"wrote {r['out']}" + (f" and {r['grid']}" if r["grid"] else "")]))
    return 0


def _self_supervised_data(args, out: Path) -> str:
    """Train (or find in the cache) SimCLR embeddings of ``args.data``'s images; the .npz the demo then runs on."""
    from .selfsup import config_from, self_supervised_embeddings

    out.mkdir(parents=True, exist_ok=True)  # the run directory holds the embeddings too
    path = out / "embeddings.npz"
    info = self_supervised_embeddings(args.data, path, config=config_from(quick=args.quick), seed=args.seed,
                                      device=args.device or _default_device(), progress=not args.no_progress)
    if info["y"] is None:
        raise ValueError(f"{args.data}: the demo evaluates against labels; the data set has none")
    how = f"trained in {info['train_seconds']:.0f} s" if info["trained"] else "from the cache"
    print(f"self-supervised embeddings of {args.data} ({how}): {info['x'].shape[1]}-d, wrote {path}")
    return str(path)


def cmd_report(args) -> int:
    from .report import ReportError, build_report

    if len(args.runs) > 1 and args.out is None:
        raise ReportError("--out FILE.html is needed with several runs")
    r = build_report(args.runs, args.out or Path(args.runs[0]) / "report.html", data=args.data,
                     split_seed=args.split_seed, k=args.k, per_class=args.per_class, seed=args.seed,
                     grid_out=args.grid)
    print("\n".join(r["notes"] + [f"wrote {r['out']}" + (f" and {r['grid']}" if r["grid"] else "")]))
    return 0


def cmd_embed(args) -> int:
    if args.self_supervised:
        return _cmd_embed_self_supervised(args)
    for opt in ("quick", "epochs", "width", "lr", "subset", "data"):
        if getattr(args, opt) not in (None, False):
            raise ValueError(f"--{opt} applies to --self-supervised only")
    if args.images is None:
        raise ValueError("--images DIR is needed (or --self-supervised)")
    from .embed import embed_images

    x = embed_images(args.images, args.out, arch=args.arch, weights=args.weights, untrained=args.untrained,
                     batch_size=args.batch_size or 32, image_size=args.image_size)
    print(f"wrote {x.shape[0]} embeddings of {x.shape[1]} dimensions to {args.out}")
    return 0


def _cmd_embed_self_supervised(args) -> int:
    from .selfsup import config_from, self_supervised_embeddings

    for opt, given in (("images", args.images is not None), ("weights", args.weights is not None),
                       ("untrained", args.untrained)):
        if given:
            raise ValueError(f"--{opt} does not apply to --self-supervised (it trains on --data's images)")
    config = config_from(quick=args.quick, epochs=args.epochs, width=args.width, batch_size=args.batch_size,
                         lr=args.lr, subset=args.subset)
    info = self_supervised_embeddings(args.data or "fashion-mnist", args.out, config=config, seed=args.seed,
                                      device=args.device, progress=not args.no_progress)
    how = f"trained in {info['train_seconds']:.1f} s" if info["trained"] else f"from the cache ({info['path']})"
    x = info["x"]
    print(f"wrote {x.shape[0]} self-supervised embeddings of {x.shape[1]} dimensions to {args.out} ({how})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="deephash", description="HAGCN binary hash codes and Hamming search")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    from .methods import METHODS

    t = sub.add_parser("train", help="train a hashing method (default HAGCN), encode, evaluate, write RUN/")
    _add_model_args(t)
    t.add_argument("--method", default="hagcn", choices=list(METHODS),
                   help="hashing method (default hagcn); options a method does not take are refused")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--timeout", type=float, default=1800.0,
                   help="under torchrun: seconds a rank waits for the others before failing")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("encode", help="codes of embeddings with a trained model")
    e.add_argument("--model", required=True, help="RUN directory or model.pt")
    e.add_argument("--data", default="fashion-mnist")
    e.add_argument("--split", default="db", choices=["query", "db", "train"])
    e.add_argument("--split-seed", type=_SEED, default=None)
    e.add_argument("--input", default=None, help="embeddings .npy [N, d] or .npz with x (and y)")
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_encode)

    i = sub.add_parser("index", help="build an index file from a codes file")
    i.add_argument("--codes", required=True)
    i.add_argument("--out", required=True)
    i.add_argument("--kind", default="flat", choices=["flat", "mih"],
                   help="flat: exact scan; mih: multi-index hashing (exact, sub-linear on structured codes, CPU)")
    i.add_argument("--substrings", type=_int_in(1), default=None,
                   help="mih: the number of substrings m (default ceil(bits / log2 N))")
    i.set_defaults(func=cmd_index)

    s = sub.add_parser("search", help="k nearest codes in an index")
    s.add_argument("--index", required=True)
    s.add_argument("--codes", required=True, help="query codes file")
    s.add_argument("-k", type=_int_in(1), default=10)
    s.add_argument("--out", default=None, help="results .npz (written to exactly this path)")
    s.add_argument("--show", type=_int_in(0), default=5, help="queries to print")
    s.add_argument("--grid", default=None, metavar="PNG",
                   help="write a neighbour grid of a few queries per class (data that can be drawn)")
    _grid_args(s, data_default="fashion-mnist", only_with_grid=True)
    s.set_defaults(func=cmd_search)
    from .distributed import add_cli
    add_cli(sub, s)  # search's sharded-search options, and `deephash shard`

    v = sub.add_parser("eval", help="mAP, precision and PR curve of query codes against database codes")
    v.add_argument("--query", required=True)
    v.add_argument("--db", required=True)
    v.add_argument("--out", default=None)
    v.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="HAGCN against an LSH floor (Fashion-MNIST, 64 bits by default)")
    _add_model_args(d, bits_default=64)
    d.add_argument("--embeddings", default="pixels", choices=["pixels", "self-supervised"],
                   help="hash --data as it is, or SimCLR embeddings of its images trained here (cached)")
    d.add_argument("--quick", action="store_true", help="with --embeddings self-supervised: the seconds-long setting")
    d.add_argument("--out", default="runs/demo")
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("embed", help="embed an image folder with a torchvision backbone, or train a "
                                     "self-supervised one on a data set's images (--self-supervised)")
    m.add_argument("--images", default=None, help="DIR/<class>/<image>")
    m.add_argument("--out", required=True)
    m.add_argument("--arch", default="vit_b_16")
    m.add_argument("--weights", default=None, help="torchvision state_dict file of the backbone")
    m.add_argument("--untrained", action="store_true", help="random weights (for tests)")
    m.add_argument("--batch-size", type=_int_in(1), default=None,
                   help="default 32 (torchvision), 128 (--self-supervised training)")
    m.add_argument("--image-size", type=_int_in(16), default=224)
    g = m.add_argument_group("self-supervised (SimCLR on the data set's images; labels are never read)")
    g.add_argument("--self-supervised", action="store_true", help="train a small CNN on --data's images, cached")
    g.add_argument("--data", default=None, help="fashion-mnist (default) or a .npz of greyscale images")
    g.add_argument("--quick", action="store_true", help="seconds-long setting for tests and CI")
    # Range checks of these are SelfSupConfig's (one message for the CLI and the Python API).
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--width", type=int, default=None,
                   help="channels of the first layer (the last stage has 4x; default 8)")
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--subset", type=int, default=None, help="train on this many images (drawn with the seed)")
    g.add_argument("--seed", type=_SEED, default=0)
    g.add_argument("--device", default=_default_device())
    g.add_argument("--no-progress", action="store_true")
    m.set_defaults(func=cmd_embed)

    r = sub.add_parser("report", help="one self-contained HTML page about runs, with ITQ and LSH baselines")
    r.add_argument("runs", nargs="+", metavar="RUN", help="run directories (of deephash train / demo)")
    r.add_argument("-k", type=int, default=10, help="results per query in the neighbour grid")
    r.add_argument("--out", default=None, help="the HTML file (default RUN/report.html; needed with several runs)")
    r.add_argument("--grid", default=None, metavar="PNG", help="also write the first run's neighbour grid")
    _grid_args(r, data_default=None)
    r.set_defaults(func=cmd_report)
    for sp in sub.choices.values():
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of an error")
    return p


GRID_DEFAULTS = {"data": "fashion-mnist", "per_class": 2, "seed": 0}


def _grid_args(p: argparse.ArgumentParser, data_default, only_with_grid: bool = False) -> None:
    """The neighbour grid's options. ``only_with_grid``: they default to None, so that giving one without
    ``--grid`` can be refused (see :func:`_grid_options`)."""
    unset = only_with_grid
    p.add_argument("--data", default=None if unset else data_default,
                   help="the data set of the codes (the grid's pictures and labels)"
                   + (f"; default {GRID_DEFAULTS['data']}" if unset else ""))
    p.add_argument("--split-seed", type=_SEED, default=None)
    p.add_argument("--per-class", type=int, default=None if unset else GRID_DEFAULTS["per_class"],
                   help=f"grid queries per class (default {GRID_DEFAULTS['per_class']})")
    p.add_argument("--seed", type=_SEED, default=None if unset else GRID_DEFAULTS["seed"],
                   help=f"seed of the grid's query draw (default {GRID_DEFAULTS['seed']})")


def _grid_options(args) -> dict:
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
    from .embed import EmbedError

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
