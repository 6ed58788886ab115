"""Retrieval ops (bit packing, Hamming distance, exact top-k, top-k mAP) against their references, on every
device (the ``device`` fixture: the CPU, and CUDA where present). Inputs are made on the CPU, the op runs
on the device, and its result comes back to the CPU to meet the reference."""
import numpy as np
import pytest
import torch

import deephash_ext as de
from deephash_ext import reference as ref
from op_inputs import random_codes, to

BITS = [8, 20, 32, 64, 100, 128, 256, 512]
# topk_map's float64 sums: exact order on the CPU; on CUDA (and its emulation, the same kernels) the
# tolerance of its sums' other order.
MAP_TOL = {"cpu": dict(rtol=1e-12, atol=1e-12), "cuda": dict(rtol=1e-10, atol=1e-12), "emu": dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def distances_by_matmul(q, db):
    """Hamming distances as a * (1 - b) + (1 - a) * b summed over the unpacked bits, by a matrix product:
    an oracle that shares nothing with the popcount paths and stays cheap at wide codes."""
    a, b = (ref.unpack_bits(c.cpu(), 8 * c.shape[1]).double() for c in (q, db))
    return (a @ (1 - b).T + (1 - a) @ b.T).round().int()


def ranked_rows(q, db, k):
    """hamming_topk's answer from the CPU hamming_distance (checked against the reference below) and an
    exact sort of (distance, row) keys: an oracle for sizes where the reference's byte table is too slow."""
    N, kk = db.shape[0], min(k, db.shape[0])
    out_d, out_i = [], []
    for q_part in q.split(256):
        key = de.hamming_distance(q_part, db).long() * N + torch.arange(N)
        top = key.topk(kk, dim=1, largest=False, sorted=True).values
        out_d.append((top // N).int())
        out_i.append(top % N)
    return torch.cat(out_d), torch.cat(out_i)


# ------------------------------------------------------------------------------------------------
# pack_bits / unpack_bits


@pytest.mark.parametrize("bits", [1, 7, 8, 9, 13, 20, 64, 100, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                                   torch.int32, torch.int8, torch.uint8, torch.bool])
def test_pack_bits_matches_reference_and_numpy(bits, dtype, gen, device):
    x = torch.randn(3, 5, bits, generator=gen)
    if dtype == torch.bool:
        x = x > 0
    elif not dtype.is_floating_point:
        x = (x * 3).round()
        if dtype == torch.uint8:
            x = x.clamp(min=0)
    x = x.to(dtype)
    got = de.pack_bits(x.to(device))
    assert got.device.type == device
    got = got.cpu()
    assert got.dtype == torch.uint8 and got.shape == (3, 5, (bits + 7) // 8)
    assert torch.equal(got, ref.pack_bits(x))
    expect = np.packbits((x > 0).numpy(), axis=-1, bitorder="little")
    assert np.array_equal(got.numpy(), expect)


def test_pack_bits_zero_nan_and_noncontiguous(gen, device):
    x = torch.tensor([[0.0, -0.0, float("nan"), 1e-30, -1e-30, float("inf"), float("-inf"), 2.0, 1.0]])
    assert de.pack_bits(x.to(device)).tolist() == [[8 + 32 + 128, 1]]
    y = torch.randn(40, 30, generator=gen)
    # non-contiguous [30, 40]
    assert torch.equal(de.pack_bits(y.to(device).T).cpu(), ref.pack_bits(y.T.contiguous()))


@pytest.mark.parametrize("bits", [1, 8, 13, 64, 100])
def test_unpack_round_trip(bits, gen, device):
    b = torch.randint(0, 2, (4, 6, bits), generator=gen, dtype=torch.uint8)
    packed = de.pack_bits(b.to(device))
    assert torch.equal(de.unpack_bits(packed, bits).cpu(), b)
    assert torch.equal(de.unpack_bits(packed, bits).cpu(), ref.unpack_bits(packed.cpu(), bits))
    full = de.unpack_bits(packed, 8 * packed.shape[-1]).cpu()
    assert full[..., bits:].sum() == 0  # padding bits are zero
    assert torch.equal(de.unpack_bits(packed, bits - 1).cpu(), b[..., : bits - 1])


def test_pack_unpack_empty(device):
    assert de.pack_bits(torch.zeros(0, 16, device=device)).shape == (0, 2)
    assert de.pack_bits(torch.zeros(3, 0, device=device)).shape == (3, 0)
    assert de.unpack_bits(torch.zeros(0, 2, dtype=torch.uint8, device=device), 16).shape == (0, 16)
    assert de.unpack_bits(torch.zeros(5, 2, dtype=torch.uint8, device=device), 0).shape == (5, 0)


# ------------------------------------------------------------------------------------------------
# hamming_distance


@pytest.mark.parametrize("bits", BITS + [1024, 4096])
def test_hamming_distance_matches_reference(bits, gen, device):
    q, db = random_codes(37, bits, gen), random_codes(301, bits, gen)
    got = de.hamming_distance(*to(device, q, db))
    assert got.dtype == torch.int32 and got.shape == (37, 301)
    assert torch.equal(got.cpu(), ref.hamming_distance(q, db))
    # The reference runs on the device too.
    assert torch.equal(ref.hamming_distance(*to(device, q, db)), got)


def test_hamming_distance_few_queries_large_db(gen, device):
    # Few queries split the database across threads (CPU) or blocks (CUDA).
    q, db = random_codes(2, 64, gen), random_codes(50_000, 64, gen)
    assert torch.equal(de.hamming_distance(*to(device, q, db)).cpu(), ref.hamming_distance(q, db))


@pytest.mark.parametrize("bits", [8, 20, 64, 128, 256, 1024, 4096])
def test_hamming_distance_unaligned_rows(bits, gen, device):
    # Rows that start off an 8-byte boundary take the any-width row loads on CUDA; many rows, several blocks.
    q, db = random_codes(40, bits, gen), random_codes(3000, bits, gen)
    want = distances_by_matmul(q, db)
    assert torch.equal(de.hamming_distance(*to(device, q, db)).cpu(), want)
    buf = torch.zeros(db.numel() + 1, dtype=torch.uint8, device=device)
    buf[1:] = db.to(device).flatten()
    dbv = buf[1:].view(db.shape)
    assert torch.equal(de.hamming_distance(q.to(device), dbv).cpu(), want)


def test_hamming_distance_noncontiguous_and_empty(gen, device):
    q = random_codes(20, 64, gen).to(device)[::2]
    db = random_codes(90, 64, gen).to(device).T.contiguous().T  # column-major view
    assert torch.equal(de.hamming_distance(q, db).cpu(), ref.hamming_distance(q.cpu().contiguous(), db.cpu().contiguous()))
    assert de.hamming_distance(q[:0], db).shape == (0, 90)
    assert de.hamming_distance(q, db[:0]).shape == (10, 0)


# ------------------------------------------------------------------------------------------------
# hamming_topk


def check_topk(q, db, k, device):
    d, i = de.hamming_topk(*to(device, q, db), k)
    rd, ri = ref.hamming_topk(q.cpu(), db.cpu(), k)
    kk = min(k, db.shape[0])
    assert d.shape == (q.shape[0], kk) and d.dtype == torch.int32 and i.dtype == torch.int64
    assert torch.equal(d.cpu(), rd)
    assert torch.equal(i.cpu(), ri)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("distinct", [None, 3])
def test_hamming_topk_matches_reference(bits, distinct, gen, device):
    q, db = random_codes(33, bits, gen, distinct), random_codes(700, bits, gen, distinct)
    for k in (1, 10, 699, 700, 703):
        check_topk(q, db, k, device)


def test_hamming_topk_trims_and_ties_across_long_scans(gen, device):
    # Long scans force many trims of the candidate buffer; 4 distinct codes make every trim cut
    # through a tie, which must keep the lowest rows. 64 and 128 bits take the AVX2 scan, which tests
    # 20 rows at a time: 20,013 rows leave a tail of 13 to the row-by-row loop.
    for bits in (64, 128):
        for distinct in (None, 4, 1):
            q, db = random_codes(20, bits, gen, distinct), random_codes(20_013, bits, gen, distinct)
            for k in (1, 7, 300):
                check_topk(q, db, k, device)


def test_hamming_topk_few_queries_split_database(gen, device):
    # Q = 1 splits the database into chunks whose winners are merged.
    for distinct in (None, 2):
        q, db = random_codes(1, 128, gen, distinct), random_codes(60_000, 128, gen, distinct)
        for k in (1, 50, 1000):
            check_topk(q, db, k, device)


@pytest.mark.parametrize("bits,distinct", [(64, None), (64, 3), (128, None), (100, 7), (512, None), (4096, 2)])
def test_hamming_topk_large_k_and_wide_codes(bits, distinct, gen, device):
    # k past the CUDA kernel's small-k limit and past N, codes past 64 bytes, heavy ties.
    q, db = random_codes(21, bits, gen, distinct), random_codes(35_000, bits, gen, distinct)
    want_d, want_i = ranked_rows(q, db, 35_000)
    for k in (1, 10, 2048, 5000, 40_000):
        d, i = de.hamming_topk(*to(device, q, db), k)
        assert torch.equal(d.cpu(), want_d[:, :k]) and torch.equal(i.cpu(), want_i[:, :k])


def test_hamming_topk_many_queries(gen, device):
    q, db = random_codes(3000, 64, gen, 50), random_codes(20_000, 64, gen, 50)
    d, i = de.hamming_topk(*to(device, q, db), 100)
    rd, ri = ranked_rows(q, db, 100)
    assert torch.equal(d.cpu(), rd) and torch.equal(i.cpu(), ri)


def test_hamming_topk_threads_agree(gen):
    q, db = random_codes(5, 64, gen, 6), random_codes(40_000, 64, gen, 6)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = de.hamming_topk(q, db, 100)
        torch.set_num_threads(2)
        two = de.hamming_topk(q, db, 100)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_hamming_topk_noncontiguous_and_empty(gen, device):
    q = random_codes(16, 100, gen).to(device)[1::3]
    db = random_codes(200, 100, gen).to(device)[::2]
    check_topk(q, db, 9, device)
    d, i = de.hamming_topk(q[:0], db, 5)
    assert d.shape == (0, 5) and i.shape == (0, 5)
    d, i = de.hamming_topk(q, db[:0], 5)
    assert d.shape == (q.shape[0], 0) and i.shape == (q.shape[0], 0)


# ------------------------------------------------------------------------------------------------
# topk_map


def labels_for(kind, n, classes, gen):
    if kind == "ids":
        return torch.randint(0, classes, (n,), generator=gen)
    hot = torch.rand(n, classes, generator=gen) < 0.25
    return {"bool": hot, "uint8": hot.to(torch.uint8), "float": hot.float()}[kind]


def topk_map_on(device, q, db, ql, dl, k, ties):
    return de.topk_map(*to(device, q, db, ql, dl), k, ties).cpu()


@pytest.mark.parametrize("kind", ["ids", "bool", "uint8", "float"])
@pytest.mark.parametrize("bits,distinct", [(8, None), (20, 5), (64, None), (64, 3), (100, None), (256, 8)])
def test_topk_map_matches_reference(kind, bits, distinct, gen, device):
    Q, N = 23, 400
    q, db = random_codes(Q, bits, gen, distinct), random_codes(N, bits, gen, distinct)
    ql, dl = labels_for(kind, Q, 5, gen), labels_for(kind, N, 5, gen)
    for k in (1, 17, 399, 400, 403, 0, -1):
        got = topk_map_on(device, q, db, ql, dl, k, "index")
        assert got.dtype == torch.float64 and got.shape == (Q,)
        torch.testing.assert_close(got, ref.topk_map(q, db, ql, dl, k, "index"), **MAP_TOL[device])
    for k in (0, 400, 1000):
        got = topk_map_on(device, q, db, ql, dl, k, "average")
        torch.testing.assert_close(got, ref.topk_map(q, db, ql, dl, k, "average"), **MAP_TOL[device])


@pytest.mark.parametrize("kind", ["ids", "multi"])
@pytest.mark.parametrize("bits,distinct", [(64, None), (64, 4), (100, None), (256, 6)])
def test_topk_map_many_rows(kind, bits, distinct, gen, device):
    # 20,000 rows: more than one CUDA query batch, and k = 100 takes the CPU's threshold scan.
    Q, N = 30, 20_000
    q, db = random_codes(Q, bits, gen, distinct), random_codes(N, bits, gen, distinct)
    if kind == "ids":
        ql, dl = torch.randint(0, 5, (Q,), generator=gen), torch.randint(0, 5, (N,), generator=gen)
    else:
        ql, dl = torch.rand(Q, 70, generator=gen) < 0.05, torch.rand(N, 70, generator=gen) < 0.05
    # The reference takes seconds per call at this size on one CPU thread: it runs on the device under
    # test, and on the CPU for the first 5 queries (each query's AP is its own, whatever the others).
    sub = slice(None) if device != "cpu" else slice(0, 5)
    for k, ties in [(1, "index"), (100, "index"), (5000, "index"), (0, "index"), (0, "average")]:
        got = topk_map_on(device, q, db, ql, dl, k, ties)
        want = ref.topk_map(*to(device, q[sub], db, ql[sub], dl), k, ties).cpu()
        torch.testing.assert_close(got[sub], want, **MAP_TOL[device])


@pytest.mark.parametrize("k", [10, 100, 0])
def test_topk_map_equals_literature_numpy_loop(k, gen, device):
    Q, N, bits, C = 30, 500, 32, 6
    q, db = random_codes(Q, bits, gen, 40), random_codes(N, bits, gen, 40)
    ql, dl = torch.randint(0, C, (Q,), generator=gen), torch.randint(0, C, (N,), generator=gen)
    signs = lambda c: de.unpack_bits(c, bits).double().numpy() * 2 - 1
    onehot = lambda y: torch.nn.functional.one_hot(y, C).double().numpy()
    expect = ref.literature_topk_map(signs(q), signs(db), onehot(ql), onehot(dl), N if k == 0 else k)
    got = topk_map_on(device, q, db, ql, dl, k, "index").mean().item()
    assert got == pytest.approx(expect, rel=1e-12, abs=1e-12)


def test_topk_map_tie_aware_equals_monte_carlo(gen, device):
    # Shuffle the database (so ties are broken at random), take index-tie AP, average.
    Q, N, bits = 6, 60, 8
    q, db = random_codes(Q, bits, gen, 5), random_codes(N, bits, gen, 5)
    ql, dl = torch.randint(0, 3, (Q,), generator=gen), torch.randint(0, 3, (N,), generator=gen)
    exact = topk_map_on(device, q, db, ql, dl, 0, "average")
    trials = 4000
    acc = torch.zeros(Q, dtype=torch.float64, device=device)
    qd, dbd, qld, dld = to(device, q, db, ql, dl)
    for _ in range(trials):
        perm = torch.randperm(N, generator=gen).to(device)
        acc += de.topk_map(qd, dbd[perm], qld, dld[perm], 0, "index")
    mc = acc.cpu() / trials
    # The per-query AP has a standard deviation below 0.3; 4000 trials give a standard error < 0.005.
    torch.testing.assert_close(mc, exact, atol=0.02, rtol=0)
    # Ties are heavy here, so index-tie AP of the unshuffled order differs from the expectation.
    assert not torch.allclose(topk_map_on(device, q, db, ql, dl, 0, "index"), exact, atol=1e-3)


def test_topk_map_hand_computed(device):
    # 1 query, 4-bit codes; distances 0, 1, 1, 2; relevant rows 1 and 3.
    q = de.pack_bits(torch.tensor([[1, 1, 0, 0]]))
    db = de.pack_bits(torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]))
    ql, dl = torch.tensor([1]), torch.tensor([0, 1, 0, 1])
    # index ties: ranking rows 0,1,2,3 -> relevant at ranks 2 and 4: (1/2 + 2/4) / 2
    assert topk_map_on(device, q, db, ql, dl, 0, "index").item() == pytest.approx(0.5)
    # k = 2: relevant at rank 2 only -> 1/2
    assert topk_map_on(device, q, db, ql, dl, 2, "index").item() == pytest.approx(0.5)
    # average: row 1 is at rank 2 or 3 with equal chance -> E[1/rank] = (1/2 + 1/3)/2; row 3 at rank 4: 2/4
    assert topk_map_on(device, q, db, ql, dl, 0, "average").item() == pytest.approx(((1 / 2 + 1 / 3) / 2 + 0.5) / 2)


def test_topk_map_no_relevant_and_empty(gen, device):
    q, db = to(device, random_codes(4, 16, gen), random_codes(10, 16, gen))
    ql, dl = torch.full((4,), 7, device=device), torch.zeros(10, dtype=torch.long, device=device)
    assert de.topk_map(q, db, ql, dl, 0, "index").tolist() == [0.0] * 4
    assert de.topk_map(q, db, ql, dl, 0, "average").tolist() == [0.0] * 4
    assert de.topk_map(q[:0], db, ql[:0], dl, 5, "index").shape == (0,)
    assert de.topk_map(q, db[:0], ql, dl[:0], 5, "index").tolist() == [0.0] * 4
    assert de.topk_map(q, db[:0], ql, dl[:0], 0, "average").tolist() == [0.0] * 4


@pytest.mark.parametrize("kind", ["ids", "bool"])
def test_topk_map_average_large_tie_groups(kind, gen, device):
    # 8-bit codes over 6000 rows: groups of hundreds of tied rows far down the ranking, which take the
    # closed form (harmonic sums) rather than the per-row loop.
    Q, N = 9, 6000
    q, db = random_codes(Q, 8, gen, None), random_codes(N, 8, gen, None)
    ql, dl = labels_for(kind, Q, 3, gen), labels_for(kind, N, 3, gen)
    got = topk_map_on(device, q, db, ql, dl, 0, "average")
    torch.testing.assert_close(got, ref.topk_map(q, db, ql, dl, 0, "average"), **MAP_TOL[device])
    # All rows tied and all relevant: every precision is 1.
    same = torch.zeros(N, 1, dtype=torch.uint8)
    ones = torch.ones(N, dtype=torch.long)
    assert topk_map_on(device, same[:1], same, ones[:1], ones, 0, "average").item() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("bits,distinct", [(8, None), (32, None), (64, 6), (64, None), (128, None), (128, 9)])
def test_topk_map_small_k_scan(bits, distinct, gen, device):
    # k <= N/256 takes the CPU's threshold scan: dense at first, then tests of 8 or 20 rows at a time (a
    # tail of 7 rows is left at the end), its threshold lowered as rows arrive; huge tied groups at
    # the k-th distance make its buffer grow.
    Q, N = 11, 12_007
    q, db = random_codes(Q, bits, gen, distinct), random_codes(N, bits, gen, distinct)
    for kind in ("ids", "bool"):
        ql, dl = labels_for(kind, Q, 4, gen), labels_for(kind, N, 4, gen)
        for k in (1, 7, 46):
            torch.testing.assert_close(topk_map_on(device, q, db, ql, dl, k, "index"),
                                       ref.topk_map(q, db, ql, dl, k, "index"), **MAP_TOL[device])


@pytest.mark.parametrize("bits", [64, 100])
def test_topk_map_queries_grouped_by_class(bits, gen, device):
    # Single-label queries run in blocks of four of one class where a class has four left, the rest
    # in mixed blocks: classes of 1 to 9 queries in shuffled order must each get their own AP back.
    sizes = [1, 2, 3, 4, 5, 8, 9, 6]
    ql = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    ql = ql[torch.randperm(len(ql), generator=gen)]
    N = 3000
    q, db = random_codes(len(ql), bits, gen), random_codes(N, bits, gen)
    dl = torch.randint(0, len(sizes), (N,), generator=gen)
    for k in (0, 12, 500, N):
        torch.testing.assert_close(topk_map_on(device, q, db, ql, dl, k, "index"),
                                   ref.topk_map(q, db, ql, dl, k, "index"), **MAP_TOL[device])
    torch.testing.assert_close(topk_map_on(device, q, db, ql, dl, 0, "average"),
                               ref.topk_map(q, db, ql, dl, 0, "average"), **MAP_TOL[device])


# ------------------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_are_refused(gen, device):
    q, db = to(device, random_codes(3, 64, gen), random_codes(5, 64, gen))
    ql, dl = torch.zeros(3, dtype=torch.long, device=device), torch.zeros(5, dtype=torch.long, device=device)
    zeros = lambda *shape, **kw: torch.zeros(*shape, device=device, **kw)
    cases = [
        (lambda: de.hamming_distance(q.int(), db), "uint8"),
        (lambda: de.hamming_distance(q, db[:, :4]), "same byte width"),
        (lambda: de.hamming_distance(q[0], db), "2-D"),
        (lambda: de.hamming_topk(q, db, 0), "k must be >= 1"),
        (lambda: de.hamming_topk(q, db, -3), "k must be >= 1"),
        (lambda: de.hamming_topk(q.float(), db, 3), "uint8"),
        (lambda: de.topk_map(q, db, ql, dl, 0, "random"), "ties must be"),
        (lambda: de.topk_map(q, db, ql, dl, 3, "average"), "full ranking"),
        (lambda: de.topk_map(q, db, ql[:2], dl, 0, "index"), "q_labels has 2 rows"),
        (lambda: de.topk_map(q, db, ql, dl[:4], 0, "index"), "db_labels has 4 rows"),
        (lambda: de.topk_map(q, db, ql.float(), dl.float(), 0, "index"), "int64"),
        (lambda: de.topk_map(q, db, ql, zeros(5, 4), 0, "index"), "same kind"),
        (lambda: de.topk_map(q, db, zeros(3, 3), zeros(5, 4), 0, "index"), "same number of classes"),
        (lambda: de.topk_map(q, db, zeros(3, 3, 2), zeros(5, 3, 2), 0, "index"), "multi-hot"),
        (lambda: de.topk_map(q, db, zeros(3, 3, dtype=torch.int32), zeros(5, 3, dtype=torch.int32), 0, "index"),
         "bool, uint8 or floating"),
        (lambda: de.unpack_bits(q, 65), "hold only 64"),
        (lambda: de.unpack_bits(q, -1), "bits must be >= 0"),
        (lambda: de.unpack_bits(q.float(), 8), "uint8"),
        (lambda: de.pack_bits(torch.tensor(1.0, device=device)), "at least one dimension"),
        (lambda: de.pack_bits(zeros(2, 3, dtype=torch.complex64)), "real or bool"),
    ]
    for fn, message in cases:
        with pytest.raises(RuntimeError, match=message):
            fn()


def test_mixed_devices_are_refused(gen, device):
    # The CPU's other device is meta, whose fake kernels run the same checks.
    other = "meta" if device == "cpu" else "cpu"
    q = random_codes(4, 64, gen).to(device)
    with pytest.raises(RuntimeError, match="same device"):
        de.hamming_distance(q, q.to(other))
    if device != "cpu":  # meta labels with CPU codes dispatch to the fake kernel, which has no label data
        with pytest.raises(RuntimeError, match="must be on"):
            de.topk_map(q, q, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long, device=device), 0,
                        "index")


# ------------------------------------------------------------------------------------------------
# Dispatcher integration


def opcheck_samples(gen, device):
    q, db = to(device, random_codes(6, 64, gen, 4), random_codes(50, 64, gen, 4))
    ql, dl = to(device, torch.randint(0, 3, (6,), generator=gen), torch.randint(0, 3, (50,), generator=gen))
    return [
        (torch.ops.deephash_ext.pack_bits.default, (torch.randn(4, 20, generator=gen).to(device),)),
        (torch.ops.deephash_ext.unpack_bits.default, (q, 60)),
        (torch.ops.deephash_ext.hamming_distance.default, (q, db)),
        (torch.ops.deephash_ext.hamming_topk.default, (q, db, 7)),
        (torch.ops.deephash_ext.hamming_topk.default, (q, db, 80)),
        (torch.ops.deephash_ext.topk_map.default, (q, db, ql, dl, 10, "index")),
        (torch.ops.deephash_ext.topk_map.default, (q, db, ql, dl, 0, "average")),
    ]


def test_opcheck(gen, device):
    for op, args in opcheck_samples(gen, device):
        torch.library.opcheck(op, args)


@pytest.mark.no_schedule_check  # torch.compile refuses to trace under a dispatch mode
def test_torch_compile_fullgraph(gen, device):
    def search(x_q, x_db, labels_q, labels_db):
        q, db = de.pack_bits(x_q), de.pack_bits(x_db)
        d, rows = de.hamming_topk(q, db, 5)
        ap = de.topk_map(q, db, labels_q, labels_db, 20, "index")
        return d, rows, ap.mean(), de.hamming_distance(q, db), de.unpack_bits(q, x_q.shape[1])

    x_q, x_db = torch.randn(8, 48, generator=gen), torch.randn(100, 48, generator=gen)
    lq, ldb = torch.randint(0, 4, (8,), generator=gen), torch.randint(0, 4, (100,), generator=gen)
    args = to(device, x_q, x_db, lq, ldb)
    eager = search(*args)
    compiled = torch.compile(search, fullgraph=True, backend="aot_eager")(*args)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)
