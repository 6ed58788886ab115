"""Transfer-learning embeddings of an image folder with a torchvision backbone (ViT-B/16 by default).

``DIR/<class>/<image>`` -> ``FILE.npz`` with ``x`` (``float32[N, D]``, the backbone's penultimate
features), ``y`` (class ids in sorted folder order) and ``paths`` (each row's image, relative to the
``.npz``'s folder), ready for ``--data FILE.npz``. Weights are never
downloaded: pass ``--weights PATH`` (a torchvision ``state_dict``), or ``--untrained`` for random
weights (tests). torchvision is imported only here, so the rest of deephash does not need it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..codes import check_out_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class EmbedError(RuntimeError):
    pass


def _torchvision():
    try:
        import torchvision  # noqa: F401
        from torchvision import models
        from PIL import Image
    except Exception as e:  # noqa: BLE001 - ImportError, or a torchvision built for another torch
        raise EmbedError(
            "deephash embed needs torchvision (built for the installed torch) and Pillow: "
            f"pip install torchvision pillow ({type(e).__name__}: {e})") from e
    return models, Image


def _backbone(arch: str, weights: str | None, untrained: bool):
    models, _ = _torchvision()
    if not hasattr(models, arch):
        raise EmbedError(f"unknown torchvision architecture {arch!r}")
    net = getattr(models, arch)(weights=None)
    if weights is not None:
        p = Path(weights)
        if not p.is_file():
            raise EmbedError(f"{p}: weights file not found")
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
            net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except Exception as e:  # noqa: BLE001
            raise EmbedError(f"{p}: cannot load {arch} weights ({e})") from e
    elif not untrained:
        raise EmbedError(
            f"no weights for {arch}: deephash does not download them. Save torchvision's pretrained "
            f"state_dict (e.g. models.ViT_B_16_Weights.IMAGENET1K_V1) to a file and pass --weights PATH, "
            f"or pass --untrained for random weights")
    # Penultimate features: drop the classification head.
    for head in ("heads", "fc", "classifier"):
        if hasattr(net, head):
            setattr(net, head, torch.nn.Identity())
            break
    return net.eval()


def list_images(root) -> tuple[list[Path], np.ndarray]:
    root = Path(root)
    if not root.is_dir():
        raise EmbedError(f"{root}: not a directory (expected DIR/<class>/<image>)")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for c, d in enumerate(classes):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") and f.is_file():
                files.append(f)
                labels.append(c)
    if not files:
        raise EmbedError(f"{root}: no images found (expected DIR/<class>/<image>)")
    return files, np.asarray(labels, dtype=np.int64)


def embed_images(images, out, *, arch: str = "vit_b_16", weights: str | None = None, untrained: bool = False,
                 batch_size: int = 32, image_size: int = 224) -> np.ndarray:
    check_out_file(out)
    files, labels = list_images(images)
    net = _backbone(arch, weights, untrained)
    _, Image = _torchvision()
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

    def load(f):
        try:
            img = Image.open(f).convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        except Exception as e:  # noqa: BLE001
            raise EmbedError(f"{f}: cannot read image ({e})") from e
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (t - mean) / std

    feats = []
    with torch.no_grad():
        for s in range(0, len(files), batch_size):
            feats.append(net(torch.stack([load(f) for f in files[s:s + batch_size]])).float().numpy())
    x = np.concatenate(feats)
    # Each row's image, relative to the .npz's folder, so that neighbour grids can draw the items.
    base = Path(out).resolve().parent
    paths = np.array([os.path.relpath(Path(f).resolve(), base) for f in files])
    from ..codes import write_npz
    write_npz(out, x=x, y=labels, paths=paths)
    return x
