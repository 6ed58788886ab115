// spectral_filter's CUDA kernels: the batched Jacobi eigh of eigh_cuda.cu and the per-eigenvalue
// work (filter response, divided differences, θ gradient) below, on the current stream.
// csrc/spectral_filter.cpp runs the op around them (checks, device guard, the batched products
// through cuBLAS) and explains the formulas.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>

#include <tuple>

#include "common/codes_cuda.cuh"
#include "common/spectral_basis.h"
#include "common/spectral_filter_kernels.h"
#include "cuda/spectral_cuda.h"

namespace deephash {
namespace {

constexpr int kThreads = 256;

// g(λ_i) and g'(λ_i) per graph and eigenvalue: [Bt, n] each.
template <class T>
__global__ void filter_response_kernel(const T* __restrict__ evals,  // [Bt, n]
                                       const T* __restrict__ theta,  // [K] or [Bt, K]
                                       bool per_graph, int64_t Bt, int64_t n, int64_t K, SpectralBasis basis,
                                       T* __restrict__ g, T* __restrict__ dg) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= Bt * n) return;
  const int64_t b = i / n;
  T gv, dv;
  basis_g<T>(basis, theta + (per_graph ? b * K : 0), K, evals[i], gv, dv);
  g[i] = gv;
  if (dg) dg[i] = dv;
}

// W = K ∘ sym(M) out of place (M [Bt, n, n]); fourier: W[:K, :] from M = (Zg Zxᵀ)[:K, :] and
// MT = ((Zg Zxᵀ)[:, :K])ᵀ, the [:K, :K] block halved (see common/spectral_filter_kernels.h).
template <class T>
__global__ void dk_weights_kernel(const T* __restrict__ M, const T* __restrict__ MT,
                                  const T* __restrict__ evals,  // [Bt, n]
                                  const T* __restrict__ g, const T* __restrict__ dg,  // [Bt, n]
                                  const T* __restrict__ theta, bool per_graph, int64_t Bt, int64_t n, int64_t K,
                                  SpectralBasis basis, T* __restrict__ W) {
  const bool fourier = basis == SpectralBasis::kFourier;
  const int64_t rows = fourier ? K : n;
  const T tol = tie_tol<T>();
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < Bt * rows * n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = e / (rows * n), i = (e / n) % rows, j = e % n;
    const T* lam = evals + b * n;
    const T* m = M + b * rows * n;
    if (fourier) {
      const T gi = i < K ? theta[(per_graph ? b * K : 0) + i] : T(0);
      const T gj = j < K ? theta[(per_graph ? b * K : 0) + j] : T(0);
      const T kij = near_tie<T>(lam[i], lam[j], tol) ? T(0) : (gi - gj) / (lam[i] - lam[j]);
      const T w = kij * (m[i * n + j] + MT[b * rows * n + i * n + j]) * T(0.5);
      W[e] = j < K ? w * T(0.5) : w;
      continue;
    }
    T kij;
    if (i == j) {
      kij = dg[b * n + i];
    } else if (near_tie<T>(lam[i], lam[j], tol)) {
      T gm;
      basis_g<T>(basis, theta + (per_graph ? b * K : 0), K, (lam[i] + lam[j]) * T(0.5), gm, kij);
    } else {
      kij = (g[b * n + i] - g[b * n + j]) / (lam[i] - lam[j]);
    }
    W[e] = kij * (m[i * n + j] + m[j * n + i]) * T(0.5);
  }
}

// ∂θ per graph [Bt, K]: Σ_i φ_k(λ_i) r_i (fourier: r_k).
template <class T>
__global__ void theta_grad_kernel(const T* __restrict__ r, int64_t rs, const T* __restrict__ evals, int64_t Bt,
                                  int64_t n, int64_t K, SpectralBasis basis, T* __restrict__ out) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= Bt) return;
  T* o = out + b * K;
  if (basis == SpectralBasis::kFourier) {
    for (int64_t k = 0; k < K; ++k) o[k] = r[b * rs + k];
    return;
  }
  for (int64_t k = 0; k < K; ++k) o[k] = T(0);
  for (int64_t i = 0; i < n; ++i) basis_accumulate<T>(basis, K, evals[b * n + i], r[b * rs + i], o);
}

// g(λ) [Bt, n] for the chebyshev and spline bases (and g' into dg when asked: the divided
// differences need both).
at::Tensor response(const at::Tensor& evals, const at::Tensor& theta, SpectralBasis basis, at::Tensor* dg = nullptr) {
  const int64_t Bt = evals.size(0), n = evals.size(1), K = theta.size(-1);
  const at::Tensor lam = evals.contiguous();
  at::Tensor g = at::empty({Bt, n}, evals.options());
  if (dg) *dg = at::empty({Bt, n}, evals.options());
  AT_DISPATCH_FLOATING_TYPES(evals.scalar_type(), "spectral_filter_response_cuda", [&] {
    filter_response_kernel<scalar_t><<<blocks_for(Bt * n, kThreads, int64_t{1} << 31), kThreads, 0,
                                       c10::cuda::getCurrentCUDAStream()>>>(
        lam.const_data_ptr<scalar_t>(), theta.const_data_ptr<scalar_t>(), theta.dim() == 2, Bt, n, K, basis,
        g.mutable_data_ptr<scalar_t>(), dg ? dg->mutable_data_ptr<scalar_t>() : nullptr);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return g;
}

std::tuple<at::Tensor, at::Tensor> filter_eigh_cuda(const at::Tensor& L) {
  return batched_eigh_cuda(symmetrized_cuda(L, "spectral_filter"));
}

at::Tensor response_cuda(const at::Tensor& evals, const at::Tensor& theta, SpectralBasis basis) {
  return response(evals, theta, basis);
}

at::Tensor dk_weights_cuda(at::Tensor M, const at::Tensor& MT, const at::Tensor& evals, const at::Tensor& theta,
                           SpectralBasis basis) {
  const int64_t Bt = evals.size(0), n = evals.size(1), K = theta.size(-1);
  const bool fourier = basis == SpectralBasis::kFourier;
  const at::Tensor Mc = M.contiguous(), MTc = fourier ? MT.contiguous() : MT, lam = evals.contiguous();
  at::Tensor g, dg;
  if (!fourier) g = response(lam, theta, basis, &dg);
  at::Tensor W = at::empty_like(Mc);
  AT_DISPATCH_FLOATING_TYPES(Mc.scalar_type(), "spectral_filter_dk_cuda", [&] {
    using T = scalar_t;
    dk_weights_kernel<T><<<blocks_for(Mc.numel(), kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        Mc.const_data_ptr<T>(), fourier ? MTc.const_data_ptr<T>() : nullptr, lam.const_data_ptr<T>(),
        fourier ? nullptr : g.const_data_ptr<T>(), fourier ? nullptr : dg.const_data_ptr<T>(),
        theta.const_data_ptr<T>(), theta.dim() == 2, Bt, n, K, basis, W.mutable_data_ptr<T>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return W;
}

at::Tensor theta_grad_cuda(const at::Tensor& Zg, const at::Tensor& zx, const at::Tensor& evals, int64_t K,
                           SpectralBasis basis) {
  const int64_t Bt = Zg.size(0), m = Zg.size(1), n = evals.size(1);
  const at::Tensor r = at::sum(at::mul(Zg, zx), {2}).contiguous(), lam = evals.contiguous();  // [Bt, m]
  at::Tensor per = at::empty({Bt, K}, Zg.options());
  AT_DISPATCH_FLOATING_TYPES(Zg.scalar_type(), "spectral_filter_theta_grad_cuda", [&] {
    theta_grad_kernel<scalar_t><<<blocks_for(Bt, 128, int64_t{1} << 31), 128, 0, c10::cuda::getCurrentCUDAStream()>>>(
        r.const_data_ptr<scalar_t>(), m, lam.const_data_ptr<scalar_t>(), Bt, n, K, basis,
        per.mutable_data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return per;
}

}  // namespace

const SpectralFilterKernels kSpectralFilterCuda = {&filter_eigh_cuda, &response_cuda, &dk_weights_cuda,
                                                   &theta_grad_cuda};

}  // namespace deephash
