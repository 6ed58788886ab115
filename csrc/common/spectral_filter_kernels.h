// The parts of spectral_filter that differ per backend. csrc/spectral_filter.cpp runs everything
// else once for every device (checks, empty inputs, the batched products of forward and backward)
// and calls these; csrc/cpu/spectral_filter_kernels.cpp and csrc/cuda/spectral_filter_cuda.cu
// define a table each. Tensors are float32/float64 on the backend's device, K = theta.size(-1).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

#include "common/spectral_basis.h"

namespace deephash {

struct SpectralFilterKernels {
  // (values [Bt, n] ascending, vectors [Bt, n, n] with orthonormal columns) of (L + Lᵀ)/2, after
  // refusing a graph that is not finite or not symmetric to within kSymmetryTol, in messages that
  // name spectral_filter.
  std::tuple<at::Tensor, at::Tensor> (*eigh)(const at::Tensor& L);

  // g(λ_i) [Bt, n] of the chebyshev or spline basis; evals [Bt, n], theta contiguous [K] or [Bt, K].
  at::Tensor (*response)(const at::Tensor& evals, const at::Tensor& theta, SpectralBasis basis);

  // The Daleckii–Krein weights W = K ∘ sym(M), K_ij the divided difference of g at (λ_i, λ_j) (g' on
  // a near-tie). chebyshev/spline: M = Zg Zxᵀ [Bt, n, n], MT undefined. fourier: M = (Zg Zxᵀ)[:K, :]
  // and MT = ((Zg Zxᵀ)[:, :K])ᵀ, both [Bt, K, n], and W = W[:K, :] with its [:K, :K] block halved
  // (the host adds T + Tᵀ). May overwrite M and return it.
  at::Tensor (*dk_weights)(at::Tensor M, const at::Tensor& MT, const at::Tensor& evals, const at::Tensor& theta,
                           SpectralBasis basis);

  // ∂θ per graph [Bt, K] = Σ_i φ_k(λ_i) r_i with r_i = Σ_c Zg_ic Zx_ic (fourier: ∂θ_k = r_k).
  // Zg, zx: [Bt, m, d] with m = n (fourier: K).
  at::Tensor (*theta_grad)(const at::Tensor& Zg, const at::Tensor& zx, const at::Tensor& evals, int64_t K,
                           SpectralBasis basis);
};

extern const SpectralFilterKernels kSpectralFilterCpu;
extern const SpectralFilterKernels kSpectralFilterCuda;  // defined in CUDA builds only

}  // namespace deephash
