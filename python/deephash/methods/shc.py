"""SHC: deep hashing with semantic hash centers, in three stages.

"SHC: Deep Hashing with Semantic Hash Centers for Image Retrieval" (ACM MM 2024).

1. Semantic similarity detection: a classifier (an MLP over the embeddings, softmax, cross-entropy)
   is trained on ``1 - holdout`` of the training items; on the held-out items (data-dependent, not the
   items it fitted) ``P[i, j]`` = the mean predicted probability of class ``j`` for items of class ``i``.
   The class similarity is ``S = (P + P^T) / 2`` off the diagonal, scaled to ``[0, 1]`` by its largest
   off-diagonal value.
2. Semantic hash center generation: continuous centers ``V = tanh(W)`` (``C x bits``) are optimised so
   that the Hamming-like distance ``D_ij = (bits - v_i . v_j) / 2`` follows the semantics,
   ``D*_ij = bits/2 - (bits/2 - d_min) S_ij`` (similar classes closer, never closer than ``d_min``),
   with a hinge penalty on ``d_min - D_ij`` (the minimum-distance constraint) and a quantisation term;
   then the centers are binarised and repaired greedily (flipping the bit that increases the smallest
   distance most) until every pair is at least ``d_min`` apart. ``d_min`` defaults to ``bits / 4``.
3. Deep hashing network: trained to its items' centers with the central-similarity loss (binary
   cross-entropy to the center plus a small quantisation term, as CSQ).

Supervised. ``classify_epochs`` (default: ``epochs``) trains the stage-1 classifier.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..training.data_parallel import ONE_PROCESS
from .csq import CSQ
from .deep import HashHead, train_loop


def pairwise_hamming(c: torch.Tensor) -> torch.Tensor:
    return (c.shape[1] - c @ c.T) / 2


def repair_centers(c: torch.Tensor, d_min: int, max_flips: int = 10000) -> torch.Tensor:
    """Flip bits of ±1 centers until every pair is at least ``d_min`` apart (or no flip helps)."""
    c = c.clone()
    n, k = c.shape
    if n < 2:
        return c
    eye = torch.eye(n, dtype=torch.bool)
    for _ in range(max_flips):
        d = pairwise_hamming(c).masked_fill(eye, float("inf"))
        cur = float(d.min())
        if cur >= d_min:
            break
        i, j = divmod(int(torch.argmin(d)), n)
        best, best_bit = cur, None
        others = [r for r in range(n) if r != j]
        for bit in torch.nonzero(c[i] == c[j]).flatten().tolist():
            cand = c[j].clone()
            cand[bit] = -cand[bit]
            dj = ((k - c[others] @ cand) / 2).min()
            rest = d.clone()
            rest[j, :] = float("inf")
            rest[:, j] = float("inf")
            new = min(float(dj), float(rest.min()))
            if new > best or (new == best and best_bit is None and float(dj) > cur):
                best, best_bit = new, bit
        if best_bit is None:
            break
        c[j, best_bit] = -c[j, best_bit]
    return c


class SHC(CSQ):
    name = "shc"
    supervised = True
    options = dict(CSQ.options, classify_epochs=None, holdout=0.2, d_min=None, center_steps=500,
                   center_lr=0.05)

    def __init__(self, bits: int, seed: int = 0, **kwargs):
        super().__init__(bits, seed, **kwargs)
        self.class_similarity = None

    # stage 1
    def semantic_similarity(self, x, y) -> torch.Tensor:
        n, c = y.shape
        g = torch.Generator().manual_seed(self.seed + 1)
        perm = torch.randperm(n, generator=g)
        n_hold = max(1, int(round(float(self.holdout) * n))) if n > 2 else 0
        hold, fit = perm[:n_hold], perm[n_hold:]
        if n_hold == 0 or fit.numel() < 2:
            hold = fit = perm
        clf = HashHead(x.shape[1], c, int(self.hidden), float(self.dropout)).to(x.device)
        target = y / y.sum(1, keepdim=True)

        par = self._parallel or ONE_PROCESS
        par.broadcast_module(clf)

        def batch_loss(idx, step):
            logits = par.gather(clf(x[fit[idx[par.rows(len(idx))]]]), len(idx))
            return par.share(-(target[fit[idx]] * F.log_softmax(logits, 1)).sum(1).mean())

        epochs = self.epochs if self.classify_epochs is None else self.classify_epochs
        train_loop(clf, fit.numel(), batch_loss, epochs=epochs, lr=self.lr, batch_size=self.batch_size,
                   weight_decay=self.weight_decay, seed=self.seed + 2, parallel=par)
        with torch.no_grad():
            prob = torch.softmax(clf(x[hold]), 1)
        yh = y[hold]
        p = (yh.T @ prob) / yh.sum(0).clamp_min(1)[:, None]
        s = (p + p.T) / 2
        s.fill_diagonal_(0)
        top = float(s.max())
        return (s / top if top > 0 else s).clamp(0, 1).cpu()

    # stage 2
    def optimise_centers(self, s: torch.Tensor) -> torch.Tensor:
        c, k = s.shape[0], self.bits
        d_min = k // 4 if self.d_min is None else int(self.d_min)
        g = torch.Generator().manual_seed(self.seed + 3)
        w = (0.5 * torch.randn(c, k, generator=g)).requires_grad_(True)
        opt = torch.optim.Adam([w], lr=float(self.center_lr))
        target = k / 2 - (k / 2 - d_min) * s
        off = ~torch.eye(c, dtype=torch.bool)
        for _ in range(int(self.center_steps)):
            v = torch.tanh(w)
            d = (k - v @ v.T) / 2
            loss = ((d - target)[off] / k).pow(2).mean() \
                + 10 * (torch.relu(d_min - d)[off] / k).pow(2).mean() \
                + 0.1 * (v.abs() - 1).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        centers = torch.where(w.detach() >= 0, 1.0, -1.0)
        return repair_centers(centers, d_min)

    def make_centers(self, x, y):
        self.class_similarity = self.semantic_similarity(x, y)
        return self.optimise_centers(self.class_similarity)

    def extra_state(self):
        return {"centers": self.centers, "class_similarity": self.class_similarity}

    def load_extra_state(self, state):
        self.centers = state["centers"]
        self.class_similarity = state["class_similarity"]
