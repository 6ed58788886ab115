// normalized_laplacian on CUDA: L = I - D^-1/2 A D^-1/2 per graph, with its backward.
// Same formulas as csrc/cpu/normalized_laplacian.cpp: s_i = d_i^-1/2 (0 for degree 0), L_ij =
// δ_ij - A_ij (s_i s_j); ∂A_kl = -s_k s_l G_kl + ½ s_k³ (r_k + c_k) with r_k = Σ_j G_kj A_kj s_j and
// c_k = Σ_i G_ik A_ik s_i. The input checks are the CPU's (finite, non-negative, symmetric), decided
// on the device; the host waits for one copy of 5 doubles per forward (no per-graph host loop).
//
// Cost model: the forward reads A twice (the degree pass, with the transposed read of the symmetry
// check mostly served by L2, then the L pass) and writes L: ~3 n² sizeof(T) bytes per graph plus
// 32 n bytes of row figures. At 4096 x 128 x 128 float32 that is ~0.8 GB, ~0.2 ms at HBM speed,
// far below the eigensolver that follows. The degree pass walks a row per thread (stride n
// between lanes: each 32-byte sector is used by the next 7 iterations of the same thread from L1).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>

#include "common/codes_cuda.cuh"
#include "common/spectral_checks.h"
#include "cuda/spectral_cuda.h"

namespace deephash {
namespace {

constexpr int kThreads = 256;

// One thread per (graph, node): s_i, and (forward only) the row's figures for the input checks:
// the first entry that is not finite or is negative (column, value), max |A_ij - A_ji|, max(1, max A).
template <class T>
__global__ void degree_kernel(const T* __restrict__ A,     // [Bt, n, n]
                              double* __restrict__ s,      // [Bt, n]
                              double* __restrict__ stats,  // [Bt, n, 4] or null: bad column or -1, its value, asym, scale
                              int64_t Bt, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= Bt * n) return;
  const int64_t b = i / n, row = i % n;
  const T* a = A + b * n * n;
  double d = 0.0, asym = 0.0, scale = 1.0, bad_val = 0.0;
  int64_t bad = -1;
  for (int64_t j = 0; j < n; ++j) {
    const double v = a[row * n + j];
    d += v;
    if (stats) {
      if (bad < 0 && !(isfinite(v) && v >= 0.0)) {
        bad = j;
        bad_val = v;
      }
      asym = fmax(asym, fabs(v - static_cast<double>(a[j * n + row])));
      scale = fmax(scale, v);
    }
  }
  s[i] = d > 0.0 ? rsqrt(d) : 0.0;
  if (stats) {
    double* st = stats + 4 * i;
    st[0] = static_cast<double>(bad);
    st[1] = bad_val;
    st[2] = asym;
    st[3] = scale;
  }
}

// One thread per graph: the rows' figures folded into the layout of first_invalid_graph
// (cuda/spectral_cuda.h): [max asym, max scale, first bad flat index or -1, its value].
__global__ void graph_stats_kernel(const double* __restrict__ rows,  // [Bt, n, 4]
                                   double* __restrict__ graphs,      // [Bt, 4]
                                   int64_t Bt, int64_t n) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= Bt) return;
  double asym = 0.0, scale = 1.0, bad = -1.0, bad_val = 0.0;
  for (int64_t r = 0; r < n; ++r) {
    const double* st = rows + 4 * (b * n + r);
    if (bad < 0.0 && st[0] >= 0.0) {
      bad = static_cast<double>(r * n) + st[0];
      bad_val = st[1];
    }
    asym = fmax(asym, st[2]);
    scale = fmax(scale, st[3]);
  }
  double* g = graphs + 4 * b;
  g[0] = asym;
  g[1] = scale;
  g[2] = bad;
  g[3] = bad_val;
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

// The checks of the CPU kernel, in its order (the first entry that is not finite or is negative,
// in row-major order, then the asymmetry), decided on the device: the host copies 5 doubles.
void check_adjacency(const at::Tensor& row_stats, int64_t Bt, int64_t n, cudaStream_t stream) {
  at::Tensor graphs = at::empty({Bt, 4}, row_stats.options());
  graph_stats_kernel<<<blocks_for(Bt, 128, int64_t{1} << 31), 128, 0, stream>>>(
      row_stats.const_data_ptr<double>(), graphs.mutable_data_ptr<double>(), Bt, n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor host = first_invalid_graph(graphs, kSymmetryTol);
  const double* rp = host.const_data_ptr<double>();
  if (rp[0] < 0.0) return;
  const auto b = static_cast<int64_t>(rp[0]);
  if (rp[3] >= 0.0) {
    const auto idx = static_cast<int64_t>(rp[3]);
    const double v = rp[4];
    TORCH_CHECK(std::isfinite(v), "normalized_laplacian: A must be finite, but graph ", b, " has a non-finite entry A[",
                idx / n, ", ", idx % n, "] = ", v);
    TORCH_CHECK(false, "normalized_laplacian: A must be non-negative, but graph ", b, " has A[", idx / n, ", ",
                idx % n, "] = ", v);
  }
  TORCH_CHECK(false, "normalized_laplacian: A must be symmetric, but graph ", b, " has max |A - A^T| = ", rp[1],
              " > ", kSymmetryTol, " * max(1, max A) = ", kSymmetryTol * rp[2]);
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
  at::Tensor stats = at::empty({Bt, n, 4}, Ac.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(Ac.scalar_type(), "normalized_laplacian_cuda", [&] {
    degree_kernel<scalar_t><<<blocks_for(Bt * n, kThreads, int64_t{1} << 31), kThreads, 0, stream>>>(
        Ac.const_data_ptr<scalar_t>(), s.mutable_data_ptr<double>(), stats.mutable_data_ptr<double>(), Bt, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    check_adjacency(stats, Bt, n, stream);
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
