"""Sharding: an index cut into a shard folder, for sharded search (:mod:`deephash.search.distributed`).

A shard folder (written by :meth:`deephash.Index.shard` or ``deephash shard``) holds index files
``shard-00000-of-00003.idx``, ... and ``shards.json``, the manifest: bits, and each shard's file and
rows. Shard ``s`` is rows ``offset_s .. offset_s + rows_s`` of the index it was cut from.

This module takes the index it cuts as an argument and never imports :mod:`deephash.search.index`, so
that ``Index.shard`` can call it without an import cycle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import index_file
from .index_file import IndexError_

MANIFEST = "shards.json"


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.idx"


def shard_sizes(shards, n: int) -> list[int]:
    """The rows of each shard: ``shards`` is a count (near-equal contiguous parts) or a list of sizes that add
    up to ``n``."""
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
    sizes = shard_sizes(shards, len(index))
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
