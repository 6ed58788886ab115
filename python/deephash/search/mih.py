"""Multi-index hashing (Norouzi, Punjani and Fleet, PAMI 2014): the tables behind ``Index(kind="mih")``.

The codes are cut into m substrings with one hash table each; a search probes the buckets around
each of the query's substrings at growing radii, and stops once the pigeonhole bound proves that no
unseen code can enter the k nearest. The answer is exactly ``hamming_topk``'s, ties included. The
ops (:func:`deephash_ext.mih_build`, :func:`deephash_ext.mih_search`) scan instead wherever their
cost model expects probing to cost more (large k, small N, codes without neighbourhood structure).
"""
from __future__ import annotations

import math

import torch

import deephash_ext

MAX_SUBSTRING_BITS = deephash_ext.ops.MIH_MAX_SUBSTRING_BITS


def m_range(bits: int) -> tuple[int, int]:
    """The allowed numbers of substrings for ``bits``-bit codes: substrings of 1 to 32 bits."""
    return -(-bits // MAX_SUBSTRING_BITS), bits


def default_m(n: int, bits: int) -> int:
    """``ceil(bits / log2 N)``: the fewest substrings of at most ``log2 N`` bits (so that a bucket of
    uniform codes holds at least one code on average), within :func:`m_range`. The paper's
    ``bits / log2 N`` rounded up, not to the nearest: a bucket's codes are read in sequence here, which
    makes codes cheap against lookups and favours the shorter substrings (measured in
    ``benchmarks/results/mih-cpu-*.md``)."""
    lo, hi = m_range(bits)
    if n < 2:
        return lo
    return min(hi, max(lo, math.ceil(bits / math.log2(n))))


def check_m(m: int, bits: int) -> int:
    lo, hi = m_range(bits)
    if isinstance(m, bool) or not isinstance(m, int) or not lo <= m <= hi:
        raise ValueError(f"m (the number of substrings) must be an integer in [{lo}, {hi}] for {bits}-bit codes "
                         f"(substrings of 1 to {MAX_SUBSTRING_BITS} bits), got {m!r}")
    return m


class MultiIndex:
    """The hash tables of one fixed set of packed codes; rebuild after the codes change."""

    def __init__(self, codes: torch.Tensor, bits: int, m: int | None = None):
        self.bits = int(bits)
        self.m = default_m(codes.shape[0], self.bits) if m is None else check_m(m, self.bits)
        self.tables = deephash_ext.mih_build(codes, self.bits, self.m)

    def search(self, q: torch.Tensor, codes: torch.Tensor, k: int, mode: str = "auto"):
        """``hamming_topk(q, codes, k)`` by probing (``codes``: those the tables were built from)."""
        return deephash_ext.mih_search(q, codes, *self.tables, self.bits, int(k), mode)

    @property
    def nbytes(self) -> int:
        """Memory held by the tables."""
        return sum(t.numel() * t.element_size() for t in self.tables)
