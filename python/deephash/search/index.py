"""``deephash.Index``: packed binary codes with integer ids and exact Hamming search.

The rows live in :mod:`deephash.search.storage` (segments, tombstones, amortised appends) and on disk in
the format of :mod:`deephash.search.index_file` (also in docs/formats.md): :meth:`Index.load` maps the file
(no copy of the codes or ids; opening costs the header and directory), :meth:`Index.save` writes a
new file atomically or appends to the file the index came from. Search results are ordered by
(distance, insertion order), removed rows excluded.

``Index(bits, kind="flat")`` scans every live code per query (``hamming_topk``); ``kind="mih"`` answers
the same searches, with the same results, through multi-index hash tables (:mod:`deephash.search.mih`) built
at the first search after the rows change. The kind and ``m`` are saved in the file's ``meta``
(``{"kind": "mih", "m": m}``, ``m`` absent when chosen from the row count); the tables are not saved
but rebuilt by the first search after a load. Mapping stored tables back measured 9-18x faster than
that rebuild, but they would make the file 2.3-7.1x larger, every full save slower, and any append
stale (``benchmarks/results/mih-cpu-2026-12-01.md``).
"""
from __future__ import annotations

import numpy as np
import torch

import deephash_ext

from .index_file import IndexError_, padding_mask
from ..codes import _integers, as_integer, as_packed
from .mih import MultiIndex, check_m
from .storage import CodeStore

__all__ = ["Index", "IndexError_"]

KINDS = ("flat", "mih")


def check_k(k) -> int:
    """``k`` of a search: an integer >= 1, the same rule for every kind and state of index (any size:
    a search returns ``min(k, len)`` columns)."""
    k = as_integer(k, "k")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


class Index:
    """An exact Hamming index over ``bits``-bit codes.

    ``kind="mih"`` searches by multi-index hashing over ``m`` substrings (default: chosen from the
    number of rows at each build, see :func:`deephash.search.mih.default_m`); its results equal
    ``kind="flat"``'s.
    """

    def __init__(self, bits: int, kind: str = "flat", m: int | None = None):
        bits = as_integer(bits, "bits")
        if not 1 <= bits <= 1 << 20:
            raise ValueError(f"bits must be in 1..{1 << 20}, got {bits}")
        if kind not in KINDS:
            raise ValueError(f'kind must be "flat" or "mih", got {kind!r}')
        if m is not None and kind != "mih":
            raise ValueError('m (the number of substrings) applies to kind="mih" only')
        self.bits = int(bits)
        self.nbytes = (self.bits + 7) // 8
        self.kind = kind
        self.m = None if m is None else check_m(m, self.bits)
        self._store = CodeStore(self.bits)
        self._store.meta = self._meta()
        self._mih: MultiIndex | None = None
        self._mih_codes: torch.Tensor | None = None  # the live codes the tables were built from

    def _meta(self) -> dict:
        if self.kind == "flat":
            return {}
        return {"kind": "mih"} if self.m is None else {"kind": "mih", "m": self.m}

    def __len__(self) -> int:
        return len(self._store)

    @property
    def codes(self) -> torch.Tensor:
        """``uint8[len, nbytes]``, the live codes in insertion order. For a loaded index this is the
        mapped file itself (read-only: do not write into it); after adds or removals, a copy."""
        return self._store.live()[0]

    @property
    def ids(self) -> torch.Tensor:
        """``int64[len]``, the ids of :attr:`codes`."""
        return self._store.live()[1]

    def _pack(self, codes) -> torch.Tensor:
        t = torch.as_tensor(codes)
        if t.dtype != torch.uint8 and t.dim() == 2 and t.shape[1] != self.bits:
            raise IndexError_(f"codes have {t.shape[1]} bits, the index holds {self.bits}-bit codes")
        p = as_packed(t)
        if p.dim() != 2 or p.shape[1] != self.nbytes:
            raise IndexError_(f"packed codes must be uint8[N, {self.nbytes}] for {self.bits} bits, got {tuple(p.shape)}")
        mask = padding_mask(self.bits)
        if mask and p.shape[0]:
            bad = torch.nonzero(p[:, -1] & mask).flatten()
            if bad.numel():
                # They would count in every distance.
                raise IndexError_(f"packed code {int(bad[0])} has non-zero padding bits: a {self.bits}-bit code "
                                  f"uses only the low {self.bits % 8} bits of its last byte (pack with pack_bits)")
        return p

    def add(self, codes, ids=None) -> "Index":
        """Add codes (packed ``uint8`` or real / ±1 ``[N, bits]``) with their ids; ids default to
        consecutive numbers after the largest id so far (``0..N-1`` for an empty index). Amortised:
        the in-memory part grows geometrically, so N single-row adds cost O(N) copying."""
        p = self._pack(codes)
        if ids is None:
            start = self._store.next_id()
            ids = torch.arange(start, start + p.shape[0], dtype=torch.int64)
        ids = torch.from_numpy(_integers(ids, "ids")).reshape(-1)
        if ids.numel() != p.shape[0]:
            raise IndexError_(f"{ids.numel()} ids for {p.shape[0]} codes")
        self._store.add(p, ids)
        return self

    def remove(self, ids) -> int:
        """Remove every row whose id is in ``ids``; returns how many rows went. Rows are marked dead
        (tombstones) and skipped by every search; :meth:`compact` or ``save(..., compact=True)``
        drops them for good (a full save always does)."""
        return self._store.remove(torch.from_numpy(_integers(ids, "ids")).reshape(-1))

    def compact(self) -> "Index":
        """Copy the live rows into memory, dropping tombstones (and the mapping of a loaded index)."""
        self._store.compact()
        return self

    def multi_index(self) -> MultiIndex:
        """The hash tables of ``kind="mih"`` over the live rows (built now if the rows changed since the
        last build)."""
        if self.kind != "mih":
            raise ValueError('multi_index() applies to kind="mih" only')
        codes = self._store.live()[0]
        if self._mih is None or self._mih_codes is not codes:
            self._mih, self._mih_codes = None, None  # free the old tables before building the new
            self._mih = MultiIndex(codes, self.bits, self.m)
            self._mih_codes = codes
        return self._mih

    def search(self, queries, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """``(distances int32[Q, k'], ids int64[Q, k'])``, ``k' = min(k, len)``, sorted by (distance, insertion order)."""
        k = check_k(k)
        q = self._pack(queries)
        if len(self) == 0:  # an empty database: no neighbours, as hamming_topk with N = 0
            return torch.empty(q.shape[0], 0, dtype=torch.int32), torch.empty(q.shape[0], 0, dtype=torch.int64)
        d, ids, _ = self.search_rows(q, k)
        return d, ids

    def search_rows(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`search` of packed non-empty queries on a non-empty index, by this index's kind, with each
        result's row key: ``(distances, ids, rows)``; rows grow with insertion order (sharded search
        merges on them). ``k``: an integer >= 1 (:func:`check_k`), more than the rows giving them all."""
        k = min(check_k(k), len(self))
        if self.kind == "mih":
            codes, ids = self._store.live()
            d, rows = self.multi_index().search(q, codes, k)
            return d, ids[rows], rows
        return self._store.search(q, k)

    def range_search(self, queries, radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every code within Hamming ``radius`` (inclusive) of each query: ``(lims int64[Q+1],
        distances int32[M], ids int64[M])``, query ``i``'s hits at ``lims[i]:lims[i+1]`` sorted by
        (distance, insertion order) (FAISS's range-search layout; FAISS's own radius is exclusive)."""
        radius = as_integer(radius, "radius")
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        lims, d, ids, _ = self._store.range_search(self._pack(queries), min(radius, self.bits))
        return lims, d, ids

    def save(self, path, compact: bool = False, block_bytes: int | None = None) -> None:
        """Write the index to ``path`` (format version 2), then serve it from the written file.

        When ``path`` is the file this index was loaded from (or last saved to) and nobody saved
        there since, the rows added and the removals since are appended in place (the file is not
        rewritten); otherwise, or with ``compact=True``, the live rows are written to a new file
        that replaces ``path`` atomically. Either way a reader sees the old version or the new one.
        ``block_bytes`` sets the size of the checksum blocks (default 64 MiB of codes). The kind and
        ``m`` go in the file's ``meta``; MIH tables are not written (rebuilt at the first search)."""
        built = self._mih is not None and self._mih_codes is self._store.live()[0]
        self._store.meta = {**self._store.meta, **self._meta()}
        self._store.save(path, compact=compact, block_bytes=block_bytes)
        if built:
            # The same rows in the same order, now served from the file: the tables still hold.
            self._mih_codes = self._store.live()[0]

    @classmethod
    def load(cls, path, verify: str = "lazy") -> "Index":
        """Open an index file (version 1 or 2). Version 2 is memory-mapped: nothing but the header
        and directory is read. ``verify``: ``"lazy"`` checks a part's block checksums the first time
        it is searched, ``"full"`` checks every block now, ``"none"`` never (see :meth:`verify`)."""
        store = CodeStore.load(path, verify=verify)
        kind, m = store.meta.get("kind", "flat"), store.meta.get("m")
        if kind not in KINDS:
            raise IndexError_(f"{path}: index kind {kind!r} in the file's meta, this deephash knows "
                              f'"flat" and "mih"')
        try:
            idx = cls(store.bits, kind, m)
        except ValueError as e:
            raise IndexError_(f"{path}: corrupted index file meta ({e})") from e
        idx._store = store
        return idx

    def verify(self) -> int:
        """Check every block's checksums and the padding bits; raises :class:`IndexError_` naming each
        corrupted block. Returns the number of blocks checked (0 for an index never saved)."""
        return self._store.verify()

    def to_faiss(self):
        """This index as a FAISS binary index (``IndexBinaryFlat``, or ``IndexBinaryIDMap`` around it
        when the ids are not ``0..len-1``): the same bytes, so the same distances."""
        from .faiss_interop import to_faiss

        return to_faiss(self)

    @classmethod
    def from_faiss(cls, index, bits: int | None = None) -> "Index":
        """An Index of the codes (and ids) of a FAISS ``IndexBinaryFlat`` / ``IndexBinaryIDMap``."""
        from .faiss_interop import from_faiss

        return from_faiss(cls, index, bits)

    def shard(self, shards, directory) -> list[str]:
        """Split the live rows into ``shards`` contiguous parts (a count, or a list of sizes) written to
        ``directory`` with a manifest, for :mod:`deephash.search.distributed`; returns the shard paths."""
        from .sharding import write_shards

        return write_shards(self, shards, directory)

    def __repr__(self) -> str:
        extra = "" if self.kind == "flat" else f', kind="mih"' + ("" if self.m is None else f", m={self.m}")
        return f"Index(bits={self.bits}{extra}, rows={len(self)})"
