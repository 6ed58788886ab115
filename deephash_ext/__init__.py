"""deephash_ext: the C++/CUDA ops of deephash, registered as torch.ops.deephash_ext.*.

Importing this package loads the compiled extension (which registers the kernels with the
dispatcher) and the fake kernels / autograd formulas in :mod:`deephash_ext.ops`.
"""
import torch  # noqa: F401  (loads libtorch, which _C links against)

from . import _C  # noqa: F401  (registers the ops)
from . import ops as _ops  # noqa: F401  (registers fake kernels and autograd)
from .ops import (
    eigh,
    hamming_distance,
    hamming_range,
    hamming_topk,
    mih_build,
    mih_search,
    mih_substrings,
    normalized_laplacian,
    pack_bits,
    spectral_filter,
    topk_map,
    unpack_bits,
)

cuda_compiled = _C.cuda_compiled
simd_level = _C.simd_level
openmp_compiled = _C.openmp_compiled

__all__ = [
    "pack_bits",
    "unpack_bits",
    "hamming_distance",
    "hamming_topk",
    "hamming_range",
    "topk_map",
    "mih_build",
    "mih_search",
    "mih_substrings",
    "normalized_laplacian",
    "eigh",
    "spectral_filter",
    "cuda_compiled",
    "simd_level",
    "openmp_compiled",
]
