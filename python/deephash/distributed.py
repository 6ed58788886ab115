"""Sharded exact search over torch.distributed (gloo on CPU, NCCL on GPU), and index sharding.

A shard folder (written by :meth:`deephash.Index.shard` or ``deephash shard``) holds index files
``shard-00000-of-00003.idx``, ... and ``shards.json``, the manifest: bits, and each shard's file and
rows. Shard ``s`` is rows ``offset_s .. offset_s + rows_s`` of the index it was cut from.

Search, on every rank of a process group (``torchrun --nproc-per-node N``): rank ``r`` opens shards
``r, r + N, r + 2N, ...`` (memory-mapped); the queries of rank 0 are broadcast; every rank runs
``hamming_topk`` on its shards (a ``kind="mih"`` shard on the CPU: its multi-index tables, same
answers); the per-shard lists (distance, shard, row in shard, id) are gathered and merged by
(distance, shard, row). That is the order of (distance, row) in the unsharded index, so the result is
the one single-process search gives, bit for bit, ties included, whatever the
number of shards or ranks.

Failures: every step that can fail on one rank (opening a shard, reading the queries, a corrupted
block met during the search) ends in an exchange of outcomes, so every rank raises
:class:`ShardError` naming the rank and what went wrong, instead of waiting for it. A rank that
dies or hangs makes the others' next collective fail after the process group's timeout (set it
with ``init_process_group(..., timeout=...)``; the CLI's ``--timeout``), again as ShardError.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import deephash_ext

from . import index_file
from .data_parallel import end_process_group
from .index_file import IndexError_

MANIFEST = "shards.json"
_ROW_BITS = 40  # merge key: shard << 40 | row within the shard
_FAR = torch.iinfo(torch.int32).max
_LAST = torch.iinfo(torch.int64).max


class ShardError(IndexError_):
    """A sharded search failed on some rank; every rank raises it. ``local`` is True where the cause was
    seen on this rank alone (lost contact with the others), False where all ranks agreed on it."""

    def __init__(self, message: str, local: bool = False):
        super().__init__(message)
        self.local = local


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.idx"


# ---------------------------------------------------------------------------------------------
# Writing shards


def _sizes(shards, n: int) -> list[int]:
    if isinstance(shards, (int, np.integer)) and not isinstance(shards, bool):
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        base, extra = divmod(n, int(shards))
        return [base + (i < extra) for i in range(int(shards))]
    sizes = [int(s) for s in shards]
    if not sizes or any(s < 0 for s in sizes) or sum(sizes) != n:
        raise ValueError(f"shard sizes must be >= 0 and add up to the index's {n} rows, got {sizes}")
    return sizes


def _slice_rows(chunks, lo: int, hi: int):
    """Rows lo..hi of a stream of (codes, ids) chunks."""
    at = 0
    for c, i in chunks:
        n = len(c)
        a, b = max(lo - at, 0), min(hi - at, n)
        if a < b:
            yield c[a:b], i[a:b]
        at += n
        if at >= hi:
            return


def write_shards(index, shards, directory) -> list[str]:
    """Write ``index``'s live rows as shards (a count: near-equal contiguous parts; or a list of sizes)
    into ``directory``, then the manifest (last, atomically: a reader never sees a manifest whose
    shards are not all written). Returns the shard paths."""
    sizes = _sizes(shards, len(index))
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise IndexError_(f"{out}: cannot create the shard folder ({e.strerror or e})") from e
    store = index._store
    block_rows = index_file.default_block_rows(index.nbytes)
    entries, paths, lo = [], [], 0
    for i, n in enumerate(sizes):
        name = shard_name(i, len(sizes))
        chunks = lambda lo=lo, n=n: _slice_rows(store.iter_rows(), lo, lo + n)  # noqa: E731
        index_file.write_file(out / name, index.bits, block_rows, chunks, n, store.meta)
        entries.append({"file": name, "rows": n, "offset": lo})
        paths.append(str(out / name))
        lo += n
    manifest = {"format": "deephash-shards", "version": 1, "bits": index.bits, "rows": lo, "shards": entries}
    tmp = out / f".{MANIFEST}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / MANIFEST)
    return paths


def read_manifest(directory) -> dict:
    path = Path(directory) / MANIFEST
    try:
        with open(path) as f:
            m = json.load(f)
    except FileNotFoundError:
        raise IndexError_(f"{directory}: not a shard folder (no {MANIFEST}; write one with `deephash shard`)") from None
    except (OSError, ValueError) as e:
        raise IndexError_(f"{path}: cannot read the shard manifest ({e})") from e
    ok = (isinstance(m, dict) and m.get("format") == "deephash-shards" and isinstance(m.get("bits"), int)
          and isinstance(m.get("shards"), list) and m["shards"]
          and all(isinstance(s, dict) and isinstance(s.get("file"), str) and "/" not in s["file"]
                  and isinstance(s.get("rows"), int) for s in m["shards"]))
    if not ok:
        raise IndexError_(f"{path}: not a deephash shard manifest")
    if len(m["shards"]) >= 1 << 23:
        raise IndexError_(f"{path}: too many shards ({len(m['shards'])})")
    return m


# ---------------------------------------------------------------------------------------------
# Collectives that fail cleanly


def _rank_world(group) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _lost(e: Exception, rank: int) -> ShardError:
    return ShardError(f"rank {rank}: lost contact with the other ranks ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
                      f"a rank failed, hangs or has exited", local=True)


class _Group:
    """The process group (or none, for one process) and a gloo group for the outcome exchanges."""

    def __init__(self, group=None, timeout: float | None = None):
        self.group = group
        self.rank, self.world = _rank_world(group)
        self.control = None
        if self.world > 1:
            backend = dist.get_backend(group)
            # NCCL moves the data; the outcome exchanges (Python objects) go over gloo.
            self.control = group if backend == "gloo" else dist.new_group(
                backend="gloo", timeout=datetime.timedelta(seconds=timeout) if timeout else None)
            self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        else:
            self.device = torch.device("cpu")

    def global_rank(self, rank: int) -> int:
        """The global rank of this group's rank ``rank`` (collectives name src / dst globally)."""
        return rank if self.group is None else dist.get_global_rank(self.group, rank)

    def agree(self, error: str | None, payload=None) -> list:
        """Every rank's payload, once every rank has reported; raises ShardError on all ranks when any
        rank reports an error."""
        if self.world == 1:
            if error:
                raise ShardError(error)
            return [payload]
        got = [None] * self.world
        try:
            dist.all_gather_object(got, (error, payload), group=self.control)
        except Exception as e:  # noqa: BLE001  (gloo and NCCL raise RuntimeError subclasses)
            raise _lost(e, self.rank) from e
        errors = [f"rank {r}: {err}" for r, (err, _) in enumerate(got) if err]
        if errors:
            raise ShardError("; ".join(errors))
        return [p for _, p in got]

    def run(self, fn):
        """fn() on every rank; its exceptions become every rank's ShardError."""
        try:
            result, error = fn(), None
        except (IndexError_, ValueError, OSError, RuntimeError) as e:
            result, error = None, str(e)
        self.agree(error)
        return result

    def call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            raise _lost(e, self.rank) from e


# ---------------------------------------------------------------------------------------------
# Search


class ShardedIndex:
    """This rank's shards of a shard folder; :meth:`search` is collective over the process group
    (every rank calls it). Without an initialised process group, one process holds every shard.

    ``device``: where the shards are searched (default: CPU under gloo, this rank's GPU under NCCL,
    whose shards are then copied to GPU memory). ``timeout``: seconds, for the gloo group of outcome
    exchanges that an NCCL process group needs (default: torch's)."""

    def __init__(self, directory, group=None, verify: str = "lazy", device=None, timeout: float | None = None):
        from .index import Index

        self.directory = Path(directory)
        self.g = _Group(group, timeout)
        self.device = torch.device(device) if device is not None else self.g.device
        rank, world = self.g.rank, self.g.world

        def open_mine():
            m = read_manifest(self.directory)
            n = len(m["shards"])
            if n >= 1 << 23:
                raise IndexError_(f"{self.directory}: too many shards")
            mine = {}
            for s in range(rank, n, world):
                f = self.directory / m["shards"][s]["file"]
                idx = Index.load(f, verify=verify)
                if idx.bits != m["bits"]:
                    raise IndexError_(f"{f}: {idx.bits}-bit codes, the manifest says {m['bits']}")
                if idx._store.rows >= 1 << _ROW_BITS:
                    raise IndexError_(f"{f}: more than 2^{_ROW_BITS} rows in one shard")
                mine[s] = idx
            return m, mine

        try:
            (m, mine), error = open_mine(), None
        except (IndexError_, ValueError, OSError) as e:
            m, mine, error = None, {}, str(e)
        live = [len(i) for i in mine.values()]
        sizes = self.g.agree(error, (m["bits"] if m else None, len(m["shards"]) if m else None, sum(live)))
        if len({(b, n) for b, n, _ in sizes}) != 1:
            raise ShardError(f"{self.directory}: the ranks read different manifests (bits, shards): "
                             f"{[(b, n) for b, n, _ in sizes]}")
        self.bits, self.shards = sizes[0][0], sizes[0][1]
        self.nbytes = (self.bits + 7) // 8
        self.total = sum(s for _, _, s in sizes)
        self.mine = mine
        self._on_device = {}
        if self.device.type != "cpu":
            # The device path keeps each shard's live codes in device memory.
            for s, idx in mine.items():
                self._on_device[s] = (idx.codes.to(self.device), idx.ids.to(self.device))

    @property
    def rank(self) -> int:
        return self.g.rank

    @property
    def world_size(self) -> int:
        return self.g.world

    def __len__(self) -> int:
        return self.total

    def _local(self, q: torch.Tensor, k: int):
        """This rank's best k by (distance, shard, row): distances, merge keys, ids; [Q, k] padded."""
        Q = q.shape[0]
        ds, keys, ids = [], [], []
        for s, idx in sorted(self.mine.items()):
            if len(idx) == 0:
                continue
            if s in self._on_device:
                codes, sid = self._on_device[s]
                d, rows = deephash_ext.hamming_topk(q, codes, k)
                i = sid[rows]
            else:  # by the shard's own kind (flat: a scan; mih: its multi-index tables)
                d, i, rows = idx.search_rows(q, k)
            ds.append(d)
            keys.append(rows + (s << _ROW_BITS))
            ids.append(i)
        ds.append(torch.full((Q, k), _FAR, dtype=torch.int32, device=q.device))
        keys.append(torch.full((Q, k), _LAST, dtype=torch.int64, device=q.device))
        ids.append(torch.full((Q, k), -1, dtype=torch.int64, device=q.device))
        return _merge(torch.cat(ds, 1), torch.cat(keys, 1), torch.cat(ids, 1), k)

    def search(self, queries=None, k: int = 10, src: int = 0, dst: int | None = None):
        """Exact k nearest of ``queries`` (given on rank ``src``; other ranks may pass None) over every
        shard: ``(distances int32[Q, k'], ids int64[Q, k'])``, ``k' = min(k, rows)``, ordered by
        (distance, row in the unsharded index). Every rank gets the result, or only rank ``dst``
        (the others get None) when dst is given: that gathers Q·k' hits to one rank instead of
        to all."""
        g = self.g
        meta = torch.zeros(3, dtype=torch.int64)
        q = None
        if g.rank == src:
            def check():
                if queries is None:
                    raise ValueError("search needs the queries on rank src")
                t = torch.as_tensor(queries)
                if t.dtype != torch.uint8 or t.dim() != 2 or t.shape[1] != self.nbytes:
                    raise ValueError(f"queries must be packed uint8[Q, {self.nbytes}] for {self.bits}-bit "
                                     f"codes, got {t.dtype} {tuple(t.shape)}")
                if isinstance(k, bool) or int(k) < 1:
                    raise ValueError(f"k must be >= 1, got {k}")
                if self.total == 0:
                    raise IndexError_("search on an empty index")
                return t.contiguous()
            q = g.run(check)
            meta = torch.tensor([q.shape[0], q.shape[1], int(k)], dtype=torch.int64)
        else:
            g.run(lambda: None)
        dev = g.device if g.world > 1 else self.device
        if g.world > 1:
            meta = meta.to(dev)
            g.call(dist.broadcast, meta, g.global_rank(src), group=g.group)
            Q, B, k = (int(v) for v in meta.tolist())
            if g.rank != src:
                q = torch.empty(Q, B, dtype=torch.uint8)
            q = q.to(dev)
            g.call(dist.broadcast, q, g.global_rank(src), group=g.group)
        else:
            k = int(meta[2])
            q = q.to(dev)
        kk = min(k, self.total)
        local = g.run(lambda: self._local(q.to(self.device), kk))
        d, keys, ids = (t.to(dev) for t in local)
        if g.world == 1:
            return d, ids
        parts = (d, keys, ids)
        if dst is None:
            gathered = [[torch.empty_like(t) for _ in range(g.world)] for t in parts]
            for out, t in zip(gathered, parts):
                g.call(dist.all_gather, out, t, group=g.group)
        else:
            gathered = [[torch.empty_like(t) for _ in range(g.world)] if g.rank == dst else None for t in parts]
            for out, t in zip(gathered, parts):
                g.call(dist.gather, t, out, g.global_rank(dst), group=g.group)
            if g.rank != dst:
                return None
        d, keys, ids = _merge(*(torch.cat(x, 1) for x in gathered), kk)
        return d, ids


def _merge(d: torch.Tensor, keys: torch.Tensor, ids: torch.Tensor, k: int):
    """The k best of [Q, n] candidates by (distance, key): a stable sort by key, then by distance."""
    by_key = torch.sort(keys, dim=1, stable=True).indices
    d, keys, ids = d.gather(1, by_key), keys.gather(1, by_key), ids.gather(1, by_key)
    order = torch.sort(d, dim=1, stable=True).indices[:, :k]
    return d.gather(1, order), keys.gather(1, order), ids.gather(1, order)


def search_shards(directory, queries, k: int = 10, group=None, **kwargs):
    """One-call sharded search: opens ``directory``'s shards on every rank and searches; see
    :class:`ShardedIndex`."""
    return ShardedIndex(directory, group=group, **kwargs).search(queries, k)


# ---------------------------------------------------------------------------------------------
# Command line (hooked into deephash.cli)


def add_cli(sub, search_parser) -> None:
    """``deephash search`` options of sharded search, and the ``deephash shard`` subcommand."""
    search_parser.add_argument("--timeout", type=float, default=None,
                               help="sharded search: seconds a rank waits for the others before failing (300)")
    search_parser.add_argument("--device", default=None,
                               help="sharded search: cpu (gloo, the default) or cuda (NCCL, one GPU per rank)")
    p = sub.add_parser("shard", help="split an index file into a shard folder for sharded search")
    p.add_argument("--index", required=True)
    p.add_argument("--shards", required=True, help="number of shards, or comma-separated sizes")
    p.add_argument("--out", required=True, help="shard folder")
    p.set_defaults(func=cmd_shard)


def cmd_shard(args) -> int:
    from .index import Index

    try:
        shards = [int(s) for s in args.shards.split(",")] if "," in args.shards else int(args.shards)
    except ValueError:
        raise ValueError(f"--shards: expected a count or comma-separated sizes, got {args.shards!r}") from None
    idx = Index.load(args.index)
    try:
        _sizes(shards, len(idx))
    except ValueError as e:
        raise ValueError(f"--shards {args.shards}: {e}") from None
    paths = write_shards(idx, shards, args.out)
    print(f"wrote {len(paths)} shards of {len(idx)} codes of {idx.bits} bits to {args.out}/")
    return 0


def cmd_search_sharded(args, load_codes) -> int:
    """``deephash search --index SHARD_DIR``: under torchrun, one rank per process; otherwise one
    process over every shard. Only rank 0 reads the queries, prints and writes ``--out``."""
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
        result = _search_command(args, load_codes, cuda)
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


def _search_command(args, load_codes, cuda: bool) -> int:
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
        from .codes import write_npz
        write_npz(args.out, distances=dist_.numpy(), ids=ids.numpy(), query_ids=codes["ids"])
        print(f"wrote the {ids.shape[1]} nearest of {len(ids)} queries to {args.out} "
              f"({sharded.shards} shards, {sharded.world_size} ranks)")
    for q in range(min(len(ids), args.show)):
        pairs = ", ".join(f"{int(i)}:{int(d)}" for i, d in zip(ids[q], dist_[q]))
        print(f"query {int(codes['ids'][q])}: {pairs}")
    sys.stdout.flush()
    return 0
