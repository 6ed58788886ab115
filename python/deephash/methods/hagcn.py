"""HAGCN as hashing methods: ``hagcn`` (the default network) and ``hagcn-paper`` (the paper code's recipe).

Both train a network of :mod:`deephash.models.hagcn` with Adam over shuffled mini-batches for a number
of epochs, and encode with its per-item hash head. Options left ``None`` take the network's default
configuration for the data's width and the filter (``HAGCNNet.default_config``); the resolved
configuration is the method's :attr:`config` once fitted.

Deterministic under ``seed``: the network's initialisation, the anchors, the training-set graph codes,
each epoch's shuffle and any random start vector come from generators derived from ``seed`` (and the
epoch), so a run resumed from its checkpoint (``fit(..., checkpoint=...)``: network, optimiser, targets,
epoch, loss history after every epoch) ends exactly as an uninterrupted one.

``fit(..., parallel=DataParallel())`` trains data-parallel (:mod:`deephash.data_parallel`): the encoder runs on
this rank's rows of each global batch, the per-batch graph and the filter on the whole batch.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import graphs
from ..data_parallel import ONE_PROCESS
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
    data_parallel = True
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

    def net_config(self, in_dim: int, n_train: int | None = None) -> dict:
        """The network's configuration: its defaults for ``in_dim`` and the filter, then the given options.
        Options out of range, or that do not apply to the filter, are refused (nothing is clamped); with
        ``n_train`` also those that do not fit that many training items."""
        cfg = self.net_class.default_config(in_dim, self.bits, self.filter)
        given = {k: getattr(self, k) for k in self.tunables if getattr(self, k) is not None}
        cfg.update(given)
        name = self.name

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"{name}: {message}")

        need(int(cfg["epochs"]) >= 1, f"epochs must be >= 1, got {cfg['epochs']}")
        need(int(cfg["batch_size"]) >= 2, f"batch_size must be >= 2, got {cfg['batch_size']}")
        need(math.isfinite(float(cfg["lr"])) and float(cfg["lr"]) > 0, f"lr must be a finite number > 0, got {cfg['lr']}")
        if self.filter == "gcn":
            need("order" not in given, "order does not apply to filter gcn (it has no polynomial or basis)")
        else:
            low = 4 if self.filter == "spline" else 1
            need(int(cfg["order"]) >= low, f"order must be >= {low} for filter {self.filter}, got {cfg['order']}")
        if "anchors" in cfg:
            need(int(cfg["anchors"]) >= 0, f"anchors must be >= 0, got {cfg['anchors']}")
        if "subgraphs" in cfg:
            need(int(cfg["subgraphs"]) >= 1, f"subgraphs must be >= 1, got {cfg['subgraphs']}")
        if n_train is not None:
            batch = min(int(cfg["batch_size"]), n_train)  # fit's batches: batch_size items, or all when fewer
            if "anchors" in given:
                need(int(cfg["anchors"]) <= n_train,
                     f"anchors={cfg['anchors']} is more than the {n_train} training items")
            if "subgraphs" in cfg:
                need(batch % int(cfg["subgraphs"]) == 0,
                     f"subgraphs={cfg['subgraphs']} must divide the batch size {batch} (each batch is split "
                     f"into equal subgraphs)")
            if self.filter == "fourier" and "anchors" in cfg:
                nodes = batch // int(cfg["subgraphs"]) + min(int(cfg["anchors"]), n_train)
                need(int(cfg["order"]) <= nodes, f"order={cfg['order']} is more than the {nodes} nodes of a "
                     f"training graph (the fourier filter takes at most that many eigenvectors)")
        return cfg

    def build(self, x_train, targets: bool = True) -> tuple[torch.nn.Module, torch.Tensor | None]:
        """A freshly initialised network (deterministic in ``seed``) and its training targets (None when
        ``targets`` is False)."""
        x = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
        torch.manual_seed(self.seed)
        net = self.net_class.from_config(self.net_config(int(x.shape[1]), int(x.shape[0])))
        net.prepare(x, generator=_gen(self.seed, 1))
        return net, self.targets(net, x) if targets else None

    def targets(self, net, x: torch.Tensor) -> torch.Tensor | None:
        """The codes the hash head learns: the training-set graph's spectral codes."""
        feats = graphs.cosine_features(x, net.mean)
        return graphs.spectral_codes(feats, self.bits, k=net.config.get("knn"), seed=self.seed)

    @staticmethod
    def step_loss(net, x: torch.Tensor, targets: torch.Tensor | None, idx: torch.Tensor, generator=None,
                  parallel=None) -> torch.Tensor:
        """The loss of the global mini-batch ``idx`` of ``x`` (this rank's share under ``parallel``)."""
        out = net.forward_train(x[idx], generator=generator, parallel=parallel)
        return net.loss(out, targets[idx] if targets is not None else None)[0]

    def fit(self, x_train, y_train=None, *, checkpoint=None, parallel=None) -> "HAGCN":
        """Train on ``x_train``; ``parallel``: data-parallel over its ranks (:mod:`deephash.data_parallel`),
        every rank passing the same data and options. Rank 0 computes the training-set graph codes and
        sends them to the others."""
        par = parallel or ONE_PROCESS
        x = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
        if x.dim() != 2 or x.shape[0] < 2:
            raise ValueError(f"{self.name}: x_train must be [N >= 2, d], got shape {tuple(x.shape)}")
        if par.world > 1:
            checkpoint = par.checkpoint(checkpoint)
        n, device = x.shape[0], self.device
        net, _ = self.build(x, targets=False)
        cfg = net.config
        epochs, bs = int(cfg["epochs"]), int(cfg["batch_size"])
        net.to(device)
        par.broadcast_module(net)
        opt = torch.optim.Adam(net.parameters(), lr=float(cfg["lr"]))
        start, history = 0, []
        state = checkpoint.restore(cfg, self.seed, map_location=device) if checkpoint is not None else None
        if state is not None:
            with checkpoint.reading():
                net.load_state_dict(state["model"])
                opt.load_state_dict(state["optim"])
                targets = state["targets"]
                start, history = int(state["epoch"]), list(state["history"])
        else:
            targets = self.targets(net, x) if par.is_main else None
            targets = par.broadcast_tensor(targets)
        x = x.to(device)
        targets = targets.to(device) if targets is not None else None
        steps = max(1, n // bs) if n >= bs else 1
        show = self.progress and par.is_main
        bar = training_progress(f"{self.label} {self.bits}b", epochs, steps, start) if show else None
        net.train()
        for epoch in range(start, epochs):
            g = _gen(self.seed, 2, epoch)
            perm = torch.randperm(n, generator=g).to(device)
            total = 0.0
            for s in range(steps):
                idx = perm[s * bs:(s + 1) * bs] if n >= bs else perm
                loss = self.step_loss(net, x, targets, idx, generator=g, parallel=par)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                par.sync_gradients(net.parameters())
                opt.step()
                lv = par.total(loss)
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
