"""Index files: how :class:`deephash.Index` is stored on disk, memory-mapped on load.

Version 2 (written by this module; little-endian throughout)::

    [0, 4096)     header page
      0   magic        b"DHIDX\\0"
      6   version      uint16 = 2
      8   bits         uint32
      12  flags        uint32 = 0
      16  block_rows   uint64   rows per checksum block
      24  crc32 of bytes 0..24
      64  slot 0 \\   seq uint64, dir_offset uint64, dir_length uint64, rows uint64, live uint64,
      128 slot 1 /   dir_crc uint32, crc32 of (bytes 0..24 + the 44 slot bytes before it) uint32
    [4096, ...)   extents and directories, appended in order:
      extent codes   uint8[rows, ceil(bits/8)], starting on a 4096-byte page
      extent ids     int64[rows], starting on a 64-byte boundary after the codes
      directory      b"DHDIR\\0\\0\\0", uint64 n, n bytes of UTF-8 JSON
                     {"extents": [{"rows", "codes", "ids", "crc": [[codes crc32, ids crc32] per block]}],
                      "dead": d, "meta": {...}}, padding to 8 bytes, int64[d] dead row positions (sorted)

An index is the concatenation of its extents, rows numbered from 0 in that order (the insertion
order); ``dead`` lists the rows removed since the last full save (tombstones); ``meta`` holds what
the Index keeps about itself beyond its rows (a JSON object, ``{}`` by default). A full save writes
one extent, no tombstones. An incremental save appends one extent (the rows added since the file
was opened) and a new directory, then points the older of the two header slots at it: the slot
with the highest ``seq`` whose checksums hold is the current version, so a reader (or a save
interrupted at any point) sees the old version or the new one, never a mix.

Opening reads the header page and the directory only (the magic is checked before anything else);
the data is mapped, not read. Every block of ``block_rows`` rows has a CRC-32 of its codes and one
of its ids; :func:`verify_extent` checks them (and that padding bits are zero), naming the block.

Version 1 (the first format; still read, never written): ``magic, uint16 version = 1, uint32 bits,
uint64 count, int64 ids[count], uint8 codes[count, ceil(bits/8)]``, then the SHA-256 of every byte
before it.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import mmap
import os
import stat
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ..atomic import atomic_write, open_regular

MAGIC = b"DHIDX\0"
VERSION = 2
PAGE = 4096
DEFAULT_BLOCK_BYTES = 64 << 20
MAX_BITS = 1 << 20
MAX_EXTENTS = 64  # an incremental save past this many extents rewrites the file instead

_PREAMBLE = struct.Struct("<6sHIIQ")       # magic, version, bits, flags, block_rows
_SLOT = struct.Struct("<QQQQQI")           # seq, dir_offset, dir_length, rows, live, dir_crc
_SLOT_AT = (64, 128)
_V1_HEADER = struct.Struct("<6sHIQ")        # magic, version, bits, count
_DIR_MAGIC = b"DHDIR\0\0\0"
_MAX_META = 1 << 16  # bytes of JSON allowed for a directory's meta and framing


class IndexError_(ValueError):
    """A bad index file or a code width that does not match the index."""


@dataclass
class Extent:
    rows: int
    codes: int   # file offset of uint8[rows, nbytes]
    ids: int     # file offset of int64[rows]
    crc: list    # [[codes crc32, ids crc32]] per block


@dataclass
class State:
    """What a version-2 file holds, from its current header slot and directory."""
    bits: int
    block_rows: int
    seq: int
    extents: list[Extent]
    dead: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    size: int = 0  # bytes of the file when this state was read (all it refers to lies below)
    meta: dict = field(default_factory=dict)
    dir_offset: int = 0
    dir_length: int = 0

    def used_bytes(self) -> int:
        """Bytes of the file this version uses: the header page, its extents and its directory. The rest
        is garbage (directories and extents of older versions, padding)."""
        nbytes = self.nbytes
        return PAGE + sum(_align(e.rows * nbytes, 64) + 8 * e.rows for e in self.extents) + self.dir_length

    @property
    def nbytes(self) -> int:
        return (self.bits + 7) // 8

    @property
    def rows(self) -> int:
        return sum(e.rows for e in self.extents)


def padding_mask(bits: int) -> int:
    """The padding bits of a code's last byte (0 when bits is a multiple of 8)."""
    return (0xFF << (bits % 8)) & 0xFF if bits % 8 else 0


def default_block_rows(nbytes: int) -> int:
    return max(1, DEFAULT_BLOCK_BYTES // nbytes)


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def _preamble(bits: int, block_rows: int) -> bytes:
    head = _PREAMBLE.pack(MAGIC, VERSION, bits, 0, block_rows)
    return head + struct.pack("<I", zlib.crc32(head))


def _slot(preamble: bytes, seq: int, dir_offset: int, dir_length: int, rows: int, live: int, dir_crc: int) -> bytes:
    body = _SLOT.pack(seq, dir_offset, dir_length, rows, live, dir_crc)
    return body + struct.pack("<I", zlib.crc32(preamble[:24] + body))


# ---------------------------------------------------------------------------------------------
# Reading


def _pread(fd: int, n: int, offset: int) -> bytes:
    """``n`` bytes at ``offset`` (fewer at the end of the file), into one buffer allocated once: callers
    check ``n`` against the file's size first."""
    out = bytearray(n)
    view, got = memoryview(out), 0
    while got < n:
        k = os.preadv(fd, [view[got:]], offset + got)
        if not k:
            break
        got += k
    view.release()
    del out[got:]
    return bytes(out) if got < 1 << 20 else out


def read_header(fd: int, path, size: int):
    """``(1, (bits, count))`` for a version-1 file, ``(2, State)`` for version 2; refuses anything else,
    naming the file. Reads the header page and the directory only."""
    head = _pread(fd, min(size, PAGE), 0)
    if len(head) < 8:
        raise IndexError_(f"{path}: truncated index file ({size} bytes, shorter than the header)")
    if head[:6] != MAGIC:
        raise IndexError_(f"{path}: not a deephash index file (bad magic {head[:6]!r})")
    version = struct.unpack_from("<H", head, 6)[0]
    if version == 1:
        if len(head) < _V1_HEADER.size:
            raise IndexError_(f"{path}: truncated index file ({size} bytes, shorter than the header)")
        _, _, bits, count = _V1_HEADER.unpack_from(head)
        return 1, (bits, count)
    if version != VERSION:
        raise IndexError_(f"{path}: index file version {version}, this deephash reads versions 1 and {VERSION}")
    if len(head) < PAGE:
        raise IndexError_(f"{path}: truncated index file ({size} bytes, shorter than the {PAGE}-byte header)")
    preamble = head[:28]
    _, _, bits, flags, block_rows = _PREAMBLE.unpack_from(head)
    slot_end = _SLOT.size + 4
    reserved = (head[28:_SLOT_AT[0]], head[_SLOT_AT[0] + slot_end:_SLOT_AT[1]], head[_SLOT_AT[1] + slot_end:])
    if zlib.crc32(head[:24]) != struct.unpack_from("<I", head, 24)[0] or any(r.count(0) != len(r) for r in reserved):
        raise IndexError_(f"{path}: corrupted index file (header checksum mismatch)")
    if not 1 <= bits <= MAX_BITS or block_rows < 1 or flags != 0:
        raise IndexError_(f"{path}: corrupted index file (header announces {bits} bits, {block_rows} rows per "
                          f"block, flags {flags})")
    slots, damaged = [], []
    for i, at in enumerate(_SLOT_AT):
        raw = head[at:at + _SLOT.size + 4]
        if raw == bytes(len(raw)):
            continue
        if zlib.crc32(preamble[:24] + raw[:_SLOT.size]) != struct.unpack_from("<I", raw, _SLOT.size)[0]:
            damaged.append(i)
            continue
        slots.append(_SLOT.unpack_from(raw))
    if not slots:
        raise IndexError_(f"{path}: corrupted index file (no valid header slot)")
    seq, dir_offset, dir_length, rows, live, dir_crc = max(slots)
    if damaged:
        warnings.warn(f"{path}: header slot {damaged[0]} is damaged (an interrupted save?); "
                      f"opened the version of generation {seq}", RuntimeWarning, stacklevel=3)
    # A save may have grown the file since the caller's fstat; the slot just read is at most as new.
    size = max(size, os.fstat(fd).st_size)
    nbytes = (bits + 7) // 8
    what = None
    if dir_offset < PAGE:
        what = f"directory at offset {dir_offset}, inside the {PAGE}-byte header page"
    elif dir_offset % 8:
        what = f"directory at offset {dir_offset}, not a multiple of 8"
    elif dir_length < 16:
        what = f"directory of {dir_length} bytes, shorter than its 16-byte head"
    elif dir_offset + dir_length > size:
        what = f"directory at {dir_offset}+{dir_length} outside the file's {size} bytes"
    elif live > rows or rows * (nbytes + 8) > size:
        what = f"header announces {rows} rows ({live} live) of {bits} bits, more than the file's {size} bytes hold"
    if what is not None:
        raise IndexError_(f"{path}: truncated or corrupted index file ({what})")
    head16 = _pread(fd, 16, dir_offset)
    if head16[:8] != _DIR_MAGIC:
        raise IndexError_(f"{path}: corrupted index file (bad directory magic)")
    n = struct.unpack_from("<Q", head16, 8)[0]
    # The JSON holds at most MAX_EXTENTS extents, a checksum pair per block and a small meta; what is
    # larger no writer made. Checked before anything of that size is read.
    blocks = -(-rows // block_rows) + MAX_EXTENTS
    if n > _MAX_META + 256 * MAX_EXTENTS + 32 * blocks or 16 + n > dir_length:
        raise IndexError_(f"{path}: corrupted index file (directory announces {n} bytes of JSON for {rows} rows "
                          f"in a directory of {dir_length} bytes)")
    jlen = min(_align(16 + n, 8), dir_length)
    if dir_length > jlen + 8 * rows:
        raise IndexError_(f"{path}: corrupted index file (directory of {dir_length} bytes, more than its JSON and "
                          f"a tombstone for each of the {rows} rows take)")
    head = _pread(fd, jlen, dir_offset)
    crc = zlib.crc32(head)
    for at in range(dir_offset + jlen, dir_offset + dir_length, 1 << 20):  # no buffer of the claimed size
        crc = zlib.crc32(_pread(fd, min(1 << 20, dir_offset + dir_length - at), at), crc)
    if crc != dir_crc:
        raise IndexError_(f"{path}: corrupted index file (directory checksum mismatch)")
    state = _parse_directory(head, path, bits, block_rows, seq, size, dir_offset)
    ndead = len(state.dead)
    if dir_length != len(head) + 8 * ndead:
        raise IndexError_(f"{path}: corrupted index file (directory of {dir_length} bytes, its JSON and {ndead} "
                          f"tombstones take {len(head) + 8 * ndead})")
    tail = _pread(fd, 8 * ndead, dir_offset + len(head))
    state.dead = _tombstones(tail, ndead, state.rows, path)
    state.dir_offset, state.dir_length = dir_offset, dir_length
    if state.rows != rows or rows - ndead != live:
        raise IndexError_(f"{path}: corrupted index file (header and directory disagree on the row count)")
    return 2, state


def _tombstones(raw, ndead: int, total: int, path) -> np.ndarray:
    if len(raw) < 8 * ndead:
        raise IndexError_(f"{path}: corrupted index file (directory shorter than its tombstones)")
    dead = np.frombuffer(raw, dtype="<i8", count=ndead).astype(np.int64)
    if ndead and (dead[0] < 0 or dead[-1] >= total or (ndead > 1 and not (np.diff(dead) > 0).all())):
        raise IndexError_(f"{path}: corrupted index file (tombstones out of order or out of range)")
    return dead


def _parse_directory(raw: bytes, path, bits: int, block_rows: int, seq: int, size: int, dir_offset: int) -> State:
    """The state described by a directory's head and JSON (``raw``; the tombstones are read after)."""
    bad = lambda what: IndexError_(f"{path}: corrupted index file ({what})")  # noqa: E731
    n = struct.unpack_from("<Q", raw, 8)[0]
    if 16 + n > len(raw):
        raise bad("directory shorter than announced")
    try:
        d = json.loads(bytes(raw[16:16 + n]).decode("utf-8"))
        extents_raw, ndead, meta = d["extents"], d["dead"], d.get("meta", {})
    except RecursionError:
        raise bad("unreadable directory: JSON nested too deeply") from None
    except (ValueError, KeyError, TypeError) as e:
        raise bad(f"unreadable directory: {e}") from None
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    if not isinstance(extents_raw, list) or not is_int(ndead) or not isinstance(meta, dict):
        raise bad("unreadable directory")
    if len(extents_raw) > MAX_EXTENTS:
        # Saves rewrite the file before it has more; a file with more is crafted (and thousands of
        # extents would make every search slow).
        raise bad(f"{len(extents_raw)} extents, more than the {MAX_EXTENTS} a save makes")
    nbytes = (bits + 7) // 8
    extents, spans = [], []
    for e in extents_raw:
        if not isinstance(e, dict) or not all(is_int(e.get(k)) for k in ("rows", "codes", "ids")):
            raise bad("unreadable extent")
        rows, co, io = e["rows"], e["codes"], e["ids"]
        if rows == 0:
            raise bad("an extent of 0 rows (saves make none)")
        crc = e.get("crc")
        blocks = -(-rows // block_rows)
        if (not isinstance(crc, list) or len(crc) != blocks
                or not all(isinstance(c, list) and len(c) == 2 and all(is_int(x) for x in c) for c in crc)):
            raise bad("extent checksums do not match its rows")
        if co < PAGE or co % PAGE or io % 8 or co + rows * nbytes > io or io + 8 * rows > min(size, dir_offset):
            raise bad(f"extent of {rows} rows at {co} / {io} does not fit the file's {size} bytes "
                      f"before its directory at {dir_offset}")
        extents.append(Extent(rows, co, io, crc))
        spans.append((co, io + 8 * rows))
    spans.sort()
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        if b0 < a1:
            raise bad(f"extents overlap (bytes {a0}..{a1} and {b0}..{b1})")
    state = State(bits, block_rows, seq, extents, size=size, meta=meta)
    state.dead = np.empty(ndead, np.int64)  # the count; the tombstones themselves are read after
    return state


def read_v1(fd: int, path, size: int, bits: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(codes uint8[count, nbytes], ids int64[count])`` of a version-1 file, read whole (these files
    predate mapping); size and checksum are checked, in that order, before the data is used."""
    nbytes = (bits + 7) // 8
    expected = _V1_HEADER.size + count * (8 + nbytes) + 32
    if bits < 1 or bits > MAX_BITS or size != expected:
        raise IndexError_(f"{path}: truncated or corrupted index file ({size} bytes, the header "
                          f"announces {count} codes of {bits} bits = {expected} bytes)")
    # The digest first, a piece at a time: a file that merely claims its size (a sparse file) is refused
    # before a buffer of that size is allocated.
    digest = hashlib.sha256()
    for at in range(0, size - 32, 1 << 20):
        piece = _pread(fd, min(1 << 20, size - 32 - at), at)
        if not piece:
            break
        digest.update(piece)
    if digest.digest() != _pread(fd, 32, size - 32):
        raise IndexError_(f"{path}: corrupted index file (checksum mismatch)")
    raw = _pread(fd, size, 0)
    if len(raw) != size or hashlib.sha256(raw[:-32]).digest() != raw[-32:]:
        raise IndexError_(f"{path}: index file changed while it was read")
    off = _V1_HEADER.size
    ids = np.frombuffer(raw, dtype="<i8", count=count, offset=off).astype(np.int64)
    codes = np.frombuffer(raw, dtype=np.uint8, count=count * nbytes, offset=off + 8 * count).reshape(count, nbytes)
    mask = padding_mask(bits)
    if mask and count:
        bad = np.flatnonzero(codes[:, -1] & mask)
        if bad.size:
            raise IndexError_(f"{path}: row {int(bad[0])} has non-zero padding bits (a code of {bits} bits "
                              f"uses only the low {bits % 8} bits of its last byte)")
    return codes.copy(), ids


class MappedFile:
    """An open version-2 index file: its state and a read-only shared mapping of the whole file."""

    def __init__(self, fd: int, path, state: State, size: int):
        st = os.fstat(fd)
        self.path = os.fspath(path)
        self.dev, self.ino = st.st_dev, st.st_ino
        self.state = state
        self.size = size
        # A shared read-only mapping: pages come from the page cache and are never copied, so an
        # index larger than memory can be opened. Writing into the tensors is not allowed (it faults).
        self.mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else None
        # Blocks before each extent, for naming blocks by their number in the file.
        self.first_block = np.concatenate([[0], np.cumsum([len(e.crc) for e in state.extents])]).astype(int).tolist()

    def check_size(self) -> None:
        """Refuse to read a mapping whose file was truncated since it was mapped: reading a page past the
        end of a file kills the process (SIGBUS). Called before every search; a truncation during a search
        still kills it, which is why files must not be truncated or rewritten in place while mapped
        (docs/formats.md)."""
        if self.mm is not None and self.mm.size() < self.size:
            raise IndexError_(f"{self.path}: the index file was truncated to {self.mm.size()} bytes while mapped "
                              f"({self.size} bytes when opened); an index file must not be truncated or "
                              f"rewritten in place while in use: load it again")

    def tensors(self, e: Extent) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes uint8[rows, nbytes], ids int64[rows])``: views of the mapping, no copy."""
        nbytes = self.state.nbytes
        if e.rows == 0:
            return torch.empty(0, nbytes, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
        with warnings.catch_warnings():
            # frombuffer warns that the buffer is read-only: it is, on purpose (see __init__).
            warnings.simplefilter("ignore", UserWarning)
            codes = torch.frombuffer(self.mm, dtype=torch.uint8, count=e.rows * nbytes, offset=e.codes)
            ids = torch.frombuffer(self.mm, dtype=torch.int64, count=e.rows, offset=e.ids)
        return codes.view(e.rows, nbytes), ids

    def verify_extent(self, i: int, first_block: int = 0) -> list[str]:
        """The problems of extent ``i`` (checksums of every block, padding bits), one line each, with
        blocks numbered from ``first_block`` (the file's block count before this extent)."""
        st, e = self.state, self.state.extents[i]
        nbytes, br = st.nbytes, st.block_rows
        mask = padding_mask(st.bits)
        view = memoryview(self.mm)

        def check(b: int) -> list[str]:
            r0, r1 = b * br, min(e.rows, (b + 1) * br)
            c0, c1 = e.codes + r0 * nbytes, e.codes + r1 * nbytes
            i0, i1 = e.ids + 8 * r0, e.ids + 8 * r1
            name = f"block {first_block + b} (rows {r0}..{r1} of extent {i})"
            out = []
            if zlib.crc32(view[c0:c1]) != e.crc[b][0]:
                out.append(f"{name}: codes checksum mismatch (bytes {c0}..{c1})")
            elif mask:
                last = np.frombuffer(view[c0:c1], dtype=np.uint8).reshape(-1, nbytes)[:, -1]
                bad = np.flatnonzero(last & mask)
                if bad.size:
                    out.append(f"{name}: row {r0 + int(bad[0])} has non-zero padding bits")
            if zlib.crc32(view[i0:i1]) != e.crc[b][1]:
                out.append(f"{name}: ids checksum mismatch (bytes {i0}..{i1})")
            return out

        blocks = range(len(e.crc))
        try:
            # zlib.crc32 lets go of the GIL on large buffers, so threads check blocks side by side.
            with ThreadPoolExecutor(max_workers=max(1, min(len(blocks), torch.get_num_threads()))) as pool:
                return [p for ps in pool.map(check, blocks) for p in ps]
        finally:
            view.release()


def open_file(path):
    """Open an index file: ``("v1", codes, ids, bits)`` (read whole) or ``("v2", MappedFile)``."""
    try:
        fd = open_regular(path)  # a FIFO is refused, not waited on
    except OSError as e:
        raise IndexError_(f"{path}: cannot read index file ({e.strerror or e})") from e
    try:
        st = os.fstat(fd)
        version, info = read_header(fd, path, st.st_size)
        if version == 1:
            bits, count = info
            codes, ids = read_v1(fd, path, st.st_size, bits, count)
            return "v1", codes, ids, bits
        return "v2", MappedFile(fd, path, info, info.size)
    except OSError as e:
        raise IndexError_(f"{path}: cannot read index file ({e.strerror or e})") from e
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Writing

Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


class _Writer:
    """Writes extents and directories at the end of an open file, with running block checksums."""

    def __init__(self, f, bits: int, block_rows: int, at: int):
        self.f, self.bits, self.block_rows = f, bits, block_rows
        self.nbytes = (bits + 7) // 8
        self.at = at

    def _pad_to(self, a: int) -> None:
        n = _align(self.at, a) - self.at
        if n:
            self.f.write(bytes(n))
            self.at += n

    def _stream(self, parts: Iterator[np.ndarray], row_bytes: int, rows: int) -> list[int]:
        """Writes the arrays of parts (rows of row_bytes bytes each) and returns per-block CRCs."""
        crcs, crc, in_block, written = [], 0, 0, 0
        for arr in parts:
            buf = memoryview(np.ascontiguousarray(arr)).cast("B")
            n = len(buf) // row_bytes
            if written + n > rows:
                raise ValueError(f"an index writer was given more than the {rows} rows announced")
            pos = 0
            while pos < n:
                take = min(n - pos, self.block_rows - in_block)
                piece = buf[pos * row_bytes:(pos + take) * row_bytes]
                crc = zlib.crc32(piece, crc)
                self.f.write(piece)
                pos += take
                in_block += take
                if in_block == self.block_rows:
                    crcs.append(crc)
                    crc, in_block = 0, 0
            written += n
            self.at += n * row_bytes
        if written != rows:
            raise ValueError(f"an index writer was given {written} rows, {rows} announced")
        if in_block:
            crcs.append(crc)
        return crcs

    def extent(self, chunks: Chunks, rows: int) -> Extent:
        self._pad_to(PAGE)
        codes_at = self.at
        mask = padding_mask(self.bits)

        def codes():
            for c, _ in chunks():
                if c.dtype != np.uint8 or c.ndim != 2 or c.shape[1] != self.nbytes:
                    raise ValueError(f"an index writer takes uint8 codes [n, {self.nbytes}], got {c.dtype} {c.shape}")
                if mask and len(c) and (c[:, -1] & mask).any():
                    raise IndexError_("codes with non-zero padding bits cannot be written")
                yield c

        ccrc = self._stream(codes(), self.nbytes, rows)
        self._pad_to(64)
        ids_at = self.at
        icrc = self._stream((np.asarray(i, dtype="<i8") for _, i in chunks()), 8, rows)
        return Extent(rows, codes_at, ids_at, [list(p) for p in zip(ccrc, icrc)])

    def directory(self, extents: list[Extent], dead: np.ndarray, meta: dict) -> tuple[int, int, int]:
        """Writes the directory; returns (offset, length, crc32)."""
        self._pad_to(8)
        doc = json.dumps({"extents": [e.__dict__ for e in extents], "dead": int(len(dead)), "meta": meta},
                         separators=(",", ":")).encode()
        raw = _DIR_MAGIC + struct.pack("<Q", len(doc)) + doc
        raw += bytes(_align(len(raw), 8) - len(raw)) + np.asarray(dead, dtype="<i8").tobytes()
        at = self.at
        self.f.write(raw)
        self.at += len(raw)
        return at, len(raw), zlib.crc32(raw)


def write_file(path, bits: int, block_rows: int, chunks: Chunks, rows: int, meta: dict | None = None) -> MappedFile:
    """Write a new file of one extent (``chunks()`` yields ``(codes, ids)`` arrays, ``rows`` in all, and
    is called twice: once for the codes, once for the ids) and put it at ``path`` atomically: a
    temporary file of a name unique to this writer, fsync, rename, fsync of the folder. Returns the
    new file, mapped (from the written inode, whatever ``path`` names by then)."""
    path = os.fspath(path)
    try:
        with atomic_write(path, "xb+", special=False) as f:
            pre = _preamble(bits, block_rows)
            f.write(pre + bytes(PAGE - len(pre)))
            w = _Writer(f, bits, block_rows, PAGE)
            extents = [w.extent(chunks, rows)] if rows else []
            at, length, crc = w.directory(extents, np.empty(0, np.int64), meta or {})
            f.flush()
            os.pwrite(f.fileno(), _slot(pre, 1, at, length, rows, rows, crc), _SLOT_AT[1])
            size = os.fstat(f.fileno()).st_size
            state = State(bits, block_rows, 1, extents, meta=dict(meta or {}), dir_offset=at, dir_length=length)
            mapped = MappedFile(f.fileno(), path, state, size)
    except OSError as e:
        raise IndexError_(f"{path}: cannot write index file ({e.strerror or e})") from e
    return mapped


def append_file(source: MappedFile, chunks: Chunks, new_rows: int, dead: np.ndarray,
                meta: dict | None = None) -> MappedFile | None:
    """Append ``new_rows`` rows as one extent and the tombstones ``dead`` to the file ``source`` was
    opened from, in place, under an exclusive lock. Returns the file mapped again, or None when the
    file at ``source.path`` is no longer the one ``source`` holds (replaced or saved since, or too many
    extents): the caller then writes the whole index instead."""
    path = source.path
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR):
            return None
        raise IndexError_(f"{path}: cannot write index file ({e.strerror or e})") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (source.dev, source.ino):
            return None
        version, state = read_header(fd, path, st.st_size)
        if (version != 2 or state.seq != source.state.seq or len(state.extents) + bool(new_rows) > MAX_EXTENTS
                or state.seq + 1 >= 1 << 64):
            return None  # (a full save starts the sequence again)
        old = source.state
        pre = _preamble(old.bits, old.block_rows)
        with open(fd, "r+b", closefd=False) as f:
            f.seek(st.st_size)
            w = _Writer(f, old.bits, old.block_rows, st.st_size)
            extents = list(old.extents) + ([w.extent(chunks, new_rows)] if new_rows else [])
            at, length, crc = w.directory(extents, dead, meta or {})
            f.flush()
        os.fsync(fd)  # the data and directory first, then the slot that points at them
        rows = sum(e.rows for e in extents)
        seq = old.seq + 1
        os.pwrite(fd, _slot(pre, seq, at, length, rows, rows - len(dead), crc), _SLOT_AT[seq % 2])
        os.fsync(fd)
        size = os.fstat(fd).st_size
        state = State(old.bits, old.block_rows, seq, extents, np.asarray(dead, np.int64), meta=dict(meta or {}),
                      dir_offset=at, dir_length=length)
        return MappedFile(fd, path, state, size)
    except OSError as e:
        raise IndexError_(f"{path}: cannot write index file ({e.strerror or e})") from e
    finally:
        # Explicitly: the mapping holds a duplicate of fd, which would keep the lock.
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
