// CPU helpers shared by the spectral kernels (defined in csrc/cpu/eigh.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace deephash {

// Eigendecomposition of (L + Lᵀ) / 2 for a batch L [Bt, n, n] (float32/float64), after refusing
// any graph that is not finite or whose asymmetry exceeds kSymmetryTol (common/spectral_checks.h);
// `op` names the caller in the message. Returns (values [Bt, n] ascending, vectors [Bt, n, n] with
// orthonormal columns, stored column-major: strides (n², 1, n), like torch.linalg.eigh), the batch
// spread over the intra-op threads.
std::tuple<at::Tensor, at::Tensor> symmetric_eigh_cpu(const at::Tensor& L, const char* op);

}  // namespace deephash
