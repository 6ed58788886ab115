"""PCAH: the top principal directions of the training embeddings, then sign.

The PCA-hashing baseline of Wang, Kumar & Chang, "Semi-supervised hashing for large-scale search"
(TPAMI 2012) and of Gong & Lazebnik's ITQ paper (CVPR 2011): ``b = sign(W^T (x - mean))`` with ``W``
the ``bits`` leading eigenvectors of the training covariance. Needs ``bits <= dim``.
"""
from __future__ import annotations

import torch

from .base import HashMethod, as_float, pca, sign


class PCAH(HashMethod):
    name = "pcah"

    def __init__(self, bits: int, seed: int = 0, **kwargs):
        super().__init__(bits, seed, **kwargs)
        self.mean = None
        self.proj = None

    def fit(self, x_train, y_train=None) -> "PCAH":
        x = as_float(x_train)
        if self.bits > x.shape[1]:
            raise ValueError(f"{self.name}: {self.bits} bits need at least {self.bits}-d embeddings, got {x.shape[1]}-d")
        self.mean, self.proj, _ = pca(x, self.bits)
        return self

    def project(self, x) -> torch.Tensor:
        if self.proj is None:
            raise RuntimeError(f"{self.name}.encode before fit")
        return (as_float(x) - self.mean) @ self.proj

    def encode(self, x) -> torch.Tensor:
        return sign(self.project(x))

    def state_dict(self) -> dict:
        return {"mean": self.mean, "proj": self.proj}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.proj = state["mean"], state["proj"]
