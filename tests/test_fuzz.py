"""Seeded fuzzing of every op against its pure-PyTorch reference (deephash_ext/reference.py).

Each case draws its own arguments from a generator seeded by (profile, op, case number), so a failure
names the seed that replays it (`replay("topk_map", 1234)`). Cases cover empty and one-row inputs, byte
widths 1..17 and 64..128, k of 1, N, beyond N and <= 0, class-id and multi-hot labels (bool, uint8,
floating), strided, transposed and offset (storage_offset) tensors, and 1 or 4 threads. Inputs that
the reference refuses (k < 1, ties="average" with a partial k, more bits than bytes hold) must be
refused by the kernel too. Every case also runs through the fake kernel on the meta device, which must
agree on refusal and on the shapes and dtypes of the result.

The quick profile runs in the default suite (a few seconds); the long one with `-m fuzz_long`. Both
print what they tried: cases, crashes (an exception other than the refusal the case expects) and wrong
answers, which must be 0.
"""
from __future__ import annotations

import collections
import random
import sys
import time

import pytest
import torch

import deephash_ext as de
from deephash.search.mih import default_m
from deephash_ext import reference as ref

META = torch.device("meta")
PROFILES = {"quick": 20, "long": 2000}  # cases per op family
WIDTHS = list(range(1, 18)) + list(range(64, 129))
REFUSED = (RuntimeError, ValueError)


# ------------------------------------------------------------------------------------------------
# Layouts: the same values in another memory layout.


def relayout(t: torch.Tensor, kind: str) -> torch.Tensor:
    if t.dim() == 0 or kind == "contiguous":
        return t
    if kind == "transposed":  # reversed strides: a column-major view of the same values
        perm = list(range(t.dim()))[::-1]
        return t.permute(perm).contiguous().permute(perm)
    if kind == "offset":  # a view into a larger buffer, at a storage offset
        buf = torch.empty(t.numel() + 7, dtype=t.dtype)
        buf[7:] = t.reshape(-1)
        return buf[7:].view(t.shape)
    if kind == "row-strided":  # every other row of a twice-as-tall tensor
        big = torch.empty((2 * t.shape[0], *t.shape[1:]), dtype=t.dtype)
        big[::2] = t
        return big[::2]
    if kind == "padded":  # last dimension sliced out of a wider one: offset and row stride together
        big = torch.empty((*t.shape[:-1], t.shape[-1] + 5), dtype=t.dtype)
        big[..., 2:2 + t.shape[-1]] = t
        return big[..., 2:2 + t.shape[-1]]
    raise ValueError(kind)


LAYOUTS = ["contiguous", "contiguous", "transposed", "offset", "row-strided", "padded"]


def layout(rng: random.Random, t: torch.Tensor) -> torch.Tensor:
    return relayout(t, rng.choice(LAYOUTS))


# ------------------------------------------------------------------------------------------------
# Random arguments


def rows(rng: random.Random, long: bool) -> int:
    r = rng.random()
    if r < 0.12:
        return 0
    if r < 0.3:
        return 1
    if r < 0.85:
        return rng.randint(2, 40)
    return rng.randint(41, 3000 if long else 400)


def width(rng: random.Random) -> int:
    return 0 if rng.random() < 0.03 else rng.choice(WIDTHS)


def random_codes(rng: random.Random, g: torch.Generator, n: int, B: int) -> torch.Tensor:
    kind = rng.choice(["uniform", "uniform", "few", "sparse", "constant"])
    if kind == "uniform" or n == 0:
        return torch.randint(0, 256, (n, B), generator=g, dtype=torch.uint8)
    if kind == "few":  # a few patterns: large tied groups
        pool = torch.randint(0, 256, (rng.randint(1, 4), B), generator=g, dtype=torch.uint8)
        return pool[torch.randint(0, pool.shape[0], (n,), generator=g)]
    if kind == "sparse":  # few bits set: small distances, many ties
        bits = (torch.rand(n, 8 * B, generator=g) < 0.05).to(torch.uint8)
        return de.pack_bits(bits)
    return torch.full((n, B), rng.choice([0, 255, 0x5A]), dtype=torch.uint8)


def pair(rng, g, long):
    B = width(rng)
    Q, N = rows(rng, long), rows(rng, long)
    if long and rng.random() < 0.05:  # a database the CPU kernels split across threads, for a few queries
        N, Q = rng.randint(16_384, 40_000), rng.randint(1, 3)
    while Q * N * max(B, 1) > 2_000_000:  # the reference forms a [Q, N, B] int64 tensor
        Q //= 2
    q = random_codes(rng, g, Q, B)
    # Queries drawn from the database now and then: distance 0 and ties with it.
    if N and Q and rng.random() < 0.3:
        db = random_codes(rng, g, N, B)
        q = db[torch.randint(0, N, (Q,), generator=g)]
    else:
        db = random_codes(rng, g, N, B)
    return q, db


def random_k(rng: random.Random, N: int) -> int:
    return rng.choice([1, N, N + 1, N + rng.randint(2, 50), rng.randint(1, max(N, 1)), rng.randint(1, max(N, 1)),
                       0, -rng.randint(1, 5)])


MULTI_HOT_DTYPES = [torch.bool, torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64]


def random_labels(rng, g, Q, N):
    if rng.random() < 0.5:
        classes = rng.choice([1, 2, 3, 7, 50])
        base = rng.choice([0, -3, 2**40])
        ql = torch.randint(0, classes, (Q,), generator=g) + base
        dl = torch.randint(0, classes, (N,), generator=g) + base
        return ql, dl
    C = rng.choice([1, 3, 5, 64, 65, 130])
    p = rng.choice([0.05, 0.3, 0.7])
    dtype = rng.choice(MULTI_HOT_DTYPES)

    def draw(n):
        m = torch.rand(n, C, generator=g) < p
        if dtype == torch.bool:
            return m
        if dtype == torch.uint8:
            return m.to(torch.uint8) * torch.randint(1, 256, (n, C), generator=g, dtype=torch.uint8)
        return (m * torch.randn(n, C, generator=g)).to(dtype)  # any non-zero value is a label

    return draw(Q), draw(N)


# ------------------------------------------------------------------------------------------------
# Running a case: kernel against reference, and the fake kernel against both.


class Failure(AssertionError):
    pass


def on_meta(args):
    return [a.to(META) if isinstance(a, torch.Tensor) else a for a in args]


def on_fake(op, args):
    """op on FakeTensors with a shape environment: the fake kernel of an op whose output sizes depend on
    the data (hamming_range) allocates them as unbacked symbols, which meta tensors cannot hold."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        return op(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])


def same_size(real: int, fake) -> bool:
    return not isinstance(fake, int) or real == fake  # a symbolic size stands for any


def flat(out):
    return out if isinstance(out, tuple) else (out,)


# The device the kernels run on (test_fuzz_quick runs on every device of conftest's fixture); the
# references run on the CPU.
DEVICE = "cpu"


def to_device(t):
    """t on DEVICE in the same layout: its whole storage moves, so strides and offset stay."""
    if not isinstance(t, torch.Tensor) or DEVICE == "cpu":
        return t
    storage = t.untyped_storage()
    flat = torch.empty(0, dtype=t.dtype).set_(storage, 0, (storage.nbytes() // t.element_size(),), (1,))
    return flat.to(DEVICE).as_strided(t.shape, t.stride(), t.storage_offset())


def to_cpu(out):
    if isinstance(out, tuple):
        return tuple(to_cpu(o) for o in out)
    return out.cpu() if isinstance(out, torch.Tensor) else out


def check_case(op, args, expect, compare, tally, fake=True):
    """Runs op(*args) on DEVICE; `expect` is the reference's result or the exception it raised. With
    `fake`, the call is repeated on the meta device (fake="symbolic": on FakeTensors, for
    data-dependent sizes)."""
    tally["checks"] += 1
    try:
        got = to_cpu(op(*[to_device(a) for a in args]))
    except REFUSED as e:
        got = e
    except Exception as e:  # anything else is a crash of the op's contract
        tally["crashes"] += 1
        raise Failure(f"unexpected {type(e).__name__}: {e}") from e
    if isinstance(expect, Exception):
        if not isinstance(got, Exception):
            tally["wrong"] += 1
            raise Failure(f"the reference refused ({expect}) but the kernel returned")
        tally["refused"] += 1
    else:
        if isinstance(got, Exception):
            tally["wrong"] += 1
            raise Failure(f"the kernel refused valid input: {got}")
        try:
            compare(got, expect)
        except AssertionError as e:
            tally["wrong"] += 1
            raise Failure(f"wrong answer: {e}") from e
    if not fake:
        return
    # The fake kernel: the same refusals, the same shapes and dtypes.
    tally["fake checks"] += 1
    try:
        meta_out = on_fake(op, args) if fake == "symbolic" else op(*on_meta(args))
    except REFUSED as e:
        meta_out = e
    except Exception as e:
        tally["crashes"] += 1
        raise Failure(f"fake kernel: unexpected {type(e).__name__}: {e}") from e
    if isinstance(got, Exception) != isinstance(meta_out, Exception):
        tally["wrong"] += 1
        raise Failure(f"fake kernel disagrees on refusal: kernel {got!r}, fake {meta_out!r}")
    if not isinstance(got, Exception):
        for a, b in zip(flat(got), flat(meta_out), strict=True):
            if a.dim() != b.dim() or a.dtype != b.dtype or not all(map(same_size, a.shape, b.shape)):
                tally["wrong"] += 1
                raise Failure(f"fake kernel gives {b.shape} {b.dtype}, the kernel {a.shape} {a.dtype}")


def reference(fn, *args):
    try:
        return fn(*args)
    except ValueError as e:
        return e


def equal(got, expect):
    for a, b in zip(flat(got), flat(expect), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{a.shape} {a.dtype} vs {b.shape} {b.dtype}"
        assert torch.equal(a, b), "values differ"


def close(rtol, atol):
    def compare(got, expect):
        for a, b in zip(flat(got), flat(expect), strict=True):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    return compare


# ------------------------------------------------------------------------------------------------
# The cases, one function per op: each draws its arguments and checks one call.

# Every real or bool dtype (docs/ops.md, pack_bits).
PACK_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32,
               torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.float64] + [
    getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")
    if hasattr(torch, n)]


def case_pack_bits(rng, g, long, tally):
    dtype = rng.choice(PACK_DTYPES)
    lead = rng.choice([(), (0,), (1,), (3,), (2, 3), (rows(rng, long),)])
    bits = rng.choice([0, rng.randint(1, 17), rng.randint(60, 140)])
    x = torch.randn(*lead, bits, generator=g) * 3
    if rng.random() < 0.2:
        x[torch.rand(x.shape, generator=g) < 0.1] = rng.choice([0.0, -0.0, float("nan"), float("inf")])
    if dtype == torch.bool:
        x = x > 0
    elif not dtype.is_floating_point:
        x = x.round().clamp(min=0 if not dtype.is_signed else -100, max=100)
    x = layout(rng, x.to(dtype))
    check_case(de.pack_bits, (x,), reference(ref.pack_bits, x), equal, tally)


def case_unpack_bits(rng, g, long, tally):
    lead = rng.choice([(), (0,), (1,), (4,), (2, 3)])
    B = width(rng)
    packed = layout(rng, torch.randint(0, 256, (*lead, B), generator=g, dtype=torch.uint8))
    bits = rng.choice([0, 8 * B, max(8 * B - rng.randint(1, 7), 0), rng.randint(0, 8 * B), 8 * B + rng.randint(1, 9),
                       -rng.randint(1, 3)])
    check_case(de.unpack_bits, (packed, bits), reference(ref.unpack_bits, packed, bits), equal, tally)


def case_hamming_distance(rng, g, long, tally):
    q, db = pair(rng, g, long)
    q, db = layout(rng, q), layout(rng, db)
    check_case(de.hamming_distance, (q, db), ref.hamming_distance(q, db), equal, tally)


def case_hamming_topk(rng, g, long, tally):
    q, db = pair(rng, g, long)
    q, db = layout(rng, q), layout(rng, db)
    k = random_k(rng, db.shape[0])
    check_case(de.hamming_topk, (q, db, k), reference(ref.hamming_topk, q, db, k), equal, tally)


def case_hamming_range(rng, g, long, tally):
    q, db = pair(rng, g, long)
    q, db = layout(rng, q), layout(rng, db)
    bits = 8 * q.shape[-1] if q.dim() == 2 else 0
    # 0 (exact matches), a few, about half the width, all rows, beyond the width, and refused negatives.
    radius = rng.choice([0, rng.randint(1, 4), bits // 2, bits, bits + rng.randint(1, 9), -rng.randint(1, 3)])
    check_case(de.hamming_range, (q, db, radius), reference(ref.hamming_range, q, db, radius), equal, tally,
               fake="symbolic")


def case_mih_search(rng, g, long, tally):
    """Multi-index hashing (the ops behind Index(kind="mih")) against the reference top-k: the inputs of
    hamming_topk, and databases of thousands of rows repeating one to three codes, whose buckets are cut
    short by the budget checks made inside a bucket (issue 26, item 14). Both modes; no fake check (the
    tables are built from real codes)."""
    if rng.random() < 0.4:
        B = rng.choice([1, 2, 8, 16])
        N = rng.randint(1025, 6000 if long else 2500)
        pool = torch.randint(0, 256, (rng.randint(1, 3), B), generator=g, dtype=torch.uint8)
        db = pool[torch.randint(0, pool.shape[0], (N,), generator=g)]
        q = torch.cat([pool, torch.randint(0, 256, (2, B), generator=g, dtype=torch.uint8)])
    else:
        q, db = pair(rng, g, long)
    q, db = q.contiguous(), db.contiguous()
    bits = 8 * db.shape[1]
    k = random_k(rng, db.shape[0])
    # The paper's search alone ("probe") can cost far more than a scan on wide random codes: narrow ones only.
    mode = rng.choice(["auto", "auto", "probe"]) if bits <= 128 and db.shape[0] <= 3000 else "auto"

    def mih(q, db, k):
        return de.mih_search(q, db, *de.mih_build(db, bits, default_m(db.shape[0], bits)), bits, k, mode)

    # Codes of 0 bits have no substrings: mih_build refuses them (docs/ops.md), the scan does not.
    expect = ValueError("0 bits") if bits == 0 else reference(ref.hamming_topk, q, db, k)
    check_case(mih, (q, db, k), expect, equal, tally, fake=False)


def case_topk_map(rng, g, long, tally):
    q, db = pair(rng, g, long)
    ql, dl = random_labels(rng, g, q.shape[0], db.shape[0])
    q, db, ql, dl = (layout(rng, t) for t in (q, db, ql, dl))
    k = random_k(rng, db.shape[0])
    ties = rng.choice(["index", "index", "average"])
    args = (q, db, ql, dl, k, ties)
    check_case(de.topk_map, args, reference(ref.topk_map, *args), close(1e-12, 1e-12), tally)


def random_adjacency(rng, g, Bt, n, dtype):
    A = torch.rand(Bt, n, n, generator=g, dtype=torch.float64) * 10 ** rng.uniform(-3, 3)
    A = A * (torch.rand(Bt, n, n, generator=g) < rng.choice([0.1, 0.5, 1.0]))
    A = A + A.mT
    if n and rng.random() < 0.3:  # isolated nodes: degree 0
        i = rng.randrange(n)
        A[:, i, :] = 0
        A[:, :, i] = 0
    return A.to(dtype)


def case_normalized_laplacian(rng, g, long, tally):
    dtype = rng.choice([torch.float32, torch.float64])
    Bt, n = rng.choice([0, 1, 2, 5]), rng.choice([0, 1, 2, rng.randint(3, 12), rng.randint(13, 60 if long else 30)])
    A = random_adjacency(rng, g, Bt, n, dtype)
    tol = close(1e-5, 1e-6) if dtype == torch.float32 else close(1e-12, 1e-13)
    check_case(de.normalized_laplacian, (layout(rng, A),), ref.normalized_laplacian(A), tol, tally)
    if dtype == torch.float64 and Bt and n and rng.random() < 0.5:  # the backward op, through autograd
        W = torch.randn(Bt, n, n, generator=g, dtype=dtype)
        a1, a2 = A.clone().requires_grad_(), A.clone().requires_grad_()
        (de.normalized_laplacian(a1) * W).sum().backward()
        (ref.normalized_laplacian(a2) * W).sum().backward()
        check_case(lambda: a1.grad, (), a2.grad, close(1e-9, 1e-11), tally, fake=False)


def random_symmetric(rng, g, Bt, n, dtype, spectrum=None):
    """Q diag(w) Qᵀ with a chosen kind of spectrum; scale within 1e-3..1e3."""
    kind = spectrum or rng.choice(["random", "random", "repeated", "zero-blocks", "diagonal"])
    Qm, _ = torch.linalg.qr(torch.randn(Bt, n, n, generator=g, dtype=torch.float64))
    if kind == "random":
        w = torch.randn(Bt, n, generator=g, dtype=torch.float64)
    elif kind == "repeated":
        w = torch.randint(-2, 3, (Bt, n), generator=g).double()
    elif kind == "distinct":  # gaps of at least 0.05 between eigenvalues in [0, 2]
        w = torch.sort(torch.rand(Bt, n, generator=g, dtype=torch.float64), dim=1).values
        w = (w + 0.05 * torch.arange(n)) / (1 + 0.05 * n) * 2
    elif kind == "zero-blocks":
        w = torch.randn(Bt, n, generator=g, dtype=torch.float64) * (torch.rand(Bt, n, generator=g) < 0.5)
    else:
        S = torch.diag_embed(torch.randn(Bt, n, generator=g, dtype=torch.float64))
        return (S * 10 ** rng.uniform(-3, 3)).to(dtype)
    S = Qm @ torch.diag_embed(w) @ Qm.mT
    S = (S + S.mT) / 2 * (1.0 if kind == "distinct" else 10 ** rng.uniform(-3, 3))
    return S.to(dtype)


def case_eigh(rng, g, long, tally):
    dtype = rng.choice([torch.float32, torch.float64])
    big = [100, 160, 161, 200] if long else [64]
    Bt, n = rng.choice([0, 1, 3]), rng.choice([0, 1, 2, 3, rng.randint(4, 24), rng.choice(big)])
    L = random_symmetric(rng, g, Bt, n, dtype)
    eps = torch.finfo(dtype).eps

    def compare(got, _expect):
        w, V = got
        S = L.double()
        scale = max(S.abs().amax().item() if S.numel() else 0.0, 1e-300)
        tol = 50 * max(n, 1) * eps * scale
        wr = torch.linalg.eigvalsh(S)
        assert w.shape == (Bt, n) and V.shape == (Bt, n, n) and w.dtype == dtype and V.dtype == dtype
        assert (w.double() - wr).abs().max().item() <= tol if w.numel() else True, "eigenvalues"
        Vd = V.double()
        I = torch.eye(n, dtype=torch.float64).expand(Bt, n, n)
        assert (Vd.mT @ Vd - I).abs().max().item() <= 50 * max(n, 1) * eps if V.numel() else True, "orthonormal"
        R = Vd @ torch.diag_embed(w.double()) @ Vd.mT
        assert (R - S).abs().max().item() <= tol if V.numel() else True, "reconstruction"

    check_case(de.eigh, (layout(rng, L),), None, compare, tally)


def case_spectral_filter(rng, g, long, tally):
    dtype = rng.choice([torch.float32, torch.float64, torch.float64])
    basis = rng.choice(["chebyshev", "spline", "fourier"])
    Bt, n, d = rng.choice([0, 1, 3]), rng.choice([0, 1, 2, rng.randint(3, 16), rng.randint(17, 40)]), rng.choice([0, 1, 4])
    # fourier is a function of L only with a gap after its K-th eigenvalue: distinct eigenvalues there.
    if basis == "fourier" or rng.random() < 0.5:
        L = random_symmetric(rng, g, Bt, n, torch.float64, "distinct").to(dtype)
        distinct = True
    else:
        L = de.normalized_laplacian(random_adjacency(rng, g, Bt, n, torch.float64)).to(dtype)
        distinct = False
    K = {"chebyshev": rng.randint(0, 7), "spline": rng.randint(3, 9), "fourier": rng.randint(0, n + 1)}[basis]
    theta = torch.randn(*((Bt, K) if rng.random() < 0.5 else (K,)), generator=g, dtype=dtype)
    x = torch.randn(Bt, n, d, generator=g, dtype=dtype)
    x, Lv, theta = layout(rng, x), layout(rng, L), layout(rng, theta)
    tol = close(2e-4, 2e-4) if dtype == torch.float32 else close(1e-8, 1e-9)
    expect = reference(ref.spectral_filter, x, L, theta, basis)
    check_case(de.spectral_filter, (x, Lv, theta, basis), expect, tol, tally)
    # Gradients through the backward op, against autograd through the reference (defined where the
    # eigenvalues are distinct; the kernel's stays finite on ties, which test_spectral covers).
    if dtype == torch.float64 and distinct and Bt and n and d and not isinstance(expect, Exception):
        W = torch.randn(Bt, n, d, generator=g, dtype=dtype)
        grads = []
        for fn, move in ((de.spectral_filter, to_device), (ref.spectral_filter, lambda t: t)):
            leaves = [move(t.detach().clone()).requires_grad_() for t in (x, L, theta)]
            (fn(*leaves, basis) * move(W)).sum().backward()
            grads.append(tuple(t.grad.cpu() for t in leaves))
        check_case(lambda: grads[0], (), grads[1], close(1e-6, 1e-8), tally, fake=False)


CASES = {
    "pack_bits": case_pack_bits,
    "unpack_bits": case_unpack_bits,
    "hamming_distance": case_hamming_distance,
    "hamming_topk": case_hamming_topk,
    "hamming_range": case_hamming_range,
    "mih_search": case_mih_search,
    "topk_map": case_topk_map,
    "normalized_laplacian": case_normalized_laplacian,
    "eigh": case_eigh,
    "spectral_filter": case_spectral_filter,
}


# Ops with CPU kernels only (docs/ops.md): their cases run on the CPU device alone.
CPU_ONLY = {"mih_search"}


def replay(op: str, seed: int, long: bool = False, tally=None) -> None:
    """Runs one case again: the seed is in the failure message."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    threads = rng.choice([1, 4])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        CASES[op](rng, g, long, tally if tally is not None else collections.Counter())
    finally:
        torch.set_num_threads(before)


def run_profile(profile: str, capsys) -> None:
    per_op = PROFILES[profile]
    long = profile == "long"
    tally = collections.Counter()
    failures = []
    start = time.perf_counter()
    for o, op in enumerate(CASES):
        if op in CPU_ONLY and DEVICE != "cpu":
            continue
        for i in range(per_op):
            seed = (1 if long else 0) * 10**7 + o * 10**5 + i
            tally["cases"] += 1
            try:
                replay(op, seed, long, tally)
            except Failure as e:
                failures.append(f"replay({op!r}, {seed}, long={long}): {e}")
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nfuzz ({profile}, {DEVICE}): {tally['cases']} cases ({per_op} per op, {len(CASES)} ops) in {elapsed:.1f} s: "
              f"{tally['checks']} kernel calls checked against the reference ({tally['refused']} of them refusals), "
              f"{tally['fake checks']} fake-kernel calls; {tally['crashes']} crashes, {tally['wrong']} wrong answers")
    assert not failures, "\n".join(failures[:20])
    assert tally["crashes"] == 0 and tally["wrong"] == 0


def test_fuzz_quick(capsys, device, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "DEVICE", device)
    run_profile("quick", capsys)


@pytest.mark.fuzz_long
def test_fuzz_long(capsys):
    run_profile("long", capsys)
