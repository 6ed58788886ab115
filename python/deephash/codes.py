"""Binary codes and labels as the deephash_ext ops take them, and the codes file.

- :func:`as_packed`: packed ``uint8[N, ceil(b/8)]`` codes (bit j of a row is bit ``j % 8`` of byte
  ``j // 8``, numpy's ``packbits(bitorder="little")`` layout) from a ±1 / real / bool matrix or codes
  already packed.
- :func:`as_labels`: class ids ``int64[N]`` or multi-hot ``uint8[N, C]``, the label form of ``topk_map``.
- :func:`relevance`: whether two items are relevant to each other (same class id, or at least one shared
  label), the one definition the metrics, the ops' references and the supervised methods use.
- :func:`save_codes` / :func:`load_codes`: the codes file (``.npz``: packed ``codes``, ``bits``, ``ids``
  and, when known, ``labels``); docs/formats.md describes it.
"""
from __future__ import annotations

import numpy as np
import torch

import deephash_ext
from deephash_ext.reference import relevance

__all__ = ["as_packed", "as_labels", "relevance", "save_codes", "load_codes"]


def as_packed(codes) -> torch.Tensor:
    """Packed ``uint8[N, ceil(b/8)]`` codes from packed codes or a real / ±1 / 0-1 bool matrix ``[N, b]``
    (a real matrix: bit = value > 0; a 0/1 ``uint8`` matrix must be given as bool or real)."""
    t = torch.as_tensor(codes)
    if t.dtype == torch.uint8:
        return t.contiguous()
    return deephash_ext.pack_bits(t.contiguous())


def as_labels(y) -> torch.Tensor:
    """Class ids ``[N]`` as ``int64``, multi-hot ``[N, C]`` as ``uint8``."""
    t = torch.as_tensor(np.asarray(y))
    return t.to(torch.int64) if t.dim() == 1 else t.to(torch.uint8)


def save_codes(path, codes, bits: int, labels=None, ids=None) -> None:
    """Write a codes file: ``codes`` (packed or ±1 / real ``[N, bits]``), ids default to ``0..N-1``."""
    packed = as_packed(codes).numpy()
    arrays = {"codes": packed, "bits": np.int64(bits),
              "ids": np.arange(len(packed), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    np.savez(path, **arrays)


def load_codes(path) -> dict:
    """A codes file as a dict of arrays (``bits`` as an int); a file that is not one is refused by name."""
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read a codes file ({e})") from e
    if "codes" not in d or "bits" not in d or d["codes"].dtype != np.uint8 or d["codes"].ndim != 2:
        raise ValueError(f"{path}: not a deephash codes file (needs uint8 'codes' [N, bytes] and 'bits')")
    d["bits"] = int(d["bits"])
    d.setdefault("ids", np.arange(len(d["codes"]), dtype=np.int64))  # row numbers, as save_codes' default
    if d["codes"].shape[1] != (d["bits"] + 7) // 8:
        raise ValueError(f"{path}: codes have {d['codes'].shape[1]} bytes per row, {d['bits']} bits need "
                         f"{(d['bits'] + 7) // 8}")
    return d
