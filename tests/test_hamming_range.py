"""hamming_range (every database row within a Hamming radius) against its reference, on every device."""
import pytest
import torch

import deephash_ext as de
from deephash_ext import reference as ref

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and de.cuda_compiled() else [])


def codes(n, bits, gen, distinct=None):
    if distinct is None:
        return de.pack_bits(torch.randint(0, 2, (n, bits), generator=gen))
    pool = de.pack_bits(torch.randint(0, 2, (distinct, bits), generator=gen))
    return pool[torch.randint(0, distinct, (n,), generator=gen)]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(77)


def check(q, db, radius, device):
    got = de.hamming_range(q.to(device), db.to(device), radius)
    expect = ref.hamming_range(q, db, radius)
    assert [t.dtype for t in got] == [torch.int64, torch.int32, torch.int64]
    assert all(t.device.type == device for t in got)
    for g, e in zip(got, expect):
        assert torch.equal(g.cpu(), e)
    return got


def brute(q, db, radius):
    """The contract spelt out: per query, the rows within radius sorted by (distance, row)."""
    d = ref.hamming_distance(q, db)
    lims, dist, rows = [0], [], []
    for i in range(q.shape[0]):
        hits = sorted((int(d[i, r]), r) for r in range(db.shape[0]) if d[i, r] <= radius)
        dist += [h[0] for h in hits]
        rows += [h[1] for h in hits]
        lims.append(len(dist))
    return lims, dist, rows


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bits", [1, 7, 8, 13, 20, 32, 64, 100, 128, 256])
def test_random_against_reference(bits, device, gen):
    q, db = codes(9, bits, gen), codes(700, bits, gen)
    for radius in sorted({0, 1, bits // 4, bits // 2, bits - 1, bits}):
        check(q, db, radius, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bits", [8, 64, 100])
def test_heavy_ties_and_the_contract(bits, device, gen):
    q, db = codes(5, bits, gen, distinct=3), codes(2000, bits, gen, distinct=4)
    for radius in (0, 3, bits // 2, bits):
        lims, d, rows = check(q, db, radius, device)
        bl, bd, br = brute(q, db, radius)
        assert lims.tolist() == bl and d.tolist() == bd and rows.tolist() == br


@pytest.mark.parametrize("device", DEVICES)
def test_radius_zero_finds_exact_copies_and_large_radius_everything(device, gen):
    db = codes(300, 64, gen)
    q = db[[5, 17, 299]]
    lims, d, rows = check(q, db, 0, device)
    assert lims.tolist() == [0, 1, 2, 3] and rows.tolist() == [5, 17, 299] and d.tolist() == [0, 0, 0]
    for radius in (64, 65, 10**12):
        lims, d, rows = check(q, db, radius, device)
        assert lims.tolist() == [0, 300, 600, 900]


@pytest.mark.parametrize("device", DEVICES)
def test_empty_inputs(device, gen):
    db = codes(50, 24, gen)
    lims, d, rows = check(db[:0], db, 3, device)
    assert lims.tolist() == [0] and d.numel() == 0 and rows.numel() == 0
    lims, d, rows = check(db[:4], db[:0], 3, device)
    assert lims.tolist() == [0] * 5 and d.numel() == 0
    far = torch.full((2, 3), 255, dtype=torch.uint8)
    lims, d, rows = check(far, torch.zeros(10, 3, dtype=torch.uint8), 5, device)
    assert lims.tolist() == [0, 0, 0] and d.shape == (0,)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_and_offset_inputs(device, gen):
    big = codes(400, 128, gen)
    db = big[1::2]  # strided rows
    q = big.T.contiguous().T[3:10]  # column-major storage
    got = de.hamming_range(q.to(device), db.to(device), 60)
    for g, e in zip(got, ref.hamming_range(q.contiguous(), db.contiguous(), 60)):
        assert torch.equal(g.cpu(), e)


def test_threads_do_not_change_the_result(gen):
    q, db = codes(3, 64, gen, distinct=5), codes(50_000, 64, gen, distinct=50)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = de.hamming_range(q, db, 30)
        torch.set_num_threads(4)
        four = de.hamming_range(q, db, 30)
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(a, b) for a, b in zip(one, four))
    assert all(torch.equal(a, b) for a, b in zip(one, ref.hamming_range(q, db, 30)))


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input(device, gen):
    q, db = codes(3, 16, gen).to(device), codes(5, 16, gen).to(device)
    with pytest.raises(RuntimeError, match="radius must be >= 0"):
        de.hamming_range(q, db, -1)
    with pytest.raises(RuntimeError, match="same byte width"):
        de.hamming_range(q, codes(5, 24, gen).to(device), 2)
    with pytest.raises(RuntimeError, match="uint8"):
        de.hamming_range(q.float(), db, 2)
    with pytest.raises(RuntimeError, match="2-D"):
        de.hamming_range(q[0], db, 2)
    with pytest.raises(RuntimeError, match="same device"):
        de.hamming_range(q, db.to("meta"), 2)
    with pytest.raises(ValueError, match="radius"):
        ref.hamming_range(q.cpu(), db.cpu(), -1)


def test_opcheck(gen):
    q, db = codes(6, 64, gen, 4), codes(50, 64, gen, 4)
    for args in ((q, db, 0), (q, db, 20), (q, db, 64), (q[:0], db, 3), (q, db[:0], 3), (codes(4, 13, gen), codes(9, 13, gen), 6)):
        torch.library.opcheck(torch.ops.deephash_ext.hamming_range.default, args)


def test_fake_tensor_shapes(gen):
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()):
        q, db = torch.empty(7, 8, dtype=torch.uint8), torch.empty(30, 8, dtype=torch.uint8)
        lims, d, rows = de.hamming_range(q, db, 5)
        assert lims.shape == (8,) and lims.dtype == torch.int64
        assert d.dtype == torch.int32 and rows.dtype == torch.int64 and d.shape == rows.shape
        with pytest.raises(RuntimeError, match="radius"):
            de.hamming_range(q, db, -2)
