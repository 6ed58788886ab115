"""CSQ: central similarity quantization with Hadamard hash centers.

Yuan, Wang, Zhang, Tay, Jie, Liu & Feng, "Central Similarity Quantization for Efficient Image and
Video Retrieval" (CVPR 2020).

- Hash centers: when ``bits`` is a power of two and there are at most ``2 * bits`` classes, the rows
  of the Sylvester Hadamard matrix ``H_bits`` and of ``-H_bits`` (any two are ``bits / 2`` apart); otherwise
  random Bernoulli(0.5) ±1 centers (seeded), as the paper does. An item with several labels takes the
  centroid of its labels' centers, binarised (ties to +1).
- Loss: with ``h = tanh(z)`` and the item's center ``c``, the central similarity (binary cross-entropy
  between ``(h + 1)/2`` and ``(c + 1)/2``, averaged over bits) plus ``lambda`` times the quantisation loss
  ``mean(log cosh(|h| - 1))``; ``lambda = 1e-4`` as the paper.

Codes: ``sign(z)``. Supervised.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from .deep import DeepHashMethod


def hadamard(n: int) -> torch.Tensor:
    """Sylvester Hadamard matrix of order ``n`` (a power of two)."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard order must be a power of two, got {n}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_centers(n_classes: int, bits: int, seed: int) -> torch.Tensor:
    if bits & (bits - 1) == 0 and n_classes <= 2 * bits:
        h = hadamard(bits)
        return torch.cat([h, -h], 0)[:n_classes].contiguous()
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(n_classes, bits, generator=g) < 0.5, -1.0, 1.0)


def item_centers(y: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Each item's center: its label's center, or the binarised centroid of its labels' centers."""
    return torch.where(y @ centers >= 0, 1.0, -1.0)


class CSQ(DeepHashMethod):
    name = "csq"
    supervised = True
    options = dict(DeepHashMethod.options, lambda_q=1e-4)

    def __init__(self, bits: int, seed: int = 0, **kwargs):
        super().__init__(bits, seed, **kwargs)
        self.centers = None

    def make_centers(self, x, y) -> torch.Tensor:
        return hadamard_centers(y.shape[1], self.bits, self.seed)

    def prepare(self, x, y):
        if y.sum(1).eq(0).any():
            raise ValueError(f"{self.name}: every training item needs at least one label")
        self.centers = self.make_centers(x, y).to(y.device)
        self._targets = item_centers(y, self.centers)

    def loss(self, out, x, y, idx, step):
        h = torch.tanh(out)
        c = self._targets[idx]
        center = F.binary_cross_entropy((h + 1) / 2, (c + 1) / 2)
        q = torch.log(torch.cosh(h.abs() - 1)).mean()
        return center + self.lambda_q * q

    def extra_state(self):
        return {"centers": self.centers}

    def load_extra_state(self, state):
        self.centers = state["centers"]


