"""DSH: pairwise contrastive loss with a margin and a regulariser towards ±1.

Liu, Wang, Shan & Chen, "Deep Supervised Hashing for Fast Image Retrieval" (CVPR 2016). For a pair
of real-valued network outputs ``b1, b2`` with ``y = 0`` when similar and ``y = 1`` when not:

    L = 1/2 (1 - y) ||b1 - b2||^2 + 1/2 y max(m - ||b1 - b2||^2, 0)
        + alpha (|| |b1| - 1 ||_1 + || |b2| - 1 ||_1)

with the paper's margin ``m = 2 * bits`` and ``alpha = 0.01``; here averaged over all pairs of a
mini-batch (the paper's online pair generation). Codes: ``sign(b)``. Supervised.
"""
from __future__ import annotations

import torch

from ..codes import relevance
from .deep import DeepHashMethod


class DSH(DeepHashMethod):
    name = "dsh"
    supervised = True
    options = dict(DeepHashMethod.options, alpha=0.01, margin=None)

    def loss(self, out, x, y, idx, step):
        m = 2.0 * self.bits if self.margin is None else float(self.margin)
        s = relevance(y, y).to(torch.float32)
        d = torch.cdist(out, out).pow(2)
        n = out.shape[0]
        off = ~torch.eye(n, dtype=torch.bool, device=out.device)
        pair = 0.5 * s * d + 0.5 * (1 - s) * torch.relu(m - d)
        reg = (out.abs() - 1).abs().sum(1)
        return pair[off].mean() + self.alpha * 2 * reg.mean()
