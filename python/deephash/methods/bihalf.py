"""Bi-half: unsupervised deep hashing whose bi-half layer splits each bit at its batch median.

Li & van Gemert, "Deep Unsupervised Image Hashing by Maximizing Bit Entropy" (AAAI 2021).

- Bi-half layer (forward): for each bit (column) of the continuous outputs ``U`` of a mini-batch, the
  half of the items with the larger values get ``+1`` and the other half ``-1`` -- the code
  distribution that maximises bit entropy (each bit exactly balanced over the batch).
- Backward (the paper's): ``dL/dU = dL/dB + gamma (U - B)``, a straight-through gradient plus a term
  that pulls ``U`` to ``B``; here ``gamma`` is applied to the mean over the batch (default 3).
- Loss (unsupervised, similarity preserving): the cosine similarities of the input embeddings
  should equal those of the codes, ``L = mean_ij (cos(x_i, x_j) - b_i . b_j / bits)^2``.

Encoding after training splits each bit at its median over the training set (the bi-half split with
the training set as the batch), so codes are balanced on data like the training data.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .deep import DeepHashMethod


def bihalf(u: torch.Tensor) -> torch.Tensor:
    """±1 per column: the ``ceil(n/2)`` largest values of each column get +1, the others -1."""
    n = u.shape[0]
    order = torch.argsort(u, dim=0, descending=True, stable=True)
    b = torch.full_like(u, -1.0)
    b.scatter_(0, order[: (n + 1) // 2], 1.0)
    return b


class _BiHalf(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, gamma):
        b = bihalf(u)
        ctx.save_for_backward(u, b)
        ctx.gamma = gamma
        return b

    @staticmethod
    def backward(ctx, grad):
        u, b = ctx.saved_tensors
        return grad + ctx.gamma * (u - b) / u.numel(), None


class BiHalf(DeepHashMethod):
    name = "bihalf"
    supervised = False
    options = dict(DeepHashMethod.options, gamma=3.0)

    def __init__(self, bits: int, seed: int = 0, **kwargs):
        super().__init__(bits, seed, **kwargs)
        self.median = None

    def loss(self, out, x, y, idx, step):
        # The pull term of the backward is added to the gradient, not scaled by it: under data-parallel
        # training, where every rank backpropagates 1/R of this loss and the gathered gradient is summed
        # over ranks, each rank adds 1/R of it.
        world = self._parallel.world if self._parallel is not None else 1
        b = _BiHalf.apply(out, float(self.gamma) / world)
        xn = F.normalize(x, dim=1)
        target = xn @ xn.T
        return (target - b @ b.T / self.bits).pow(2).mean()

    def after_fit(self, x):
        self.median = self.net(x).median(0).values

    def codes_from_outputs(self, out):
        return torch.where(out > self.median, 1.0, -1.0)

    def extra_state(self):
        return {"median": self.median}

    def load_extra_state(self, state):
        self.median = state["median"]
