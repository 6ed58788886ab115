"""The Hamming ops at every byte width 1..64 (and some wider ones) against the references, on every device.

The CPU scans copy each database tile into a padded width (8, 16, 24, 32, 48 or 64 bytes) and widths over
64 bytes read one tail word per row (csrc/common/codes_cpu.h); CUDA reads rows of any width as words
(csrc/common/codes_cuda.cuh). The adversarial cases put the only difference in a row's last byte, in the
database's last row, and poison the bytes just past the database, which a tail load that reads too far
or masks too little would count.
"""
import pytest
import torch

import deephash_ext as de
from deephash_ext import reference as ref
from op_inputs import random_codes, to

WIDTHS = list(range(1, 65)) + [65, 71, 72, 100, 129]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(2027)


def random_bytes(n, B, gen, distinct=None):
    """Rows of B random bytes (every bit of a row counts: the ops count padding bits too)."""
    return random_codes(n, 8 * B, gen, distinct)


@pytest.mark.parametrize("B", WIDTHS)
def test_every_width_matches_reference(B, gen, device):
    # 2,111 rows: past the scans' dense start (1,024 rows), and a tail that fills no group of 8 or 20.
    q, db = random_bytes(23, B, gen), random_bytes(2111, B, gen, distinct=None if B % 2 else 40)
    qd, dbd = to(device, q, db)
    assert torch.equal(de.hamming_distance(qd, dbd).cpu(), ref.hamming_distance(q, db))
    for k in (1, 7, 300):
        d, i = de.hamming_topk(qd, dbd, k)
        rd, ri = ref.hamming_topk(q, db, k)
        assert torch.equal(d.cpu(), rd) and torch.equal(i.cpu(), ri), k
    radius = 4 * B - 1  # about half the rows: both sides of the test in every group
    for got, want in zip(de.hamming_range(qd, dbd, radius), ref.hamming_range(q, db, radius)):
        assert torch.equal(got.cpu(), want)
    ql = torch.randint(0, 4, (23,), generator=gen)
    dl = torch.randint(0, 4, (2111,), generator=gen)
    qld, dld = to(device, ql, dl)
    for k, ties in ((5, "index"), (500, "index"), (0, "index"), (0, "average")):
        torch.testing.assert_close(de.topk_map(qd, dbd, qld, dld, k, ties).cpu(),
                                   ref.topk_map(q, db, ql, dl, k, ties), rtol=1e-10, atol=1e-12)


def tail_case(B, N=1000):
    """A query, and N copies of it in which rows 3, N // 2 and N - 1 differ in the top bit of the last byte
    and row 5 in bit 0 of the first byte; the bytes just past row N - 1 (the poison row) are the query
    flipped. Returns the query and database views (the database both at an aligned and an odd offset)."""
    g = torch.Generator().manual_seed(B)
    q = torch.randint(0, 256, (1, B), generator=g, dtype=torch.uint8)
    db = q.repeat(N + 1, 1)
    for r in (3, N // 2, N - 1):
        db[r, B - 1] ^= 0x80
    db[5, 0] ^= 0x01
    db[N] = ~q[0]
    flat = torch.zeros(1 + (N + 1) * B, dtype=torch.uint8)
    flat[1:] = db.flatten()
    odd = flat[1:].view(N + 1, B)[:N]  # rows start at an odd address
    return q, db[:N], odd


@pytest.mark.parametrize("B", WIDTHS)
def test_tail_bytes_and_the_last_row(B, device):
    N = 1000
    q, db, odd = tail_case(B, N)
    ones = [3, 5, N // 2, N - 1]
    want = torch.zeros(N, dtype=torch.int32)
    want[ones] = 1
    for d in (db, odd):
        qd, dd = q.to(device), d.to(device)
        assert torch.equal(de.hamming_distance(qd, dd).cpu()[0], want)
        dist, rows = de.hamming_topk(qd, dd, N)
        assert torch.equal(rows.cpu()[0, -4:], torch.tensor(ones)) and torch.equal(dist.cpu()[0, -4:], torch.ones(4, dtype=torch.int32))
        assert torch.equal(dist.cpu()[0, :-4], torch.zeros(N - 4, dtype=torch.int32))
        lims, rd, rr = de.hamming_range(qd, dd, 0)
        assert lims.tolist() == [0, N - 4] and not set(ones) & set(rr.cpu().tolist())
        # The last rows are relevant: a wrong distance at the end moves them in the ranking.
        labels = torch.zeros(N, dtype=torch.long)
        labels[ones] = 1
        ql = torch.ones(1, dtype=torch.long)
        for k, ties in ((4, "index"), (0, "average")):
            torch.testing.assert_close(de.topk_map(qd, dd, ql.to(device), labels.to(device), k, ties).cpu(),
                                       ref.topk_map(q, d.contiguous(), ql, labels, k, ties), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("B", [3, 6, 9, 12, 40, 72])
def test_many_queries_share_padded_tiles(B, gen, device):
    # More queries than a block (16) and rows than a tile, with a few threads splitting the database.
    q, db = random_bytes(70, B, gen), random_bytes(9000, B, gen, distinct=300)
    d, i = de.hamming_topk(*to(device, q, db), 50)
    rd, ri = ref.hamming_topk(q, db, 50)
    assert torch.equal(d.cpu(), rd) and torch.equal(i.cpu(), ri)


def test_large_k_shrinks_the_query_block(gen, device):
    # k = 30,000 of 50,000 rows: 64 queries' candidate buffers would pass the scan's 32 MiB, so a block
    # holds fewer (55 here); 70 queries then span two blocks of different sizes.
    q, db = random_bytes(70, 6, gen), random_bytes(50_000, 6, gen, distinct=2000)
    d, i = de.hamming_topk(*to(device, q, db), 30_000)
    rd, ri = ref.hamming_topk(q, db, 30_000)
    assert torch.equal(d.cpu(), rd) and torch.equal(i.cpu(), ri)
    ql, dl = torch.randint(0, 3, (70,), generator=gen), torch.randint(0, 3, (50_000,), generator=gen)
    torch.testing.assert_close(de.topk_map(*to(device, q, db, ql, dl), 150, "index").cpu(),
                               ref.topk_map(q, db, ql, dl, 150, "index"), rtol=1e-10, atol=1e-12)
