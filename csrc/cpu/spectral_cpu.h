// CPU helpers shared by the spectral kernels (defined in csrc/cpu/eigh.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace deephash {

// (L + Lᵀ) / 2 as a contiguous [Bt, n, n] tensor, after refusing any graph whose asymmetry exceeds
// kSymmetryTol (common/spectral_checks.h). `op` names the caller in the message.
at::Tensor symmetrized_cpu(const at::Tensor& L, const char* op);

// Eigendecomposition of a batch of symmetric matrices Ls [Bt, n, n] (contiguous, float32/float64):
// (values [Bt, n] ascending, vectors [Bt, n, n] with orthonormal columns), the batch spread over
// the intra-op threads.
std::tuple<at::Tensor, at::Tensor> batched_eigh_cpu(const at::Tensor& Ls);

}  // namespace deephash
