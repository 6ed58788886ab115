"""Index storage: the mapped file format, checksums, appends and removals, range search, FAISS, v1 files,
atomic saves under concurrency."""
import hashlib
import multiprocessing as mp
import os
import struct
import time
import warnings

import numpy as np
import pytest
import torch

import deephash_ext as de
from deephash.search import index_file
from deephash.search.index import Index, IndexError_
from deephash_ext import reference as ref


def packed(n, bits, seed, distinct=None):
    g = torch.Generator().manual_seed(seed)
    if distinct is None:
        return de.pack_bits(torch.randint(0, 2, (n, bits), generator=g))
    pool = de.pack_bits(torch.randint(0, 2, (distinct, bits), generator=g))
    return pool[torch.randint(0, distinct, (n,), generator=g)]


class Model:
    """What an index must hold: (code, id) rows in insertion order; removal drops rows by id."""

    def __init__(self, bits):
        self.bits = bits
        self.codes = torch.empty(0, (bits + 7) // 8, dtype=torch.uint8)
        self.ids = torch.empty(0, dtype=torch.int64)

    def add(self, c, i):
        self.codes, self.ids = torch.cat([self.codes, c]), torch.cat([self.ids, torch.as_tensor(i)])

    def copy(self):
        m = Model(self.bits)
        m.codes, m.ids = self.codes, self.ids
        return m

    def remove(self, ids):
        keep = ~torch.isin(self.ids, torch.as_tensor(ids))
        n = int((~keep).sum())
        self.codes, self.ids = self.codes[keep], self.ids[keep]
        return n

    def search(self, q, k):
        d, rows = ref.hamming_topk(q, self.codes, k)
        return d, self.ids[rows]

    def range_search(self, q, r):
        lims, d, rows = ref.hamming_range(q, self.codes, r)
        return lims, d, self.ids[rows]


def same(idx, model, q, k=7, radius=None):
    assert len(idx) == len(model.ids)
    assert torch.equal(idx.codes, model.codes) and torch.equal(idx.ids, model.ids)
    for a, b in zip(idx.search(q, k), model.search(q, k)):
        assert torch.equal(a, b)
    r = model.bits // 3 if radius is None else radius
    for a, b in zip(idx.range_search(q, r), model.range_search(q, r)):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# Format, mapping, round trips


@pytest.mark.parametrize("bits", [1, 13, 64, 100])
def test_round_trip_is_mapped_not_copied(tmp_path, bits):
    idx = Index(bits).add(packed(500, bits, 1), ids=np.arange(500) * 3 + 1)
    p = tmp_path / "a.idx"
    idx.save(p)
    back = Index.load(p)
    assert back.bits == bits and len(back) == 500
    assert torch.equal(back.codes, packed(500, bits, 1)) and torch.equal(back.ids, torch.arange(500) * 3 + 1)
    f = back._store.file
    base = np.frombuffer(f.mm, dtype=np.uint8).ctypes.data
    e = f.state.extents[0]
    assert back.codes.data_ptr() == base + e.codes and back.codes.data_ptr() % 4096 == 0
    assert back.ids.data_ptr() == base + e.ids and back.ids.data_ptr() % 64 == 0
    q = packed(6, bits, 2)
    for a, b in zip(back.search(q, 9), idx.search(q, 9)):
        assert torch.equal(a, b)


def test_header_layout(tmp_path):
    p = tmp_path / "a.idx"
    Index(20).add(packed(10, 20, 0)).save(p)
    raw = p.read_bytes()
    assert raw[:6] == b"DHIDX\0" and struct.unpack_from("<HI", raw, 6) == (2, 20)
    assert len(raw) % 8 == 0 and len(raw) > 4096


def test_empty_index_round_trip(tmp_path):
    p = tmp_path / "e.idx"
    Index(16).save(p)
    back = Index.load(p)
    assert len(back) == 0 and back.codes.shape == (0, 2)
    d, ids = back.search(packed(1, 16, 0))
    assert d.shape == (1, 0) and ids.shape == (1, 0)
    lims, d, ids = back.range_search(packed(2, 16, 0), 3)
    assert lims.tolist() == [0, 0, 0] and d.numel() == 0


def write_v1(path, bits, codes, ids):
    body = struct.pack("<6sHIQ", b"DHIDX\0", 1, bits, len(ids))
    body += np.asarray(ids, "<i8").tobytes() + np.asarray(codes, np.uint8).tobytes()
    path.write_bytes(body + hashlib.sha256(body).digest())


def test_version_1_files_still_load(tmp_path):
    c, ids = packed(77, 24, 3), np.arange(77) * 7
    p = tmp_path / "v1.idx"
    write_v1(p, 24, c, ids)
    back = Index.load(p)
    assert back.bits == 24 and torch.equal(back.codes, c) and back.ids.tolist() == ids.tolist()
    back.add(packed(3, 24, 4))
    back.save(p)  # upgrades to version 2
    assert struct.unpack_from("<H", p.read_bytes(), 6)[0] == 2
    assert len(Index.load(p)) == 80
    write_v1(p, 24, c, ids)
    raw = bytearray(p.read_bytes())
    raw[40] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(IndexError_, match="checksum"):
        Index.load(p)
    p.write_bytes(bytes(raw[:-3]))
    with pytest.raises(IndexError_, match="truncated"):
        Index.load(p)


def test_version_1_padding_bits_refused(tmp_path):
    c = packed(10, 12, 5)
    c[4, 1] |= 0x80  # bit 15 of a 12-bit code
    write_v1(tmp_path / "pad.idx", 12, c, np.arange(10))
    with pytest.raises(IndexError_, match="row 4 has non-zero padding bits"):
        Index.load(tmp_path / "pad.idx")


def test_magic_is_checked_before_reading(tmp_path):
    junk = tmp_path / "junk.bin"
    with open(junk, "wb") as f:
        f.truncate(200 << 20)  # 200 MB of zeros (sparse)
    t = time.perf_counter()
    with pytest.raises(IndexError_, match="junk.bin.*bad magic"):
        Index.load(junk)
    assert time.perf_counter() - t < 5
    big_v1 = tmp_path / "big_v1.idx"
    with open(big_v1, "wb") as f:  # a version-1 header announcing far more than the file holds
        f.write(struct.pack("<6sHIQ", b"DHIDX\0", 1, 64, 10**9))
        f.truncate(200 << 20)
    with pytest.raises(IndexError_, match="truncated or corrupted"):
        Index.load(big_v1)
    with pytest.raises(IndexError_, match="version 9"):
        (tmp_path / "v9.idx").write_bytes(b"DHIDX\0" + struct.pack("<H", 9) + bytes(5000))
        Index.load(tmp_path / "v9.idx")
    with pytest.raises(IndexError_, match="cannot read"):
        Index.load(tmp_path / "missing.idx")
    with pytest.raises(IndexError_, match="not a regular file"):
        Index.load(tmp_path)


def test_padding_bits_refused_on_add():
    c = packed(5, 20, 0)
    c[2, 2] |= 0x40
    with pytest.raises(IndexError_, match="packed code 2 has non-zero padding bits"):
        Index(20).add(c)
    Index(24).add(c)  # no padding at 24 bits


# ------------------------------------------------------------------------------------------------
# Checksums and corruption


def saved(tmp_path, bits=64, n=1000, block_rows=100, name="c.idx"):
    p = tmp_path / name
    Index(bits).add(packed(n, bits, 9)).save(p, block_bytes=block_rows * ((bits + 7) // 8))
    return p


def flip(path, offset, bit=0x10):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ bit]))


def test_corrupted_block_is_named_on_access_and_by_verify(tmp_path):
    p = saved(tmp_path)
    ok = Index.load(p)
    assert ok.verify() == 10
    e = ok._store.file.state.extents[0]
    del ok
    flip(p, e.codes + 3 * 100 * 8 + 17)  # block 3's codes
    idx = Index.load(p)  # opening reads no data: no error yet
    with pytest.raises(IndexError_, match=r"c\.idx.*block 3 \(rows 300\.\.400 of extent 0\): codes checksum"):
        idx.search(packed(2, 64, 1), 5)
    with pytest.raises(IndexError_, match=r"block 3 \(rows 300\.\.400") as err:
        idx.verify()
    assert "block 2 " not in str(err.value) and "block 4 " not in str(err.value)
    with pytest.raises(IndexError_, match="block 3"):
        Index.load(p, verify="full")
    assert len(Index.load(p, verify="none").search(packed(2, 64, 1), 5)[0]) == 2  # the caller's choice
    appended = Index.load(p)
    appended.add(packed(5, 64, 3), ids=np.arange(5) + 5000)  # (default ids would read, so check, every id)
    appended.save(p)  # appends without reading the old extent...
    with pytest.raises(IndexError_, match="block 3 "):
        appended.search(packed(2, 64, 1), 5)  # ...which is still checked when first searched
    with pytest.raises(IndexError_, match="block 3 "):
        appended.save(p, compact=True)  # a rewrite reads every row: the corruption is not copied


def test_corrupted_ids_and_two_blocks(tmp_path):
    p = saved(tmp_path)
    e = Index.load(p)._store.file.state.extents[0]
    flip(p, e.ids + 8 * 950)  # block 9's ids
    flip(p, e.codes + 8 * 10)  # block 0's codes
    with pytest.raises(IndexError_) as err:
        Index.load(p).verify()
    msg = str(err.value)
    assert "block 0 (rows 0..100 of extent 0): codes checksum" in msg
    assert "block 9 (rows 900..1000 of extent 0): ids checksum" in msg


def test_corrupted_header_directory_and_truncation(tmp_path):
    p = saved(tmp_path)
    raw = p.read_bytes()
    for offset, pattern in ((10, "header checksum"), (128 + 3, "no valid header slot")):  # slot 1 holds seq 1
        bad = bytearray(raw)
        bad[offset] ^= 1
        p.write_bytes(bytes(bad))
        with pytest.raises(IndexError_, match=pattern):
            Index.load(p)
    bad = bytearray(raw)
    bad[64 + 3] ^= 1  # the unused slot: the file opens, with a warning
    p.write_bytes(bytes(bad))
    with pytest.warns(RuntimeWarning, match="slot 0 is damaged"):
        assert len(Index.load(p)) == 1000
    bad = bytearray(raw)
    bad[-20] ^= 1  # inside the directory (at the end of a fresh file)
    p.write_bytes(bytes(bad))
    with pytest.raises(IndexError_, match="directory checksum"):
        Index.load(p)
    p.write_bytes(raw[:-100])
    with pytest.raises(IndexError_, match="truncated or corrupted"):
        Index.load(p)
    p.write_bytes(raw[:3000])
    with pytest.raises(IndexError_, match="truncated"):
        Index.load(p)


def test_padding_bits_in_a_file_are_found(tmp_path, monkeypatch):
    c = packed(300, 12, 2)
    c[123, 1] |= 0x20
    monkeypatch.setattr(index_file, "padding_mask", lambda bits: 0)  # a writer that does not check
    idx = Index(16).add(c)  # 16 bits, so add() lets the bytes through
    idx.bits = 12
    idx._store.bits = 12
    p = tmp_path / "pad.idx"
    idx.save(p, block_bytes=200)
    monkeypatch.undo()
    with pytest.raises(IndexError_, match="row 123 has non-zero padding bits"):
        Index.load(p).verify()


# ------------------------------------------------------------------------------------------------
# Appends, removals, incremental saves


def test_add_is_amortised():
    idx = Index(32)
    buffers = set()
    for i in range(5000):
        idx.add(packed(1, 32, i))
        buffers.add(idx._store._codes.data_ptr())
    assert len(idx) == 5000 and len(buffers) < 15  # geometric growth: a handful of reallocations
    assert idx.ids.tolist() == list(range(5000))


@pytest.mark.parametrize("bits", [12, 64])
def test_random_adds_removes_and_saves_match_the_model(tmp_path, bits):
    rng = np.random.default_rng(bits)
    idx, model = Index(bits), Model(bits)
    p = tmp_path / "m.idx"
    q = packed(5, bits, 999, distinct=3)
    next_id = 0
    for step in range(40):
        op = rng.integers(0, 6)
        if op <= 1:
            n = int(rng.integers(0, 60))
            c = packed(n, bits, step, distinct=6)
            ids = np.arange(next_id, next_id + n) if rng.random() < 0.7 else rng.integers(0, 50, n)
            next_id += n
            idx.add(c, ids)
            model.add(c, torch.as_tensor(ids, dtype=torch.int64))
        elif op == 2 and len(model.ids):
            gone = rng.choice(model.ids.numpy(), size=min(3, len(model.ids)))
            assert idx.remove(gone) == model.remove(gone)
        elif op == 3:
            idx.save(p, block_bytes=int(rng.integers(1, 200)) if rng.random() < 0.3 else None)
            saved = model.copy()
        elif op == 4 and p.exists():
            idx = Index.load(p)  # back to the last save: changes since are dropped
            model = saved.copy()
        else:
            idx.save(p, compact=True)
            saved = model.copy()
            idx = Index.load(p, verify="full")
        if len(model.ids):
            same(idx, model, q, k=int(rng.integers(1, 30)), radius=int(rng.integers(0, bits + 1)))
    idx.save(p)
    same(Index.load(p, verify="full"), model, q)


def test_incremental_save_appends_instead_of_rewriting(tmp_path):
    p = tmp_path / "inc.idx"
    Index(64).add(packed(10_000, 64, 0)).save(p)
    size0 = p.stat().st_size
    ino = p.stat().st_ino
    idx = Index.load(p)
    first = p.read_bytes()[:size0]
    idx.add(packed(100, 64, 1))
    idx.remove([3, 10_050])
    idx.save(p)
    assert p.stat().st_ino == ino  # same file, extended
    assert p.read_bytes()[4096:size0 - 400] == first[4096:size0 - 400]  # old rows untouched
    assert p.stat().st_size - size0 < 8192 + 100 * 16
    st = Index.load(p)._store.file.state
    assert len(st.extents) == 2 and st.dead.tolist() == [3, 10_050] and st.seq == 2
    back = Index.load(p, verify="full")
    assert len(back) == 10_098 and 3 not in back.ids.tolist() and 10_050 not in back.ids.tolist()
    back.save(p, compact=True)
    assert p.stat().st_ino != ino and len(Index.load(p)._store.file.state.extents) == 1


def test_save_after_someone_else_saved_rewrites(tmp_path):
    p = tmp_path / "x.idx"
    Index(16).add(packed(50, 16, 0)).save(p)
    a, b = Index.load(p), Index.load(p)
    a.add(packed(5, 16, 1))
    a.save(p)  # appends: generation 2
    b.add(packed(7, 16, 2))
    b.save(p)  # b's file is out of date: b writes its whole view instead
    back = Index.load(p, verify="full")
    assert len(back) == 57 and torch.equal(back.codes, torch.cat([packed(50, 16, 0), packed(7, 16, 2)]))


def test_interrupted_append_leaves_the_old_version(tmp_path):
    p = tmp_path / "t.idx"
    Index(32).add(packed(40, 32, 0)).save(p)
    idx = Index.load(p)
    idx.add(packed(8, 32, 1))
    idx.save(p)  # generation 2 in slot 0
    with open(p, "r+b") as f:  # a torn write of the newest slot
        f.seek(64 + 20)
        f.write(b"\xff\xff\xff")
    with pytest.warns(RuntimeWarning, match="slot 0 is damaged"):
        back = Index.load(p)
    assert len(back) == 40 and torch.equal(back.codes, packed(40, 32, 0))


def test_remove_reports_counts_and_default_ids_do_not_repeat():
    idx = Index(8).add(packed(6, 8, 0))
    assert idx.remove([1, 1, 4, 99]) == 2 and idx.remove([1]) == 0
    assert idx.ids.tolist() == [0, 2, 3, 5]
    idx.add(packed(2, 8, 1))
    assert idx.ids.tolist() == [0, 2, 3, 5, 6, 7]
    idx.remove(idx.ids)
    assert len(idx) == 0
    d, ids = idx.search(packed(1, 8, 0))
    assert d.shape == (1, 0) and ids.shape == (1, 0)


def test_meta_travels_with_the_file(tmp_path):
    # The index's own facts (kind="mih", m) and any other key of the meta survive saves, appends,
    # compaction and sharding.
    p = tmp_path / "meta.idx"
    idx = Index(16, kind="mih", m=2).add(packed(20, 16, 0))
    idx.save(p)
    back = Index.load(p)
    assert back._store.meta == {"kind": "mih", "m": 2} and back.kind == "mih" and back.m == 2
    back.add(packed(3, 16, 1))
    back._store.meta["note"] = 3
    back.save(p)  # an append writes a new directory, with the new meta
    assert len(Index.load(p)._store.file.state.extents) == 2 and Index.load(p)._store.meta["note"] == 3
    back.compact()
    assert back._store.meta == {"kind": "mih", "m": 2, "note": 3}
    back.shard(2, tmp_path / "sh")
    shard = Index.load(tmp_path / "sh" / "shard-00001-of-00002.idx")
    assert shard._store.meta["kind"] == "mih" and shard.kind == "mih" and shard.m == 2


def test_compact_drops_the_mapping(tmp_path):
    p = tmp_path / "c.idx"
    Index(16).add(packed(20, 16, 0)).save(p)
    idx = Index.load(p)
    idx.remove([0, 1])
    idx.compact()
    assert idx._store.file is None and len(idx) == 18 and idx.ids[0] == 2


# ------------------------------------------------------------------------------------------------
# Concurrent writers


def _saver(path, seed, rounds, incremental):
    for r in range(rounds):
        if incremental:
            try:
                idx = Index.load(path)
            except IndexError_:
                idx = Index(64)
            idx.add(packed(10, 64, seed * 1000 + r), ids=np.full(10, seed * 1000 + r))
        else:
            idx = Index(64).add(packed(200 + seed, 64, seed), ids=np.full(200 + seed, seed))
        idx.save(path)


def _reader(path, seconds, out):
    bad, seen = [], 0
    end = time.time() + seconds
    while time.time() < end:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                idx = Index.load(path, verify="full")
            ids = idx.ids
            seen += 1
            if len(ids) and not (len(ids) % 10 == 0 or len(torch.unique(ids)) == 1):
                bad.append(f"mixed rows: {len(ids)}")
        except IndexError_ as e:
            if "cannot read" not in str(e):
                bad.append(str(e))
    out.put((seen, bad))


@pytest.mark.parametrize("incremental", [False, True])
def test_concurrent_saves_never_corrupt(tmp_path, incremental):
    p = str(tmp_path / "shared.idx")
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    writers = [ctx.Process(target=_saver, args=(p, s, 15, incremental)) for s in range(4)]
    reader = ctx.Process(target=_reader, args=(p, 6, q))
    for w in writers:
        w.start()
    reader.start()
    try:
        for w in writers:
            w.join(120)
            assert w.exitcode == 0
        seen, bad = q.get(timeout=60)
        reader.join(60)
    finally:
        for w in writers + [reader]:
            if w.is_alive():
                w.kill()
    assert bad == [] and seen > 0
    final = Index.load(p, verify="full")
    if not incremental:
        assert len(torch.unique(final.ids)) == 1 and len(final) == 200 + int(final.ids[0])
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------
# FAISS


@pytest.fixture
def faiss_mod():
    return pytest.importorskip("faiss")


@pytest.mark.parametrize("bits,custom_ids", [(64, False), (64, True), (20, True), (128, False)])
def test_faiss_round_trip_same_bytes_same_results(faiss_mod, bits, custom_ids):
    c = packed(800, bits, 4, distinct=40)
    ids = np.arange(800) * 11 + 5 if custom_ids else None
    idx = Index(bits).add(c, ids)
    f = idx.to_faiss()
    assert isinstance(f, faiss_mod.IndexBinaryIDMap if custom_ids else faiss_mod.IndexBinaryFlat)
    assert f.ntotal == 800 and f.d == 8 * ((bits + 7) // 8)
    q = packed(9, bits, 5, distinct=40)
    D, I = f.search(q.numpy(), 25)
    d, i = idx.search(q, 25)
    assert np.array_equal(D, d.numpy())
    # FAISS orders ties by its heap; the sets at each distance agree, and the kth distance too.
    for row in range(9):
        for dist in np.unique(D[row]):
            inner = D[row] == dist
            if dist < D[row, -1]:
                assert set(I[row][inner]) == set(i[row].numpy()[inner])
    back = Index.from_faiss(f, bits=bits)
    assert torch.equal(back.codes, idx.codes) and torch.equal(back.ids, idx.ids)
    assert Index.from_faiss(f).bits == 8 * ((bits + 7) // 8)
    lims, Dr, Ir = f.range_search(q.numpy(), bits // 3 + 1)  # FAISS's radius is exclusive
    l2, d2, i2 = idx.range_search(q, bits // 3)
    assert np.array_equal(lims, l2.numpy())
    for row in range(9):
        a, b = slice(lims[row], lims[row + 1]), slice(int(l2[row]), int(l2[row + 1]))
        assert sorted(zip(Dr[a].astype(int), Ir[a])) == sorted(zip(d2[b].tolist(), i2[b].tolist()))


def test_from_faiss_refuses_other_indexes(faiss_mod):
    with pytest.raises(IndexError_, match="IndexBinaryFlat"):
        Index.from_faiss(faiss_mod.IndexBinaryHash(64, 8))
    f = faiss_mod.IndexBinaryFlat(16)
    with pytest.raises(IndexError_, match="bits=20"):
        Index.from_faiss(f, bits=20)
