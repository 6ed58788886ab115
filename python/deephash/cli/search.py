"""``deephash index``, ``search``, ``shard`` and ``eval``: the subcommands that index codes, search them
(an index file, or a shard folder over torch.distributed) and evaluate them. Each ``add_*`` adds one
subcommand's parser; each ``cmd_*`` runs it."""
from __future__ import annotations

import datetime
import json
import math
import os
import sys
from pathlib import Path

import torch

from .args import UsageError, grid_args, grid_options, int_in, print_table


def add_index(sub) -> None:
    i = sub.add_parser("index", help="build an index file from a codes file")
    i.add_argument("--codes", required=True)
    i.add_argument("--out", required=True)
    i.add_argument("--kind", default="flat", choices=["flat", "mih"],
                   help="flat: exact scan; mih: multi-index hashing (exact, sub-linear on structured codes, CPU)")
    i.add_argument("--substrings", type=int_in(1), default=None,
                   help="mih: the number of substrings m (default ceil(bits / log2 N))")
    i.set_defaults(func=cmd_index)


def cmd_index(args) -> int:
    from ..codes import load_codes
    from ..search.index import Index

    c = load_codes(args.codes)
    if args.substrings is not None and args.kind != "mih":
        raise UsageError("--substrings applies to --kind mih only")
    idx = Index(c["bits"], kind=args.kind, m=args.substrings).add(torch.from_numpy(c["codes"]), c.get("ids"))
    idx.save(args.out)
    kind = "" if args.kind == "flat" else " (multi-index hashing: its tables are built at the first search)"
    print(f"wrote an index of {len(idx)} codes of {idx.bits} bits to {args.out}{kind}")
    return 0


def add_search(sub) -> None:
    s = sub.add_parser("search", help="k nearest codes in an index")
    s.add_argument("--index", required=True)
    s.add_argument("--codes", required=True, help="query codes file")
    s.add_argument("-k", type=int_in(1, 2**63 - 1), default=10,
                   help="neighbours per query (more than the index holds gives them all)")
    s.add_argument("--out", default=None, help="results .npz (written to exactly this path)")
    s.add_argument("--show", type=int_in(0), default=5, help="queries to print")
    s.add_argument("--grid", default=None, metavar="PNG",
                   help="write a neighbour grid of a few queries per class (data that can be drawn)")
    grid_args(s, data_default="fashion-mnist", only_with_grid=True)
    s.add_argument("--timeout", type=float, default=None,
                   help="sharded search: seconds a rank waits for the others before failing (300)")
    s.add_argument("--device", default=None,
                   help="sharded search: cpu (gloo, the default) or cuda (NCCL, one GPU per rank)")
    s.set_defaults(func=cmd_search)


def cmd_search(args) -> int:
    from ..codes import load_codes, write_npz
    from ..search.index import Index

    grid = grid_options(args)
    if Path(args.index).is_dir():  # a shard folder: sharded search (deephash.search.distributed)
        if args.grid:
            raise UsageError(f"--grid: draws the neighbours of an index file; {args.index} is a shard folder")
        return cmd_search_sharded(args)
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
        from ..views.viz import grid_for_search

        print(grid_for_search(idx, c, codes_path=args.codes, index_path=args.index, data=grid["data"], out=args.grid,
                              split_seed=args.split_seed, k=args.k, per_class=grid["per_class"], seed=grid["seed"]))
    return 0


def cmd_search_sharded(args) -> int:
    """``deephash search --index SHARD_DIR``: under torchrun, one rank per process; otherwise one
    process over every shard. Only rank 0 reads the queries, prints and writes ``--out``."""
    import torch.distributed as dist

    from ..search.distributed import ShardError
    from ..training.data_parallel import end_process_group

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.device is None:
        args.device = "cpu"
    if args.timeout is None:
        args.timeout = 300.0
    if args.device not in ("cpu", "cuda"):
        raise ValueError(f"--device {args.device}: sharded search runs on cpu or cuda")
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available")
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout}")
    started = False
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(seconds=args.timeout))
        started = True
    agreed = False  # every rank ends here the same way
    try:
        result = _search_command(args, cuda)
        agreed = True
        return result
    except ShardError as e:
        # All ranks know an agreed error: rank 0 reports it. Lost contact is reported where seen.
        agreed = not e.local
        if e.local or not dist.is_initialized() or dist.get_rank() == 0:
            raise
        return 2
    finally:
        if started:
            end_process_group(agreed)


def _search_command(args, cuda: bool) -> int:
    from ..codes import load_codes
    from ..search.distributed import ShardedIndex

    device = torch.device("cuda", torch.cuda.current_device()) if cuda else None
    sharded = ShardedIndex(args.index, device=device, timeout=args.timeout)
    rank = sharded.rank
    codes = None
    if rank == 0:
        def read():
            c = load_codes(args.codes)
            if c["bits"] != sharded.bits:
                raise ValueError(f"{args.codes}: {c['bits']}-bit queries, the index holds {sharded.bits}-bit codes")
            if args.k < 1:
                raise ValueError(f"-k must be >= 1, got {args.k}")
            return c
        codes = sharded.g.run(read)
    else:
        sharded.g.run(lambda: None)
    res = sharded.search(torch.from_numpy(codes["codes"]) if rank == 0 else None, args.k, dst=0)
    if rank != 0:
        return 0
    dist_, ids = (t.cpu() for t in res)
    if args.out:
        from ..codes import write_npz
        write_npz(args.out, distances=dist_.numpy(), ids=ids.numpy(), query_ids=codes["ids"])
        print(f"wrote the {ids.shape[1]} nearest of {len(ids)} queries to {args.out} "
              f"({sharded.shards} shards, {sharded.world_size} ranks)")
    for q in range(min(len(ids), args.show)):
        pairs = ", ".join(f"{int(i)}:{int(d)}" for i, d in zip(ids[q], dist_[q]))
        print(f"query {int(codes['ids'][q])}: {pairs}")
    sys.stdout.flush()
    return 0


def add_shard(sub) -> None:
    p = sub.add_parser("shard", help="split an index file into a shard folder for sharded search")
    p.add_argument("--index", required=True)
    p.add_argument("--shards", required=True, help="number of shards, or comma-separated sizes")
    p.add_argument("--out", required=True, help="shard folder")
    p.set_defaults(func=cmd_shard)


def cmd_shard(args) -> int:
    from ..search.index import Index
    from ..search.sharding import shard_sizes, write_shards

    try:
        shards = [int(s) for s in args.shards.split(",")] if "," in args.shards else int(args.shards)
    except ValueError:
        raise ValueError(f"--shards: expected a count or comma-separated sizes, got {args.shards!r}") from None
    idx = Index.load(args.index)
    try:
        shard_sizes(shards, len(idx))
    except ValueError as e:
        raise ValueError(f"--shards {args.shards}: {e}") from None
    paths = write_shards(idx, shards, args.out)
    print(f"wrote {len(paths)} shards of {len(idx)} codes of {idx.bits} bits to {args.out}/")
    return 0


def add_eval(sub) -> None:
    v = sub.add_parser("eval", help="mAP, precision and PR curve of query codes against database codes")
    v.add_argument("--query", required=True)
    v.add_argument("--db", required=True)
    v.add_argument("--out", default=None)
    v.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from ..codes import load_codes
    from ..metrics import evaluate, plot_pr_curve

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
    print_table([{"method": f"{q['bits']}-bit codes", **metrics}])
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "metrics.json", "w") as f:
            json.dump({**metrics, "pr_curve": curve}, f, indent=2)
        plot_pr_curve({f"{q['bits']} bits": curve}, out / "pr_curve.png")
        print(f"wrote {out}/metrics.json and {out}/pr_curve.png")
    return 0
