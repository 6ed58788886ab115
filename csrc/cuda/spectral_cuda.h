// CUDA helpers shared by the spectral kernels (defined in csrc/cuda/eigh_cuda.cu).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace deephash {

// (L + Lᵀ) / 2 as a contiguous [Bt, n, n] tensor, after refusing any graph whose asymmetry exceeds
// kSymmetryTol (common/spectral_checks.h). Costs one device-to-host copy of [Bt, 2] statistics.
at::Tensor symmetrized_cuda(const at::Tensor& L, const char* op);

// Eigendecomposition of a batch of symmetric matrices Ls [Bt, n, n] (contiguous, float32/float64)
// on the GPU: (values [Bt, n] ascending, vectors [Bt, n, n] with orthonormal columns).
std::tuple<at::Tensor, at::Tensor> batched_eigh_cuda(const at::Tensor& Ls);

}  // namespace deephash
