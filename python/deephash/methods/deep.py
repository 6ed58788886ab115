"""The training helper the deep methods share: an MLP hash head over embeddings, Adam, mini-batches.

A deep method subclasses :class:`DeepHashMethod` and implements :meth:`DeepHashMethod.loss` (the
method's objective on one mini-batch of network outputs); it may override :meth:`build_net` (another
network), :meth:`prepare` (work before training, e.g. hash centers) and :meth:`codes_from_outputs`.

- Inputs are centred on the training mean and divided by one global scale (the RMS of the centred
  training data), so that any embedding scale trains with the same learning rate.
- ``device`` (default ``"cpu"``; e.g. ``"cuda"``) is where training and encoding run; the fitted state is
  kept and saved on the CPU.
- The default network is ``Linear(d, hidden) -> ReLU -> Dropout -> Linear(hidden, bits)``.
- Training is deterministic under ``seed``: the global RNG is forked and seeded, the batch order comes
  from a seeded generator. ``threads`` (default: leave torch's setting) sets
  ``torch.set_num_threads`` during ``fit`` and restores it afterwards.
- ``encode`` returns ``sign`` of the network output (0 maps to -1).
- ``fit(..., parallel=DataParallel())`` trains data-parallel (:mod:`deephash.training.data_parallel`): the network
  runs on this rank's rows of each global batch, :meth:`DeepHashMethod.loss` on the gathered outputs of
  the whole batch.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from ..training.data_parallel import ONE_PROCESS
from .base import HashMethod, as_float, label_matrix, sign

DEEP_OPTIONS = {"epochs": 30, "lr": 1e-3, "batch_size": 128, "hidden": 1024, "dropout": 0.1,
                "weight_decay": 1e-5, "threads": None, "verbose": False, "device": "cpu"}


class HashHead(nn.Module):
    """``Linear(d, hidden) -> ReLU -> Dropout -> Linear(hidden, out)``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, x):
        return self.net(x)


def train_loop(net: nn.Module, n: int, batch_loss, *, epochs: int, lr: float, batch_size: int,
               weight_decay: float, seed: int, verbose: bool = False, name: str = "", checkpoint=None,
               config: dict | None = None, parallel=None) -> list:
    """Adam over seeded mini-batches of ``range(n)``; ``batch_loss(idx, step)`` returns the loss.
    Drops a last batch of fewer than 2 items (pairwise losses need two). Returns the mean loss per epoch.

    With a ``checkpoint`` (see :class:`deephash.training.run.Checkpoint`), the network, optimiser, batch-order
    generator and the global CPU random state (dropout) are saved after every epoch under ``config`` and
    ``seed``, and a saved state is restored first, so that a resumed run ends as an uninterrupted one.

    Data-parallel (``parallel``, a :class:`deephash.training.data_parallel.DataParallel` of several ranks): every rank
    draws the same global batches, ``batch_loss`` returns this rank's share of the loss, the gradients are
    summed over ranks before each step, and rank 0 alone reads and writes the checkpoint. The dropout
    stream of each rank is seeded from (seed, epoch, rank) at the start of every epoch, so that ranks draw
    different masks and a resumed run still ends as an uninterrupted one.
    """
    par = parallel or ONE_PROCESS
    if par.world > 1:
        checkpoint = par.checkpoint(checkpoint)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    history, step, start = [], 0, 0
    state = checkpoint.restore(config, seed) if checkpoint is not None else None
    if state is not None:
        with checkpoint.reading():
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["optim"])
            g.set_state(state["generator"])
            torch.set_rng_state(state["rng"])
            history, step, start = list(state["history"]), int(state["step"]), int(state["epoch"])
    bs = max(2, min(int(batch_size), n))
    for epoch in range(start, int(epochs)):
        net.train()
        if par.world > 1:
            torch.manual_seed((int(seed) * 1_000_003 + epoch) * 1_000_003 + par.rank)
        perm = torch.randperm(n, generator=g)
        total, count = 0.0, 0
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            if idx.numel() < 2:
                continue
            loss = batch_loss(idx, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            par.sync_gradients(net.parameters())
            opt.step()
            lv = par.total(loss)  # the same on every rank, so every rank stops alike
            if not math.isfinite(lv):
                raise FloatingPointError(f"the loss became {lv} at epoch {epoch + 1}")
            total += lv
            count += 1
            step += 1
        history.append(total / max(1, count))
        if verbose:
            print(f"[{name}] epoch {epoch + 1}/{epochs} loss {history[-1]:.4f}", flush=True)
        if checkpoint is not None:
            checkpoint.save(config, seed, epoch + 1, history, net=net.state_dict(), optim=opt.state_dict(),
                            generator=g.get_state(), rng=torch.get_rng_state(), step=step)
    net.eval()
    return history


class _Threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(int(self.n))

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


class DeepHashMethod(HashMethod):
    """Base of the deep methods: subclasses implement :meth:`loss`."""

    options = dict(DEEP_OPTIONS)
    resumable = True
    data_parallel = True

    def __init__(self, bits: int, seed: int = 0, **kwargs):
        super().__init__(bits, seed, **kwargs)
        self.net = None
        self.mean = None
        self.scale = None
        self.history = []
        self.train_seconds = None
        self._parallel = None

    # -- hooks -------------------------------------------------------------------------------
    def build_net(self, in_dim: int) -> nn.Module:
        return HashHead(in_dim, self.bits, int(self.hidden), float(self.dropout))

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse input the method cannot take (default: anything 2-D)."""

    def prepare(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """Work before training (``x`` normalised, ``y`` multi-hot or None)."""

    def loss(self, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None, idx: torch.Tensor,
             step: int) -> torch.Tensor:
        raise NotImplementedError

    def after_fit(self, x: torch.Tensor) -> None:
        """Work after training (``x`` normalised training data)."""

    def codes_from_outputs(self, out: torch.Tensor) -> torch.Tensor:
        return sign(out)

    def extra_state(self) -> dict:
        return {}

    def _to_cpu(self) -> None:
        for key, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor) and value.device.type != "cpu":
                setattr(self, key, value.cpu())

    def load_extra_state(self, state: dict) -> None:
        pass

    # -- the shared machinery ----------------------------------------------------------------
    def model_config(self) -> dict:
        """The configuration a checkpoint must match: :attr:`config` without where and how verbosely it runs."""
        return {k: v for k, v in self.config.items() if k not in ("threads", "verbose", "device")}

    def normalize(self, x) -> torch.Tensor:
        return (as_float(x) - self.mean) / self.scale

    def setup(self, x_train, y_train=None, parallel=None):
        """The work before the training loop: the normalisation, :meth:`prepare`, the network (rank 0's
        initialisation on every rank). Returns the normalised training data and multi-hot labels (or None),
        on the method's device. Runs under the caller's random state."""
        par = parallel or ONE_PROCESS
        self.check_labels(x_train, y_train)
        x = as_float(x_train)
        if x.dim() != 2 or x.shape[0] < 2:
            raise ValueError(f"{self.name}: x_train must be [N >= 2, d], got shape {tuple(x.shape)}")
        self.check_input(x)
        y = label_matrix(y_train) if (self.supervised and y_train is not None) else None
        self.mean = x.mean(0)
        self.scale = ((x - self.mean).pow(2).mean().sqrt()).clamp_min(1e-8)
        dev = torch.device(self.device)
        xn = self.normalize(x).to(dev)
        y = None if y is None else y.to(dev)
        self._parallel = par
        # prepare's own draws (SHC trains a classifier) leave the network's initialisation alone: it depends
        # on the seed only, however prepare trained (in one process or data-parallel).
        with torch.random.fork_rng(devices=[]):
            self.prepare(xn, y)
        self.net = self.build_net(int(x.shape[1])).to(dev)
        par.broadcast_module(self.net)
        return xn, y

    def batch_loss(self, xn, y, idx, step: int, parallel=None) -> torch.Tensor:
        """The loss of the global mini-batch ``idx`` (this rank's share under ``parallel``): the network runs
        on this rank's rows, :meth:`loss` on the outputs of every rank."""
        par = parallel or ONE_PROCESS
        out = par.gather(self.net(xn[idx[par.rows(len(idx))]]), len(idx))
        return par.share(self.loss(out, xn[idx], None if y is None else y[idx], idx, step))

    def fit(self, x_train, y_train=None, *, checkpoint=None, parallel=None) -> "DeepHashMethod":
        """Train on ``x_train`` (and labels); ``parallel``: data-parallel over its ranks
        (:mod:`deephash.training.data_parallel`), every rank passing the same data and options."""
        par = parallel or ONE_PROCESS
        t0 = time.perf_counter()
        with _Threads(self.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            xn, y = self.setup(x_train, y_train, par)
            self.history = train_loop(self.net, xn.shape[0],
                                      lambda idx, step: self.batch_loss(xn, y, idx, step, par),
                                      epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                      weight_decay=self.weight_decay, seed=self.seed,
                                      verbose=self.verbose and par.is_main, name=self.name,
                                      checkpoint=checkpoint, config=self.model_config(), parallel=par)
            par.broadcast_module(self.net, buffers_only=True)  # per-rank statistics (BatchNorm): keep rank 0's
            with torch.no_grad():
                self.after_fit(xn)
            self.net.cpu()
            self._to_cpu()
        self._parallel = None
        self.train_seconds = time.perf_counter() - t0
        return self

    @torch.no_grad()
    def outputs(self, x, chunk: int = 4096) -> torch.Tensor:
        if self.net is None:
            raise RuntimeError(f"{self.name}.encode before fit")
        x = as_float(x)
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"{self.name}: expected [N, {self.in_dim}] input, got shape {tuple(x.shape)}")
        self.net.eval()
        dev = torch.device(self.device)
        self.net.to(dev)
        try:
            with _Threads(self.threads):
                return torch.cat([self.net(self.normalize(x[s:s + chunk]).to(dev)).cpu()
                                  for s in range(0, x.shape[0], chunk)]) if x.shape[0] else torch.zeros(0, self.bits)
        finally:
            self.net.cpu()

    def encode(self, x) -> torch.Tensor:
        return self.codes_from_outputs(self.outputs(x))

    def state_dict(self) -> dict:
        return {"in_dim": self.in_dim, "mean": self.mean, "scale": self.scale,
                "net": self.net.state_dict(), "extra": self.extra_state()}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.scale = state["mean"], state["scale"]
        self.net = self.build_net(int(state["in_dim"]))
        self.net.load_state_dict(state["net"])
        self.net.eval()
        self.load_extra_state(state["extra"])
