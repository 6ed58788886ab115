// Input validation of the spectral ops (normalized_laplacian, eigh, spectral_filter), shared by the
// CPU and CUDA kernels so both backends refuse the same inputs with the same messages. Kept apart
// from checks.h, which holds the checks of the retrieval ops; spectral_filter's own checks are in
// csrc/spectral_filter.cpp, which runs them once for every backend.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/checks.h"

namespace deephash {

// Symmetry tolerance: max |L_ij - L_ji| <= kSymmetryTol · max(1, max |L|) per graph. Loose enough for
// a Laplacian assembled in float32 and for the one-sided perturbations of gradcheck; the kernels
// then work on (L + Lᵀ) / 2, so the gradient with respect to L is symmetric.
constexpr double kSymmetryTol = 1e-4;

// A batch of square matrices [Bt, n, n] of dtype float32 or float64.
inline void check_square_batch(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 3, op, ": ", name, " must be a batch of matrices [Bt, n, n], got shape ", t.sizes());
  TORCH_CHECK(t.size(1) == t.size(2), op, ": ", name, " must be square [Bt, n, n], got shape ", t.sizes());
}

// _normalized_laplacian_backward: grad_L like A (shape, dtype, device).
inline void check_normalized_laplacian_backward_inputs(const at::Tensor& grad_L, const at::Tensor& A) {
  check_square_batch(A, "normalized_laplacian_backward", "A");
  TORCH_CHECK(grad_L.sizes() == A.sizes() && grad_L.scalar_type() == A.scalar_type(),
              "normalized_laplacian_backward: grad_L must match A, got ", grad_L.sizes(), " ", grad_L.scalar_type(),
              " and ", A.sizes(), " ", A.scalar_type());
  check_same_device("normalized_laplacian_backward", {{"A", A}, {"grad_L", grad_L}});
}

}  // namespace deephash
