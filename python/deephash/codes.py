"""Binary codes and labels as the deephash_ext ops take them, and the codes file.

- :func:`as_packed`: packed ``uint8[N, ceil(b/8)]`` codes (bit j of a row is bit ``j % 8`` of byte
  ``j // 8``, numpy's ``packbits(bitorder="little")`` layout) from a ±1 / real / bool matrix or codes
  already packed.
- :func:`as_labels`: class ids ``int64[N]`` or multi-hot ``uint8[N, C]``, the label form of ``topk_map``.
- :func:`relevance`: whether two items are relevant to each other (same class id, or at least one shared
  label), the one definition the metrics, the ops' references and the supervised methods use.
- :func:`save_codes` / :func:`load_codes`: the codes file (``.npz``: packed ``codes``, ``bits``, ``ids``
  and, when known, ``labels``); docs/formats.md describes it. Files are written to exactly the path
  given (:func:`write_npz`), whatever its suffix.
"""
from __future__ import annotations

import math
import operator
import os
from pathlib import Path

import numpy as np
import torch

import deephash_ext
from deephash_ext.reference import relevance

from .atomic import atomic_write, open_regular

__all__ = ["as_packed", "as_labels", "relevance", "save_codes", "load_codes", "write_npz"]


def as_packed(codes) -> torch.Tensor:
    """Packed ``uint8[N, ceil(b/8)]`` codes from packed codes or a real / ±1 / 0-1 bool matrix ``[N, b]``
    (a real matrix: bit = value > 0; a 0/1 ``uint8`` matrix must be given as bool or real)."""
    t = torch.as_tensor(codes)
    if t.dtype == torch.uint8:
        return t.contiguous()
    return deephash_ext.pack_bits(t.contiguous())


def as_labels(y, what: str = "labels") -> torch.Tensor:
    """Class ids ``[N]`` as ``int64``, multi-hot ``[N, C]`` as ``uint8`` (any non-zero entry is a label).

    Class ids may come in a float dtype only when every value is an integer; ``NaN``, infinities, other
    fractions, strings and any other shape are refused with a ``ValueError`` naming ``what``."""
    a = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if a.ndim not in (1, 2):
        raise ValueError(f"{what} must be class ids [N] or multi-hot [N, C], got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numbers (class ids or multi-hot 0/1), got dtype {a.dtype}")
    if a.dtype.kind == "f" and a.size:
        bad = ~np.isfinite(a)
        if bad.any():
            raise ValueError(f"{what} hold {a[bad][0]} (at row {np.argwhere(bad)[0][0]})")
        if a.ndim == 1:
            bad = (a != np.round(a)) | (np.abs(a) >= 2.0**62)
            if bad.any():
                i = int(np.argwhere(bad)[0][0])
                raise ValueError(f"{what}: class ids must be integers, got {a[i]!r} at row {i}")
    if a.ndim == 1:
        return torch.from_numpy(a.astype(np.int64))
    return torch.from_numpy((a != 0).astype(np.uint8))


MAX_BITS = 1 << 20  # the widest codes of the index file format (docs/formats.md)


def _integers(a, what: str) -> np.ndarray:
    """``a`` (an array, tensor or sequence) as ``int64`` when it holds integers of that range (any integer
    dtype, or floats of integer value); anything else (fractions, NaN, values that would wrap) is refused
    with a ``ValueError`` naming ``what``, never truncated."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        a = (a.double() if a.is_floating_point() else a).numpy()
    a = np.asarray(a)
    if a.dtype.kind == "O":
        try:
            a = np.asarray([operator.index(v) for v in a.reshape(-1)] or np.empty(0, np.int64)).reshape(a.shape)
        except TypeError:
            raise ValueError(f"{what} must be integers, got {a.reshape(-1)[:3].tolist()}") from None
    if a.dtype.kind in "ib":
        return a.astype(np.int64)
    if a.dtype.kind == "u":
        if a.size and a.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{what} must be int64 integers, got {int(a.max())} (>= 2^63)")
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all() and (np.abs(a) < 2.0**62).all():
        return a.astype(np.int64)
    shown = a.reshape(-1)[:3].tolist() if a.dtype.kind in "fc" else a.dtype
    raise ValueError(f"{what} must be integers, got {shown}")


def as_integer(value, what: str) -> int:
    """One integer (a Python, numpy or 0-d tensor integer, or a float of integer value), else a
    ``ValueError`` naming ``what``: ``2.9`` is refused, not truncated; so are booleans."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise ValueError(f"{what} must be an integer, got {value!r}")


def save_codes(path, codes, bits: int, labels=None, ids=None) -> None:
    """Write a codes file: ``codes`` (packed or ±1 / real ``[N, bits]``), ids default to ``0..N-1``."""
    packed = as_packed(codes).numpy()
    arrays = {"codes": packed, "bits": np.int64(bits),
              "ids": np.arange(len(packed), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    write_npz(path, **arrays)


def check_out_file(path) -> Path:
    """``path`` as a file that can be written: not a directory, in a folder that exists. Raises
    ``ValueError`` naming it, before the work whose result it will hold (training, embedding)."""
    dest = Path(path)
    if dest.is_dir():
        raise ValueError(f"{path}: is a directory")
    if not dest.parent.is_dir():
        raise ValueError(f"{path}: no such directory {dest.parent}")
    return dest


def write_npz(path, **arrays) -> None:
    """``np.savez`` to exactly ``path`` (``np.savez`` itself appends ``.npz`` to a name without it), replacing
    it atomically (:func:`deephash.atomic.atomic_write`)."""
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_codes(path) -> dict:
    """A codes file as a dict of arrays (``bits`` as an int, ``ids`` as ``int64``, ``labels`` checked as
    :func:`as_labels` takes them); a file that is not one is refused with a ``ValueError`` naming it."""
    try:
        with os.fdopen(open_regular(path), "rb") as f, np.load(f, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except OSError as e:
        raise ValueError(f"{path}: cannot read a codes file ({e.strerror or e})") from e
    except Exception as e:  # noqa: BLE001 - zip, npy header and pickle errors all mean "not a codes file"
        raise ValueError(f"{path}: cannot read a codes file ({e})") from e
    if "codes" not in d or "bits" not in d or d["codes"].dtype != np.uint8 or d["codes"].ndim != 2:
        raise ValueError(f"{path}: not a deephash codes file (needs uint8 'codes' [N, bytes] and 'bits')")
    bits = d["bits"]
    integral = bits.dtype.kind in "iu" or (bits.dtype.kind == "f" and np.isfinite(bits) and bits == np.round(bits))
    if bits.shape != () or not integral:
        raise ValueError(f"{path}: bits must be one integer, got {bits.tolist() if bits.size < 8 else bits.shape}")
    d["bits"] = int(bits)
    if not 1 <= d["bits"] <= MAX_BITS:
        raise ValueError(f"{path}: bits must be in 1..{MAX_BITS}, got {d['bits']}")
    n, nbytes = d["codes"].shape
    if nbytes != (d["bits"] + 7) // 8:
        raise ValueError(f"{path}: codes have {nbytes} bytes per row, {d['bits']} bits need "
                         f"{(d['bits'] + 7) // 8}")
    if d["bits"] % 8 and n:
        bad = np.flatnonzero(d["codes"][:, -1] >> (d["bits"] % 8))
        if bad.size:  # they would count in every distance
            raise ValueError(f"{path}: code {bad[0]} has non-zero padding bits (a {d['bits']}-bit code uses only "
                             f"the low {d['bits'] % 8} bits of its last byte)")
    if "ids" in d:
        if d["ids"].shape != (n,):
            raise ValueError(f"{path}: ids must be int64[{n}], one per code; got shape {d['ids'].shape}")
        d["ids"] = _integers(d["ids"], f"{path}: ids")
    else:
        d["ids"] = np.arange(n, dtype=np.int64)  # row numbers, as save_codes' default
    if "labels" in d:
        lab = d["labels"]
        as_labels(lab, f"{path}: labels")
        if lab.shape[0] != n:
            raise ValueError(f"{path}: {lab.shape[0]} rows of labels for {n} codes")
    return d
