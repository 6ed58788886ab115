"""``deephash.Index``: packed binary codes with integer ids and exact Hamming search.

``Index(bits, kind="flat")`` scans every code per query (``hamming_topk``); ``kind="mih"`` answers
the same searches, with the same results, through multi-index hash tables (:mod:`deephash.mih`),
built at the first search after the codes change.

File format (little-endian), written by :meth:`Index.save` (version 1 for ``kind="flat"``):

====== ======================= ==============================================
offset field                   value
====== ======================= ==============================================
0      magic                   ``b"DHIDX\\0"`` (6 bytes)
6      version                 ``uint16`` = 1
8      bits                    ``uint32``
12     count                   ``uint64``
20     ids                     ``int64[count]``
...    codes                   ``uint8[count, ceil(bits/8)]`` (SPEC.md's packed layout)
end-32 checksum                SHA-256 of every byte before it
====== ======================= ==============================================

Version 2 (``kind="mih"``) inserts 12 bytes after ``count``: ``kind`` (``uint8``, 1 = mih), 3 zero
bytes, ``m`` (``uint32``, the number of substrings; 0 = chosen from the count) and 4 zero bytes; ids
and codes follow at offset 32. The hash tables are not stored: they are rebuilt at the first
search after a load. Reading stored tables back (with their checksum) measured 1.4-1.9x faster than
rebuilding them at 1e7 codes, but they are 4.7x (64 bits) to 7.9x (128 bits) the size of the codes,
so storing them would multiply the file and the time to save it; a rebuild of 1e7 codes takes
seconds and is paid only by the first search (``benchmarks/results/mih-cpu-*.md``).

:meth:`Index.load` refuses a file whose magic, version, size or checksum is wrong, naming the file.
"""
from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
import torch

import deephash_ext

from .metrics import as_packed
from .mih import MultiIndex, check_m

MAGIC = b"DHIDX\0"
VERSION = 1
_HEADER = struct.Struct("<6sHIQ")
KINDS = ("flat", "mih")
_MIH_VERSION = 2
_MIH_FIELDS = struct.Struct("<B3xI4x")  # kind, m; ids start 8-byte aligned


class IndexError_(ValueError):
    """A bad index file or a code width that does not match the index."""


class Index:
    """An exact Hamming index over ``bits``-bit codes.

    ``kind="mih"`` searches by multi-index hashing over ``m`` substrings (default: chosen from the
    number of codes, see :func:`deephash.mih.default_m`); its results equal ``kind="flat"``'s.
    """

    def __init__(self, bits: int, kind: str = "flat", m: int | None = None):
        if not 1 <= int(bits) <= 1 << 20:
            raise ValueError(f"bits must be positive, got {bits}")
        if kind not in KINDS:
            raise ValueError(f'kind must be "flat" or "mih", got {kind!r}')
        self.bits = int(bits)
        self.nbytes = (self.bits + 7) // 8
        self.kind = kind
        if m is not None and kind != "mih":
            raise ValueError('m (the number of substrings) applies to kind="mih" only')
        self.m = None if m is None else check_m(m, self.bits)
        self._codes = torch.empty(0, self.nbytes, dtype=torch.uint8)
        self._ids = torch.empty(0, dtype=torch.int64)
        self._mih: MultiIndex | None = None

    def __len__(self) -> int:
        return int(self._ids.numel())

    @property
    def codes(self) -> torch.Tensor:
        return self._codes

    @property
    def ids(self) -> torch.Tensor:
        return self._ids

    def _pack(self, codes) -> torch.Tensor:
        t = torch.as_tensor(codes)
        if t.dtype != torch.uint8 and t.dim() == 2 and t.shape[1] != self.bits:
            raise IndexError_(f"codes have {t.shape[1]} bits, the index holds {self.bits}-bit codes")
        p = as_packed(t)
        if p.dim() != 2 or p.shape[1] != self.nbytes:
            raise IndexError_(f"packed codes must be uint8[N, {self.nbytes}] for {self.bits} bits, got {tuple(p.shape)}")
        return p

    def add(self, codes, ids=None) -> "Index":
        """Add codes (packed ``uint8`` or real / ±1 ``[N, bits]``); ids default to 0.. in order of addition."""
        p = self._pack(codes)
        if ids is None:
            ids = torch.arange(len(self), len(self) + p.shape[0], dtype=torch.int64)
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64).reshape(-1)
        if ids.numel() != p.shape[0]:
            raise IndexError_(f"{ids.numel()} ids for {p.shape[0]} codes")
        self._codes = torch.cat([self._codes, p])
        self._ids = torch.cat([self._ids, ids])
        self._mih = None
        return self

    def multi_index(self) -> MultiIndex:
        """The hash tables of ``kind="mih"`` (built now if the codes changed since the last build)."""
        if self._mih is None:
            self._mih = MultiIndex(self._codes, self.bits, self.m)
        return self._mih

    def search(self, queries, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """``(distances int32[Q, k'], ids int64[Q, k'])``, ``k' = min(k, len)``, sorted by (distance, insertion order)."""
        if len(self) == 0:
            raise IndexError_("search on an empty index")
        q = self._pack(queries)
        if self.kind == "mih":
            d, rows = self.multi_index().search(q, self._codes, int(k))
        else:
            d, rows = deephash_ext.hamming_topk(q, self._codes, int(k))
        return d, self._ids[rows]

    def save(self, path) -> None:
        if self.kind == "mih":
            body = _HEADER.pack(MAGIC, _MIH_VERSION, self.bits, len(self)) + _MIH_FIELDS.pack(1, self.m or 0)
        else:
            body = _HEADER.pack(MAGIC, VERSION, self.bits, len(self))
        body += self._ids.numpy().astype("<i8").tobytes() + self._codes.numpy().tobytes()
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(body + hashlib.sha256(body).digest())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "Index":
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise IndexError_(f"{path}: cannot read index file ({e})") from e
        if len(raw) < _HEADER.size + 32:
            raise IndexError_(f"{path}: truncated index file ({len(raw)} bytes, shorter than the header)")
        magic, version, bits, count = _HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise IndexError_(f"{path}: not a deephash index file (bad magic {magic!r})")
        if version not in (VERSION, _MIH_VERSION):
            raise IndexError_(f"{path}: index file version {version}, this deephash reads versions {VERSION} "
                              f"and {_MIH_VERSION}")
        off = _HEADER.size
        kind, m = "flat", None
        if version == _MIH_VERSION:
            if len(raw) < off + _MIH_FIELDS.size + 32:
                raise IndexError_(f"{path}: truncated index file ({len(raw)} bytes, shorter than the header)")
            kind_code, m_field = _MIH_FIELDS.unpack_from(raw, off)
            if kind_code != 1:
                raise IndexError_(f"{path}: corrupted index file (unknown index kind {kind_code})")
            kind, m = "mih", (m_field or None)
            off += _MIH_FIELDS.size
        nbytes = (bits + 7) // 8
        expected = off + count * (8 + nbytes) + 32
        if bits < 1 or len(raw) != expected:
            raise IndexError_(f"{path}: truncated or corrupted index file ({len(raw)} bytes, the header "
                              f"announces {count} codes of {bits} bits = {expected} bytes)")
        if hashlib.sha256(raw[:-32]).digest() != raw[-32:]:
            raise IndexError_(f"{path}: corrupted index file (checksum mismatch)")
        try:
            idx = cls(bits, kind, m)
        except ValueError as e:
            raise IndexError_(f"{path}: corrupted index file ({e})") from e
        idx._ids = torch.from_numpy(np.frombuffer(raw, dtype="<i8", count=count, offset=off).astype(np.int64))
        off += 8 * count
        idx._codes = torch.from_numpy(
            np.frombuffer(raw, dtype=np.uint8, count=count * nbytes, offset=off).reshape(count, nbytes).copy())
        return idx
