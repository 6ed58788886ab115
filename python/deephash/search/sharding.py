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

from ..atomic import atomic_write, open_regular
from . import index_file
from .index_file import IndexError_

_MAX_MANIFEST = 1 << 30  # bytes: 2^23 shards of a hundred bytes each

MANIFEST = "shards.json"


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.idx"


def shard_sizes(shards, n: int) -> list[int]:
    """The rows of each shard: ``shards`` is a count (near-equal contiguous parts) or a list of sizes that add
    up to ``n``. Never more shards than rows (one empty shard for an empty index): a count of 9,000,000 for
    300 rows would start writing gigabytes of empty shard files."""
    if isinstance(shards, (int, np.integer)) and not isinstance(shards, bool):
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        if shards > max(n, 1):
            raise ValueError(f"{shards} shards of the index's {n} rows: at most one shard per row")
        base, extra = divmod(n, int(shards))
        return [base + (i < extra) for i in range(int(shards))]
    sizes = [int(s) for s in shards]
    if len(sizes) > max(n, 1):
        raise ValueError(f"{len(sizes)} shard sizes for the index's {n} rows: at most one shard per row")
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
    try:
        with atomic_write(out / MANIFEST, special=False) as f:
            f.write(json.dumps(manifest, indent=1).encode())
    except OSError as e:
        raise IndexError_(f"{out / MANIFEST}: cannot write the shard manifest ({e.strerror or e})") from e
    return paths


def read_manifest(directory) -> dict:
    """The manifest of a shard folder, checked for what ``write_shards`` writes: format and version, bits,
    every shard named ``shard-I-of-N.idx`` in order, once, with ``rows`` and ``offset`` that tile the
    ``rows`` of the whole (so that a shard listed twice, reordered entries or a wrong offset, which would
    duplicate hits or change the tie order, are refused). The shard files' own rows and bits are checked
    against it when they are opened (:func:`check_shard`)."""
    path = Path(directory) / MANIFEST
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            raw = f.read(_MAX_MANIFEST + 1)
        if len(raw) > _MAX_MANIFEST:
            raise ValueError(f"larger than {_MAX_MANIFEST} bytes")
        m = json.loads(raw)
    except FileNotFoundError:
        raise IndexError_(f"{directory}: not a shard folder (no {MANIFEST}; write one with `deephash shard`)") from None
    except RecursionError:
        raise IndexError_(f"{path}: cannot read the shard manifest (JSON nested too deeply)") from None
    except (OSError, ValueError) as e:
        raise IndexError_(f"{path}: cannot read the shard manifest ({e.strerror if isinstance(e, OSError) else e})"
                          ) from e
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    ok = (isinstance(m, dict) and m.get("format") == "deephash-shards" and is_int(m.get("bits"))
          and is_int(m.get("rows")) and isinstance(m.get("shards"), list) and m["shards"]
          and all(isinstance(s, dict) and isinstance(s.get("file"), str) and "/" not in s["file"]
                  and is_int(s.get("rows")) and is_int(s.get("offset")) for s in m["shards"]))
    if not ok:
        raise IndexError_(f"{path}: not a deephash shard manifest")
    if m.get("version") != 1:
        raise IndexError_(f"{path}: shard manifest version {m.get('version')!r}, this deephash reads version 1")
    n = len(m["shards"])
    if n >= 1 << 23:
        raise IndexError_(f"{path}: too many shards ({n})")
    at = 0
    for i, s in enumerate(m["shards"]):
        if s["file"] != shard_name(i, n):
            raise IndexError_(f"{path}: entry {i} names {s['file']!r}, expected {shard_name(i, n)!r} (shards are "
                              f"listed once each, in order)")
        if s["offset"] != at:
            raise IndexError_(f"{path}: {s['file']} at offset {s['offset']}, expected {at} (the shards' rows must "
                              f"follow one another)")
        at += s["rows"]
    if at != m["rows"]:
        raise IndexError_(f"{path}: the shards hold {at} rows, the manifest says {m['rows']}")
    return m


def check_shard(path, entry: dict, bits: int, live: int, rows: int) -> None:
    """Refuse a shard file that is not what its manifest entry says (bits, rows; a shard file is written
    whole, without tombstones, so its live rows are its rows)."""
    if rows != entry["rows"] or live != entry["rows"]:
        raise IndexError_(f"{path}: {live} rows ({rows} with removed ones), its entry in {MANIFEST} says "
                          f"{entry['rows']}")
