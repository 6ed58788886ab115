"""The rows behind :class:`deephash.Index`: segments of codes and ids, tombstones, exact search across
segments, and persistence to index files (:mod:`deephash.search.index_file`).

An index is a sequence of segments, rows numbered 0.. in insertion order across them:

- mapped segments, one per extent of the file the index was loaded from (read-only views of a
  shared mapping: nothing is read until searched);
- one in-memory tail that ``add`` appends to, grown geometrically (amortised O(1) per row).

``remove`` marks rows dead (tombstones: a sorted tensor of row positions) instead of moving data.
Searches ask each segment for ``k +`` (its dead rows) candidates, drop the dead, and merge the
segments by (distance, row position), so the answer is exactly that of one scan over the live rows
in insertion order. ``compact`` (or a full save) drops the tombstones for good.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

import deephash_ext

from . import index_file
from .index_file import IndexError_

GARBAGE_FLOOR = 1 << 20  # bytes of older versions an index file may carry whatever its size
_FAR = torch.iinfo(torch.int32).max  # distance given to dead candidates so that they sort last


@dataclass
class Segment:
    codes: torch.Tensor   # uint8[n, nbytes], contiguous
    ids: torch.Tensor     # int64[n]
    start: int            # position of its first row
    extent: int = -1      # extent of the mapped file, -1 for the in-memory tail
    checked: bool = True  # mapped extents: checksums verified (lazily, on first use)

    @property
    def rows(self) -> int:
        return int(self.codes.shape[0])


class CodeStore:
    def __init__(self, bits: int):
        self.bits = int(bits)
        self.nbytes = (self.bits + 7) // 8
        self.frozen: list[Segment] = []
        self.file: index_file.MappedFile | None = None  # the file the frozen segments map
        self.persisted = 0                               # rows of that file (the frozen rows)
        self.verify_mode = "lazy"
        self._codes = torch.empty(0, self.nbytes, dtype=torch.uint8)  # tail buffer [capacity, nbytes]
        self._ids = torch.empty(0, dtype=torch.int64)
        self._n = 0
        self.dead = torch.empty(0, dtype=torch.int64)
        self._live: tuple[torch.Tensor, torch.Tensor] | None = None
        self._max_id: int | None = None
        # Saved with the rows and restored on load (a JSON object): what an Index keeps about itself.
        self.meta: dict = {}

    # -- rows ---------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        """Rows ever added and not compacted away, dead ones included."""
        return self.persisted + self._n

    def __len__(self) -> int:
        return self.rows - int(self.dead.numel())

    def segments(self, check: bool = True) -> list[Segment]:
        if self.file is not None:
            self.file.check_size()
        segs = list(self.frozen)
        if self._n:
            segs.append(Segment(self._codes[:self._n], self._ids[:self._n], self.persisted))
        if check:
            for s in segs:
                if not s.checked:
                    self._check(s)
        return segs

    def _check(self, s: Segment) -> None:
        problems = self.file.verify_extent(s.extent, self.file.first_block[s.extent])
        if problems:
            raise IndexError_(f"{self.file.path}: corrupted index file: " + "; ".join(problems))
        s.checked = True

    def next_id(self) -> int:
        """One past the largest id held, removed rows included until compacted away (0 when none)."""
        if self._max_id is None:
            m = [int(s.ids.max()) for s in self.segments() if s.rows]
            self._max_id = max(m) if m else -1
        return self._max_id + 1

    def add(self, codes: torch.Tensor, ids: torch.Tensor) -> None:
        n = codes.shape[0]
        need = self._n + n
        cap = self._codes.shape[0]
        if need > cap:
            # Geometric growth: each row is copied O(1) times over any sequence of adds.
            new_cap = max(need, cap + cap // 2, 1024)
            grown = torch.empty(new_cap, self.nbytes, dtype=torch.uint8)
            grown[:self._n] = self._codes[:self._n]
            grown_ids = torch.empty(new_cap, dtype=torch.int64)
            grown_ids[:self._n] = self._ids[:self._n]
            self._codes, self._ids = grown, grown_ids
        self._codes[self._n:need] = codes
        self._ids[self._n:need] = ids
        self._n = need
        self._live = None
        if self._max_id is not None and n:
            self._max_id = max(self._max_id, int(ids.max()))

    def remove(self, ids: torch.Tensor) -> int:
        found = [torch.nonzero(torch.isin(s.ids, ids)).flatten() + s.start for s in self.segments()]
        dead = torch.unique(torch.cat([self.dead, *found]))  # sorted
        removed = int(dead.numel() - self.dead.numel())
        if removed:
            self.dead = dead
            self._live = None
        return removed

    def _dead_in(self, s: Segment) -> torch.Tensor:
        """Dead rows of segment s, as row numbers within it."""
        if not self.dead.numel():
            return self.dead
        lo, hi = torch.searchsorted(self.dead, torch.tensor([s.start, s.start + s.rows])).tolist()
        return self.dead[lo:hi] - s.start

    def live(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes, ids)`` of the live rows in order, contiguous: the segment itself when there is one
        segment and no tombstone (for a loaded index, the mapped file), else a copy, kept until the
        next change."""
        if self._live is None:
            segs = self.segments()
            if len(segs) == 1 and not self.dead.numel():
                self._live = (segs[0].codes, segs[0].ids)
            elif not segs:
                self._live = (torch.empty(0, self.nbytes, dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
            else:
                codes, ids = [], []
                for s in segs:
                    keep = self._keep_mask(s)
                    codes.append(s.codes if keep is None else s.codes[keep])
                    ids.append(s.ids if keep is None else s.ids[keep])
                self._live = (torch.cat(codes), torch.cat(ids))
        return self._live

    def _keep_mask(self, s: Segment, r0: int = 0, r1: int | None = None) -> torch.Tensor | None:
        r1 = s.rows if r1 is None else r1
        dead = self._dead_in(s)
        dead = dead[(dead >= r0) & (dead < r1)]
        if not dead.numel():
            return None
        keep = torch.ones(r1 - r0, dtype=torch.bool)
        keep[dead - r0] = False
        return keep

    def iter_rows(self, start_row: int = 0, live_only: bool = True,
                  chunk_rows: int = 1 << 20) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Rows at positions >= start_row (the live ones only, or all), in order, as ``(codes, ids)``
        numpy chunks: views where possible, no more than one chunk copied at a time."""
        for s in self.segments(check=False):
            if s.start + s.rows <= start_row:
                continue  # not read, so not checked
            if not s.checked:
                self._check(s)
            for r0 in range(max(0, start_row - s.start), s.rows, chunk_rows):
                r1 = min(s.rows, r0 + chunk_rows)
                c, i = s.codes[r0:r1], s.ids[r0:r1]
                keep = self._keep_mask(s, r0, r1) if live_only else None
                if keep is not None:
                    c, i = c[keep], i[keep]
                yield c.numpy(), i.numpy()

    def compact(self) -> None:
        """Copy the live rows into one in-memory segment (drops tombstones and the file mapping)."""
        codes, ids = self.live()
        codes, ids, meta = codes.clone(), ids.clone(), self.meta
        self.__init__(self.bits)
        self.meta = meta
        self.add(codes, ids)

    # -- search -------------------------------------------------------------------------------

    def search(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(distances int32[Q, k'], ids int64[Q, k'], positions int64[Q, k'])``, ``k' = min(k, len)``,
        each row ordered by (distance, position)."""
        segs = self.segments()
        if len(segs) == 1 and not self.dead.numel():
            s = segs[0]
            d, rows = deephash_ext.hamming_topk(q, s.codes, k)
            return d, s.ids[rows], rows + s.start
        parts = []
        for s in segs:
            dead = self._dead_in(s)
            live = s.rows - int(dead.numel())
            if live == 0:
                continue
            d, rows = deephash_ext.hamming_topk(q, s.codes, min(k + int(dead.numel()), s.rows))
            if dead.numel():
                # At most `dead` of the candidates are dead, so min(k, live) live ones remain.
                d = d.masked_fill(torch.isin(rows, dead), _FAR)
                d, order = torch.sort(d, dim=1, stable=True)
                keep = min(k, live)
                d, rows = d[:, :keep], rows.gather(1, order)[:, :keep]
            parts.append((d, s.ids[rows], rows + s.start))
        return merge_topk(parts, k)

    def range_search(self, q: torch.Tensor, radius: int):
        """``(lims int64[Q+1], distances int32[M], ids int64[M], positions int64[M])``, each query's
        hits ordered by (distance, position)."""
        segs = self.segments()
        Q = q.shape[0]
        if len(segs) == 1 and not self.dead.numel():
            s = segs[0]
            lims, d, rows = deephash_ext.hamming_range(q, s.codes, radius)
            return lims, d, s.ids[rows], rows + s.start
        qs, ds, ids, pos = [], [], [], []
        for s in segs:
            lims, d, rows = deephash_ext.hamming_range(q, s.codes, radius)
            qi = torch.repeat_interleave(torch.arange(Q), lims.diff())
            dead = self._dead_in(s)
            if dead.numel():
                keep = ~torch.isin(rows, dead)
                qi, d, rows = qi[keep], d[keep], rows[keep]
            qs.append(qi), ds.append(d), ids.append(s.ids[rows]), pos.append(rows + s.start)
        if not qs:
            e = torch.empty(0, dtype=torch.int64)
            return torch.zeros(Q + 1, dtype=torch.int64), torch.empty(0, dtype=torch.int32), e, e
        qi, d, i, p = torch.cat(qs), torch.cat(ds), torch.cat(ids), torch.cat(pos)
        # Segments were visited in position order, so a stable sort by (query, distance) is the order.
        order = torch.sort(qi * (8 * self.nbytes + 1) + d, stable=True).indices
        lims = torch.zeros(Q + 1, dtype=torch.int64)
        lims[1:] = torch.bincount(qi, minlength=Q).cumsum(0)
        return lims, d[order], i[order], p[order]

    # -- files --------------------------------------------------------------------------------

    def _adopt(self, f: index_file.MappedFile, checked: int) -> None:
        """Become the contents of file f: its extents mapped, its tombstones, an empty tail. Extents
        from the ``checked``-th on were just written from checked data; earlier ones keep their state."""
        was = [s.checked for s in self.frozen] if self.file is not None else []
        self.file = f
        self.frozen, start = [], 0
        for i, e in enumerate(f.state.extents):
            codes, ids = f.tensors(e)
            ok = i >= checked or (i < len(was) and was[i]) or self.verify_mode == "none"
            self.frozen.append(Segment(codes, ids, start, i, ok))
            start += e.rows
        self.persisted = start
        self.dead = torch.from_numpy(f.state.dead.copy())
        self._codes = torch.empty(0, self.nbytes, dtype=torch.uint8)
        self._ids = torch.empty(0, dtype=torch.int64)
        self._n = 0
        self._live = None
        self._max_id = None

    @classmethod
    def load(cls, path, verify: str = "lazy") -> "CodeStore":
        if verify not in ("lazy", "full", "none"):
            raise ValueError(f'verify must be "lazy", "full" or "none", got {verify!r}')
        opened = index_file.open_file(path)
        if opened[0] == "v1":
            _, codes, ids, bits = opened
            store = cls(bits)
            store.add(torch.from_numpy(codes), torch.from_numpy(ids))
            return store
        f = opened[1]
        store = cls(f.state.bits)
        store.verify_mode = verify
        store.meta = dict(f.state.meta)
        store._adopt(f, checked=len(f.state.extents))
        if verify == "full":
            store.verify()
        return store

    def save(self, path, compact: bool = False, block_bytes: int | None = None) -> None:
        """Write the index to path and map it from there. Appends to the file in place when path is the
        file this index was loaded from (or last saved to), unchanged since, and only rows were added
        or removed; otherwise (or with compact=True) writes the whole file anew, atomically."""
        f = self.file
        same = not compact and f is not None and block_bytes is None and _same_file(path, f)
        if (same and not self._n and self.meta == f.state.meta and self.dead.numel() == len(f.state.dead)
                and _unchanged_since(f)):
            return  # nothing changed since the file was written or loaded: a save writes nothing
        # Each append writes a new directory (with every tombstone) and leaves the older ones behind:
        # once that garbage passes the bytes the index uses (and a floor), the next save rewrites the
        # file, so that it stays within O(rows + tombstones) bytes, rewrites amortised over the appends.
        if (same and int(self.dead.numel()) * 2 <= max(self.rows, 1)
                and f.size - f.state.used_bytes() <= max(f.state.used_bytes(), GARBAGE_FLOOR)):
            # The tail goes in whole, dead rows included, so every row keeps its position.
            appended = index_file.append_file(f, lambda: self.iter_rows(self.persisted, live_only=False), self._n,
                                              self.dead.numpy(), self.meta)
            if appended is not None:
                self._adopt(appended, checked=len(f.state.extents))
                return
        block_rows = (index_file.default_block_rows(self.nbytes) if block_bytes is None
                      else max(1, int(block_bytes) // self.nbytes))
        written = index_file.write_file(path, self.bits, block_rows, lambda: self.iter_rows(), len(self), self.meta)
        self._adopt(written, checked=0)  # every row was read, so checked, to be written

    def verify(self) -> int:
        """Check every block's checksums and every row's padding bits; raises naming each bad block.
        Returns the number of blocks checked."""
        problems, blocks = [], 0
        if self.file is not None:
            first = 0
            for i, e in enumerate(self.file.state.extents):
                problems += self.file.verify_extent(i, first)
                first += len(e.crc)
            blocks = first
            for s in self.frozen:
                s.checked = s.checked or not problems
        mask = index_file.padding_mask(self.bits)
        if mask and self._n:
            bad = torch.nonzero(self._codes[:self._n, -1] & mask).flatten()
            if bad.numel():
                problems.append(f"row {self.persisted + int(bad[0])} has non-zero padding bits")
        if problems:
            where = self.file.path if self.file is not None else "index"
            raise IndexError_(f"{where}: corrupted index: " + "; ".join(problems))
        return blocks


def _unchanged_since(f: index_file.MappedFile) -> bool:
    """Whether the file f maps still holds the version f holds (nobody saved there since)."""
    try:
        fd = os.open(f.path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (f.dev, f.ino):
            return False
        version, state = index_file.read_header(fd, f.path, st.st_size)
        return version == 2 and state.seq == f.state.seq
    except (OSError, IndexError_):
        return False
    finally:
        os.close(fd)


def _same_file(path, f: index_file.MappedFile) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (f.dev, f.ino)


def merge_topk(parts, k: int):
    """Merge per-part ``(distances, ids, positions)`` lists, each ordered by (distance, position) and
    the parts in position order, into the ``k`` best by (distance, position)."""
    if not parts:
        raise IndexError_("search on an empty index")
    if len(parts) == 1:
        return parts[0]
    d = torch.cat([p[0] for p in parts], 1)
    ids = torch.cat([p[1] for p in parts], 1)
    pos = torch.cat([p[2] for p in parts], 1)
    d, order = torch.sort(d, dim=1, stable=True)
    kk = min(k, d.shape[1])
    order = order[:, :kk]
    return d[:, :kk], ids.gather(1, order), pos.gather(1, order)
