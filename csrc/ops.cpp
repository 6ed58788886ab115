// Every schema of the deephash_ext library, in one place. Kernels register per backend in
// csrc/cpu/*.cpp and csrc/cuda/*.cu; fake kernels and autograd live in deephash_ext/ops.py.
#include <torch/library.h>

TORCH_LIBRARY(deephash_ext, m) {
  // Packed binary codes: uint8[..., ceil(b/8)], bit j = bit (j % 8) of byte (j / 8), LSB first.
  m.def("pack_bits(Tensor x) -> Tensor");
  m.def("unpack_bits(Tensor packed, int bits) -> Tensor");

  // Retrieval over packed codes.
  m.def("hamming_distance(Tensor q, Tensor db) -> Tensor");
  m.def("hamming_topk(Tensor q, Tensor db, int k) -> (Tensor, Tensor)");
  m.def("topk_map(Tensor q, Tensor db, Tensor q_labels, Tensor db_labels, int k, str ties) -> Tensor");
}
