"""``deephash.Index``: packed binary codes with integer ids and exact Hamming search.

File format (little-endian), written by :meth:`Index.save`:

====== ======================= ==============================================
offset field                   value
====== ======================= ==============================================
0      magic                   ``b"DHIDX\\0"`` (6 bytes)
6      version                 ``uint16`` = 1
8      bits                    ``uint32``
12     count                   ``uint64``
20     ids                     ``int64[count]``
...    codes                   ``uint8[count, ceil(bits/8)]``, packed as ``pack_bits``
end-32 checksum                SHA-256 of every byte before it
====== ======================= ==============================================

:meth:`Index.load` refuses a file whose magic, version, size or checksum is wrong, naming the file.
The packed layout and this table are in docs/formats.md.
"""
from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
import torch

import deephash_ext

from .codes import as_packed

MAGIC = b"DHIDX\0"
VERSION = 1
_HEADER = struct.Struct("<6sHIQ")


class IndexError_(ValueError):
    """A bad index file or a code width that does not match the index."""


class Index:
    """An exact Hamming index over ``bits``-bit codes."""

    def __init__(self, bits: int):
        if not 1 <= int(bits) <= 1 << 20:
            raise ValueError(f"bits must be positive, got {bits}")
        self.bits = int(bits)
        self.nbytes = (self.bits + 7) // 8
        self._codes = torch.empty(0, self.nbytes, dtype=torch.uint8)
        self._ids = torch.empty(0, dtype=torch.int64)

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
        return self

    def search(self, queries, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """``(distances int32[Q, k'], ids int64[Q, k'])``, ``k' = min(k, len)``, sorted by (distance, insertion order)."""
        if len(self) == 0:
            raise IndexError_("search on an empty index")
        d, rows = deephash_ext.hamming_topk(self._pack(queries), self._codes, int(k))
        return d, self._ids[rows]

    def save(self, path) -> None:
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
        if version != VERSION:
            raise IndexError_(f"{path}: index file version {version}, this deephash reads version {VERSION}")
        nbytes = (bits + 7) // 8
        expected = _HEADER.size + count * (8 + nbytes) + 32
        if bits < 1 or len(raw) != expected:
            raise IndexError_(f"{path}: truncated or corrupted index file ({len(raw)} bytes, the header "
                              f"announces {count} codes of {bits} bits = {expected} bytes)")
        if hashlib.sha256(raw[:-32]).digest() != raw[-32:]:
            raise IndexError_(f"{path}: corrupted index file (checksum mismatch)")
        idx = cls(bits)
        off = _HEADER.size
        idx._ids = torch.from_numpy(np.frombuffer(raw, dtype="<i8", count=count, offset=off).astype(np.int64))
        off += 8 * count
        idx._codes = torch.from_numpy(
            np.frombuffer(raw, dtype=np.uint8, count=count * nbytes, offset=off).reshape(count, nbytes).copy())
        return idx
