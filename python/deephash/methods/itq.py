"""ITQ: PCA, then the orthogonal rotation that minimises the quantisation loss.

Gong & Lazebnik, "Iterative Quantization: A Procrustean Approach to Learning Binary Codes"
(CVPR 2011). With ``V = (X - mean) W`` the training data projected on the ``bits`` leading principal
directions, ITQ minimises ``||B - V R||_F^2`` over codes ``B in {-1, +1}`` and orthogonal ``R`` by
alternating ``B = sign(V R)`` and the orthogonal Procrustes step: ``V^T B = S Omega S_hat^T`` (SVD),
``R = S S_hat^T``. ``R`` starts as a random orthogonal matrix (seeded); the paper uses 50 iterations.
Codes: ``sign((x - mean) W R)``. The rotation balances variance over bits, so bits are close to
balanced on centred data.
"""
from __future__ import annotations

import torch

from ..models.filtered_projection import itq_rotation
from .base import ProjectionMethod, as_float, pca


class ITQ(ProjectionMethod):
    name = "itq"
    options = {"iterations": 50}

    def fit(self, x_train, y_train=None) -> "ITQ":
        x = as_float(x_train)
        if self.bits > x.shape[1]:
            raise ValueError(f"{self.name}: {self.bits} bits need at least {self.bits}-d embeddings, got {x.shape[1]}-d")
        mean, w, _ = pca(x, self.bits)
        v = ((x - mean) @ w).to(torch.float64)
        r = itq_rotation(v, int(self.iterations), torch.Generator().manual_seed(self.seed))
        self.mean = mean
        self.proj = (w.to(torch.float64) @ r).to(torch.float32)
        return self
