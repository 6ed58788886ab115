// normalized_laplacian on CUDA: L = I - D^-1/2 A D^-1/2 per graph, with its backward.
// Same formulas as csrc/cpu/normalized_laplacian.cpp: s_i = d_i^-1/2 (0 for degree 0), L_ij =
// δ_ij - A_ij (s_i s_j); ∂A_kl = -s_k s_l G_kl + ½ s_k³ (r_k + c_k) with r_k = Σ_j G_kj A_kj s_j and
// c_k = Σ_i G_ik A_ik s_i.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/codes_cuda.cuh"
#include "common/spectral_checks.h"

namespace deephash {
namespace {

constexpr int kThreads = 256;

// One thread per (graph, node): s_i, and (forward only) the row's figures for the input checks,
// which the host reduces per graph after one copy of [Bt, n, 3]. A non-finite entry makes the row's
// min A NaN, which the host reports as such.
template <class T>
__global__ void degree_kernel(const T* __restrict__ A,     // [Bt, n, n]
                              double* __restrict__ s,      // [Bt, n]
                              double* __restrict__ stats,  // [Bt, n, 3] or null: min A, max |A - Aᵀ|, max(1, max A)
                              int64_t Bt, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= Bt * n) return;
  const int64_t b = i / n, row = i % n;
  const T* a = A + b * n * n;
  double d = 0.0, lo = 0.0, asym = 0.0, scale = 1.0;
  for (int64_t j = 0; j < n; ++j) {
    const double v = a[row * n + j];
    d += v;
    if (stats) {
      lo = v < lo || !isfinite(v) ? (isfinite(v) ? v : NAN) : lo;  // NaN sticks: NaN < x is false
      const double diff = fabs(v - static_cast<double>(a[j * n + row]));
      asym = diff > asym || diff != diff ? diff : asym;
      scale = v > scale ? v : scale;
    }
  }
  s[i] = d > 0.0 ? rsqrt(d) : 0.0;
  if (stats) {
    stats[3 * i] = lo;
    stats[3 * i + 1] = asym;
    stats[3 * i + 2] = scale;
  }
}

template <class T>
__global__ void laplacian_kernel(const T* __restrict__ A, const double* __restrict__ s, T* __restrict__ L,
                                 int64_t Bt, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < Bt * n * n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / (n * n), r = (i / n) % n, c = i % n;
    L[i] = static_cast<T>((r == c ? 1.0 : 0.0) - A[i] * (s[b * n + r] * s[b * n + c]));
  }
}

template <class T>
__global__ void row_col_kernel(const T* __restrict__ A, const T* __restrict__ G, const double* __restrict__ s,
                               double* __restrict__ rc,  // [Bt, n]: r_k + c_k
                               int64_t Bt, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= Bt * n) return;
  const int64_t b = i / n, k = i % n;
  const T* a = A + b * n * n;
  const T* g = G + b * n * n;
  const double* sb = s + b * n;
  double acc = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    acc += static_cast<double>(g[k * n + j]) * a[k * n + j] * sb[j];
    acc += static_cast<double>(g[j * n + k]) * a[j * n + k] * sb[j];
  }
  rc[i] = acc;
}

template <class T>
__global__ void laplacian_backward_kernel(const T* __restrict__ G, const double* __restrict__ s,
                                          const double* __restrict__ rc, T* __restrict__ gA, int64_t Bt, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < Bt * n * n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / (n * n), k = (i / n) % n, l = i % n;
    const double sk = s[b * n + k];
    gA[i] = static_cast<T>(0.5 * sk * sk * sk * rc[b * n + k] - sk * s[b * n + l] * G[i]);
  }
}

void check_adjacency_stats(const at::Tensor& stats, int64_t Bt, int64_t n) {
  const at::Tensor host = stats.cpu();
  const double* st = host.const_data_ptr<double>();
  for (int64_t b = 0; b < Bt; ++b) {
    double lo = 0.0, asym = 0.0, scale = 1.0;
    for (int64_t i = 0; i < n; ++i) {
      const double* r = st + 3 * (b * n + i);
      lo = r[0] < lo || r[0] != r[0] ? r[0] : lo;
      asym = r[1] > asym || r[1] != r[1] ? r[1] : asym;
      scale = r[2] > scale ? r[2] : scale;
    }
    TORCH_CHECK(lo == lo, "normalized_laplacian: A must be finite, but graph ", b, " has a non-finite entry");
    TORCH_CHECK(lo >= 0.0, "normalized_laplacian: A must be non-negative, but graph ", b, " has an entry ", lo);
    TORCH_CHECK(asym <= kSymmetryTol * scale, "normalized_laplacian: A must be symmetric, but graph ", b,
                " has max |A - A^T| = ", asym, " > ", kSymmetryTol, " * max(1, max A) = ", kSymmetryTol * scale);
  }
}

at::Tensor normalized_laplacian_cuda(const at::Tensor& A) {
  check_square_batch(A, "normalized_laplacian", "A");
  const c10::cuda::CUDAGuard guard(A.device());
  const at::Tensor Ac = A.contiguous();
  at::Tensor L = at::empty_like(Ac);
  const int64_t Bt = Ac.size(0), n = Ac.size(1);
  if (Bt == 0 || n == 0) return L;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor s = at::empty({Bt, n}, Ac.options().dtype(at::kDouble));
  at::Tensor stats = at::empty({Bt, n, 3}, Ac.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(Ac.scalar_type(), "normalized_laplacian_cuda", [&] {
    degree_kernel<scalar_t><<<blocks_for(Bt * n, kThreads, int64_t{1} << 31), kThreads, 0, stream>>>(
        Ac.const_data_ptr<scalar_t>(), s.mutable_data_ptr<double>(), stats.mutable_data_ptr<double>(), Bt, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    check_adjacency_stats(stats, Bt, n);
    laplacian_kernel<scalar_t><<<blocks_for(Bt * n * n, kThreads), kThreads, 0, stream>>>(
        Ac.const_data_ptr<scalar_t>(), s.const_data_ptr<double>(), L.mutable_data_ptr<scalar_t>(), Bt, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return L;
}

at::Tensor normalized_laplacian_backward_cuda(const at::Tensor& grad_L, const at::Tensor& A) {
  check_normalized_laplacian_backward_inputs(grad_L, A);
  const c10::cuda::CUDAGuard guard(A.device());
  const at::Tensor Ac = A.contiguous(), Gc = grad_L.contiguous();
  at::Tensor gA = at::empty_like(Ac);
  const int64_t Bt = Ac.size(0), n = Ac.size(1);
  if (Bt == 0 || n == 0) return gA;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor s = at::empty({Bt, n}, Ac.options().dtype(at::kDouble));
  at::Tensor rc = at::empty({Bt, n}, Ac.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(Ac.scalar_type(), "normalized_laplacian_backward_cuda", [&] {
    const unsigned row_blocks = blocks_for(Bt * n, kThreads, int64_t{1} << 31);
    degree_kernel<scalar_t><<<row_blocks, kThreads, 0, stream>>>(Ac.const_data_ptr<scalar_t>(),
                                                                s.mutable_data_ptr<double>(), nullptr, Bt, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    row_col_kernel<scalar_t><<<row_blocks, kThreads, 0, stream>>>(
        Ac.const_data_ptr<scalar_t>(), Gc.const_data_ptr<scalar_t>(), s.const_data_ptr<double>(),
        rc.mutable_data_ptr<double>(), Bt, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    laplacian_backward_kernel<scalar_t><<<blocks_for(Bt * n * n, kThreads), kThreads, 0, stream>>>(
        Gc.const_data_ptr<scalar_t>(), s.const_data_ptr<double>(), rc.const_data_ptr<double>(),
        gA.mutable_data_ptr<scalar_t>(), Bt, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return gA;
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) {
  m.impl("normalized_laplacian", &normalized_laplacian_cuda);
  m.impl("_normalized_laplacian_backward", &normalized_laplacian_backward_cuda);
}

}  // namespace deephash
