// Every schema of the deephash_ext library, in one place. Kernels register per backend in
// csrc/cpu/*.cpp and csrc/cuda/*.cu, except spectral_filter's, whose host code in
// csrc/spectral_filter.cpp registers itself once per backend over that backend's kernels; fake
// kernels and autograd live in deephash_ext/ops.py.
#include <torch/library.h>

TORCH_LIBRARY(deephash_ext, m) {
  // Packed binary codes: uint8[..., ceil(b/8)], bit j = bit (j % 8) of byte (j / 8), LSB first.
  m.def("pack_bits(Tensor x) -> Tensor");
  m.def("unpack_bits(Tensor packed, int bits) -> Tensor");

  // Retrieval over packed codes.
  m.def("hamming_distance(Tensor q, Tensor db) -> Tensor");
  m.def("hamming_topk(Tensor q, Tensor db, int k) -> (Tensor, Tensor)");
  m.def("topk_map(Tensor q, Tensor db, Tensor q_labels, Tensor db_labels, int k, str ties) -> Tensor");
  // Every row within radius: (lims int64[Q + 1], distances int32[M], rows int64[M]), FAISS's range-search
  // layout; query i's hits are [lims[i], lims[i + 1]), ordered by (distance, row).
  m.def("hamming_range(Tensor q, Tensor db, int radius) -> (Tensor, Tensor, Tensor)");

  // Spectral graph filtering over a batch of graphs [Bt, n, n].
  m.def("normalized_laplacian(Tensor A) -> Tensor");
  m.def("_normalized_laplacian_backward(Tensor grad_L, Tensor A) -> Tensor");
  m.def("eigh(Tensor L) -> (Tensor, Tensor)");
  // spectral_filter is CompositeImplicitAutograd (csrc/spectral_filter.cpp): it returns the first output of
  // _spectral_filter_forward, which carries the autograd and hands its one eigendecomposition
  // (evals, evecs) and Uᵀ x to the backward. The backward returns an empty tensor [0] for every gradient
  // that output_mask (x, L, theta) does not ask for.
  m.def("spectral_filter(Tensor x, Tensor L, Tensor theta, str basis) -> Tensor");
  // The forward returns (y, evals, evecs, zx), zx = Uᵀ x (fourier: U_Kᵀ x), all saved for the backward.
  m.def("_spectral_filter_forward(Tensor x, Tensor L, Tensor theta, str basis) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "_spectral_filter_backward(Tensor grad_y, Tensor x, Tensor zx, Tensor theta, Tensor evals, Tensor evecs, "
      "str basis, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");

  // Multi-index hashing (exact k nearest codes, CPU only; layout in csrc/common/mih_tables.h).
  // mih_build -> (rows int32[m, N], offsets int32[m, U + 1], slots int64[m, P], bucket_codes uint8[m, N, B]).
  m.def("mih_build(Tensor codes, int bits, int m) -> (Tensor, Tensor, Tensor, Tensor)");
  // Returns exactly hamming_topk(q, codes, k); mode "auto" scans where probing would cost more,
  // "probe" always probes.
  m.def(
      "mih_search(Tensor q, Tensor codes, Tensor rows, Tensor offsets, Tensor slots, Tensor bucket_codes, int bits, "
      "int k, str mode) -> "
      "(Tensor, Tensor)");
}
