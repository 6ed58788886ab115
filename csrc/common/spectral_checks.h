// Input validation of the spectral ops (normalized_laplacian, eigh, spectral_filter), shared by the
// CPU and CUDA kernels so both backends refuse the same inputs with the same messages. Kept apart
// from checks.h, which holds the checks of the retrieval ops.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>
#include <string_view>

#include "common/checks.h"
#include "common/spectral_basis.h"

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

inline SpectralBasis parse_basis(std::string_view basis) {
  if (basis == "chebyshev") return SpectralBasis::kChebyshev;
  if (basis == "spline") return SpectralBasis::kSpline;
  if (basis == "fourier") return SpectralBasis::kFourier;
  TORCH_CHECK(false, "spectral_filter: basis must be \"chebyshev\", \"spline\" or \"fourier\", got \"",
              std::string(basis), "\"");
}

// x [Bt, n, d], L [Bt, n, n], theta [K] or [Bt, K]: same dtype and device, matching Bt and n, and a
// K the basis can use. Returns K.
inline int64_t check_spectral_filter_inputs(const at::Tensor& x, const at::Tensor& L, const at::Tensor& theta,
                                            SpectralBasis basis) {
  constexpr const char* op = "spectral_filter";
  check_square_batch(L, op, "L");
  TORCH_CHECK(x.dim() == 3, op, ": x must be [Bt, n, d], got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == L.scalar_type() && theta.scalar_type() == L.scalar_type(), op,
              ": x, L and theta must have the same dtype, got ", x.scalar_type(), ", ", L.scalar_type(), " and ",
              theta.scalar_type());
  TORCH_CHECK(x.device() == L.device() && theta.device() == L.device(), op,
              ": x, L and theta must be on the same device, got ", x.device(), ", ", L.device(), " and ",
              theta.device());
  TORCH_CHECK(x.size(0) == L.size(0), op, ": x and L must have the same batch size, got ", x.size(0), " and ",
              L.size(0));
  TORCH_CHECK(x.size(1) == L.size(1), op, ": x has ", x.size(1), " nodes per graph but L has ", L.size(1));
  TORCH_CHECK(theta.dim() == 1 || theta.dim() == 2, op, ": theta must be [K] (shared) or [Bt, K] (per graph), got shape ",
              theta.sizes());
  if (theta.dim() == 2)
    TORCH_CHECK(theta.size(0) == L.size(0), op, ": per-graph theta must have one row per graph, got ",
                theta.size(0), " rows for ", L.size(0), " graphs");
  const int64_t K = theta.size(-1);
  switch (basis) {
    case SpectralBasis::kChebyshev:
      TORCH_CHECK(K >= 1, op, ": the chebyshev basis needs K >= 1 coefficients, got K=", K);
      break;
    case SpectralBasis::kSpline:
      TORCH_CHECK(K >= 4, op, ": the cubic spline basis needs K >= 4 coefficients, got K=", K);
      break;
    case SpectralBasis::kFourier:
      TORCH_CHECK(K >= 1 && K <= L.size(1), op, ": the fourier basis keeps the K smallest eigenpairs, so it needs 1 <= K <= n, got K=", K,
                  " with n=", L.size(1));
      break;
  }
  return K;
}

// _spectral_filter_backward: the forward's inputs (x, theta) and outputs (evals [Bt, n], evecs
// [Bt, n, n], zx [Bt, m, d] with m = K for fourier, else n) with grad_y like x; one dtype, one
// device. Returns K.
inline int64_t check_spectral_filter_backward_inputs(const at::Tensor& grad_y, const at::Tensor& x,
                                                     const at::Tensor& zx, const at::Tensor& theta,
                                                     const at::Tensor& evals, const at::Tensor& evecs,
                                                     SpectralBasis basis) {
  constexpr const char* op = "spectral_filter_backward";
  const int64_t K = check_spectral_filter_inputs(x, evecs, theta, basis);
  const int64_t Bt = evecs.size(0), n = evecs.size(1), d = x.size(2);
  const int64_t m = basis == SpectralBasis::kFourier ? K : n;
  TORCH_CHECK(grad_y.sizes() == x.sizes(), op, ": grad_y must have the shape of x, got ", grad_y.sizes(), " and ",
              x.sizes());
  TORCH_CHECK(evals.dim() == 2 && evals.size(0) == Bt && evals.size(1) == n, op, ": evals must be [Bt, n], got ",
              evals.sizes());
  TORCH_CHECK(zx.dim() == 3 && zx.size(0) == Bt && zx.size(1) == m && zx.size(2) == d, op, ": zx must be [Bt, ", m,
              ", d], got ", zx.sizes());
  TORCH_CHECK(grad_y.scalar_type() == x.scalar_type() && zx.scalar_type() == x.scalar_type() &&
                  evals.scalar_type() == x.scalar_type(),
              op, ": grad_y, zx and evals must have the dtype of x (", x.scalar_type(), "), got ",
              grad_y.scalar_type(), ", ", zx.scalar_type(), " and ", evals.scalar_type());
  check_same_device(op, {{"x", x}, {"grad_y", grad_y}, {"zx", zx}, {"theta", theta}, {"evals", evals},
                         {"evecs", evecs}});
  return K;
}

}  // namespace deephash
