"""HAGCN as hashing methods: ``hagcn`` (the default: a filtered-graph projection), ``hagcn-net`` (the
graph-convolutional autoencoder) and ``hagcn-paper`` (the paper code's recipe).

``hagcn`` (:class:`HAGCN`, :mod:`deephash.models.filtered_projection`): the spectral filter of kNN graphs
over the training items shapes the projection that produces the codes, and each item is encoded through
a small graph of itself and its nearest training items. Changing the filter changes the codes;
``filter="none"`` is the same model with every filter the identity (ITQ on unit features). Fitted in
``passes`` (graph, filter, projection); a checkpoint after each pass lets a killed fit resume exactly.

``hagcn-net`` and ``hagcn-paper`` train a network of :mod:`deephash.models.hagcn` with Adam over shuffled
mini-batches for a number of epochs, and encode with its per-item hash head. Options left ``None`` take
the network's default configuration for the data's width and the filter (``HAGCNNet.default_config``);
the resolved configuration is the method's :attr:`config` once fitted.

Deterministic under ``seed``: the network's initialisation, the anchors, the training-set graph codes,
each epoch's shuffle and any random start vector come from generators derived from ``seed`` (and the
epoch), so a run resumed from its checkpoint (``fit(..., checkpoint=...)``: network, optimiser, targets,
epoch, loss history after every epoch) ends exactly as an uninterrupted one.

``fit(..., parallel=DataParallel())`` trains the networks data-parallel (:mod:`deephash.training.data_parallel`): the
encoder runs on this rank's rows of each global batch, the per-batch graph and the filter on the whole batch.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch

from ..models import graphs
from ..training.data_parallel import ONE_PROCESS
from ..models import filtered_projection as fp
from ..models import trained_projection as tp
from ..models.hagcn import HAGCNNet, PaperHAGCNNet, canonical_filter
from ..training.progress import training_progress
from .base import HashMethod, as_float, sign

_RUN_OPTIONS = {"device": "cpu", "progress": False}


def _need(self: HashMethod, ok: bool, message: str) -> None:
    """Refuse an option (``ValueError`` naming the method) unless ``ok``."""
    if not ok:
        raise ValueError(f"{self.name}: {message}")


def _gen(*parts: int) -> torch.Generator:
    s = 0
    for p in parts:
        s = (s * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(s)


class HAGCN(HashMethod):
    """The default HAGCN: codes from a projection that the spectral filter of kNN graphs over the training
    items shapes, each item encoded through a subgraph of itself and its ``anchors`` nearest training items
    (:mod:`deephash.models.filtered_projection`). Unsupervised; labels are never read.

    Options: ``filter`` (chebyshev, spline, fourier, gcn, lanczos, none), ``order`` (basis functions;
    default 16, fourier 64: the eigenvectors kept), ``knn`` (graph neighbours), ``anchors`` (training
    items in each item's encoding subgraph; 0: none), ``passes`` (graph builds; from the second on, the
    graph is rebuilt in the filtered projection), ``heat`` and ``local_heat`` (the heat kernels' time on
    the training graphs and on the encoding subgraphs), ``subgraphs`` (graphs the training items are split
    into; default one per ``MAX_GRAPH_NODES`` items), ``iterations`` (ITQ's), ``device``, ``progress``."""

    name = "hagcn"
    resumable = True
    data_parallel = True  # the training epochs (epochs > 0); the closed form alone runs in one process
    # Options it refuses that another method takes, and why (run.method_options adds this to its refusal).
    options_elsewhere = ("hagcn-net", "the graph-convolutional autoencoder's options: --method hagcn-net or "
                                      "hagcn-paper")
    options = {"filter": "chebyshev", "order": None, "knn": 10, "anchors": 8, "passes": 2, "heat": 10.0,
               "local_heat": 0.5, "subgraphs": None, "iterations": 50, **tp.TRAIN_DEFAULTS, **_RUN_OPTIONS}

    def __init__(self, bits: int, seed: int = 0, **kwargs):
        super().__init__(bits, seed, **kwargs)
        self.filter = canonical_filter(self.filter, fp.FILTERS)
        self.mean = self.W = self.R = self.anchor_z = None
        self.local_theta = None  # the trained encoding filter's Chebyshev coefficients (None: the heat kernel)
        self.fitted = None
        self.history = []
        self.training = None  # the trained model's record (models.trained_projection.train)

    @property
    def history_is_loss(self) -> bool:
        """Trained (epochs > 0): history is the loss per epoch; else the energy kept per pass."""
        return bool(self.fitted and self.fitted.get("epochs"))

    @property
    def label(self) -> str:
        return f"HAGCN {self.filter}"

    @property
    def config(self) -> dict:
        """Once fitted: the resolved configuration (defaults filled in for the data)."""
        return super().config if self.fitted is None else {**super().config, **self.fitted}

    def resolve(self, n: int, d: int) -> dict:
        """The options with defaults filled in for ``n`` training items of ``d`` dimensions; options out
        of range, or that do not fit the data or the filter, are refused (nothing is clamped)."""
        filt, need = self.filter, partial(_need, self)

        def integer(key: str, low: int) -> int:
            v = getattr(self, key)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= low,
                 f"{key} must be an integer >= {low}, got {v!r}")
            return int(v)

        def positive(key: str) -> float:
            v = getattr(self, key)
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
                 f"{key} must be a finite number > 0, got {v!r}")
            return float(v)

        need(self.bits <= d, f"{self.bits} bits need at least {self.bits}-d embeddings, got {d}-d")
        need(n >= 3, f"x_train must have at least 3 items, got {n}")
        G = integer("subgraphs", 1) if self.subgraphs is not None else max(1, math.ceil(n / fp.MAX_GRAPH_NODES))
        nodes = n // G  # the smallest graph's nodes
        need(nodes >= 3, f"subgraphs={G} leaves graphs of {nodes} items (at least 3 each)")
        cfg = {"filter": filt, "knn": integer("knn", 1), "anchors": integer("anchors", 0),
               "passes": integer("passes", 1), "heat": positive("heat"), "local_heat": positive("local_heat"),
               "subgraphs": G, "iterations": integer("iterations", 0), "dims": min(max(fp.GRAPH_DIMS, self.bits), d)}
        need(cfg["knn"] < nodes, f"knn={cfg['knn']} needs graphs of more than {cfg['knn']} items; "
             f"the training graphs have {nodes}")
        need(cfg["anchors"] < n, f"anchors={cfg['anchors']} needs more than {cfg['anchors']} training items, got {n}")
        cfg["epochs"] = integer("epochs", 0)
        if cfg["epochs"]:  # the trained model's options (tp.TRAIN_DEFAULTS)
            cfg["batch_size"] = integer("batch_size", 2)
            cfg["lr"], cfg["theta_lr"] = positive("lr"), positive("theta_lr")
            need(isinstance(self.freeze_theta, bool), f"freeze_theta must be True or False, got {self.freeze_theta!r}")
            cfg["freeze_theta"] = self.freeze_theta
            need(self.objective in tp.OBJECTIVES, f"objective must be one of {', '.join(tp.OBJECTIVES)}, "
                 f"got {self.objective!r}")
            cfg["objective"] = self.objective
            need(cfg["local_heat"] > tp.MIN_HEAT or cfg["anchors"] == 0 or filt == "none",
                 f"local_heat must be > {tp.MIN_HEAT} to train the encoding filter from it (its floor)")
        if filt in ("gcn", "none"):
            need(self.order is None, f"order does not apply to filter {filt} (it has no basis)")
            cfg["order"] = None
        else:
            low = 4 if filt == "spline" else 1
            order = integer("order", low) if self.order is not None else min(fp.DEFAULT_ORDER[filt], nodes)
            if filt == "fourier":
                need(order <= nodes, f"order={order} is more than the {nodes} nodes of a training graph (the "
                     f"fourier filter keeps at most that many eigenvectors)")
            cfg["order"] = order
        return cfg

    def fit(self, x_train, y_train=None, *, checkpoint=None, parallel=None) -> "HAGCN":
        """Fit the closed form; with ``epochs`` > 0 then train it (:mod:`deephash.models.trained_projection`),
        data-parallel over ``parallel``'s ranks where given (every rank passing the same data and options;
        each rank fits the same closed form)."""
        x = as_float(x_train)
        if x.dim() != 2:
            raise ValueError(f"{self.name}: x_train must be [N, d], got shape {tuple(x.shape)}")
        n, d = x.shape
        cfg = self.resolve(n, d)
        if not torch.isfinite(x).all():
            raise ValueError(f"{self.name}: x_train holds non-finite values (NaN or inf)")
        par = parallel or ONE_PROCESS
        _need(self, par.world == 1 or cfg["epochs"] > 0, "the closed form (epochs 0) fits in one process; "
              "data-parallel training needs epochs > 0")
        if par.world > 1:
            checkpoint = par.checkpoint(checkpoint)
        filt, dev, bits = self.filter, torch.device(self.device), self.bits
        mean = x.mean(0)
        F = graphs.cosine_features(x, mean).double().to(dev)
        basis = "chebyshev" if filt == "lanczos" else filt  # lanczos: the Chebyshev filter on its Krylov basis
        theta = None if cfg["order"] is None else fp.heat_theta(basis, cfg["heat"], cfg["order"]).to(dev)
        start, history, W, mu, trained = 0, [], None, None, None
        key = {**cfg, "bits": bits}  # a checkpoint resumes only the same configuration
        state = checkpoint.restore(key, self.seed) if checkpoint is not None else None
        if state is not None:
            with checkpoint.reading():
                W, mu = state["W"].to(dev), state["mu"].to(dev)
                start, history = int(state["epoch"]), list(state["history"])
                trained = state.get("trained")  # saved after a training epoch (counted after the passes)
                if trained is not None:
                    start, history = cfg["passes"], list(state["passes"])
                if not (0 < start <= cfg["passes"] and tuple(W.shape) == (d, d)):
                    raise ValueError(f"pass {start} of {cfg['passes']}, projection {tuple(W.shape)}")
        bar = (training_progress(f"{self.label} {bits}b", cfg["passes"], 1, start, unit="pass", value="energy kept")
               if self.progress and par.is_main and trained is None else None)
        groups = fp.parts(n, cfg["subgraphs"], self.seed)
        for p in range(start, cfg["passes"]):
            if filt == "none":
                T = F
            else:  # the first graph in the unit features, later ones in the filtered projection
                feats = F if W is None else fp.unit(F @ W[:, :fp.GRAPH_DIMS])
                T = torch.empty_like(F)
                for idx in groups:
                    A = fp.knn_graph(feats[idx], cfg["knn"])
                    T[idx] = fp.filtered_signal(F[idx], A, filt, theta, self.seed)
            W, mu = fp.projection(F, T)
            history.append(float(mu[:bits].mean()))  # energy a code dimension keeps through the filter
            if bar is not None:
                bar.step(p + 1, history[-1])
                bar.end_epoch(p + 1, history[-1])
            if checkpoint is not None:
                checkpoint.save(key, self.seed, p + 1, history, W=W.cpu(), mu=mu.cpu())
        if bar is not None:
            bar.close()
        D = cfg["dims"]
        Ws = W[:, :D] * mu[:D].clamp_min(0) ** fp.POWER
        V = F @ Ws
        R = fp.itq_rotation(V[:, :bits], cfg["iterations"], torch.Generator().manual_seed(self.seed))
        self.mean, self.W, self.R = mean, Ws.float().cpu(), R.float().cpu()
        self.anchor_z = V.float().cpu() if cfg["anchors"] > 0 and filt != "none" else None
        self.fitted, self.history, self.local_theta, self.training = cfg, history, None, None
        if cfg["epochs"]:
            self._train(x, cfg, key, W, mu, history, checkpoint, par, trained)
        return self

    def _train(self, x, cfg, key, W, mu, passes, checkpoint, par, state) -> None:
        """Train the fitted closed form (:func:`deephash.models.trained_projection.train`); the checkpoint
        after each epoch keeps the closed form's projection (to rebuild it) and the training state."""
        dev = torch.device(self.device)
        F = graphs.cosine_features(x.double(), self.mean.double()).to(dev)  # as encoding computes them
        enc = tp.Encoder(self.W, self.R, self.anchor_z, F, cfg["anchors"], cfg["local_heat"],
                         learn_theta=not cfg["freeze_theta"]).to(dev)
        par.broadcast_module(enc)

        def save(epoch, trained):
            checkpoint.save(key, self.seed, cfg["passes"] + epoch, trained["record"]["loss"], W=W.cpu(),
                            mu=mu.cpu(), passes=passes, trained=trained)

        def bar(steps, start):
            return (training_progress(f"{self.label} {self.bits}b (trained)", cfg["epochs"], steps, start)
                    if self.progress and par.is_main else None)

        record = tp.train(enc, cfg, self.seed, _gen, par, state=state,
                          save=save if checkpoint is not None else None, progress=bar)
        with torch.no_grad():
            bank = enc.bank()
            self.W, self.R = enc.W.detach().float().cpu(), enc.R.detach().float().cpu()
            self.anchor_z = None if bank is None else bank.float().cpu()
            self.local_theta = enc.filter.theta().detach().cpu() if enc.m else None
        self.training = {**record, "nodes": enc.filter.nodes.cpu().tolist()}
        self.history = list(record["loss"])

    @property
    def filter_response(self) -> dict | None:
        """The trained encoding filter: ``g`` at ``lambda`` before training (the heat kernel) and after."""
        if self.local_theta is None:
            return None
        lam = torch.linspace(0, 2, 41, dtype=torch.float64)
        before = fp.heat_theta("chebyshev", self.fitted["local_heat"], self.local_theta.shape[0])
        return {"lambda": lam.tolist(), "before": tp.response(before, lam).tolist(),
                "after": tp.response(self.local_theta.double(), lam).tolist()}

    def project(self, x, chunk: int = 4096) -> torch.Tensor:
        """The items' filtered projections ``[N, dims]`` (before the rotation), float32."""
        return self._project(x, chunk).float()

    def _project(self, x, chunk: int = 4096) -> torch.Tensor:
        # In float64: float32 products differ in their last bits with the shape of the batch, and that
        # was enough to reorder near-tied anchors and to miss "the anchor is the item itself" (a squared
        # distance of ~1e-7 instead of ~0), so an item's code depended on what it was encoded with.
        if self.W is None:
            raise RuntimeError(f"{self.name}.encode before fit")
        x = as_float(x)
        if x.dim() != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"{self.name}: expected items [N, {self.mean.shape[0]}], got shape {tuple(x.shape)}")
        W, mean = self.W.double(), self.mean.double()
        anchors = None if self.anchor_z is None else self.anchor_z.double()
        if anchors is not None:  # the chunk's distances to every anchor: at most 2^25 doubles (256 MB)
            chunk = max(1, min(chunk, (1 << 25) // anchors.shape[0]))
        out = []
        for s in range(0, x.shape[0], chunk):
            z = graphs.cosine_features(x[s:s + chunk].double(), mean) @ W
            if anchors is not None and self.local_theta is not None:  # trained: the learned filter
                z = fp.subgraph_filter(z, anchors, self.fitted["anchors"], self.local_theta.double())
            elif anchors is not None:
                z = fp.local_filter(z, anchors, self.fitted["anchors"], self.fitted["local_heat"])
            out.append(z)
        return torch.cat(out) if out else W.new_zeros(0, W.shape[1])

    def encode(self, x) -> torch.Tensor:
        return sign(self._project(x)[:, :self.bits] @ self.R.double())

    def state_dict(self) -> dict:
        return {"config": self.fitted, "mean": self.mean, "W": self.W, "R": self.R, "anchor_z": self.anchor_z,
                "history": self.history, "local_theta": self.local_theta, "training": self.training}

    def load_state_dict(self, state: dict) -> None:
        cfg = dict(state["config"])
        mean, W, R, anchor_z = state["mean"], state["W"], state["R"], state["anchor_z"]
        d, D = W.shape
        if (tuple(mean.shape) != (d,) or tuple(R.shape) != (self.bits, self.bits) or D < self.bits
                or anchor_z is not None and (anchor_z.dim() != 2 or anchor_z.shape[1] != D
                                             or anchor_z.shape[0] <= int(cfg["anchors"]))):
            raise ValueError("the stored projection, rotation and anchors do not fit together")
        theta = state.get("local_theta")
        if theta is not None and (theta.dim() != 1 or theta.shape[0] < 1):
            raise ValueError("the stored encoding filter is not a vector of coefficients")
        cfg.setdefault("epochs", 0)  # files of the closed form before it trained
        self.mean, self.W, self.R, self.anchor_z = mean, W, R, anchor_z
        self.fitted, self.history = cfg, list(state.get("history", []))
        self.local_theta, self.training = theta, state.get("training")


class NetworkHAGCN(HashMethod):
    """HAGCN's graph-convolutional autoencoder (:class:`~deephash.models.hagcn.HAGCNNet`, the default
    model before 0.2), trained against the training-set graph's spectral codes. ``device`` is where it
    trains; codes are computed on the CPU."""

    name = "hagcn-net"
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
        return f"HAGCN {self.filter} (network)"

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
        need = partial(_need, self)
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

    def fit(self, x_train, y_train=None, *, checkpoint=None, parallel=None) -> "NetworkHAGCN":
        """Train on ``x_train``; ``parallel``: data-parallel over its ranks (:mod:`deephash.training.data_parallel`),
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
                lv = tp.gradient_step(opt, self.step_loss(net, x, targets, idx, generator=g, parallel=par),
                                      net.parameters(), par, epoch, s)
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


class PaperHAGCN(NetworkHAGCN):
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
