"""The HAGCN networks: a graph-convolutional autoencoder over embeddings with a hash head (after the
HAGCN paper). Trained by :mod:`deephash.methods.hagcn` (methods ``hagcn`` and ``hagcn-paper``).

Both networks share the layout *encoder -> spectral graph filter over a per-step graph -> decoder
(reconstructs the input)* plus a *hash head* whose codes' inner products are trained to follow graph
similarities. Codes are ``sign`` of the hash head, which reads one item at a time, so the code of an item
never depends on which other items are encoded with it.

:class:`HAGCNNet` — a graph autoencoder over a proper normalized Laplacian, with structure beyond the
  mini-batch: inputs are centred on the training mean and L2-normalised (cosine geometry); encoder
  ``H = GELU(W1 x)``; each step's graph joins the batch (optionally split into G subgraphs, a
  ``[G, n, n]`` batch for the batched ops) with a fixed set of anchors (training items drawn once),
  connects each node to its ``ceil(log2 n)`` most cosine-similar nodes (symmetrised), and takes
  ``L = normalized_laplacian(A)``. Filters (learnable, low-pass at initialisation) act on ``H`` over that
  graph: ``gcn`` (Kipf & Welling: ``(I - L_{A+I}) H W``), ``chebyshev`` / ``spline`` / ``fourier`` through
  ``deephash_ext.spectral_filter``, ``lanczos`` (LanczosNet-style: a K-step Krylov basis ``V``,
  ``T = VᵀLV``, then ``V g(T) Vᵀ H`` with ``g`` a Chebyshev filter applied by spectral_filter to the small
  operator ``T``). The decoder reconstructs the normalised input. The hash head ``W_h H`` (per item) is
  trained so that ``B Bᵀ / b`` follows the training-set graph's similarity ``T Tᵀ / b``, where ``T`` are
  the spectral-hashing codes of a kNN graph over the whole training set
  (:func:`deephash.models.graphs.spectral_codes`), plus a per-bit logistic term.

:class:`PaperHAGCNNet` — the paper code's formulation (IDASooinKim/DeepHashing, model.py / engine.py):
  ``h = GELU(W1 x)`` (hidden = input width), graph ``S = h hᵀ / n``, ``A = 1 + S``, operator
  ``M = D^-1/2 A D^-1/2``; hash head ``W2 x`` on the raw input, ``B = 2 sigmoid(W2 x) - 1``;
  per-filter layers: ``gcn``: LayerNorm(Linear(M h)); ``chebyshev``: ``Σ_{j=0..k} T_j(M) h`` with no weights
  (spectral_filter on ``M + I`` with θ = 1, exactly the paper's sum); ``fourier``: the k smallest eigenpairs
  of ``M`` with learnable θ (the paper multiplies the eigenvector rows by a dense ``Linear(k, k)``, which is
  not a spectral filter; we keep its diagonal); ``spline``: cubic B-splines on ``M + I`` over [0, 2] with
  learnable θ (the paper places knots over the k smallest eigenvalues' range and mixes eigenvectors; we keep
  the spectral form); ``lanczos``: ``V T Vᵀ h`` after k Lanczos steps on ``M`` from a random start, as the paper.
  Then ``W4``, GELU, and the decoder ``Linear-GELU-Linear``. Loss ``MSE(x̂, x) + 1e-4 mean((BBᵀ - b S)²)``,
  Adam 1e-4, batch 128, 20 epochs, k = 18.

A network is rebuilt from its configuration (:meth:`HAGCNNet.from_config`): everything but the weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import graphs

FILTERS = ("gcn", "fourier", "spline", "chebyshev", "lanczos")
_ALIASES = {"cheby": "chebyshev"}


def canonical_filter(name: str, choices=FILTERS) -> str:
    """``name`` with its alias resolved, if it is one of ``choices``."""
    f = _ALIASES.get(name, name)
    if f not in choices:
        raise ValueError(f"unknown filter {name!r}; choose one of {', '.join(choices)}")
    return f


def _lowpass_theta(basis: str, K: int) -> torch.Tensor:
    """Coefficients with g(λ) ≈ 1 - λ/2 on [0, 2] (a low-pass start)."""
    if basis == "chebyshev":
        th = torch.zeros(K)
        th[0] = 0.5
        if K > 1:
            th[1] = -0.5
        return th
    if basis == "spline":
        # Control points of a clamped cubic B-spline at the Greville abscissae reproduce a line exactly.
        inner = torch.linspace(0, 2, K - 2)
        t = torch.cat([torch.zeros(3), inner, torch.full((3,), 2.0)])
        greville = torch.stack([t[i + 1:i + 4].mean() for i in range(K)])
        return 1.0 - greville / 2
    return torch.ones(K)  # fourier: pass the K lowest frequencies


class _Net(nn.Module):
    """What both networks share: configuration, the encoder, the data buffers and :meth:`encode`."""

    def __init__(self, in_dim: int, bits: int, filter: str, overrides: dict):
        super().__init__()
        cfg = self.default_config(in_dim, bits, filter)
        unknown = set(overrides) - set(cfg)
        if unknown:
            raise TypeError(f"unknown HAGCN options {sorted(unknown)}")
        cfg.update(overrides)
        self.config = cfg
        self.bits = int(bits)
        self.filter = cfg["filter"]
        self.encoder = nn.Linear(in_dim, cfg["hidden"])
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("anchor_x", torch.zeros(0, in_dim))

    @staticmethod
    def default_config(in_dim: int, bits: int, filter: str = "chebyshev") -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg: dict) -> "_Net":
        cfg = dict(cfg)
        return cls(cfg.pop("in_dim"), cfg.pop("bits"), cfg.pop("filter"), **cfg)

    def prepare(self, x_train: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Set the data-dependent buffers from the training set."""

    def hash_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-item code logits (no graph: an item's code depends on that item only)."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, x, batch_size: int = 8192) -> torch.Tensor:
        """±1 ``float32[N, bits]`` codes (bit = logit > 0)."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        x = torch.as_tensor(x, dtype=torch.float32)
        out = [torch.where(self.hash_logits(x[s:s + batch_size].to(dev)) > 0, 1.0, -1.0).cpu()
               for s in range(0, x.shape[0], batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.empty(0, self.bits)


def _check_bits(bits: int) -> None:
    if not 8 <= int(bits) <= 1024:
        raise ValueError(f"bits must be in 8..1024, got {bits}")


class HAGCNNet(_Net):
    """The default HAGCN network (see the module docstring)."""

    def __init__(self, in_dim: int, bits: int, filter: str = "chebyshev", **overrides):
        super().__init__(in_dim, bits, filter, overrides)
        hid, K = self.config["hidden"], int(self.config["order"])
        self.hash_head = nn.Linear(hid, bits)
        if self.filter == "spline" and K < 4:
            raise ValueError("the spline basis needs order >= 4")
        basis = {"chebyshev": "chebyshev", "spline": "spline", "fourier": "fourier", "lanczos": "chebyshev"}
        if self.filter != "gcn":
            kk = 3 if self.filter == "lanczos" else K
            self.theta = nn.Parameter(_lowpass_theta(basis[self.filter], kk))
        self.graph_w = nn.Linear(hid, hid)
        self.decoder = nn.Sequential(nn.GELU(), nn.Linear(hid, hid), nn.GELU(), nn.Linear(hid, in_dim))

    @staticmethod
    def default_config(in_dim: int, bits: int, filter: str = "chebyshev") -> dict:
        """The full configuration of a network: everything needed to rebuild it."""
        filt = canonical_filter(filter)
        _check_bits(bits)
        order = {"gcn": 1, "chebyshev": 4, "spline": 6, "fourier": 16, "lanczos": 8}[filt]
        return dict(in_dim=in_dim, bits=bits, filter=filt, hidden=int(min(1024, max(256, 2 * in_dim))),
                    order=order, anchors=128, subgraphs=1, knn=None, lr=1e-3, batch_size=128, epochs=20,
                    hash_weight=1.0, bit_weight=1.0, recon_weight=1.0)

    def prepare(self, x_train: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """The centring mean and the anchors (training items drawn once)."""
        x_train = torch.as_tensor(x_train, dtype=torch.float32)
        self.mean.copy_(x_train.mean(0))
        m = min(int(self.config["anchors"]), x_train.shape[0])
        idx = torch.randperm(x_train.shape[0], generator=generator)[:m]
        self.anchor_x = x_train[idx].clone().to(self.mean.device)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return graphs.cosine_features(x, self.mean)

    def hash_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.hash_head(F.gelu(self.encoder(self.normalize(x))))

    def _filter(self, H: torch.Tensor, L: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        if self.filter == "gcn":
            n = A.shape[-1]
            Ahat = torch.eye(n, dtype=H.dtype, device=H.device) - graphs.normalized_laplacian(
                A + torch.eye(n, dtype=A.dtype, device=A.device))
            return Ahat @ H
        if self.filter == "lanczos":
            n = L.shape[-1]
            g = torch.Generator(device="cpu").manual_seed(n)
            v0 = torch.rand(n, generator=g).to(H).expand(L.shape[0], n)
            V, T = graphs.lanczos(L, int(self.config["order"]), v0)
            return V @ graphs.spectral_filter(V.transpose(-1, -2) @ H, T, self.theta, "chebyshev")
        return graphs.spectral_filter(H, L, self.theta, self.filter)

    def forward_train(self, x: torch.Tensor, generator: torch.Generator | None = None, parallel=None) -> dict:
        """One step's graph and outputs for a batch ``x[n, d]``: reconstruction and logits.

        ``parallel`` (:mod:`deephash.training.data_parallel`): ``x`` is the global batch; the encoder runs on this
        rank's rows, whose features are gathered from every rank; the graph and the filter act on the whole
        batch; the decoder reconstructs this rank's rows (``recon`` and ``target`` are those rows)."""
        xn = self.normalize(x)
        n = xn.shape[0]
        G = max(1, min(int(self.config["subgraphs"]), n))
        sizes = [len(c) for c in torch.arange(n).tensor_split(G)]
        if len(set(sizes)) != 1:  # keep the [G, n, n] batch rectangular: drop the remainder from the graph
            G = 1
        an = self.normalize(self.anchor_x) if self.anchor_x.numel() else xn[:0]
        chunks = xn.reshape(G, n // G, -1)
        nodes = torch.cat([chunks, an[None].expand(G, -1, -1)], 1)  # [G, n/G + m, d]
        with torch.no_grad():
            A = graphs.knn_adjacency(nodes, self.config["knn"])
            L = graphs.normalized_laplacian(A)
        nb = n // G
        world = 1 if parallel is None else parallel.world
        if world == 1:
            rows = slice(0, n)
            H = F.gelu(self.encoder(nodes))
        else:
            rows = parallel.rows(n)
            Hb = parallel.gather(F.gelu(self.encoder(xn[rows])), n)
            Ha = F.gelu(self.encoder(an))
            H = torch.cat([Hb.reshape(G, nb, -1), Ha[None].expand(G, -1, -1)], 1)
        Z = self._filter(H, L, A)
        # Only the batch's rows are decoded: the anchors' reconstructions are not part of the loss.
        recon = self.decoder(self.graph_w(Z[:, :nb].reshape(n, -1)[rows]))
        logits = self.hash_head(H[:, :nb].reshape(n, -1))
        return {"recon": recon, "target": xn[rows], "logits": logits, "batch": n, "world": world}

    def loss(self, out: dict, target_codes: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The training loss and its parts (under data-parallel training, this rank's share of them: the
        reconstruction error of its rows, and the batch-wide terms divided by the number of ranks)."""
        if target_codes is None:
            raise ValueError("the default HAGCN trains against the training-set graph codes (target_codes)")
        cfg, b = self.config, self.bits
        world = out.get("world", 1)
        rec = F.mse_loss(out["recon"], out["target"], reduction="sum") / (out["batch"] * out["target"].shape[1])
        B = 2 * torch.sigmoid(out["logits"]) - 1
        Tc = target_codes
        sim = ((B @ B.T / b - Tc @ Tc.T / b) ** 2).mean() / world
        bit = F.binary_cross_entropy_with_logits(out["logits"], (Tc > 0).to(out["logits"].dtype)) / world
        total = cfg["recon_weight"] * rec + cfg["hash_weight"] * sim + cfg["bit_weight"] * bit
        return total, {"recon": float(rec.detach()), "hash": float(sim.detach()), "bit": float(bit.detach())}


class PaperHAGCNNet(_Net):
    """The paper code's HAGCN network (see the module docstring)."""

    def __init__(self, in_dim: int, bits: int, filter: str = "chebyshev", **overrides):
        super().__init__(in_dim, bits, filter, overrides)
        hid, K = self.config["hidden"], int(self.config["order"])
        self.hash_head = nn.Linear(in_dim, bits)
        if self.filter == "gcn":
            self.gcn_w = nn.Linear(hid, hid)
            self.gcn_norm = nn.LayerNorm(hid)
        elif self.filter in ("fourier", "spline"):
            if self.filter == "spline" and K < 4:
                raise ValueError("the spline basis needs order >= 4")
            self.theta = nn.Parameter(_lowpass_theta(self.filter, K) if self.filter == "spline" else torch.ones(K))
        elif self.filter == "chebyshev":
            self.register_buffer("theta", torch.ones(K + 1))
        self.post = nn.Linear(hid, hid)
        self.decoder = nn.Sequential(nn.Linear(hid, hid), nn.GELU(), nn.Linear(hid, in_dim))

    @staticmethod
    def default_config(in_dim: int, bits: int, filter: str = "chebyshev") -> dict:
        """The paper code's recipe: hidden = input width, k = 18, Adam 1e-4, batch 128, 20 epochs."""
        filt = canonical_filter(filter)
        _check_bits(bits)
        return dict(in_dim=in_dim, bits=bits, filter=filt, hidden=in_dim, order=18, lr=1e-4, batch_size=128,
                    epochs=20, hash_weight=1e-4)

    def hash_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.hash_head(x)

    def _filter(self, h: torch.Tensor, M: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        K = int(self.config["order"])
        n = h.shape[-2]
        eye = torch.eye(n, dtype=h.dtype, device=h.device)
        if self.filter == "gcn":
            return self.gcn_norm(self.gcn_w(M @ h))
        if self.filter == "fourier":
            return graphs.spectral_filter(h, M, self.theta[: min(K, n)], "fourier")
        if self.filter == "spline":
            return graphs.spectral_filter(h, M + eye, self.theta, "spline")
        if self.filter == "chebyshev":
            return graphs.spectral_filter(h, M + eye, self.theta, "chebyshev")
        v0 = torch.randn(M.shape[0], n, generator=generator).to(h)
        V, T = graphs.lanczos(M, K, v0)
        return V @ T @ V.transpose(-1, -2) @ h

    def forward_train(self, x: torch.Tensor, generator: torch.Generator | None = None, parallel=None) -> dict:
        """One step's graph and outputs for a batch ``x[n, d]``: reconstruction, logits and the graph S.
        ``parallel``: as :meth:`HAGCNNet.forward_train` (the encoder on this rank's rows, gathered)."""
        n = x.shape[0]
        world = 1 if parallel is None else parallel.world
        if world == 1:
            rows = slice(0, n)
            h = F.gelu(self.encoder(x))[None]
        else:
            rows = parallel.rows(n)
            h = parallel.gather(F.gelu(self.encoder(x[rows])), n)[None]
        M, S = graphs.paper_operator(h)
        z = self._filter(h, M, generator)
        recon = self.decoder(F.gelu(self.post(z[:, rows])))[0]
        return {"recon": recon, "target": x[rows], "logits": self.hash_head(x), "S": S[0], "batch": n,
                "world": world}

    def loss(self, out: dict, target_codes: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The training loss and its parts (no target codes: the paper trains against the step's graph);
        under data-parallel training, this rank's share (see :meth:`HAGCNNet.loss`)."""
        b = self.bits
        world = out.get("world", 1)
        rec = F.mse_loss(out["recon"], out["target"], reduction="sum") / (out["batch"] * out["target"].shape[1])
        B = 2 * torch.sigmoid(out["logits"]) - 1
        sim = ((B @ B.T - b * out["S"]) ** 2).mean() / world
        total = rec + self.config["hash_weight"] * sim
        return total, {"recon": float(rec.detach()), "hash": float(sim.detach())}
