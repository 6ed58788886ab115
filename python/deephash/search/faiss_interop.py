"""FAISS interoperability for :class:`deephash.Index` (faiss is optional: ``pip install faiss-cpu``).

FAISS's binary indexes hold the same packed bytes as deephash (bit ``j`` = bit ``j % 8`` of byte
``j // 8``), so codes move across unchanged and every distance is the same. FAISS binary indexes
count whole bytes: a ``b``-bit index goes to FAISS as ``8 * ceil(b / 8)`` dimensions (the padding
bits are zero, so distances do not change); pass ``bits=`` to :func:`from_faiss` to get ``b`` back.
"""
from __future__ import annotations

import numpy as np
import torch

from .index_file import IndexError_


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError("FAISS interoperability needs faiss: pip install faiss-cpu") from e
    return faiss


def to_faiss(index):
    """``IndexBinaryFlat`` of the live codes, wrapped in ``IndexBinaryIDMap`` unless the ids are
    ``0..len-1`` in order (FAISS's implicit ids)."""
    faiss = _faiss()
    codes, ids = index.codes, index.ids
    flat = faiss.IndexBinaryFlat(8 * index.nbytes)
    if torch.equal(ids, torch.arange(len(ids), dtype=torch.int64)):
        flat.add(np.ascontiguousarray(codes.numpy()))
        return flat
    mapped = faiss.IndexBinaryIDMap(flat)
    # (faiss's wrapper keeps a reference to flat, so the inner index lives as long as it.)
    mapped.add_with_ids(np.ascontiguousarray(codes.numpy()), np.ascontiguousarray(ids.numpy()))
    return mapped


def from_faiss(cls, index, bits: int | None = None):
    """A ``cls`` (Index) holding the codes and ids of a FAISS ``IndexBinaryFlat`` or an
    ``IndexBinaryIDMap`` / ``IndexBinaryIDMap2`` around one."""
    faiss = _faiss()
    inner, ids = index, None
    if isinstance(index, (faiss.IndexBinaryIDMap, faiss.IndexBinaryIDMap2)):
        inner = faiss.downcast_IndexBinary(index.index)
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    if not isinstance(inner, faiss.IndexBinaryFlat):
        raise IndexError_(f"from_faiss takes IndexBinaryFlat or IndexBinaryIDMap around one, got "
                          f"{type(index).__name__}" + ("" if inner is index else f" around {type(inner).__name__}"))
    nbytes = inner.code_size
    bits = 8 * nbytes if bits is None else int(bits)
    if (bits + 7) // 8 != nbytes:
        raise IndexError_(f"bits={bits} does not fit the FAISS index's {nbytes}-byte codes")
    codes = faiss.vector_to_array(inner.xb).reshape(inner.ntotal, nbytes)
    return cls(bits).add(torch.from_numpy(codes.copy()), ids)
