"""LSH: random Gaussian projections of centred embeddings, then sign (Charikar 2002's SimHash).

The floor every learned method should beat. Centring on the training mean keeps the bits balanced.
"""
from __future__ import annotations

import torch

from .base import HashMethod, as_float


class LSH(HashMethod):
    name = "lsh"

    def __init__(self, bits: int, seed: int = 0, **kwargs):
        super().__init__(bits, seed, **kwargs)
        self.mean = None
        self.proj = None

    def fit(self, x_train, y_train=None) -> "LSH":
        x = as_float(x_train)
        g = torch.Generator().manual_seed(self.seed)
        self.mean = x.mean(0)
        self.proj = torch.randn(x.shape[1], self.bits, generator=g)
        return self

    def encode(self, x) -> torch.Tensor:
        if self.proj is None:
            raise RuntimeError("LSH.encode before fit")
        z = (as_float(x) - self.mean) @ self.proj
        return torch.where(z > 0, 1.0, -1.0)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "proj": self.proj}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.proj = state["mean"], state["proj"]
