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


def topk_map(q: Tensor, db: Tensor, q_labels: Tensor, db_labels: Tensor, k: int = 0,
             ties: str = "index") -> Tensor:
    """Per-query AP@k (``float64[Q]``) of the Hamming ranking; ``k <= 0`` ranks the whole database.

    ``ties="index"`` breaks distance ties by database row; ``ties="average"`` gives the exact
    expected AP under a random order inside each tie (full ranking only). ``.mean()`` is mAP.
    """
    return _lib.topk_map.default(q, db, q_labels, db_labels, k, ties)


# ---------------------------------------------------------------------------------------------
# Fake kernels


def _check_codes(t: Tensor, name: str) -> None:
    torch._check(t.dtype == torch.uint8, lambda: f"{name} must hold packed codes of dtype uint8, got {t.dtype}")
    torch._check(t.dim() == 2, lambda: f"{name} must be 2-D [rows, bytes], got shape {tuple(t.shape)}")


def _check_pair(q: Tensor, db: Tensor) -> None:
    _check_codes(q, "q")
    _check_codes(db, "db")
    torch._check(q.shape[1] == db.shape[1], lambda: "q and db must have the same byte width")
    torch._check(q.device == db.device, lambda: "q and db must be on the same device")


@torch.library.register_fake("deephash_ext::pack_bits")
def _pack_bits_fake(x):
    torch._check(x.dim() >= 1, lambda: "pack_bits: x must have at least one dimension")
    torch._check(not x.is_complex(), lambda: "pack_bits: x must be real or bool")
    return x.new_empty((*x.shape[:-1], (x.shape[-1] + 7) // 8), dtype=torch.uint8)


@torch.library.register_fake("deephash_ext::unpack_bits")
def _unpack_bits_fake(packed, bits):
    torch._check(packed.dtype == torch.uint8, lambda: "unpack_bits: packed must be uint8")
    torch._check(packed.dim() >= 1, lambda: "unpack_bits: packed must have at least one dimension")
    torch._check(0 <= bits <= 8 * packed.shape[-1], lambda: "unpack_bits: bits out of range for the byte width")
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


@torch.library.register_fake("deephash_ext::topk_map")
def _topk_map_fake(q, db, q_labels, db_labels, k, ties):
    _check_pair(q, db)
    torch._check(ties in ("index", "average"), lambda: f'ties must be "index" or "average", got "{ties}"')
    torch._check(q_labels.dim() == db_labels.dim() and q_labels.dim() in (1, 2),
                 lambda: "labels must be class ids [rows] or multi-hot [rows, C] on both sides")
    torch._check(q_labels.shape[0] == q.shape[0], lambda: "q_labels must have one row per query")
    torch._check(db_labels.shape[0] == db.shape[0], lambda: "db_labels must have one row per database code")
    return q.new_empty((q.shape[0],), dtype=torch.float64)
