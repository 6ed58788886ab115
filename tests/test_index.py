import numpy as np
import pytest
import torch

import deephash_ext
from deephash.search.index import Index, IndexError_
from deephash.methods import LSH


def _codes(n, bits, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n, bits), generator=g).float() * 2 - 1


@pytest.mark.parametrize("bits", [8, 20, 64])
def test_search_matches_brute_force(bits):
    db, q = _codes(300, bits, 0), _codes(7, bits, 1)
    idx = Index(bits).add(db[:100]).add(db[100:], ids=np.arange(100, 300) + 1000)
    d, ids = idx.search(q, k=5)
    ham = (q[:, None, :] != db[None, :, :]).sum(-1)
    for i in range(len(q)):
        order = sorted(range(300), key=lambda j: (int(ham[i, j]), j))[:5]
        assert d[i].tolist() == [int(ham[i, j]) for j in order]
        assert ids[i].tolist() == [j if j < 100 else j + 1000 for j in order]


def test_round_trip(tmp_path):
    idx = Index(24).add(_codes(50, 24, 3), ids=np.arange(50) * 7)
    p = tmp_path / "a.idx"
    idx.save(p)
    back = Index.load(p)
    assert back.bits == 24 and len(back) == 50
    assert torch.equal(back.codes, idx.codes) and torch.equal(back.ids, idx.ids)
    q = _codes(4, 24, 4)
    assert all(torch.equal(a, b) for a, b in zip(back.search(q, 9), idx.search(q, 9)))


def test_truncated_and_corrupted_files_are_refused(tmp_path):
    p = tmp_path / "a.idx"
    Index(16).add(_codes(40, 16, 5)).save(p)
    raw = p.read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-5])
    with pytest.raises(IndexError_, match="short.idx.*truncated"):
        Index.load(tmp_path / "short.idx")
    (tmp_path / "tiny.idx").write_bytes(raw[:10])
    with pytest.raises(IndexError_, match="truncated"):
        Index.load(tmp_path / "tiny.idx")
    flipped = bytearray(raw)
    flipped[40] ^= 0x10
    (tmp_path / "flip.idx").write_bytes(bytes(flipped))
    with pytest.raises(IndexError_, match="flip.idx.*checksum"):
        Index.load(tmp_path / "flip.idx")
    (tmp_path / "magic.idx").write_bytes(b"XXXXXX" + raw[6:])
    with pytest.raises(IndexError_, match="magic"):
        Index.load(tmp_path / "magic.idx")


def test_wrong_width_and_empty():
    idx = Index(16)
    # An empty index answers with no neighbours, as hamming_topk over N = 0 does; queries are still checked.
    d, ids = idx.search(_codes(3, 16, 0), 5)
    assert d.shape == (3, 0) and d.dtype == torch.int32 and ids.shape == (3, 0) and ids.dtype == torch.int64
    idx.add(_codes(2, 16, 1))
    assert idx.remove([0, 1]) == 2
    d, ids = idx.search(_codes(1, 16, 0), 5)  # every row removed
    assert d.shape == (1, 0) and ids.shape == (1, 0)
    with pytest.raises(IndexError_, match="32 bits"):
        idx.search(_codes(1, 32, 0))
    with pytest.raises(IndexError_, match="32 bits"):
        idx.add(_codes(3, 32, 0))
    with pytest.raises(ValueError, match=r"bits must be in 1\.\.1048576, got 2097152"):
        Index(1 << 21)


def test_lsh_interface(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)).astype(np.float32)
    m = LSH(32, seed=3).fit(x)
    c = m.encode(x)
    assert c.shape == (200, 32) and set(c.unique().tolist()) == {-1.0, 1.0}
    m.save(tmp_path / "lsh.pt")
    back = LSH.load(tmp_path / "lsh.pt")
    assert torch.equal(back.encode(x), c)
    assert torch.equal(LSH(32, seed=3).fit(x).encode(x), c)
    with pytest.raises(ValueError, match="8..1024"):
        LSH(4)
    # Near-duplicates get near codes: nearest code of x[i] + small noise is x[i].
    idx = Index(32).add(c)
    _, ids = idx.search(m.encode(x[:20] + 1e-3), 1)
    assert ids[:, 0].tolist() == list(range(20))
    assert deephash_ext.pack_bits(c).shape == (200, 4)
