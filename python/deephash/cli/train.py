"""``deephash train``, ``encode``, ``demo`` and ``embed``: the subcommands that make embeddings, models and
codes. Each ``add_*`` adds one subcommand's parser; each ``cmd_*`` runs it."""
from __future__ import annotations

import argparse
import os
import warnings

from .args import BITS, SEED, UsageError, default_device, device, int_in, positive_float, print_table, run_dir


def add_model_args(p: argparse.ArgumentParser, bits_default: int | None = None) -> None:
    from ..models.filtered_projection import FILTERS

    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist, DIR/<class>/<i>.npy or FILE.npz")
    p.add_argument("--bits", type=BITS, default=bits_default, required=bits_default is None)
    p.add_argument("--filter", default=None, choices=list(FILTERS) + ["cheby"],
                   help="HAGCN's filter (default chebyshev; none: the all-pass ablation, default model only)")
    p.add_argument("--paper-recipe", action="store_true",
                   help="HAGCN as the paper's code trains it (same as --method hagcn-paper)")
    p.add_argument("--seed-compatible", action="store_true", help="deprecated: use --paper-recipe")
    p.add_argument("--epochs", type=int_in(0), default=None,
                   help="training epochs (hagcn: 0, the default, is its closed form; N > 0 trains it from there)")
    p.add_argument("--batch-size", type=int_in(2), default=None)
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--theta-lr", type=positive_float, default=None,
                   help="hagcn trained (--epochs N): the learning rate of its encoding filter θ")
    p.add_argument("--objective", default=None, choices=["distill", "neighbours"],
                   help="hagcn trained: what the codes learn (default distill: to rank as the closed form's "
                        "float embedding; neighbours: contrastive on input nearest neighbours)")
    p.add_argument("--freeze-theta", action="store_true", default=None,
                   help="hagcn trained: keep the encoding filter at the closed form's heat kernel (ablation)")
    p.add_argument("--order", type=int_in(1), default=None, help="filter order / number of basis functions")
    p.add_argument("--anchors", type=int_in(0), default=None,
                   help="HAGCN: training items in each item's encoding subgraph (hagcn) or joined to each step's "
                        "graph (hagcn-net)")
    p.add_argument("--subgraphs", type=int_in(1), default=None,
                   help="HAGCN: split the training items (hagcn) or each batch (hagcn-net; G must divide the "
                        "batch size) into G graphs")
    p.add_argument("--seed", type=SEED, default=0, help="training seed (initialisation, batch order)")
    p.add_argument("--split-seed", type=SEED, default=None, help="seed of the data split (default: the protocol's)")
    p.add_argument("--train-per-class", type=train_per_class, default=None, metavar="N|all",
                   help="standard protocol: training items per class drawn from the database (default 500; "
                        "Fashion-MNIST: 6000 trains on 60,000 items, all on the whole database of 69,000)")
    p.add_argument("--device", default=None,
                   help="cpu or cuda[:N], for methods that train on a device (default cuda when available)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true")


def train_per_class(v: str) -> int | str:
    return "all" if v == "all" else int_in(1)(v)


train_per_class.__name__ = "integer or 'all'"  # argparse's "invalid <name> value"


def method(args, name: str = "hagcn"):
    """The method the model arguments describe (its options checked against what it takes)."""
    from ..methods import METHODS, get_method
    from ..training.run import method_options

    if args.seed_compatible:
        warnings.warn("--seed-compatible is deprecated and will be removed; use --paper-recipe", FutureWarning,
                      stacklevel=2)
    if args.paper_recipe or args.seed_compatible:
        if name not in ("hagcn", "hagcn-paper"):
            raise ValueError(f"--paper-recipe trains HAGCN; it does not apply to --method {name}")
        name = "hagcn-paper"
    given = {k: getattr(args, k) for k in ("filter", "epochs", "batch_size", "lr", "theta_lr", "freeze_theta",
                                            "objective", "order", "anchors", "subgraphs", "device")}
    try:
        opts = method_options(name, **given)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if "device" in METHODS[name].options:
        opts["device"] = device(args.device)
    if "progress" in METHODS[name].options:
        opts["progress"] = not args.no_progress
    return get_method(name, args.bits, seed=args.seed, **opts)


def guard_divergence(args, fn):
    """Run training ``fn()``; a loss that stops being finite is the user's learning rate (or data)."""
    try:
        return fn()
    except FloatingPointError as e:
        lr = f"--lr {args.lr:g} is too large?" if args.lr is not None else "try a smaller --lr"
        raise UsageError(f"training diverged: {e} ({lr})") from e


def add_train(sub) -> None:
    from ..methods import METHODS

    t = sub.add_parser("train", help="train a hashing method (default HAGCN), encode, evaluate, write RUN/")
    add_model_args(t)
    t.add_argument("--method", default="hagcn", choices=list(METHODS),
                   help="hashing method (default hagcn); options a method does not take are refused")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--timeout", type=float, default=1800.0,
                   help="under torchrun: seconds a rank waits for the others before failing")
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    """``deephash train``; under torchrun (``WORLD_SIZE`` > 1) data-parallel, one rank per process, over
    gloo (``--device cpu``) or NCCL (``--device cuda``, one GPU per rank)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from ..training.data_parallel import run_distributed
        return run_distributed(lambda par: _train(args, par), str(args.device).startswith("cuda"), args.timeout)
    return _train(args, None)


def _train(args, parallel) -> int:
    from ..data import load_data
    from ..training.run import train_and_evaluate

    main = parallel is None or parallel.is_main
    m = method(args, args.method)
    out = run_dir(args.out)
    split = load_data(args.data, seed=args.split_seed, train_per_class=args.train_per_class)
    if not main:
        args.no_progress = True
    extra = {"data": str(args.data), "split_seed": args.split_seed, "train_per_class": args.train_per_class}
    if parallel is not None:
        extra["ranks"] = parallel.world
    metrics, _ = guard_divergence(args, lambda: train_and_evaluate(
        split, m, out, resume=args.resume, extra_config=extra, parallel=parallel))
    if main:
        print_table([{"method": f"{m.label} {m.bits}b", **metrics}])
        print(f"wrote {args.out}/model.pt, config.json, metrics.json, pr_curve.png"
              + (f" ({parallel.world} ranks)" if parallel is not None else ""))
    return 0


def add_encode(sub) -> None:
    e = sub.add_parser("encode", help="codes of embeddings with a trained model")
    e.add_argument("--model", required=True, help="RUN directory or model.pt")
    e.add_argument("--data", default="fashion-mnist")
    e.add_argument("--split", default="db", choices=["query", "db", "train"])
    e.add_argument("--split-seed", type=SEED, default=None)
    e.add_argument("--input", default=None, help="embeddings .npy [N, d] or .npz with x (and y)")
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_encode)


def cmd_encode(args) -> int:
    from ..codes import as_labels, save_codes
    from ..data import DataError, load_data, load_embeddings
    from ..methods import load_model

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


def add_demo(sub) -> None:
    d = sub.add_parser("demo", help="HAGCN against an LSH floor (Fashion-MNIST, 64 bits by default)")
    add_model_args(d, bits_default=64)
    d.add_argument("--embeddings", default="pixels", choices=["pixels", "self-supervised"],
                   help="hash --data as it is, or SimCLR embeddings of its images trained here (cached)")
    d.add_argument("--quick", action="store_true", help="with --embeddings self-supervised: the seconds-long setting")
    d.add_argument("--out", default="runs/demo")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    """``deephash demo``: the arguments checked here; :mod:`deephash.training.demo` runs it."""
    from ..training.demo import run_demo, self_supervised_data

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("demo runs in one process; for data-parallel training use torchrun ... -m deephash train")
    m = method(args)
    out = run_dir(args.out)
    if args.quick and args.embeddings != "self-supervised":
        raise UsageError("--quick applies to --embeddings self-supervised only")
    data = args.data
    if args.embeddings == "self-supervised":
        data = self_supervised_data(args.data, out, quick=args.quick, seed=args.seed,
                                    device=device(args.device or default_device()), progress=not args.no_progress)
    guard_divergence(args, lambda: run_demo(data, m, out, seed=args.seed, split_seed=args.split_seed,
                                            train_per_class=args.train_per_class,
                                            resume=args.resume, embeddings=args.embeddings))
    return 0


def add_embed(sub) -> None:
    m = sub.add_parser("embed", help="embed an image folder with a torchvision backbone, or train a "
                                     "self-supervised one on a data set's images (--self-supervised)")
    m.add_argument("--images", default=None, help="DIR/<class>/<image>")
    m.add_argument("--out", required=True)
    m.add_argument("--arch", default="vit_b_16")
    m.add_argument("--weights", default=None, help="torchvision state_dict file of the backbone")
    m.add_argument("--untrained", action="store_true", help="random weights (for tests)")
    m.add_argument("--batch-size", type=int_in(1), default=None,
                   help="default 32 (torchvision), 128 (--self-supervised training)")
    m.add_argument("--image-size", type=int_in(16), default=224)
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
    g.add_argument("--seed", type=SEED, default=0)
    g.add_argument("--device", default=default_device())
    g.add_argument("--no-progress", action="store_true")
    m.set_defaults(func=cmd_embed)


def cmd_embed(args) -> int:
    if args.self_supervised:
        return _cmd_embed_self_supervised(args)
    for opt in ("quick", "epochs", "width", "lr", "subset", "data"):
        if getattr(args, opt) not in (None, False):
            raise ValueError(f"--{opt} applies to --self-supervised only")
    if args.images is None:
        raise ValueError("--images DIR is needed (or --self-supervised)")
    from ..data.embed import embed_images

    x = embed_images(args.images, args.out, arch=args.arch, weights=args.weights, untrained=args.untrained,
                     batch_size=args.batch_size or 32, image_size=args.image_size)
    print(f"wrote {x.shape[0]} embeddings of {x.shape[1]} dimensions to {args.out}")
    return 0


def _cmd_embed_self_supervised(args) -> int:
    from ..data.selfsup import config_from, self_supervised_embeddings

    for opt, given in (("images", args.images is not None), ("weights", args.weights is not None),
                       ("untrained", args.untrained)):
        if given:
            raise ValueError(f"--{opt} does not apply to --self-supervised (it trains on --data's images)")
    config = config_from(quick=args.quick, epochs=args.epochs, width=args.width, batch_size=args.batch_size,
                         lr=args.lr, subset=args.subset)
    info = self_supervised_embeddings(args.data or "fashion-mnist", args.out, config=config, seed=args.seed,
                                      device=device(args.device), progress=not args.no_progress,
                                      clamp_subset=args.subset is None)  # --quick's 1,024 on a smaller set
    how = f"trained in {info['train_seconds']:.1f} s" if info["trained"] else f"from the cache ({info['path']})"
    x = info["x"]
    print(f"wrote {x.shape[0]} self-supervised embeddings of {x.shape[1]} dimensions to {args.out} ({how})")
    return 0
