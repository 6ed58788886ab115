"""Retrieval ops (bit packing, Hamming distance, exact top-k, top-k mAP) against their references."""
import itertools

import numpy as np
import pytest
import torch

import deephash_ext as de
from deephash_ext import reference as ref
from benchmarks.baselines import seed_topk_map

BITS = [8, 20, 32, 64, 100, 128, 256, 512]


def random_codes(n, bits, gen, distinct=None):
    """Packed codes; with `distinct`, rows are drawn from that many patterns, so distances tie heavily."""
    if distinct is None:
        return de.pack_bits(torch.randint(0, 2, (n, bits), generator=gen))
    pool = de.pack_bits(torch.randint(0, 2, (distinct, bits), generator=gen))
    return pool[torch.randint(0, distinct, (n,), generator=gen)]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


# ------------------------------------------------------------------------------------------------
# pack_bits / unpack_bits


@pytest.mark.parametrize("bits", [1, 7, 8, 9, 20, 64, 100, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                                   torch.int8, torch.uint8, torch.bool])
def test_pack_bits_matches_reference_and_numpy(bits, dtype, gen):
    x = torch.randn(3, 5, bits, generator=gen)
    if dtype == torch.bool:
        x = x > 0
    elif not dtype.is_floating_point:
        x = (x * 3).round()
        if dtype == torch.uint8:
            x = x.clamp(min=0)
    x = x.to(dtype)
    got = de.pack_bits(x)
    assert got.dtype == torch.uint8 and got.shape == (3, 5, (bits + 7) // 8)
    assert torch.equal(got, ref.pack_bits(x))
    expect = np.packbits((x > 0).numpy(), axis=-1, bitorder="little")
    assert np.array_equal(got.numpy(), expect)


def test_pack_bits_zero_nan_and_noncontiguous(gen):
    x = torch.tensor([[0.0, -0.0, float("nan"), 1e-30, -1e-30, float("inf"), float("-inf"), 2.0, 1.0]])
    assert de.pack_bits(x).tolist() == [[8 + 32 + 128, 1]]
    y = torch.randn(40, 30, generator=gen).T  # non-contiguous [30, 40]
    assert torch.equal(de.pack_bits(y), ref.pack_bits(y.contiguous()))


@pytest.mark.parametrize("bits", [1, 8, 13, 64, 100])
def test_unpack_round_trip(bits, gen):
    b = torch.randint(0, 2, (4, 6, bits), generator=gen, dtype=torch.uint8)
    packed = de.pack_bits(b)
    assert torch.equal(de.unpack_bits(packed, bits), b)
    assert torch.equal(de.unpack_bits(packed, bits), ref.unpack_bits(packed, bits))
    full = de.unpack_bits(packed, 8 * packed.shape[-1])
    assert full[..., bits:].sum() == 0  # padding bits are zero
    assert torch.equal(de.unpack_bits(packed, bits - 1), b[..., : bits - 1])


def test_pack_unpack_empty():
    assert de.pack_bits(torch.zeros(0, 16)).shape == (0, 2)
    assert de.pack_bits(torch.zeros(3, 0)).shape == (3, 0)
    assert de.unpack_bits(torch.zeros(0, 2, dtype=torch.uint8), 16).shape == (0, 16)
    assert de.unpack_bits(torch.zeros(5, 2, dtype=torch.uint8), 0).shape == (5, 0)


# ------------------------------------------------------------------------------------------------
# hamming_distance


@pytest.mark.parametrize("bits", BITS)
def test_hamming_distance_matches_reference(bits, gen):
    q, db = random_codes(37, bits, gen), random_codes(301, bits, gen)
    got = de.hamming_distance(q, db)
    assert got.dtype == torch.int32 and got.shape == (37, 301)
    assert torch.equal(got, ref.hamming_distance(q, db))


def test_hamming_distance_few_queries_large_db(gen):
    # Few queries split the database across threads.
    q, db = random_codes(2, 64, gen), random_codes(50_000, 64, gen)
    assert torch.equal(de.hamming_distance(q, db), ref.hamming_distance(q, db))


def test_hamming_distance_noncontiguous_and_empty(gen):
    q = random_codes(20, 64, gen)[::2]
    db = random_codes(90, 64, gen).T.contiguous().T  # column-major view
    assert torch.equal(de.hamming_distance(q, db), ref.hamming_distance(q.contiguous(), db.contiguous()))
    assert de.hamming_distance(q[:0], db).shape == (0, 90)
    assert de.hamming_distance(q, db[:0]).shape == (10, 0)


# ------------------------------------------------------------------------------------------------
# hamming_topk


def check_topk(q, db, k):
    d, i = de.hamming_topk(q, db, k)
    rd, ri = ref.hamming_topk(q, db, k)
    kk = min(k, db.shape[0])
    assert d.shape == (q.shape[0], kk) and d.dtype == torch.int32 and i.dtype == torch.int64
    assert torch.equal(d, rd)
    assert torch.equal(i, ri)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("distinct", [None, 3])
def test_hamming_topk_matches_reference(bits, distinct, gen):
    q, db = random_codes(33, bits, gen, distinct), random_codes(700, bits, gen, distinct)
    for k in (1, 10, 699, 700, 703):
        check_topk(q, db, k)


def test_hamming_topk_trims_and_ties_across_long_scans(gen):
    # Long scans force many trims of the candidate buffer; 4 distinct codes make every trim cut
    # through a tie, which must keep the lowest rows. 64 and 128 bits take the AVX2 scan, which tests
    # 20 rows at a time: 20,013 rows leave a tail of 13 to the row-by-row loop.
    for bits in (64, 128):
        for distinct in (None, 4, 1):
            q, db = random_codes(20, bits, gen, distinct), random_codes(20_013, bits, gen, distinct)
            for k in (1, 7, 300):
                check_topk(q, db, k)


def test_hamming_topk_few_queries_split_database(gen):
    # Q = 1 splits the database into chunks whose winners are merged.
    for distinct in (None, 2):
        q, db = random_codes(1, 128, gen, distinct), random_codes(60_000, 128, gen, distinct)
        for k in (1, 50, 1000):
            check_topk(q, db, k)


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


def test_hamming_topk_noncontiguous_and_empty(gen):
    q = random_codes(16, 100, gen)[1::3]
    db = random_codes(200, 100, gen)[::2]
    check_topk(q, db, 9)
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


@pytest.mark.parametrize("kind", ["ids", "bool", "uint8", "float"])
@pytest.mark.parametrize("bits,distinct", [(8, None), (20, 5), (64, None), (64, 3), (100, None), (256, 8)])
def test_topk_map_matches_reference(kind, bits, distinct, gen):
    Q, N = 23, 400
    q, db = random_codes(Q, bits, gen, distinct), random_codes(N, bits, gen, distinct)
    ql, dl = labels_for(kind, Q, 5, gen), labels_for(kind, N, 5, gen)
    for k in (1, 17, 399, 400, 403, 0, -1):
        got = de.topk_map(q, db, ql, dl, k, "index")
        assert got.dtype == torch.float64 and got.shape == (Q,)
        torch.testing.assert_close(got, ref.topk_map(q, db, ql, dl, k, "index"), rtol=1e-12, atol=1e-12)
    for k in (0, 400, 1000):
        got = de.topk_map(q, db, ql, dl, k, "average")
        torch.testing.assert_close(got, ref.topk_map(q, db, ql, dl, k, "average"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [10, 100, 0])
def test_topk_map_equals_seed_numpy_loop(k, gen):
    Q, N, bits, C = 30, 500, 32, 6
    q, db = random_codes(Q, bits, gen, 40), random_codes(N, bits, gen, 40)
    ql, dl = torch.randint(0, C, (Q,), generator=gen), torch.randint(0, C, (N,), generator=gen)
    signs = lambda c: de.unpack_bits(c, bits).double().numpy() * 2 - 1
    onehot = lambda y: torch.nn.functional.one_hot(y, C).double().numpy()
    expect = seed_topk_map(signs(q), signs(db), onehot(ql), onehot(dl), N if k == 0 else k)
    got = de.topk_map(q, db, ql, dl, k, "index").mean().item()
    assert got == pytest.approx(expect, rel=1e-12, abs=1e-12)


def test_topk_map_tie_aware_equals_monte_carlo(gen):
    # Shuffle the database (so ties are broken at random), take index-tie AP, average.
    Q, N, bits = 6, 60, 8
    q, db = random_codes(Q, bits, gen, 5), random_codes(N, bits, gen, 5)
    ql, dl = torch.randint(0, 3, (Q,), generator=gen), torch.randint(0, 3, (N,), generator=gen)
    exact = de.topk_map(q, db, ql, dl, 0, "average")
    trials = 4000
    acc = torch.zeros(Q, dtype=torch.float64)
    for _ in range(trials):
        perm = torch.randperm(N, generator=gen)
        acc += de.topk_map(q, db[perm], ql, dl[perm], 0, "index")
    mc = acc / trials
    # The per-query AP has a standard deviation below 0.3; 4000 trials give a standard error < 0.005.
    torch.testing.assert_close(mc, exact, atol=0.02, rtol=0)
    # Ties are heavy here, so index-tie AP of the unshuffled order differs from the expectation.
    assert not torch.allclose(de.topk_map(q, db, ql, dl, 0, "index"), exact, atol=1e-3)


def test_topk_map_hand_computed():
    # 1 query, 4-bit codes; distances 0, 1, 1, 2; relevant rows 1 and 3.
    q = de.pack_bits(torch.tensor([[1, 1, 0, 0]]))
    db = de.pack_bits(torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]))
    ql, dl = torch.tensor([1]), torch.tensor([0, 1, 0, 1])
    # index ties: ranking rows 0,1,2,3 -> relevant at ranks 2 and 4: (1/2 + 2/4) / 2
    assert de.topk_map(q, db, ql, dl, 0, "index").item() == pytest.approx(0.5)
    # k = 2: relevant at rank 2 only -> 1/2
    assert de.topk_map(q, db, ql, dl, 2, "index").item() == pytest.approx(0.5)
    # average: row 1 is at rank 2 or 3 with equal chance -> E[1/rank] = (1/2 + 1/3)/2; row 3 at rank 4: 2/4
    assert de.topk_map(q, db, ql, dl, 0, "average").item() == pytest.approx(((1 / 2 + 1 / 3) / 2 + 0.5) / 2)


def test_topk_map_no_relevant_and_empty(gen):
    q, db = random_codes(4, 16, gen), random_codes(10, 16, gen)
    ql, dl = torch.full((4,), 7), torch.zeros(10, dtype=torch.long)
    assert de.topk_map(q, db, ql, dl, 0, "index").tolist() == [0.0] * 4
    assert de.topk_map(q, db, ql, dl, 0, "average").tolist() == [0.0] * 4
    assert de.topk_map(q[:0], db, ql[:0], dl, 5, "index").shape == (0,)
    assert de.topk_map(q, db[:0], ql, dl[:0], 5, "index").tolist() == [0.0] * 4
    assert de.topk_map(q, db[:0], ql, dl[:0], 0, "average").tolist() == [0.0] * 4


# ------------------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_are_refused(gen):
    q, db = random_codes(3, 64, gen), random_codes(5, 64, gen)
    ql, dl = torch.zeros(3, dtype=torch.long), torch.zeros(5, dtype=torch.long)
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
        (lambda: de.topk_map(q, db, ql, torch.zeros(5, 4), 0, "index"), "same kind"),
        (lambda: de.topk_map(q, db, torch.zeros(3, 3), torch.zeros(5, 4), 0, "index"), "same number of classes"),
        (lambda: de.topk_map(q, db, torch.zeros(3, 3, 2), torch.zeros(5, 3, 2), 0, "index"), "multi-hot"),
        (lambda: de.topk_map(q, db, torch.zeros(3, 3, dtype=torch.int32), torch.zeros(5, 3, dtype=torch.int32),
                             0, "index"), "bool, uint8 or floating"),
        (lambda: de.unpack_bits(q, 65), "hold only 64"),
        (lambda: de.unpack_bits(q, -1), "bits must be >= 0"),
        (lambda: de.unpack_bits(q.float(), 8), "uint8"),
        (lambda: de.pack_bits(torch.tensor(1.0)), "at least one dimension"),
        (lambda: de.pack_bits(torch.zeros(2, 3, dtype=torch.complex64)), "real or bool"),
    ]
    for fn, message in cases:
        with pytest.raises(RuntimeError, match=message):
            fn()


def test_meta_device_mismatch_is_refused(gen):
    q = random_codes(3, 64, gen)
    with pytest.raises(RuntimeError, match="same device"):
        de.hamming_distance(q, q.to("meta"))


# ------------------------------------------------------------------------------------------------
# Dispatcher integration


def opcheck_samples(gen):
    q, db = random_codes(6, 64, gen, 4), random_codes(50, 64, gen, 4)
    ql, dl = torch.randint(0, 3, (6,), generator=gen), torch.randint(0, 3, (50,), generator=gen)
    return [
        (torch.ops.deephash_ext.pack_bits.default, (torch.randn(4, 20, generator=gen),)),
        (torch.ops.deephash_ext.unpack_bits.default, (q, 60)),
        (torch.ops.deephash_ext.hamming_distance.default, (q, db)),
        (torch.ops.deephash_ext.hamming_topk.default, (q, db, 7)),
        (torch.ops.deephash_ext.hamming_topk.default, (q, db, 80)),
        (torch.ops.deephash_ext.topk_map.default, (q, db, ql, dl, 10, "index")),
        (torch.ops.deephash_ext.topk_map.default, (q, db, ql, dl, 0, "average")),
    ]


def test_opcheck(gen):
    for op, args in opcheck_samples(gen):
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph(gen):
    def search(x_q, x_db, labels_q, labels_db):
        q, db = de.pack_bits(x_q), de.pack_bits(x_db)
        d, rows = de.hamming_topk(q, db, 5)
        ap = de.topk_map(q, db, labels_q, labels_db, 20, "index")
        return d, rows, ap.mean(), de.hamming_distance(q, db), de.unpack_bits(q, x_q.shape[1])

    x_q, x_db = torch.randn(8, 48, generator=gen), torch.randn(100, 48, generator=gen)
    lq, ldb = torch.randint(0, 4, (8,), generator=gen), torch.randint(0, 4, (100,), generator=gen)
    eager = search(x_q, x_db, lq, ldb)
    compiled = torch.compile(search, fullgraph=True, backend="aot_eager")(x_q, x_db, lq, ldb)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["ids", "bool"])
def test_topk_map_average_large_tie_groups(kind, gen):
    # 8-bit codes over 6000 rows: groups of hundreds of tied rows far down the ranking, which take the
    # closed form (harmonic sums) rather than the per-row loop.
    Q, N = 9, 6000
    q, db = random_codes(Q, 8, gen, None), random_codes(N, 8, gen, None)
    ql, dl = labels_for(kind, Q, 3, gen), labels_for(kind, N, 3, gen)
    got = de.topk_map(q, db, ql, dl, 0, "average")
    torch.testing.assert_close(got, ref.topk_map(q, db, ql, dl, 0, "average"), rtol=1e-12, atol=1e-12)
    # All rows tied and all relevant: every precision is 1.
    same = torch.zeros(N, 1, dtype=torch.uint8)
    ones = torch.ones(N, dtype=torch.long)
    assert de.topk_map(same[:1], same, ones[:1], ones, 0, "average").item() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("bits,distinct", [(8, None), (32, None), (64, 6), (64, None), (128, None), (128, 9)])
def test_topk_map_small_k_scan(bits, distinct, gen):
    # k <= N/256 takes the threshold scan: dense at first, then tests of 8 or 20 rows at a time (a
    # tail of 7 rows is left at the end), its threshold lowered as rows arrive; huge tied groups at
    # the k-th distance make its buffer grow.
    Q, N = 11, 12_007
    q, db = random_codes(Q, bits, gen, distinct), random_codes(N, bits, gen, distinct)
    for kind in ("ids", "bool"):
        ql, dl = labels_for(kind, Q, 4, gen), labels_for(kind, N, 4, gen)
        for k in (1, 7, 46):
            torch.testing.assert_close(de.topk_map(q, db, ql, dl, k, "index"), ref.topk_map(q, db, ql, dl, k, "index"),
                                       rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bits", [64, 100])
def test_topk_map_queries_grouped_by_class(bits, gen):
    # Single-label queries run in blocks of four of one class where a class has four left, the rest
    # in mixed blocks: classes of 1 to 9 queries in shuffled order must each get their own AP back.
    sizes = [1, 2, 3, 4, 5, 8, 9, 6]
    ql = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    ql = ql[torch.randperm(len(ql), generator=gen)]
    N = 3000
    q, db = random_codes(len(ql), bits, gen), random_codes(N, bits, gen)
    dl = torch.randint(0, len(sizes), (N,), generator=gen)
    for k in (0, 12, 500, N):
        torch.testing.assert_close(de.topk_map(q, db, ql, dl, k, "index"), ref.topk_map(q, db, ql, dl, k, "index"),
                                   rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(de.topk_map(q, db, ql, dl, 0, "average"), ref.topk_map(q, db, ql, dl, 0, "average"),
                               rtol=1e-12, atol=1e-12)
