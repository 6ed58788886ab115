"""CUDA kernels against the CPU ops and the references. Skipped without a GPU and a CUDA build."""
import pytest
import torch

import deephash_ext as de
from deephash_ext import reference as ref

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and de.cuda_compiled()), reason="needs a GPU and a build with CUDA kernels"
)


def codes(n, bits, gen, distinct=None):
    if distinct is None:
        return de.pack_bits(torch.randint(0, 2, (n, bits), generator=gen))
    pool = de.pack_bits(torch.randint(0, 2, (distinct, bits), generator=gen))
    return pool[torch.randint(0, distinct, (n,), generator=gen)]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(99)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32,
                                   torch.uint8, torch.bool])
@pytest.mark.parametrize("bits", [1, 13, 64, 100])
def test_pack_unpack_cuda(dtype, bits, gen):
    x = torch.randn(7, 3, bits, generator=gen)
    x = (x > 0) if dtype == torch.bool else (x * 3).round().to(dtype) if not dtype.is_floating_point else x.to(dtype)
    if dtype == torch.uint8:
        x = x.clamp(min=0)
    packed = de.pack_bits(x.cuda())
    assert packed.is_cuda and torch.equal(packed.cpu(), de.pack_bits(x))
    assert torch.equal(de.unpack_bits(packed, bits).cpu(), de.unpack_bits(packed.cpu(), bits))


@pytest.mark.parametrize("bits", [8, 20, 64, 128, 256, 1024, 4096])
def test_hamming_distance_cuda(bits, gen):
    q, db = codes(40, bits, gen), codes(3000, bits, gen)
    got = de.hamming_distance(q.cuda(), db.cuda())
    assert got.is_cuda and torch.equal(got.cpu(), de.hamming_distance(q, db))
    # Rows that start off an 8-byte boundary take the byte path.
    buf = torch.zeros(db.numel() + 1, dtype=torch.uint8, device="cuda")
    buf[1:] = db.cuda().flatten()
    dbv = buf[1:].view(db.shape)
    assert torch.equal(de.hamming_distance(q.cuda(), dbv).cpu(), de.hamming_distance(q, db))


@pytest.mark.parametrize("bits,distinct", [(64, None), (64, 3), (128, None), (100, 7), (512, None), (4096, 2)])
@pytest.mark.parametrize("k", [1, 10, 2048, 5000, 40_000])
def test_hamming_topk_cuda(bits, distinct, k, gen):
    q, db = codes(21, bits, gen, distinct), codes(35_000, bits, gen, distinct)
    d, i = de.hamming_topk(q.cuda(), db.cuda(), k)
    rd, ri = de.hamming_topk(q, db, k)
    assert torch.equal(d.cpu(), rd) and torch.equal(i.cpu(), ri)


def test_hamming_topk_cuda_many_queries(gen):
    q, db = codes(3000, 64, gen, 50), codes(20_000, 64, gen, 50)
    d, i = de.hamming_topk(q.cuda(), db.cuda(), 100)
    rd, ri = de.hamming_topk(q, db, 100)
    assert torch.equal(d.cpu(), rd) and torch.equal(i.cpu(), ri)


@pytest.mark.parametrize("kind", ["ids", "multi"])
@pytest.mark.parametrize("bits,distinct", [(64, None), (64, 4), (100, None), (256, 6)])
def test_topk_map_cuda(kind, bits, distinct, gen):
    Q, N = 30, 20_000
    q, db = codes(Q, bits, gen, distinct), codes(N, bits, gen, distinct)
    if kind == "ids":
        ql, dl = torch.randint(0, 5, (Q,), generator=gen), torch.randint(0, 5, (N,), generator=gen)
    else:
        ql, dl = torch.rand(Q, 70, generator=gen) < 0.05, torch.rand(N, 70, generator=gen) < 0.05
    for k, ties in [(1, "index"), (100, "index"), (5000, "index"), (0, "index"), (0, "average")]:
        got = de.topk_map(q.cuda(), db.cuda(), ql.cuda(), dl.cuda(), k, ties)
        torch.testing.assert_close(got.cpu(), de.topk_map(q, db, ql, dl, k, ties), rtol=1e-10, atol=1e-12)


def test_empty_and_mixed_devices_cuda(gen):
    q, db = codes(4, 64, gen).cuda(), codes(10, 64, gen).cuda()
    assert de.hamming_topk(q[:0], db, 3)[0].shape == (0, 3)
    assert de.hamming_topk(q, db[:0], 3)[0].shape == (4, 0)
    assert de.topk_map(q, db[:0], torch.zeros(4, dtype=torch.long, device="cuda"),
                       torch.zeros(0, dtype=torch.long, device="cuda"), 0, "index").tolist() == [0.0] * 4
    with pytest.raises(RuntimeError, match="same device"):
        de.hamming_distance(q, db.cpu())
    with pytest.raises(RuntimeError, match="must be on"):
        de.topk_map(q, db, torch.zeros(4, dtype=torch.long), torch.zeros(10, dtype=torch.long, device="cuda"), 0,
                    "index")


def test_opcheck_cuda(gen):
    q, db = codes(6, 64, gen, 4).cuda(), codes(50, 64, gen, 4).cuda()
    ql, dl = torch.randint(0, 3, (6,), device="cuda"), torch.randint(0, 3, (50,), device="cuda")
    for op, args in [
        (torch.ops.deephash_ext.pack_bits.default, (torch.randn(4, 20, device="cuda"),)),
        (torch.ops.deephash_ext.unpack_bits.default, (q, 60)),
        (torch.ops.deephash_ext.hamming_distance.default, (q, db)),
        (torch.ops.deephash_ext.hamming_topk.default, (q, db, 7)),
        (torch.ops.deephash_ext.topk_map.default, (q, db, ql, dl, 10, "index")),
        (torch.ops.deephash_ext.topk_map.default, (q, db, ql, dl, 0, "average")),
    ]:
        torch.library.opcheck(op, args)


def test_reference_runs_on_cuda(gen):
    q, db = codes(5, 64, gen).cuda(), codes(100, 64, gen).cuda()
    assert torch.equal(ref.hamming_distance(q, db), de.hamming_distance(q, db))
