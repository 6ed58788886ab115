"""Sharded exact search over torch.distributed (gloo on CPU, NCCL on GPU).

It searches a shard folder (:mod:`deephash.search.sharding` writes them: index files and a manifest).

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
from pathlib import Path

import torch
import torch.distributed as dist

import deephash_ext

from .index import Index, check_k
from .index_file import IndexError_
from .sharding import check_shard, read_manifest
_ROW_BITS = 40  # merge key: shard << 40 | row within the shard
_FAR = torch.iinfo(torch.int32).max
_LAST = torch.iinfo(torch.int64).max


class ShardError(IndexError_):
    """A sharded search failed on some rank; every rank raises it. ``local`` is True where the cause was
    seen on this rank alone (lost contact with the others), False where all ranks agreed on it."""

    def __init__(self, message: str, local: bool = False):
        super().__init__(message)
        self.local = local


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
                check_shard(f, m["shards"][s], idx.bits, len(idx), idx._store.rows)
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
                check_k(k)
                if self.total == 0:
                    raise IndexError_("search on an empty index")
                return t.contiguous()
            q = g.run(check)
            # k beyond the rows gives them all (and fits the int64 sent to the other ranks).
            meta = torch.tensor([q.shape[0], q.shape[1], min(check_k(k), self.total)], dtype=torch.int64)
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
