// CUDA helpers shared by the spectral kernels (defined in csrc/cuda/eigh_cuda.cu).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace deephash {

// (L + Lᵀ) / 2 as a contiguous [Bt, n, n] tensor, after refusing any graph that is not finite or
// whose asymmetry exceeds kSymmetryTol (common/spectral_checks.h). The checks run on the device;
// the host waits for one copy of 5 doubles (first_invalid_graph).
at::Tensor symmetrized_cuda(const at::Tensor& L, const char* op);

// Per-graph check figures stats [Bt, 4] (float64, on the device: max asymmetry, max(1, max scale),
// first bad flat index or -1, its value) reduced on the device to the first graph that fails
// (a bad entry, or asymmetry > tol * scale). Returns, on the host, [graph or -1, its 4 figures].
at::Tensor first_invalid_graph(const at::Tensor& stats, double tol);

// Eigendecomposition of a batch of symmetric matrices Ls [Bt, n, n] (contiguous, float32/float64)
// on the GPU: (values [Bt, n] ascending, vectors [Bt, n, n] with orthonormal columns).
std::tuple<at::Tensor, at::Tensor> batched_eigh_cuda(const at::Tensor& Ls);

}  // namespace deephash
