"""LSH: random Gaussian projections of centred embeddings, then sign (Charikar 2002's SimHash).

The floor every learned method should beat. Centring on the training mean keeps the bits balanced.
"""
from __future__ import annotations

import torch

from .base import ProjectionMethod, as_float


class LSH(ProjectionMethod):
    name = "lsh"

    def fit(self, x_train, y_train=None) -> "LSH":
        x = as_float(x_train)
        g = torch.Generator().manual_seed(self.seed)
        self.mean = x.mean(0)
        self.proj = torch.randn(x.shape[1], self.bits, generator=g)
        return self
