"""HashNet: weighted pairwise maximum likelihood with a continuation ``tanh(beta z)``.

Cao, Long, Wang & Yu, "HashNet: Deep Learning to Hash by Continuation" (ICCV 2017).

- Activation ``h = tanh(beta z)``; continuation: ``beta`` grows during training so that ``tanh``
  approaches ``sign``; here ``beta_t = (1 + gamma t)^power`` per step ``t`` (``gamma = 0.005``,
  ``power = 0.5``; the paper increases ``beta`` stage by stage).
- Weighted maximum likelihood over the pairs of a mini-batch, with ``theta_ij = alpha <h_i, h_j>``:

      L = sum_ij w_ij (log(1 + exp(theta_ij)) - s_ij theta_ij)

  ``s_ij = 1`` for similar pairs; the weights balance similar and dissimilar pairs,
  ``w_ij = |S| / |S_1|`` if similar, ``|S| / |S_0|`` otherwise. ``alpha`` (the adaptive sigmoid's
  scale) defaults to ``10 / bits`` so that ``theta`` lies in ``[-10, 10]`` at every code length.

Codes: ``sign(z)``. Supervised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..codes import relevance
from .deep import DeepHashMethod


class HashNet(DeepHashMethod):
    name = "hashnet"
    supervised = True
    options = dict(DeepHashMethod.options, alpha=None, gamma=0.005, power=0.5)

    def beta(self, step: int) -> float:
        return (1.0 + self.gamma * step) ** self.power

    def loss(self, out, x, y, idx, step):
        alpha = 10.0 / self.bits if self.alpha is None else float(self.alpha)
        h = torch.tanh(self.beta(step) * out)
        s = relevance(y, y).to(torch.float32)
        n = out.shape[0]
        off = ~torch.eye(n, dtype=torch.bool, device=out.device)
        theta = alpha * (h @ h.T)
        nll = F.softplus(theta) - s * theta
        s_off = s[off]
        n_all = s_off.numel()
        n_sim = s_off.sum().clamp_min(1.0)
        n_dis = (n_all - s_off.sum()).clamp_min(1.0)
        w = torch.where(s_off > 0, n_all / n_sim, n_all / n_dis)
        return (w * nll[off]).sum() / w.sum()
