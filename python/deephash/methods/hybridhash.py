"""HybridHash: a hybrid convolution + self-attention backbone with a hash layer, on images.

"HybridHash: Hybrid Convolutional and Self-Attention Deep Hashing for Image
Retrieval" (ICMR 2024). The architecture the paper describes, at a configurable size:

- a convolutional stem, then ViT-like patch tokens;
- stages of Transformer blocks (pre-norm multi-head self-attention and MLP) that halve the resolution
  and widen the channels from stage to stage;
- an interaction module after each stage: a depthwise 3x3 convolution and a pointwise convolution over
  the token grid (residual), which lets neighbouring image blocks exchange information;
- global average pooling and the hash layer (``Linear -> bits``).

``size="small"`` (default; two stages of widths 32/64, one block each, trains on 2 CPU cores in
minutes) or ``size="large"`` (three stages of widths 96/192/384, blocks 2/2/6, for a GPU).

Loss: HybridHash is a symmetric pairwise method; this implementation uses the pairwise likelihood of
DPSH (Li, Wang & Kang, IJCAI 2016), ``theta_ij = u_i . u_j / 2``,
``L = mean_ij (log(1 + exp(theta_ij)) - s_ij theta_ij) + eta mean((u - sign(u))^2)`` with
``u = tanh(z)`` (``eta = 0.1``).

Input: images flattened to rows. ``image_shape=(C, H, W)``; left ``None``, 784-d rows are read as
1x28x28 (Fashion-MNIST / MNIST) and 3072-d rows as 3x32x32 (CIFAR); any other width is refused, since
plain embeddings are not images. Supervised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..codes import relevance
from .deep import DeepHashMethod

KNOWN_IMAGE_SHAPES = {784: (1, 28, 28), 3072: (3, 32, 32)}
CONFIGS = {
    "small": {"stem": 16, "dims": (32, 64), "depths": (1, 1), "heads": (2, 4)},
    "large": {"stem": 48, "dims": (96, 192, 384), "depths": (2, 2, 6), "heads": (3, 6, 12)},
}


class Block(nn.Module):
    """Pre-norm Transformer block over tokens ``[B, T, D]``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.n1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.n2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, t):
        h = self.n1(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        return t + self.mlp(self.n2(t))


class Interaction(nn.Module):
    """Depthwise 3x3 + pointwise convolution over the token grid, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.bn = nn.BatchNorm2d(dim)
        self.pw = nn.Conv2d(dim, dim, 1)

    def forward(self, g):
        return g + self.pw(F.gelu(self.bn(self.dw(g))))


class HybridNet(nn.Module):
    def __init__(self, image_shape, bits: int, size: str = "small"):
        super().__init__()
        if size not in CONFIGS:
            raise ValueError(f"hybridhash: size must be one of {sorted(CONFIGS)}, got {size!r}")
        cfg = CONFIGS[size]
        self.image_shape = tuple(int(v) for v in image_shape)
        c_in = self.image_shape[0]
        stem = cfg["stem"]
        self.stem = nn.Sequential(nn.Conv2d(c_in, stem, 3, padding=1), nn.BatchNorm2d(stem), nn.GELU(),
                                  nn.Conv2d(stem, stem, 3, padding=1), nn.BatchNorm2d(stem), nn.GELU())
        self.downs = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.inter = nn.ModuleList()
        prev = stem
        for i, (dim, depth, heads) in enumerate(zip(cfg["dims"], cfg["depths"], cfg["heads"])):
            # stage 0: 4x4 patch tokens; later stages halve the resolution (patch merging by a strided conv)
            self.downs.append(nn.Conv2d(prev, dim, 4, stride=4) if i == 0 else nn.Conv2d(prev, dim, 3, stride=2, padding=1))
            self.stages.append(nn.ModuleList(Block(dim, heads) for _ in range(depth)))
            self.inter.append(Interaction(dim))
            prev = dim
        self.norm = nn.LayerNorm(prev)
        self.hash = nn.Linear(prev, bits)

    def forward(self, x):
        g = self.stem(x.view(x.shape[0], *self.image_shape))
        for down, blocks, inter in zip(self.downs, self.stages, self.inter):
            g = down(g)
            b, d, h, w = g.shape
            t = g.flatten(2).transpose(1, 2)
            for blk in blocks:
                t = blk(t)
            g = inter(t.transpose(1, 2).reshape(b, d, h, w))
        return self.hash(self.norm(g.mean((2, 3))))


class HybridHash(DeepHashMethod):
    name = "hybridhash"
    supervised = True
    options = dict(DeepHashMethod.options, epochs=15, lr=1e-3, batch_size=64, image_shape=None, size="small",
                   eta=0.1)

    def resolved_shape(self, dim: int):
        shape = self.image_shape if self.image_shape is not None else KNOWN_IMAGE_SHAPES.get(dim)
        if shape is None:
            raise ValueError(
                f"hybridhash trains on images, but the data are {dim}-d rows, which are not a known image size "
                f"(784 = 1x28x28, 3072 = 3x32x32); plain embeddings cannot be used. If the rows are flattened "
                f"images, pass image_shape=(C, H, W)")
        shape = tuple(int(v) for v in shape)
        if len(shape) != 3 or shape[0] * shape[1] * shape[2] != dim:
            raise ValueError(f"hybridhash: image_shape {shape} does not match {dim}-d rows")
        return shape

    def check_input(self, x):
        self.image_shape = self.resolved_shape(int(x.shape[1]))

    def normalize(self, x):
        # per-pixel centring would blur image statistics; centre and scale with the global mean instead
        x = torch.as_tensor(x).to(torch.float32)
        return (x - self.mean.mean()) / self.scale

    def build_net(self, in_dim):
        return HybridNet(self.resolved_shape(in_dim), self.bits, str(self.size))

    def loss(self, out, x, y, idx, step):
        u = torch.tanh(out)
        s = relevance(y, y).to(torch.float32)
        n = out.shape[0]
        off = ~torch.eye(n, dtype=torch.bool, device=out.device)
        theta = (u @ u.T) / 2
        nll = (F.softplus(theta) - s * theta)[off].mean()
        quant = (u - torch.sign(u).detach()).pow(2).mean()
        return nll + self.eta * quant
