"""Self-supervised embeddings of small greyscale images, trained on this machine (no downloaded weights).

SimCLR (Chen et al., ICML 2020): two random augmentations of each image go through a small residual CNN
(:class:`Backbone`) and a two-layer projection head; the NT-Xent loss pulls the two views of an image
together and pushes the other ``2B - 2`` views of the batch away. The embeddings are the backbone's
features (before the projection head, as in the paper; the last map, not pooled), computed on the
un-augmented images.
SimCLR was chosen over non-contrastive objectives (VICReg, BYOL) because it needs neither a large
projector nor a momentum encoder, which a few CPU epochs of a small network cannot afford (the
alternatives were not measured here).

Augmentations suit 28x28 greyscale items that are centred in their frame: a random resized crop of
moderate scale with small translations (one ``affine_grid`` per batch), horizontal flip,
brightness / contrast jitter and random erasing of a small rectangle. All randomness of an epoch comes
from a generator seeded by ``(seed, epoch)``, so a run is deterministic on the CPU and a resumed run
repeats the epochs an uninterrupted one would have trained.

:func:`train_selfsup` takes images only (labels never reach the training). :func:`self_supervised_embeddings`
loads a data set, trains or finds the result in the cache, and writes the embeddings file the other
commands read (``.npz`` with ``x`` and, when known, ``y``; split by the standard protocol). The cache
(``$DEEPHASH_CACHE`` or ``~/.cache/deephash``, folder ``selfsup/<key>``) is keyed by the SHA-256 of the
images, the configuration, the seed and the device type; it also holds the per-epoch checkpoint, so
running the same command again after an interruption resumes the training.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..atomic import atomic_write
from ..codes import check_out_file
from ..training.progress import training_progress
from ..training.run import Checkpoint

CACHE_VERSION = 3  # bump when training or embedding changes what a configuration produces


class SelfSupError(ValueError):
    """Bad options or data for self-supervised training; the message names the option or file."""


MAX_WIDTH = 512


@dataclass(frozen=True)
class SelfSupConfig:
    """A SimCLR run. ``width`` is the stem's channel count (embeddings: ``144 * width`` for 28x28);
    ``subset`` trains on that many images drawn with the seed (all images when ``None``); the embeddings
    cover every image."""

    # The default trains on Fashion-MNIST's 70,000 images within 30 minutes on a shared 2-core machine
    # (measured: 1-4 minutes an epoch there, by load); a GPU affords a wider network and more epochs.
    width: int = 8
    proj_dim: int = 64
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    subset: int | None = None

    def check(self) -> "SelfSupConfig":
        for name in ("width", "proj_dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SelfSupError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise SelfSupError("--batch-size must be at least 2 (contrastive negatives)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SelfSupError(f"--lr must be positive, got {self.lr}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise SelfSupError(f"--temperature must be positive, got {self.temperature}")
        if self.subset is not None and self.subset < 2:
            raise SelfSupError(f"--subset must be at least 2 images, got {self.subset}")
        if self.width > MAX_WIDTH:
            # 144 * width dimensions per embedding and (4 width)^2 weights per kernel tap in the last stage:
            # --width 100000 asked for terabytes before any error said so.
            raise SelfSupError(f"--width must be at most {MAX_WIDTH} (embeddings of {144 * MAX_WIDTH} dimensions), "
                               f"got {self.width}")
        return self


# Seconds on CI: a narrow network, one epoch over a thousand images.
QUICK = SelfSupConfig(width=8, proj_dim=32, epochs=1, batch_size=128, subset=1024)


# ---------------------------------------------------------------------------------------------
# Network


class _Block(nn.Module):
    """A residual block that halves the resolution and doubles the channels (ResNet's basic block)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.short(x))


class Backbone(nn.Module):
    """A 3x3 stem and two residual stages at H/2 and H/4 (``4 * width`` channels). Small enough to train on
    a CPU core, residual so that it trains in few epochs.

    ``forward`` (training): global average pooling, ``[B, 1, H, W] -> [B, 4 * width]``.
    ``features`` (the embeddings): the last stage's map flattened, ``[B, 4 * width * ceil(H/4) * ceil(W/4)]``
    (``144 * width`` for 28x28). It keeps the layout that tells garments apart: on Fashion-MNIST, exact
    k-NN over it beats the globally pooled vector of the same network by several points of mAP@1000."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = _Block(width, 2 * width)
        self.stage2 = _Block(2 * width, 4 * width)
        self.out_dim = 4 * width

    def maps(self, x: Tensor) -> Tensor:
        return self.stage2(self.stage1(self.stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.maps(x).mean(dim=(2, 3))

    def features(self, x: Tensor) -> Tensor:
        return self.maps(x).flatten(1)


class SimCLR(nn.Module):
    def __init__(self, width: int, proj_dim: int):
        super().__init__()
        self.backbone = Backbone(width)
        d = self.backbone.out_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, proj_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent: cross-entropy of each view against its partner among the other ``2B - 1`` views."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


# ---------------------------------------------------------------------------------------------
# Augmentations


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """A random view of each image of ``x`` (``float[B, 1, H, W]`` in [0, 1]); randomness from ``gen`` (CPU)."""
    b = x.shape[0]

    def u(lo, hi, *shape):
        return torch.rand(b, *shape, generator=gen) * (hi - lo) + lo

    # Random resized crop: area 50-100 %, aspect 3/4-4/3, centre anywhere the crop stays mostly inside,
    # plus horizontal flip, as one affine map per image (output coordinates -> input coordinates).
    area = u(0.5, 1.0)
    log_r = u(math.log(3 / 4), math.log(4 / 3))
    sx = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
    sy = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    tx = u(-1, 1) * (1 - sx + 0.1)
    ty = u(-1, 1) * (1 - sy + 0.1)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = sx * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Brightness and contrast jitter (greyscale: no colour jitter), then clamp to the image range.
    contrast = u(0.6, 1.4, 1, 1, 1).to(x.device)
    bright = u(-0.2, 0.2, 1, 1, 1).to(x.device)
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    v = ((v - mean) * contrast + mean + bright).clamp(0, 1)
    # Random erasing of one rectangle (2-15 % of the image) on half of the views.
    h, w = x.shape[2], x.shape[3]
    er = torch.rand(b, generator=gen) < 0.5
    ea = u(0.02, 0.15)
    eh = (torch.sqrt(ea) * h).round().clamp(1, h)
    ew = (torch.sqrt(ea) * w).round().clamp(1, w)
    ey = (u(0, 1) * (h - eh + 1)).floor()
    ex = (u(0, 1) * (w - ew + 1)).floor()
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    mask = ((rows >= ey.view(b, 1, 1)) & (rows < (ey + eh).view(b, 1, 1))
            & (cols >= ex.view(b, 1, 1)) & (cols < (ex + ew).view(b, 1, 1)) & er.view(b, 1, 1))
    return v.masked_fill(mask.unsqueeze(1).to(x.device), 0.0)


# ---------------------------------------------------------------------------------------------
# Training and embedding


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def _as_images(images) -> Tensor:
    """``[N, H, W]`` or ``[N, 1, H, W]`` (uint8 0..255 or float 0..1) -> ``float32[N, 1, H, W]``."""
    t = torch.as_tensor(np.asarray(images))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if t.ndim != 4 or t.shape[1] != 1:
        raise SelfSupError(f"images must be greyscale [N, H, W] or [N, 1, H, W], got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    return t.float()


def train_selfsup(images, config: SelfSupConfig = SelfSupConfig(), seed: int = 0, *,
                  checkpoint: Checkpoint | None = None, device="cpu", progress: bool = True,
                  stream=None) -> Backbone:
    """Train SimCLR on ``images`` (greyscale ``[N, H, W]``; no labels) and return the backbone in eval mode.

    ``checkpoint`` (:class:`deephash.training.run.Checkpoint`) is written after every epoch and, when it was made
    with ``resume=True`` and exists, training continues from it."""
    config.check()
    x = _as_images(images)
    n = x.shape[0]
    if n < 2:
        raise SelfSupError(f"self-supervised training needs at least 2 images, got {n}")
    if config.subset is not None and config.subset < n:
        x = x[torch.randperm(n, generator=_epoch_generator(seed, -1))[:config.subset]]
        n = x.shape[0]
    device = torch.device(device)
    torch.manual_seed(seed)
    model = SimCLR(config.width, config.proj_dim).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    bs = min(config.batch_size, n)
    steps = n // bs  # drop the ragged last batch: BatchNorm and the negatives want full batches
    total = config.epochs * steps
    cfg = asdict(config)
    start, history = 0, []
    state = checkpoint.restore(cfg, seed, map_location=device) if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = int(state["epoch"]), list(state["history"])

    def lr_at(step: int) -> float:  # linear warm-up over the first 5 %, then cosine decay
        warm = max(1, total // 20)
        if step < warm:
            return config.lr * (step + 1) / warm
        return config.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    bar = training_progress(f"SimCLR w{config.width}", config.epochs, steps, start_epoch=start, stream=stream) \
        if progress else None
    model.train()
    for epoch in range(start, config.epochs):
        gen = _epoch_generator(seed, epoch)
        order = torch.randperm(n, generator=gen)
        losses = []
        for s in range(steps):
            batch = x[order[s * bs:(s + 1) * bs]]
            v1, v2 = augment(batch, gen).to(device), augment(batch, gen).to(device)
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps + s)
            loss = nt_xent(model(v1), model(v2), config.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if bar is not None:
                bar.step(epoch + 1, losses[-1])
        history.append(float(np.mean(losses)) if losses else float("nan"))
        if bar is not None:
            bar.end_epoch(epoch + 1, history[-1])
        if checkpoint is not None:
            checkpoint.save(cfg, seed, epoch + 1, history, model=model.state_dict(), optimizer=opt.state_dict())
    if bar is not None:
        bar.close()
    model.backbone.history = history
    return model.backbone.eval()


@torch.no_grad()
def embed(backbone: nn.Module, images, batch_size: int = 1024, device="cpu") -> np.ndarray:
    """The backbone's features (:meth:`Backbone.features`) of the un-augmented ``images``: ``float32[N, D]``."""
    x = _as_images(images)
    backbone = backbone.to(device).eval()
    out = [backbone.features(x[s:s + batch_size].to(device)).float().cpu() for s in range(0, x.shape[0], batch_size)]
    if not out:
        return np.zeros((0, backbone.features(torch.zeros(1, *x.shape[1:], device=device)).shape[1]), np.float32)
    return torch.cat(out).numpy()


# ---------------------------------------------------------------------------------------------
# Data sets, cache and the embeddings file


def load_images(data: str | os.PathLike = "fashion-mnist") -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(uint8 or float images [N, H, W], labels or None, name)``: ``fashion-mnist`` (all 70,000 images),
    or a ``.npz`` holding ``images`` ``[N, H, W]`` or pixel rows ``x`` ``[N, H*W]`` of square greyscale
    images (and ``y`` when labels are known)."""
    s = str(data)
    if s.lower() in ("fashion-mnist", "fashion_mnist", "fmnist"):
        from .datasets import load_fashion_mnist

        x, y = load_fashion_mnist()
        return np.rint(x * 255).astype(np.uint8).reshape(-1, 28, 28), y, "fashion-mnist"
    p = Path(s)
    if p.suffix != ".npz" or not p.is_file():
        raise SelfSupError(f"{s}: expected 'fashion-mnist' or a .npz file of greyscale images (images [N, H, W] "
                           f"or pixel rows x [N, H*W])")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k in ("images", "x", "y")}
    except Exception as e:  # noqa: BLE001
        raise SelfSupError(f"{p}: cannot read .npz ({e})") from e
    if "images" in arrays:
        img = arrays["images"]
        if img.ndim == 4 and img.shape[1] == 1:
            img = img[:, 0]
        if img.ndim != 3:
            raise SelfSupError(f"{p}: images must be greyscale [N, H, W], got shape {img.shape}")
    elif "x" in arrays and arrays["x"].ndim == 2 and math.isqrt(arrays["x"].shape[1]) ** 2 == arrays["x"].shape[1]:
        side = math.isqrt(arrays["x"].shape[1])
        img = arrays["x"].reshape(-1, side, side)
    else:
        raise SelfSupError(f"{p}: needs images [N, H, W] or pixel rows x [N, H*W] of square images")
    if not (np.issubdtype(img.dtype, np.number)) or (img.dtype != np.uint8 and not np.isfinite(img).all()):
        raise SelfSupError(f"{p}: images must be finite numbers (uint8 0..255 or float 0..1)")
    if img.dtype != np.uint8 and img.size and (img.min() < 0 or img.max() > 1):
        raise SelfSupError(f"{p}: float images must lie in [0, 1] (or give uint8 0..255)")
    y = arrays.get("y")
    if y is not None and y.shape[:1] != img.shape[:1]:
        raise SelfSupError(f"{p}: y has {y.shape[0]} rows for {img.shape[0]} images")
    return img, y, str(p)


def cache_root() -> Path:
    return Path(os.environ.get("DEEPHASH_CACHE", Path.home() / ".cache" / "deephash")) / "selfsup"


def cache_key(images: np.ndarray, config: SelfSupConfig, seed: int, device="cpu") -> str:
    """SHA-256 of the images' bytes (dtype and shape included), the configuration, the seed, the device type."""
    h = hashlib.sha256()
    a = np.ascontiguousarray(images)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    h.update(json.dumps({"config": asdict(config), "seed": int(seed), "device": torch.device(device).type,
                         "version": CACHE_VERSION}, sort_keys=True).encode())
    return h.hexdigest()[:24]


def _save_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def self_supervised_embeddings(data="fashion-mnist", out=None, *, config: SelfSupConfig = SelfSupConfig(),
                               seed: int = 0, device="cpu", cache_dir=None, progress: bool = True,
                               stream=None, clamp_subset: bool = False) -> dict:
    """Embeddings of ``data`` (see :func:`load_images`) by a SimCLR backbone trained on its images.

    Trains unless the cache holds this (images, configuration, seed, device type); resumes from the cache's
    checkpoint after an interruption. Writes ``out`` (``.npz`` with ``x`` and, when known, ``y``) if given.
    Returns ``{"x", "y", "path" (the cached embeddings), "trained" (bool), "train_seconds", "key", "history"}``.
    A ``config.subset`` larger than the data is refused, unless ``clamp_subset`` (the ``--quick`` default's
    1,024 images on a smaller data set): then every image is trained on."""
    config = config.check()
    if out is not None:
        check_out_file(out)  # before the training, not after it
    images, y, name = load_images(data)
    if config.subset is not None and config.subset > len(images) and not clamp_subset:
        raise SelfSupError(f"--subset {config.subset}: {name} has {len(images)} images")  # never clamped
    key = cache_key(images, config, seed, device)
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / key
    cached = folder / "embeddings.npz"
    info = {"key": key, "trained": False, "train_seconds": 0.0, "history": [], "path": cached}
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                x = z["x"]
                meta = json.loads(str(z["meta"]))
            if x.shape[0] != len(images):
                raise ValueError(f"{x.shape[0]} rows for {len(images)} images")
        except Exception as e:  # noqa: BLE001 - zip, key, JSON and shape errors all mean a damaged entry
            raise SelfSupError(f"{cached}: a damaged cache entry ({type(e).__name__}: {e}); "
                               f"delete {folder} to train again") from e
        info["history"] = meta.get("history", [])
        info["train_seconds"] = meta.get("train_seconds", 0.0)
    else:
        t0 = time.perf_counter()
        ckpt = Checkpoint(folder / "checkpoint.pt", resume=True)
        # Labels stay here: the training sees the images only.
        backbone = train_selfsup(images, config, seed, checkpoint=ckpt, device=device, progress=progress,
                                 stream=stream)
        x = embed(backbone, images, device=device)
        info.update(trained=True, train_seconds=time.perf_counter() - t0,
                    history=list(getattr(backbone, "history", []) or ckpt_history(ckpt)))
        torch.save(backbone.state_dict(), folder / "backbone.pt")
        meta = {"data": name, "config": asdict(config), "seed": seed, "device": torch.device(device).type,
                "train_seconds": info["train_seconds"], "history": info["history"], "torch": torch.__version__}
        # No labels in the cache: the key does not cover them.
        _save_npz(cached, x=x, meta=np.array(json.dumps(meta)))
    info["x"], info["y"] = x, y
    if out is not None:
        _save_npz(Path(out), **({"x": x, "y": y} if y is not None else {"x": x}))
    return info


def ckpt_history(ckpt: Checkpoint) -> list:
    if ckpt.path.exists():
        return list(torch.load(ckpt.path, map_location="cpu", weights_only=True)["history"])
    return []


def config_from(quick: bool = False, **given) -> SelfSupConfig:
    """The default (or ``--quick``) configuration with the given options (``None`` = not given) replaced."""
    base = QUICK if quick else SelfSupConfig()
    return replace(base, **{k: v for k, v in given.items() if v is not None}).check()
