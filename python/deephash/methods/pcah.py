"""PCAH: the top principal directions of the training embeddings, then sign.

The PCA-hashing baseline of Wang, Kumar & Chang, "Semi-supervised hashing for large-scale search"
(TPAMI 2012) and of Gong & Lazebnik's ITQ paper (CVPR 2011): ``b = sign(W^T (x - mean))`` with ``W``
the ``bits`` leading eigenvectors of the training covariance. Needs ``bits <= dim``.
"""
from __future__ import annotations

from .base import ProjectionMethod, as_float, pca


class PCAH(ProjectionMethod):
    name = "pcah"

    def fit(self, x_train, y_train=None) -> "PCAH":
        x = as_float(x_train)
        if self.bits > x.shape[1]:
            raise ValueError(f"{self.name}: {self.bits} bits need at least {self.bits}-d embeddings, got {x.shape[1]}-d")
        self.mean, self.proj, _ = pca(x, self.bits)
        return self
