"""Spectral Hashing: analytical eigenfunctions of a uniform box in PCA space.

Weiss, Torralba & Fergus, "Spectral Hashing" (NIPS 2008). Steps of the paper:

1. PCA: project the centred training data on its ``min(bits, dim)`` leading principal directions.
2. Fit a uniform distribution on a box: per PCA direction ``k`` the range ``[a_k, b_k]`` of the
   training projections.
3. The one-dimensional Laplacian eigenfunctions of the box are
   ``Phi_{k,m}(x) = sin(pi/2 + m pi / (b_k - a_k) * (x_k - a_k))`` with eigenvalue
   ``lambda_{k,m} = 1 - exp(-eps^2 / 2 * |m pi / (b_k - a_k)|^2)``, ``m = 1, 2, ...``; ordering by
   eigenvalue is ordering by the frequency ``m / (b_k - a_k)``.
4. Take the ``bits`` eigenfunctions with the smallest eigenvalues (excluding the constant ``m = 0``) and
   threshold each at zero: ``bit = sign(Phi_{k,m}(x))``.
"""
from __future__ import annotations

import math

import torch

from .base import HashMethod, as_float, pca, sign


class SH(HashMethod):
    name = "sh"

    def __init__(self, bits: int, seed: int = 0, **kwargs):
        super().__init__(bits, seed, **kwargs)
        self.mean = self.proj = self.low = self.omega = self.dims = None

    def fit(self, x_train, y_train=None) -> "SH":
        x = as_float(x_train)
        npca = min(self.bits, x.shape[1])
        mean, w, _ = pca(x, npca)
        v = (x - mean) @ w
        eps = 1e-6
        low = v.min(0).values - eps
        high = v.max(0).values + eps
        width = (high - low).to(torch.float64)
        # candidate modes: frequencies m = 1..max_mode per direction; omega = m * pi / width
        max_mode = torch.ceil((self.bits + 1) * width / width.max()).to(torch.int64).clamp_min(1)
        dims, freqs = [], []
        for k in range(npca):
            for m in range(1, int(max_mode[k]) + 1):
                dims.append(k)
                freqs.append(m * math.pi / float(width[k]))
        dims = torch.tensor(dims)
        freqs = torch.tensor(freqs, dtype=torch.float64)
        # smallest eigenvalues = smallest omega; stable sort keeps ties in a fixed order
        order = torch.sort(freqs, stable=True).indices[: self.bits]
        if order.numel() < self.bits:
            raise ValueError(f"{self.name}: cannot make {self.bits} bits from {x.shape[1]}-d data")
        self.mean, self.proj, self.low = mean, w, low
        self.dims = dims[order]
        self.omega = freqs[order].to(torch.float32)
        return self

    def encode(self, x) -> torch.Tensor:
        if self.proj is None:
            raise RuntimeError(f"{self.name}.encode before fit")
        v = (as_float(x) - self.mean) @ self.proj
        u = v[:, self.dims] - self.low[self.dims]
        return sign(torch.sin(math.pi / 2 + u * self.omega))

    def state_dict(self) -> dict:
        return {"mean": self.mean, "proj": self.proj, "low": self.low, "omega": self.omega, "dims": self.dims}

    def load_state_dict(self, state: dict) -> None:
        for k in ("mean", "proj", "low", "omega", "dims"):
            setattr(self, k, state[k])
