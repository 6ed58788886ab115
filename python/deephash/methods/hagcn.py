"""HAGCN as hashing methods: ``hagcn`` (the default network) and ``hagcn-paper`` (the paper code's recipe).

Both train a network of :mod:`deephash.models.hagcn` with Adam over shuffled mini-batches for a number
of epochs, and encode with its per-item hash head. Options left ``None`` take the network's default
configuration for the data's width and the filter (``HAGCNNet.default_config``); the resolved
configuration is the method's :attr:`config` once fitted.

Deterministic under ``seed``: the network's initialisation, the anchors, the training-set graph codes,
each epoch's shuffle and any random start vector come from generators derived from ``seed`` (and the
epoch), so a run resumed from its checkpoint (``fit(..., checkpoint=...)``: network, optimiser, targets,
epoch, loss history after every epoch) ends exactly as an uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import graphs
from ..models.hagcn import HAGCNNet, PaperHAGCNNet, canonical_filter
from ..progress import training_progress
from .base import HashMethod

_RUN_OPTIONS = {"device": "cpu", "progress": False}


def _gen(*parts: int) -> torch.Generator:
    s = 0
    for p in parts:
        s = (s * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(s)


class HAGCN(HashMethod):
    """The default HAGCN (:class:`~deephash.models.hagcn.HAGCNNet`), trained against the training-set
    graph's spectral codes. ``device`` is where it trains; codes are computed on the CPU."""

    name = "hagcn"
    resumable = True
    net_class = HAGCNNet
    tunables = ("epochs", "batch_size", "lr", "order", "hidden", "anchors", "subgraphs", "knn", "hash_weight",
                "bit_weight", "recon_weight")
    options = {"filter": "chebyshev", **dict.fromkeys(tunables), **_RUN_OPTIONS}

    def __init__(self, bits: int, seed: int = 0, **kwargs):
        super().__init__(bits, seed, **kwargs)
        self.filter = canonical_filter(self.filter)
        self.net = None
        self.history = []

    @property
    def label(self) -> str:
        return f"HAGCN {self.filter}"

    @property
    def in_dim(self) -> int | None:
        return None if self.net is None else int(self.net.config["in_dim"])

    @property
    def config(self) -> dict:
        """Once fitted: the method, seed, device and the network's full configuration."""
        if self.net is None:
            return super().config
        return {"method": self.name, "seed": self.seed, "device": self.device, **self.net.config}

    def net_config(self, in_dim: int) -> dict:
        """The network's configuration: its defaults for ``in_dim`` and the filter, then the given options."""
        cfg = self.net_class.default_config(in_dim, self.bits, self.filter)
        cfg.update({k: getattr(self, k) for k in self.tunables if getattr(self, k) is not None})
        if int(cfg["epochs"]) < 1 or int(cfg["batch_size"]) < 2:
            raise ValueError(f"{self.name}: epochs must be >= 1 and batch_size >= 2")
        return cfg

    def build(self, x_train) -> tuple[torch.nn.Module, torch.Tensor | None]:
        """A freshly initialised network (deterministic in ``seed``) and its training targets."""
        x = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
        torch.manual_seed(self.seed)
        net = self.net_class.from_config(self.net_config(int(x.shape[1])))
        net.prepare(x, generator=_gen(self.seed, 1))
        return net, self.targets(net, x)

    def targets(self, net, x: torch.Tensor) -> torch.Tensor | None:
        """The codes the hash head learns: the training-set graph's spectral codes."""
        feats = graphs.cosine_features(x, net.mean)
        return graphs.spectral_codes(feats, self.bits, k=net.config.get("knn"), seed=self.seed)

    def fit(self, x_train, y_train=None, *, checkpoint=None) -> "HAGCN":
        x = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
        if x.dim() != 2 or x.shape[0] < 2:
            raise ValueError(f"{self.name}: x_train must be [N >= 2, d], got shape {tuple(x.shape)}")
        n, device = x.shape[0], self.device
        net, targets = self.build(x)
        cfg = net.config
        epochs, bs = int(cfg["epochs"]), int(cfg["batch_size"])
        net.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=float(cfg["lr"]))
        start, history = 0, []
        state = checkpoint.restore(cfg, self.seed, map_location=device) if checkpoint is not None else None
        if state is not None:
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            targets = state["targets"]
            start, history = int(state["epoch"]), list(state["history"])
        x = x.to(device)
        targets = targets.to(device) if targets is not None else None
        steps = max(1, n // bs) if n >= bs else 1
        bar = training_progress(f"{self.label} {self.bits}b", epochs, steps, start) if self.progress else None
        net.train()
        for epoch in range(start, epochs):
            g = _gen(self.seed, 2, epoch)
            perm = torch.randperm(n, generator=g).to(device)
            total = 0.0
            for s in range(steps):
                idx = perm[s * bs:(s + 1) * bs] if n >= bs else perm
                out = net.forward_train(x[idx], generator=g)
                loss, _ = net.loss(out, targets[idx] if targets is not None else None)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                lv = loss.item()
                if not math.isfinite(lv):
                    raise FloatingPointError(f"the loss became {lv} at epoch {epoch + 1}, step {s + 1}")
                total += lv
                if bar is not None:
                    bar.step(epoch + 1, lv)
            history.append(total / steps)
            if bar is not None:
                bar.end_epoch(epoch + 1, history[-1])
            if checkpoint is not None:
                checkpoint.save(cfg, self.seed, epoch + 1, history, model=net.state_dict(), optim=opt.state_dict(),
                                targets=targets.cpu() if targets is not None else None)
        if bar is not None:
            bar.close()
        net.eval()
        self.net, self.history = net.cpu(), history
        return self

    def encode(self, x) -> torch.Tensor:
        if self.net is None:
            raise RuntimeError(f"{self.name}.encode before fit")
        return self.net.encode(x)

    def state_dict(self) -> dict:
        return {"config": self.net.config, "net": self.net.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        net = self.net_class.from_config(state["config"])
        if "anchor_x" in state["net"]:  # its row count is the number of anchors drawn at fit time
            net.anchor_x = torch.empty_like(state["net"]["anchor_x"])
        net.load_state_dict(state["net"])
        self.net = net.eval()


class PaperHAGCN(HAGCN):
    """HAGCN as the paper's code trains it (:class:`~deephash.models.hagcn.PaperHAGCNNet`): the step's own
    graph ``1 + hhᵀ/n`` as the similarity target, its layers, loss and recipe."""

    name = "hagcn-paper"
    net_class = PaperHAGCNNet
    tunables = ("epochs", "batch_size", "lr", "order", "hidden", "hash_weight")
    options = {"filter": "chebyshev", **dict.fromkeys(tunables), **_RUN_OPTIONS}

    @property
    def label(self) -> str:
        return f"HAGCN {self.filter} (paper recipe)"

    def targets(self, net, x: torch.Tensor) -> None:
        return None


def upgrade_old_model_file(blob: dict) -> dict:
    """A model file of HAGCN before it was a method (``{"format": "deephash.HAGCN", "config", "state_dict"}``,
    the paper recipe marked ``config["seed_compatible"]``) in today's layout. Such files did not record the
    training seed; it reads as 0."""
    cfg = dict(blob["config"])
    cls = PaperHAGCN if cfg.pop("seed_compatible", False) else HAGCN
    options = {k: cfg[k] for k in cls.tunables if k in cfg}
    return {"method": cls.name, "bits": cfg["bits"], "seed": 0, "options": {"filter": cfg["filter"], **options},
            "state": {"config": cfg, "net": blob["state_dict"]}}
