"""HAGCN trained end to end through its batched subgraph filters (``hagcn`` with ``epochs`` > 0).

The model is the default HAGCN's encoder (:mod:`deephash.models.filtered_projection`) made differentiable
and started exactly at its closed form: the step-0 codes are the closed form's codes, bit for bit.

- **Parameters**: the projection ``W [d, D]`` and the rotation ``R [bits, bits]`` (both from the closed
  form), and the encoding subgraphs' filter ``g`` (from the closed form's heat kernel ``exp(-t λ)``).
- **The dynamic graph**: every item of a mini-batch is encoded through the subgraph of itself and its
  ``m`` nearest training items, found again at every step in the model's current projection
  (``anchor0 + F (W - W0)``: the closed form's anchors moved by the change of ``W``, so that step 0 uses
  exactly the closed form's anchors). The subgraph's edge weights ``exp(-|u_i - u_j|² / σ²)`` (σ² the mean
  squared distance to the m anchors, as in the closed form) are computed from the model's own (unit)
  projections, so the gradient reaches ``L`` through :func:`~deephash.models.graphs.normalized_laplacian`.
  ``L`` then goes through :func:`~deephash.models.graphs.spectral_filter` (our eigendecomposition and its
  Daleckii–Krein backward) with the learnable θ; the item's row of ``g(L)`` mixes its projection with its
  anchors'. Then ``h = z[:bits] R`` and the code ``sign(h)``; training relaxes it to ``tanh(h / s)``
  (``s`` the mean ``|h|`` over the training items at step 0, fixed).
- **θ's family** (:class:`MonotoneFilter`): ``g`` is given by its values at the ``K`` = 12 Chebyshev–
  Lobatto nodes ``λ_j = 1 - cos(π j / (K-1))`` of [0, 2] (0 and 2 included): ``g(0) = 1`` and each next
  value is the previous one times ``exp(-(MIN_HEAT + softplus(β_j)) Δλ_j)``, so the node values decrease
  strictly and ``g(2) <= exp(-2 MIN_HEAT)``: no objective can drift it to the all-pass filter. The filter
  applied is the degree-(K-1) polynomial through those values, whose K Chebyshev coefficients are θ (as
  ChebNetII; monotone at the nodes, the polynomial may ripple between them by little). θ is written as
  the closed form's heat-kernel coefficients plus the interpolation of the change of the node values
  since the start, which is exactly zero at step 0 (the interpolated and the series coefficients of
  ``exp(-t λ)`` differ by ~1e-16). θ has its own learning rate and no weight decay.
- **Objective, label-free** (``objective``):
  - ``"distill"`` (the default): the codes learn to rank as the closed form's own float embedding
    ``unit(h)`` at step 0 (before sign: it ranks better than its codes, which sign alone loses) ranks:
    for every batch item, the cross-entropy of its code-similarity distribution over the other items of
    the global batch against the float embedding's (softmaxes at ``TEACHER_TAU``), the codes being
    ``sign(h)`` forward with tanh's gradient (straight-through), so the loss ranks by the codes
    themselves;
  - ``"neighbours"``: the positives of an item are its mutual nearest neighbours among the training
    items in the input's cosine geometry (``TARGET_KNN``; its nearest neighbours when it has no mutual
    one): each step pairs every batch item with one of them, drawn at random, and a contrastive loss
    (InfoNCE both ways, temperature ``TAU``, over the relaxed codes' ``tanh(h / s)`` cosine) pulls the
    pair together against the other pairs of the global batch; other batch items known to be input
    neighbours are left out of the negatives.

  Both add quantisation ``(1 - |b|)²`` (0 for the straight-through codes), bit balance (each bit's
  batch mean²) and decorrelation (``|BᵀB/n - I|²``). Labels are never read.
- **Model selection, label-free**: a tenth of the training items (seeded) are held out of the batches;
  after every epoch the objective is computed on them (for ``neighbours`` each paired with its nearest
  mutual neighbour) and
  the model of the epoch with the lowest held-out objective is kept, epoch 0 (the closed form) included.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import Tensor

from deephash_ext.reference import chebyshev_basis  # [n, K]: T_k(λ - 1), spectral_filter's basis

from . import filtered_projection as fp

MIN_HEAT = 0.05  # the least slope of -log g: g(2) <= exp(-0.1); the filter stays a low-pass
TARGET_KNN = 10  # input neighbours an item's positives are drawn from
TAU = 0.3  # the contrastive loss's temperature (on code cosines)
QUANT_WEIGHT, BALANCE_WEIGHT, DECORR_WEIGHT = 0.1, 0.1, 0.1
TEACHER_TAU = 0.1  # distill: the temperature of the target and of the codes' similarity distributions
HOLDOUT = 10  # one training item in HOLDOUT is held out for model selection (when there are >= 20)
OBJECTIVES = ("distill", "neighbours")  # see distill_loss and objective
TRAIN_DEFAULTS = {"epochs": 0, "batch_size": 256, "lr": 1e-4, "theta_lr": 1e-3, "freeze_theta": False,
                  "objective": "distill"}


def lobatto_nodes(K: int, dtype=torch.float64) -> Tensor:
    """``λ_j = 1 - cos(π j / (K-1))``, ascending from 0 to 2 (``K`` >= 2)."""
    return 1 - torch.cos(math.pi * torch.arange(K, dtype=torch.float64) / (K - 1)).to(dtype)


class MonotoneFilter(torch.nn.Module):
    """A low-pass filter ``g`` on [0, 2] by its values at ``K`` Chebyshev–Lobatto nodes: ``g(0) = 1``,
    strictly decreasing at the nodes, ``g(2) <= exp(-2 MIN_HEAT)``; starts as ``exp(-t λ)``.
    :meth:`theta` gives its ``K`` Chebyshev coefficients (``spectral_filter``'s basis ``T_k(λ - 1)``)."""

    def __init__(self, t: float, K: int = fp.LOCAL_ORDER):
        super().__init__()
        if not t > MIN_HEAT:
            raise ValueError(f"local_heat must be > {MIN_HEAT} to train the filter from it, got {t}")
        lam = lobatto_nodes(K)
        self.register_buffer("nodes", lam)
        self.register_buffer("steps", lam.diff())
        beta = torch.full((K - 1,), math.log(math.expm1(t - MIN_HEAT)), dtype=torch.float64)
        self.beta = torch.nn.Parameter(beta.clone())
        self.register_buffer("beta0", beta)
        self.register_buffer("interp", torch.linalg.inv(chebyshev_basis(lam, K)))  # node values -> θ
        self.register_buffer("theta0", fp.heat_theta("chebyshev", t, K))

    @staticmethod
    def _values(beta: Tensor, steps: Tensor) -> Tensor:
        drop = torch.cumsum((MIN_HEAT + nnf.softplus(beta)) * steps, 0)
        return torch.cat([torch.ones_like(drop[:1]), torch.exp(-drop)])

    def values(self) -> Tensor:
        """``g`` at the nodes ``[K]``: 1 first, strictly decreasing (until exp underflows to 0)."""
        return self._values(self.beta, self.steps)

    def theta(self) -> Tensor:
        """The Chebyshev coefficients ``[K]``: the heat kernel's at the start, exactly."""
        return self.theta0 + self.interp @ (self.values() - self._values(self.beta0, self.steps))


def response(theta: Tensor, lam: Tensor) -> Tensor:
    """``g(λ) = Σ θ_k T_k(λ - 1)`` at ``lam``."""
    return chebyshev_basis(lam.to(theta.dtype), theta.shape[-1]) @ theta


def describe(theta: Tensor) -> str:
    """``g(λ)`` at λ = 0, 0.5, 1, 1.5, 2, for progress lines."""
    g = response(theta.detach().cpu(), torch.linspace(0, 2, 5, dtype=torch.float64))
    return "g(0, .5, 1, 1.5, 2) = " + " ".join(f"{v:.3f}" for v in g.tolist())


class Encoder(torch.nn.Module):
    """The closed-form HAGCN encoder as a differentiable module (float64), started at the fitted
    ``W [d, D]``, ``R [bits, bits]``, anchors ``anchor_z [n, D]`` (None: no subgraph) and the heat time
    ``local_heat``. ``F [n, d]``: the training items' unit features (the anchors' inputs)."""

    def __init__(self, W: Tensor, R: Tensor, anchor_z: Tensor | None, F: Tensor, m: int, local_heat: float,
                 learn_theta: bool = True):
        super().__init__()
        self.W = torch.nn.Parameter(W.double().clone())
        self.R = torch.nn.Parameter(R.double().clone())
        self.register_buffer("W0", W.double().clone())
        self.register_buffer("F", F.double())
        self.m = int(m) if anchor_z is not None else 0
        self.register_buffer("anchor0", anchor_z.double().clone() if self.m else F.new_zeros(0))
        self.filter = MonotoneFilter(local_heat)
        self.filter.beta.requires_grad_(bool(learn_theta) and self.m > 0)
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))
        self.straight_through = False

    @property
    def bits(self) -> int:
        return self.R.shape[0]

    def bank(self) -> Tensor | None:
        """Every anchor's current projection ``[n, D]`` (no gradient): the graph is found again in it."""
        if not self.m:
            return None
        with torch.no_grad():
            return self.anchor0 + self.F @ (self.W - self.W0)

    def _rows(self, i: Tensor) -> tuple[Tensor, Tensor]:
        r = self.anchor0[i] + self.F[i] @ (self.W - self.W0)
        return r, fp.unit(r)

    def forward(self, f: Tensor, bank: Tensor | None) -> Tensor:
        """``h [N, bits]`` (before sign) of the items with unit features ``f [N, d]``."""
        z = f @ self.W
        if self.m:
            z = fp.subgraph_filter(z, bank, self.m, self.filter.theta(), rows=self._rows)
        return z[:, :self.bits] @ self.R

    @torch.no_grad()
    def set_scale(self, chunk: int = 2048) -> None:
        """``s``: the mean ``|h|`` over the training items (the relaxation ``tanh(h / s)``)."""
        bank = self.bank()
        total = sum(float(self(self.F[s:s + chunk], bank).abs().sum()) for s in range(0, self.F.shape[0], chunk))
        self.scale.fill_(max(total / (self.F.shape[0] * self.bits), 1e-12))

    @torch.no_grad()
    def teacher(self, chunk: int = 2048) -> Tensor:
        """The training items' unit float embeddings ``unit(h) [n, bits]`` (before sign) now."""
        bank = self.bank()
        return torch.cat([fp.unit(self(self.F[s:s + chunk], bank)) for s in range(0, self.F.shape[0], chunk)])

    def relaxed(self, f: Tensor, bank: Tensor | None) -> Tensor:
        """``tanh(h / s)``; with ``straight_through`` the codes ``sign(h)`` forward and tanh's gradient back."""
        h = self(f, bank)
        t = torch.tanh(h / self.scale)
        return t + (torch.where(h > 0, 1.0, -1.0).to(t.dtype) - t).detach() if self.straight_through else t


def input_neighbours(F: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest training items of each (cosine on the unit features ``F``, itself excluded):
    indices ``[n, k]`` (nearest first) and which of them are mutual ``[n, k]``."""
    n, dev = F.shape[0], F.device
    k = min(k, n - 1)
    idx = []
    for s in range(0, n, 2048):
        sim = F[s:s + 2048] @ F.T
        rows = torch.arange(sim.shape[0], device=dev)
        sim[rows, rows + s] = -float("inf")
        idx.append(sim.topk(k, dim=1).indices)
    nn_ = torch.cat(idx)
    every = torch.arange(n, device=dev)[:, None]
    member = torch.zeros(n, n, dtype=torch.bool, device=dev) if n <= 20000 else None
    if member is not None:
        member[every, nn_] = True
        mutual = member[nn_, every]
    else:  # large n: the same test row by row
        mutual = torch.stack([(nn_[nn_[i]] == i).any(1) for i in range(n)])
    return nn_, mutual


def draw_partners(nn_: Tensor, mutual: Tensor, items: Tensor, generator: torch.Generator) -> Tensor:
    """One positive for each of ``items``: a random mutual neighbour, or a random neighbour when it has none."""
    w = mutual[items].double()
    w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))
    pick = torch.multinomial(w, 1, generator=generator)[:, 0]
    return nn_[items, pick]


def first_partners(nn_: Tensor, mutual: Tensor, items: Tensor) -> Tensor:
    """The nearest mutual neighbour of each of ``items`` (the nearest neighbour when none is mutual)."""
    mu = mutual[items]
    pick = torch.where(mu.any(1), mu.double().argmax(1), torch.zeros_like(items))
    return nn_[items, pick]


def objective(bp: Tensor, bq: Tensor, known: Tensor, rows: slice, par) -> Tensor:
    """This rank's share (its ``rows``) of the loss of a global batch of pairs: relaxed codes ``bp``,
    ``bq`` ``[B, bits]`` (every rank's rows, gathered); ``known [B, B]`` marks pairs known to be input
    neighbours, left out of the negatives."""
    B, bits = bp.shape
    logits = (bp @ bq.T) / (bits * TAU)
    eye = torch.eye(B, dtype=torch.bool, device=bp.device)
    logits = logits.masked_fill(known & ~eye, -float("inf"))
    mine = torch.arange(B, device=bp.device)[rows]
    contrast = (nnf.cross_entropy(logits[rows], mine, reduction="sum")
                + nnf.cross_entropy(logits.T[rows], mine, reduction="sum")) / (2 * B)
    quant = ((1 - bp[rows].abs()) ** 2 + (1 - bq[rows].abs()) ** 2).mean(1).sum() / (2 * B)
    both = torch.cat([bp, bq])
    balance = (both.mean(0) ** 2).mean()
    corr = both.T @ both / both.shape[0]
    decorr = ((corr - torch.eye(bits, dtype=corr.dtype, device=corr.device)) ** 2).mean()
    return contrast + QUANT_WEIGHT * quant + par.share(BALANCE_WEIGHT * balance + DECORR_WEIGHT * decorr)


def distill_loss(b: Tensor, teacher: Tensor, rows: slice, par) -> Tensor:
    """This rank's share of the distillation loss of a global batch: relaxed codes ``b [B, bits]`` and the
    closed form's unit float embeddings ``teacher [B, bits]`` (every rank's rows). For each item, the
    cross-entropy of its code-similarity distribution over the other batch items against the float
    embedding's (softmax at ``TEACHER_TAU``): the codes learn to rank as the float embedding ranks, which
    sign alone loses. Plus quantisation, balance and decorrelation as :func:`objective`."""
    B, bits = b.shape
    mine = torch.arange(B, device=b.device)[rows]
    self_ = nnf.one_hot(mine, B).bool()
    s = ((b[rows] @ b.T) / bits / TEACHER_TAU).masked_fill(self_, -float("inf"))
    t = ((teacher[rows] @ teacher.T) / TEACHER_TAU).masked_fill(self_, -float("inf"))
    p = torch.softmax(t, 1)
    ce = -(p * torch.log_softmax(s, 1).masked_fill(self_, 0)).sum() / B
    quant = ((1 - b[rows].abs()) ** 2).mean(1).sum() / B
    balance = (b.mean(0) ** 2).mean()
    corr = b.T @ b / B
    decorr = ((corr - torch.eye(bits, dtype=corr.dtype, device=corr.device)) ** 2).mean()
    return ce + QUANT_WEIGHT * quant + par.share(BALANCE_WEIGHT * balance + DECORR_WEIGHT * decorr)


def known_pairs(nn_: Tensor, P: Tensor, Q: Tensor) -> Tensor:
    """``[B, B]``: item ``P[a]`` and partner ``Q[b]`` are input neighbours (either way)."""
    a = (nn_[P][:, :, None] == Q[None, None, :]).any(1)
    b = (nn_[Q][:, :, None] == P[None, None, :]).any(1).T
    return a | b


def split_holdout(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(held out, trained on)`` indices of ``n`` training items: one in ``HOLDOUT`` held out (none when
    ``n`` < 20)."""
    perm = torch.randperm(n, generator=generator)
    k = n // HOLDOUT if n >= 20 else 0
    return perm[:k].sort().values, perm[k:].sort().values


@torch.no_grad()
def held_out_objective(enc: Encoder, items: Tensor, partners: Tensor, nn_: Tensor, batch: int,
                       teacher: Tensor | None = None) -> float:
    """The objective on the held-out items, each paired with its nearest mutual neighbour, in batches of
    ``batch`` in a fixed order (the model selection criterion; deterministic)."""
    if items.numel() == 0:
        return float("nan")
    bank, total = enc.bank(), 0.0
    for s in range(0, items.numel(), batch):
        P, Q = items[s:s + batch], partners[s:s + batch]
        total += float(step_loss(enc, bank, P, Q, nn_, teacher, _WHOLE)) * P.numel()
    return total / items.numel()


def step_loss(enc: Encoder, bank, P: Tensor, Q: Tensor, nn_: Tensor, teacher: Tensor | None, par) -> Tensor:
    """This rank's share of the loss of the global batch of items ``P`` (and their partners ``Q``)."""
    rows = par.rows(P.numel())
    bp = par.gather(enc.relaxed(enc.F[P[rows]], bank), P.numel())
    if teacher is not None:
        return distill_loss(bp, teacher[P], rows, par)
    bq = par.gather(enc.relaxed(enc.F[Q[rows]], bank), P.numel())
    return objective(bp, bq, known_pairs(nn_, P, Q), rows, par)


def _snapshot(enc: Encoder) -> dict:
    return {"W": enc.W.detach().clone(), "R": enc.R.detach().clone(), "beta": enc.filter.beta.detach().clone()}


def _restore(enc: Encoder, snap: dict) -> None:
    with torch.no_grad():
        enc.W.copy_(snap["W"])
        enc.R.copy_(snap["R"])
        enc.filter.beta.copy_(snap["beta"])


def gradient_step(opt, loss: Tensor, params, par, epoch: int, step: int) -> float:
    """One optimiser step on this rank's share ``loss`` with the gradients summed over ``par``'s ranks;
    returns the global loss. A loss that is not finite stops training (``FloatingPointError``)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    par.sync_gradients(params)
    opt.step()
    lv = par.total(loss)
    if not math.isfinite(lv):
        raise FloatingPointError(f"the loss became {lv} at epoch {epoch + 1}, step {step + 1}")
    return lv


class _Whole:
    """The whole batch in this process (the held-out objective, computed alike on every rank): the
    interface of :class:`deephash.training.data_parallel.OneProcess` that the losses use."""

    @staticmethod
    def rows(n: int) -> slice:
        return slice(0, int(n))

    @staticmethod
    def gather(t: Tensor, n: int | None = None) -> Tensor:
        return t

    @staticmethod
    def share(loss: Tensor) -> Tensor:
        return loss


_WHOLE = _Whole()


def train(enc: Encoder, cfg: dict, seed: int, gen, parallel, *, state: dict | None = None, save=None,
          progress=None) -> dict:
    """Train ``enc`` (started at the closed form) for ``cfg["epochs"]`` epochs of ``cfg["batch_size"]``
    items; leaves in ``enc`` the parameters of the epoch with the lowest held-out objective (epoch 0, the
    closed form, included). ``gen(*ints)``: the seeded generators; ``parallel``: the data-parallel group
    (:mod:`deephash.training.data_parallel`, ``ONE_PROCESS`` for one process). ``state``: a checkpoint's
    ``trained`` state to resume from; ``save(epoch, state)`` after every epoch; ``progress(steps,
    start_epoch)``: the progress bar (:func:`deephash.training.progress.training_progress`) or None.
    Returns the record: ``loss`` (the mean training loss per epoch), ``held_out`` (the criterion, epoch
    0 first), ``chosen`` (the epoch kept), ``g`` (the filter's node values per epoch, epoch 0 first)."""
    par = parallel
    dev = enc.W.device
    n = enc.F.shape[0]
    nn_, mutual = (t.to(dev) for t in input_neighbours(enc.F, TARGET_KNN))
    hold, items = (t.to(dev) for t in split_holdout(n, gen(seed, 4)))
    hold_partners = first_partners(nn_, mutual, hold)
    opt = torch.optim.Adam([{"params": [enc.W, enc.R], "lr": float(cfg["lr"])},
                            {"params": [enc.filter.beta], "lr": float(cfg["theta_lr"])}], weight_decay=0.0)
    bs = min(int(cfg["batch_size"]), items.numel())
    steps = max(1, items.numel() // bs)
    distill = cfg.get("objective", "distill") == "distill"
    enc.straight_through = distill  # distill ranks by the codes themselves; neighbours by tanh(h / s)
    teacher = enc.teacher() if distill else None  # the model at step 0 (a resume recomputes it)
    if state is None:
        enc.set_scale()
        crit = held_out_objective(enc, hold, hold_partners, nn_, bs, teacher)
        record = {"loss": [], "held_out": [crit], "chosen": 0, "g": [enc.filter.values().detach().cpu().tolist()]}
        best, start = _snapshot(enc), 0
    else:
        with torch.no_grad():
            enc.scale.copy_(state["scale"])
        _restore(enc, state["current"])
        opt.load_state_dict(state["optim"])
        record, best, start = state["record"], state["best"], int(state["epoch"])
    bar = progress(steps, start) if progress is not None else None
    for epoch in range(start, int(cfg["epochs"])):
        g = gen(seed, 5, epoch)
        perm = items[torch.randperm(items.numel(), generator=g).to(dev)]
        total = 0.0
        for s in range(steps):
            P = perm[s * bs:(s + 1) * bs]
            Q = draw_partners(nn_.cpu(), mutual.cpu(), P.cpu(), g).to(dev)
            lv = gradient_step(opt, step_loss(enc, enc.bank(), P, Q, nn_, teacher, par),
                               [enc.W, enc.R, enc.filter.beta], par, epoch, s)
            total += lv
            if bar is not None:
                bar.step(epoch + 1, lv)
        record["loss"].append(total / steps)
        crit = held_out_objective(enc, hold, hold_partners, nn_, bs, teacher)
        record["held_out"].append(crit)
        record["g"].append(enc.filter.values().detach().cpu().tolist())
        if crit < record["held_out"][record["chosen"]]:  # NaN (nothing held out): the last epoch is kept
            record["chosen"], best = epoch + 1, _snapshot(enc)
        elif math.isnan(crit):
            record["chosen"], best = epoch + 1, _snapshot(enc)
        if bar is not None:
            bar.end_epoch(epoch + 1, record["loss"][-1], note=f"held out {crit:.6g}, {describe(enc.filter.theta())}")
        if save is not None:
            save(epoch + 1, {"current": {k: v.cpu() for k, v in _snapshot(enc).items()},
                             "best": {k: v.cpu() for k, v in best.items()}, "optim": opt.state_dict(),
                             "record": record, "scale": enc.scale.cpu(), "epoch": epoch + 1})
    if bar is not None:
        bar.close()
    _restore(enc, best)
    return record
