// Input validation of the spectral ops (normalized_laplacian, eigh, spectral_filter), shared by the
// CPU and CUDA kernels so both backends refuse the same inputs with the same messages. Kept apart
// from checks.h, which holds the checks of the retrieval ops.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>
#include <string_view>

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

}  // namespace deephash
