"""Typed wrappers of torch.ops.deephash_ext, with their fake (meta) kernels and autograd.

The fake kernels repeat the checks that decide output shapes, so that torch.compile and
FakeTensor tracing refuse the same inputs as the real kernels do.
"""
from __future__ import annotations

import torch
from torch import Tensor

_lib = torch.ops.deephash_ext


def pack_bits(x: Tensor) -> Tensor:
    """Pack ``x[..., b]`` into ``uint8[..., ceil(b/8)]``: bit = ``x > 0``, LSB first within a byte."""
    return _lib.pack_bits.default(x)


def unpack_bits(packed: Tensor, bits: int) -> Tensor:
    """Unpack ``uint8[..., B]`` codes into 0/1 ``uint8[..., bits]`` (``bits <= 8 * B``)."""
    return _lib.unpack_bits.default(packed, bits)


def hamming_distance(q: Tensor, db: Tensor) -> Tensor:
    """All-pairs Hamming distance between packed codes ``uint8[Q, B]`` and ``uint8[N, B]`` -> ``int32[Q, N]``."""
    return _lib.hamming_distance.default(q, db)


def hamming_topk(q: Tensor, db: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact k nearest database rows per query: ``(int32 distances, int64 rows)`` of shape ``[Q, min(k, N)]``,
    each row sorted by (distance, row index)."""
    return _lib.hamming_topk.default(q, db, k)


def hamming_range(q: Tensor, db: Tensor, radius: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every database row within Hamming ``radius`` (inclusive) of each query, exact, in FAISS's
    range-search layout: ``(lims int64[Q + 1], distances int32[M], rows int64[M])``; query ``i``'s hits
    are ``lims[i]:lims[i + 1]``, ordered by (distance, row)."""
    return _lib.hamming_range.default(q, db, radius)


def topk_map(q: Tensor, db: Tensor, q_labels: Tensor, db_labels: Tensor, k: int = 0,
             ties: str = "index") -> Tensor:
    """Per-query AP@k (``float64[Q]``) of the Hamming ranking; ``k <= 0`` ranks the whole database.

    ``ties="index"`` breaks distance ties by database row; ``ties="average"`` gives the exact
    expected AP under a random order inside each tie (full ranking only). ``.mean()`` is mAP.
    """
    return _lib.topk_map.default(q, db, q_labels, db_labels, k, ties)


# ---------------------------------------------------------------------------------------------
# Fake kernels


def _check_same_device(op: str, **tensors: Tensor) -> None:
    """Every tensor argument on one device. The dispatcher sends a call to this file's fake kernels when
    any argument is on the meta device, so a fake kernel is also what sees CPU codes with meta labels."""
    (first, t0), *rest = tensors.items()
    for name, t in rest:
        torch._check(t.device == t0.device, lambda: f"{op}: all tensors must be on one device, but {first} is on "
                                                    f"{t0.device} and {name} on {t.device}")


# Distances are int32, so 8 * bytes must stay below 2^31 (common/checks.h: kMaxCodeBytes).
MAX_CODE_BYTES = (2**31 - 1) // 8


def _check_codes(t: Tensor, name: str) -> None:
    torch._check(t.dtype == torch.uint8, lambda: f"{name} must hold packed codes of dtype uint8, got {t.dtype}")
    torch._check(t.dim() == 2, lambda: f"{name} must be 2-D [rows, bytes], got shape {tuple(t.shape)}")
    torch._check(t.shape[1] <= MAX_CODE_BYTES,
                 lambda: f"{name} holds codes of {t.shape[1]} bytes ({8 * t.shape[1]} bits), too wide: Hamming "
                         f"distances are int32, so codes may hold at most {MAX_CODE_BYTES} bytes")


def _check_pair(q: Tensor, db: Tensor) -> None:
    _check_codes(q, "q")
    _check_codes(db, "db")
    torch._check(q.shape[1] == db.shape[1],
                 lambda: f"q and db must have the same byte width, got {q.shape[1]} and {db.shape[1]} bytes")
    torch._check(q.device == db.device, lambda: f"q and db must be on the same device, got {q.device} and {db.device}")


# What pack_bits reads: every real or bool dtype with one value per element (common/checks.h:
# pack_bits_dtype). Complex, quantized, packed sub-byte and bit-container dtypes have no order against 0.
PACK_BITS_DTYPES = frozenset(
    [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32,
     torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.float64]
    + [getattr(torch, n) for n in ("float8_e5m2", "float8_e5m2fnuz", "float8_e4m3fn", "float8_e4m3fnuz",
                                   "float8_e8m0fnu") if hasattr(torch, n)])


@torch.library.register_fake("deephash_ext::pack_bits")
def _pack_bits_fake(x):
    torch._check(x.dim() >= 1, lambda: "pack_bits: x must have at least one dimension (the bits), got a scalar")
    torch._check(x.dtype in PACK_BITS_DTYPES, lambda: f"pack_bits: x must be real or bool, got {x.dtype}")
    return x.new_empty((*x.shape[:-1], (x.shape[-1] + 7) // 8), dtype=torch.uint8)


@torch.library.register_fake("deephash_ext::unpack_bits")
def _unpack_bits_fake(packed, bits):
    torch._check(packed.dtype == torch.uint8, lambda: f"unpack_bits: packed must be uint8, got {packed.dtype}")
    torch._check(packed.dim() >= 1, lambda: "unpack_bits: packed must have at least one dimension (the bytes)")
    torch._check(bits >= 0, lambda: f"unpack_bits: bits must be >= 0, got {bits}")
    torch._check(bits <= 8 * packed.shape[-1],
                 lambda: f"unpack_bits: asked for {bits} bits but the codes hold only {8 * packed.shape[-1]}")
    return packed.new_empty((*packed.shape[:-1], bits))


@torch.library.register_fake("deephash_ext::hamming_distance")
def _hamming_distance_fake(q, db):
    _check_pair(q, db)
    return q.new_empty((q.shape[0], db.shape[0]), dtype=torch.int32)


@torch.library.register_fake("deephash_ext::hamming_topk")
def _hamming_topk_fake(q, db, k):
    _check_pair(q, db)
    torch._check(k >= 1, lambda: f"hamming_topk: k must be >= 1, got {k}")
    kk = torch.sym_min(k, db.shape[0])
    return (q.new_empty((q.shape[0], kk), dtype=torch.int32), q.new_empty((q.shape[0], kk), dtype=torch.int64))


@torch.library.register_fake("deephash_ext::hamming_range")
def _hamming_range_fake(q, db, radius):
    _check_pair(q, db)
    torch._check(radius >= 0, lambda: f"hamming_range: radius must be >= 0, got {radius}")
    # The number of hits depends on the data.
    m = torch.library.get_ctx().new_dynamic_size()
    return (q.new_empty((q.shape[0] + 1,), dtype=torch.int64), q.new_empty((m,), dtype=torch.int32),
            q.new_empty((m,), dtype=torch.int64))


_MULTI_HOT_DTYPES = (torch.bool, torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


@torch.library.register_fake("deephash_ext::topk_map")
def _topk_map_fake(q, db, q_labels, db_labels, k, ties):
    # The order of common/checks.h: check_topk_map_inputs.
    _check_pair(q, db)
    torch._check(ties in ("index", "average"), lambda: f'ties must be "index" or "average", got "{ties}"')
    torch._check(q_labels.dim() == db_labels.dim(),
                 lambda: "q_labels and db_labels must be of the same kind (class ids [rows] or multi-hot [rows, C]), "
                         f"got shapes {tuple(q_labels.shape)} and {tuple(db_labels.shape)}")
    torch._check(q_labels.dim() in (1, 2),
                 lambda: f"labels must be class ids [rows] or multi-hot [rows, C], got shape {tuple(q_labels.shape)}")
    torch._check(q_labels.shape[0] == q.shape[0],
                 lambda: f"q_labels has {q_labels.shape[0]} rows but q has {q.shape[0]}")
    torch._check(db_labels.shape[0] == db.shape[0],
                 lambda: f"db_labels has {db_labels.shape[0]} rows but db has {db.shape[0]}")
    if q_labels.dim() == 1:
        torch._check(q_labels.dtype == torch.int64 and db_labels.dtype == torch.int64,
                     lambda: f"class-id labels must be int64, got {q_labels.dtype} and {db_labels.dtype}")
    else:
        torch._check(q_labels.dtype in _MULTI_HOT_DTYPES and db_labels.dtype in _MULTI_HOT_DTYPES,
                     lambda: f"multi-hot labels must be bool, uint8 or floating, got {q_labels.dtype} and "
                             f"{db_labels.dtype}")
        torch._check(q_labels.shape[1] == db_labels.shape[1],
                     lambda: f"multi-hot labels must have the same number of classes, got {q_labels.shape[1]} and "
                             f"{db_labels.shape[1]}")
    torch._check(q_labels.device == q.device,
                 lambda: f"q_labels must be on {q.device} like the codes, got {q_labels.device}")
    torch._check(db_labels.device == q.device,
                 lambda: f"db_labels must be on {q.device} like the codes, got {db_labels.device}")
    N = db.shape[0]
    torch._check(ties == "index" or k <= 0 or k >= N,
                 lambda: f'ties="average" is defined over the full ranking only: pass k <= 0 (or k >= N), got k={k} '
                         f"with N={N}")
    return q.new_empty((q.shape[0],), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Spectral graph filtering

SPECTRAL_BASES = ("chebyshev", "spline", "fourier")


def normalized_laplacian(A: Tensor) -> Tensor:
    """``I - D^-1/2 A D^-1/2`` of a batch of symmetric non-negative adjacency matrices ``[Bt, n, n]``,
    ``D = diag(A.sum(-1))``; negative entries and asymmetry beyond ``1e-4 * max(1, max A)`` are refused.

    A node of degree 0 gets a row and column of the identity (and its row of A gradient 0: the map
    is not differentiable there). Differentiable in ``A``.
    """
    return _lib.normalized_laplacian.default(A)


def eigh(L: Tensor) -> tuple[Tensor, Tensor]:
    """Eigendecomposition of a batch of symmetric matrices ``[Bt, n, n]`` (float32 or float64):
    ``(values [Bt, n] ascending, vectors [Bt, n, n])``, columns orthonormal, ``L = V diag(values) Vᵀ``.

    ``L`` must be finite and symmetric to within ``1e-4 * max(1, max|L|)``; ``(L + Lᵀ)/2`` is
    decomposed. On the CPU the batch is spread over the intra-op threads, with a solver of our own
    (tridiagonalisation + implicit QL) for n <= 160 and LAPACK beyond. ``vectors`` is column-major
    (strides ``(n², 1, n)``) like ``torch.linalg.eigh``'s; eigenvector signs (and the basis chosen
    inside a repeated eigenvalue's eigenspace) may differ from it. Not differentiable (use
    :func:`spectral_filter`, whose gradient stays finite on repeated eigenvalues).
    """
    return _lib.eigh.default(L)


def spectral_filter(x: Tensor, L: Tensor, theta: Tensor, basis: str = "chebyshev") -> Tensor:
    """Spectral graph filter ``y = U g(Λ) Uᵀ x`` per graph, ``L = U Λ Uᵀ``.

    ``x [Bt, n, d]``, ``L [Bt, n, n]`` symmetric (to within ``1e-4 * max(1, max|L|)``; ``(L + Lᵀ)/2``
    is used), ``theta [K]`` shared or ``[Bt, K]`` per graph, ``g(λ) = Σ_k θ_k φ_k(λ)`` with

    - ``"chebyshev"``: ``φ_k(λ) = T_k(λ - 1)``, K >= 1;
    - ``"spline"``: the K >= 4 clamped cubic B-splines on ``[0,0,0] + linspace(0,2,K-2) + [2,2,2]``,
      λ clamped into [0, 2] (the derivative at a clamped λ is the one-sided one from inside);
    - ``"fourier"``: only the K <= n smallest eigenpairs, ``y = U_K diag(θ) U_Kᵀ x``.

    Differentiable in ``x``, ``L`` and ``theta``. The ``L`` gradient is the Daleckii–Krein form with
    divided differences of g and ``g'`` on near-equal eigenvalues (relative gap <= 1e-6 in float64,
    1e-3 in float32), so it is finite and correct on repeated eigenvalues for chebyshev and spline.
    Fourier's gap condition: it is a differentiable function of ``L`` only where
    ``λ_{K-1} < λ_K`` and eigenvalues tied among the first K carry equal θ; elsewhere the forward
    depends on the eigenbasis the solver picks inside the eigenspace. Its backward treats pairs
    closer than the tie width above as ties and drops their terms instead of
    ``(θ_i - θ_j) / (λ_i - λ_j)``: finite, never NaN, exact when the tied θ are equal (or both
    eigenvalues lie past K), and a truncation of a gradient of size ``1/gap`` otherwise.
    """
    return _lib.spectral_filter.default(x, L, theta, basis)


def _check_square_batch(t: Tensor, op: str, name: str) -> None:
    torch._check(t.dtype in (torch.float32, torch.float64),
                 lambda: f"{op}: {name} must be float32 or float64, got {t.dtype}")
    torch._check(t.dim() == 3, lambda: f"{op}: {name} must be a batch of matrices [Bt, n, n], got shape {tuple(t.shape)}")
    torch._check(t.shape[1] == t.shape[2], lambda: f"{op}: {name} must be square [Bt, n, n], got shape {tuple(t.shape)}")


def _check_spectral_filter(x: Tensor, L: Tensor, theta: Tensor, basis: str) -> int:
    op = "spectral_filter"
    torch._check(basis in SPECTRAL_BASES,
                 lambda: f'{op}: basis must be "chebyshev", "spline" or "fourier", got "{basis}"')
    _check_square_batch(L, op, "L")
    torch._check(x.dim() == 3, lambda: f"{op}: x must be [Bt, n, d], got shape {tuple(x.shape)}")
    torch._check(x.dtype == L.dtype and theta.dtype == L.dtype,
                 lambda: f"{op}: x, L and theta must have the same dtype, got {x.dtype}, {L.dtype} and {theta.dtype}")
    torch._check(x.device == L.device and theta.device == L.device,
                 lambda: f"{op}: x, L and theta must be on the same device, got {x.device}, {L.device} and {theta.device}")
    torch._check(x.shape[0] == L.shape[0],
                 lambda: f"{op}: x and L must have the same batch size, got {x.shape[0]} and {L.shape[0]}")
    torch._check(x.shape[1] == L.shape[1], lambda: f"{op}: x has {x.shape[1]} nodes per graph but L has {L.shape[1]}")
    torch._check(theta.dim() in (1, 2),
                 lambda: f"{op}: theta must be [K] (shared) or [Bt, K] (per graph), got shape {tuple(theta.shape)}")
    if theta.dim() == 2:
        torch._check(theta.shape[0] == L.shape[0], lambda: f"{op}: per-graph theta must have one row per graph, got "
                                                            f"{theta.shape[0]} rows for {L.shape[0]} graphs")
    K = theta.shape[-1]
    if basis == "chebyshev":
        torch._check(K >= 1, lambda: f"{op}: the chebyshev basis needs K >= 1 coefficients, got K={K}")
    elif basis == "spline":
        torch._check(K >= 4, lambda: f"{op}: the cubic spline basis needs K >= 4 coefficients, got K={K}")
    else:
        torch._check(K >= 1 and K <= L.shape[1], lambda: f"{op}: the fourier basis keeps the K smallest eigenpairs, "
                                                         f"so it needs 1 <= K <= n, got K={K} with n={L.shape[1]}")
    return K


@torch.library.register_fake("deephash_ext::normalized_laplacian")
def _normalized_laplacian_fake(A):
    _check_square_batch(A, "normalized_laplacian", "A")
    return torch.empty_like(A, memory_format=torch.contiguous_format)


@torch.library.register_fake("deephash_ext::_normalized_laplacian_backward")
def _normalized_laplacian_backward_fake(grad_L, A):
    _check_square_batch(A, "normalized_laplacian_backward", "A")
    torch._check(grad_L.shape == A.shape and grad_L.dtype == A.dtype,
                 lambda: f"normalized_laplacian_backward: grad_L must match A, got {tuple(grad_L.shape)} "
                         f"{grad_L.dtype} and {tuple(A.shape)} {A.dtype}")
    _check_same_device("normalized_laplacian_backward", A=A, grad_L=grad_L)
    return torch.empty_like(A, memory_format=torch.contiguous_format)


@torch.library.register_fake("deephash_ext::eigh")
def _eigh_fake(L):
    _check_square_batch(L, "eigh", "L")
    Bt, n = L.shape[0], L.shape[1]
    return L.new_empty((Bt, n)), _column_major(L, Bt, n)


def _column_major(like: Tensor, Bt, n) -> Tensor:
    """Eigenvectors are stored as LAPACK writes them: strides (n², 1, n), like torch.linalg.eigh."""
    return like.new_empty_strided((Bt, n, n), (n * n, 1, n))


@torch.library.register_fake("deephash_ext::_spectral_filter_forward")
def _spectral_filter_forward_fake(x, L, theta, basis):
    _check_spectral_filter(x, L, theta, basis)
    Bt, n = L.shape[0], L.shape[1]
    m = theta.shape[-1] if basis == "fourier" else n
    return x.new_empty(x.shape), L.new_empty((Bt, n)), _column_major(L, Bt, n), x.new_empty((Bt, m, x.shape[2]))


@torch.library.register_fake("deephash_ext::_spectral_filter_backward")
def _spectral_filter_backward_fake(grad_y, x, zx, theta, evals, evecs, basis, output_mask):
    # common/spectral_checks.h: check_spectral_filter_backward_inputs.
    op = "spectral_filter_backward"
    K = _check_spectral_filter(x, evecs, theta, basis)
    Bt, n, d = evecs.shape[0], evecs.shape[1], x.shape[2]
    m = K if basis == "fourier" else n
    torch._check(grad_y.shape == x.shape,
                 lambda: f"{op}: grad_y must have the shape of x, got {tuple(grad_y.shape)} and {tuple(x.shape)}")
    torch._check(evals.dim() == 2 and evals.shape[0] == Bt and evals.shape[1] == n,
                 lambda: f"{op}: evals must be [Bt, n], got {tuple(evals.shape)}")
    torch._check(zx.dim() == 3 and zx.shape[0] == Bt and zx.shape[1] == m and zx.shape[2] == d,
                 lambda: f"{op}: zx must be [Bt, {m}, d], got {tuple(zx.shape)}")
    torch._check(grad_y.dtype == x.dtype and zx.dtype == x.dtype and evals.dtype == x.dtype,
                 lambda: f"{op}: grad_y, zx and evals must have the dtype of x ({x.dtype}), got {grad_y.dtype}, "
                         f"{zx.dtype} and {evals.dtype}")
    _check_same_device(op, x=x, grad_y=grad_y, zx=zx, theta=theta, evals=evals, evecs=evecs)
    # Gradients not asked for come back as distinct empty [0] tensors.
    return (x.new_empty(x.shape if output_mask[0] else (0,)),
            x.new_empty((Bt, n, n) if output_mask[1] else (0,)),
            theta.new_empty(theta.shape if output_mask[2] else (0,)))


def _normalized_laplacian_setup(ctx, inputs, output):
    (A,) = inputs
    ctx.save_for_backward(A)


def _normalized_laplacian_backward(ctx, grad_L):
    (A,) = ctx.saved_tensors
    return _lib._normalized_laplacian_backward.default(grad_L, A)


torch.library.register_autograd("deephash_ext::normalized_laplacian", _normalized_laplacian_backward,
                                setup_context=_normalized_laplacian_setup)


def _spectral_filter_setup(ctx, inputs, output):
    x, _L, theta, basis = inputs
    _y, evals, evecs, zx = output
    # The one eigendecomposition of the forward, and Uᵀ x, reused by the backward.
    ctx.save_for_backward(x, zx, theta, evals, evecs)
    ctx.basis = basis
    ctx.mark_non_differentiable(evals, evecs, zx)


def _spectral_filter_backward(ctx, grad_y, _grad_evals, _grad_evecs, _grad_zx):
    x, zx, theta, evals, evecs = ctx.saved_tensors
    mask = [bool(m) for m in ctx.needs_input_grad[:3]]
    gx, gL, gth = _lib._spectral_filter_backward.default(grad_y, x, zx, theta, evals, evecs, ctx.basis, mask)
    return (gx if mask[0] else None, gL if mask[1] else None, gth if mask[2] else None, None)


torch.library.register_autograd("deephash_ext::_spectral_filter_forward", _spectral_filter_backward,
                                setup_context=_spectral_filter_setup)


# ---------------------------------------------------------------------------------------------
# Multi-index hashing: exact k nearest codes without reading every code (CPU only)

MIH_MAX_SUBSTRING_BITS = 32


def mih_substrings(bits: int, m: int) -> list[tuple[int, int]]:
    """``(first bit, length)`` of each of the m substrings of ``bits``-bit codes: lengths
    ``floor(bits / m)`` or ``ceil(bits / m)``, the longer ones first."""
    base, longer = divmod(bits, m)
    out, s = [], 0
    for z in range(m):
        n = base + (z < longer)
        out.append((s, n))
        s += n
    return out


def _check_mih_layout(bits: int, nbytes, m: int, op: str) -> None:
    torch._check(bits >= 1, lambda: f"{op}: bits must be >= 1, got {bits}")
    torch._check((bits + 7) // 8 == nbytes, lambda: f"{op}: {bits}-bit codes are {(bits + 7) // 8} bytes wide, "
                                                    f"but the codes have {nbytes} bytes per row")
    lo = -(-bits // MIH_MAX_SUBSTRING_BITS)
    torch._check(lo <= m <= bits, lambda: f"{op}: m (the number of substrings) must be in [{lo}, {bits}] for "
                                          f"{bits}-bit codes (substrings of 1 to 32 bits), got {m}")


def mih_build(codes: Tensor, bits: int, m: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Multi-index hash tables of packed codes ``uint8[N, B]``, ``B = ceil(bits/8)``, cut into m substrings
    of at most 32 bits (:func:`mih_substrings`):
    ``(rows int32[m, N], offsets int32[m, U + 1], slots int64[m, P], bucket_codes uint8[m, N, B])``.

    Per substring z, ``rows[z]`` lists the row ids ordered by (substring value, row),
    ``rows[z, offsets[z, b]:offsets[z, b + 1]]`` is bucket b (U: the most distinct values of any
    substring; a shorter row of offsets is padded with N), and ``slots[z]`` is an open-addressing table
    (linear probing from ``(value * 0x9E3779B97F4A7C15 mod 2^64) >> (64 - log2 P)``, load at most 1/2)
    whose entries are ``value << 32 | b``, or -1 when empty; ``bucket_codes[z] = codes[rows[z]]``, so that
    a bucket's codes are compared in sequence. At most ``2^31 - 2`` codes. CPU only: no CUDA kernel is
    registered, so the dispatcher refuses a CUDA tensor ("Could not run 'deephash_ext::mih_build' with
    arguments from the 'CUDA' backend").
    """
    return _lib.mih_build.default(codes, bits, m)


def mih_search(q: Tensor, codes: Tensor, rows: Tensor, offsets: Tensor, slots: Tensor, bucket_codes: Tensor,
               bits: int, k: int, mode: str = "auto") -> tuple[Tensor, Tensor]:
    """Exactly ``hamming_topk(q, codes, k)`` (same values, same (distance, row) order, ``min(k, N)``
    columns), found by multi-index hashing over the tables of :func:`mih_build` (built from ``codes``).

    ``mode="auto"`` probes a query until its modelled cost passes a budget (one scan; for the batch's first
    16 queries ``Q / 640`` scans, within [0.25, 1]), then scans it instead, and scans the rest of the
    batch when those first queries show that probing costs about as much as scanning or more;
    ``mode="probe"`` runs the multi-index search alone on every query (for tests and measurements: with
    long substrings or codes without structure it can be far slower than a scan). CPU only: the
    dispatcher refuses CUDA tensors, as for :func:`mih_build` (``hamming_topk`` scans on the GPU).
    """
    return _lib.mih_search.default(q, codes, rows, offsets, slots, bucket_codes, bits, k, mode)


@torch.library.register_fake("deephash_ext::mih_build")
def _mih_build_fake(codes, bits, m):
    _check_codes(codes, "codes")
    _check_mih_layout(bits, codes.shape[1], m, "mih_build")
    ctx = torch.library.get_ctx()
    u1 = ctx.new_dynamic_size(min=1)  # 1 + the most distinct values of any substring
    p = ctx.new_dynamic_size(min=2)
    n = codes.shape[0]
    return (codes.new_empty((m, n), dtype=torch.int32), codes.new_empty((m, u1), dtype=torch.int32),
            codes.new_empty((m, p), dtype=torch.int64), codes.new_empty((m, n, codes.shape[1])))


@torch.library.register_fake("deephash_ext::mih_search")
def _mih_search_fake(q, codes, rows, offsets, slots, bucket_codes, bits, k, mode):
    _check_codes(q, "q")
    _check_codes(codes, "codes")
    torch._check(q.shape[1] == codes.shape[1], lambda: "mih_search: q and codes must have the same byte width")
    torch._check(q.device == codes.device,
                 lambda: f"mih_search: q and codes must be on the same device, got {q.device} and {codes.device}")
    for t in (rows, offsets, slots, bucket_codes):
        torch._check(t.device == codes.device, lambda: f"mih_search: the tables must be on the device of the codes "
                                                       f"({codes.device}), got {t.device}")
    torch._check(mode in ("auto", "probe"), lambda: f'mih_search: mode must be "auto" or "probe", got "{mode}"')
    torch._check(k >= 1, lambda: f"mih_search: k must be >= 1, got {k}")
    torch._check(rows.dtype == torch.int32 and rows.dim() == 2, lambda: "mih_search: rows must be int32[m, N]")
    torch._check(rows.shape[1] == codes.shape[0], lambda: "mih_search: the tables do not belong to these codes")
    torch._check(offsets.dtype == torch.int32 and offsets.dim() == 2 and offsets.shape[0] == rows.shape[0],
                 lambda: "mih_search: offsets must be int32[m, U + 1]")
    torch._check(slots.dtype == torch.int64 and slots.dim() == 2 and slots.shape[0] == rows.shape[0],
                 lambda: "mih_search: slots must be int64[m, P]")
    torch._check(bucket_codes.dtype == torch.uint8 and bucket_codes.dim() == 3
                 and bucket_codes.shape[0] == rows.shape[0] and bucket_codes.shape[1] == codes.shape[0]
                 and bucket_codes.shape[2] == codes.shape[1], lambda: "mih_search: bucket_codes must be uint8[m, N, B]")
    _check_mih_layout(bits, codes.shape[1], rows.shape[0], "mih_search")
    kk = torch.sym_min(k, codes.shape[0])
    return q.new_empty((q.shape[0], kk), dtype=torch.int32), q.new_empty((q.shape[0], kk), dtype=torch.int64)
