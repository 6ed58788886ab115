"""The small interface every hashing method of deephash shares.

A method maps float embeddings ``[N, d]`` to ``bits``-bit codes: :meth:`fit` learns from training
embeddings, :meth:`encode` returns ±1 ``float32`` codes ``[N, bits]`` (pack them with
``deephash_ext.pack_bits`` or give them to :class:`deephash.Index`), :meth:`save` / :meth:`load`
keep the fitted state in one ``torch.save`` file.
"""
from __future__ import annotations

import torch


class HashMethod:
    """Base class: subclasses set ``name`` and implement ``fit``, ``encode``, ``state_dict``, ``load_state_dict``."""

    name = "base"

    def __init__(self, bits: int, seed: int = 0):
        if not 8 <= int(bits) <= 1024:
            raise ValueError(f"bits must be in 8..1024, got {bits}")
        self.bits = int(bits)
        self.seed = int(seed)

    def fit(self, x_train) -> "HashMethod":
        raise NotImplementedError

    def encode(self, x) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def save(self, path) -> None:
        torch.save({"method": self.name, "bits": self.bits, "seed": self.seed, "state": self.state_dict()}, path)

    @classmethod
    def load(cls, path) -> "HashMethod":
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("method") != cls.name:
            raise ValueError(f"{path}: holds a {blob.get('method')!r} model, not {cls.name!r}")
        m = cls(blob["bits"], seed=blob["seed"])
        m.load_state_dict(blob["state"])
        return m


def as_float(x) -> torch.Tensor:
    return torch.as_tensor(x).to(torch.float32)
