// spectral_filter on CUDA: the formulas of csrc/cpu/spectral_filter.cpp (see its header comment
// for the Daleckii–Krein backward and the fourier gap condition), with the batched Jacobi eigh of
// eigh_cuda.cu, cuBLAS batched products through ATen, and the per-eigenvalue work (filter
// response, divided differences, θ gradient) in the kernels below.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "common/codes_cuda.cuh"
#include "common/spectral_basis.h"
#include "common/spectral_checks.h"
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
// MT = ((Zg Zxᵀ)[:, :K])ᵀ, the [:K, :K] block halved (see the CPU kernel).
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

at::Tensor theta_rows(const at::Tensor& theta) { return theta.dim() == 1 ? theta.unsqueeze(0) : theta; }

// g(λ) [Bt, n, 1] for the chebyshev and spline bases (and g' into dg when asked).
at::Tensor response(const at::Tensor& evals, const at::Tensor& theta, int64_t K, SpectralBasis basis,
                    at::Tensor* dg = nullptr) {
  const int64_t Bt = evals.size(0), n = evals.size(1);
  at::Tensor g = at::empty({Bt, n}, evals.options());
  if (dg) *dg = at::empty({Bt, n}, evals.options());
  AT_DISPATCH_FLOATING_TYPES(evals.scalar_type(), "spectral_filter_response_cuda", [&] {
    filter_response_kernel<scalar_t><<<blocks_for(Bt * n, kThreads, int64_t{1} << 31), kThreads, 0,
                                       c10::cuda::getCurrentCUDAStream()>>>(
        evals.const_data_ptr<scalar_t>(), theta.const_data_ptr<scalar_t>(), theta.dim() == 2, Bt, n, K, basis,
        g.mutable_data_ptr<scalar_t>(), dg ? dg->mutable_data_ptr<scalar_t>() : nullptr);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return g;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> spectral_filter_forward_cuda(const at::Tensor& x,
                                                                                        const at::Tensor& L,
                                                                                        const at::Tensor& theta,
                                                                                        c10::string_view basis_name) {
  const SpectralBasis basis = parse_basis(basis_name);
  const int64_t K = check_spectral_filter_inputs(x, L, theta, basis);
  const c10::cuda::CUDAGuard guard(L.device());
  const int64_t Bt = L.size(0), n = L.size(1), d = x.size(2);
  const bool fourier = basis == SpectralBasis::kFourier;
  auto [evals, evecs] = batched_eigh_cuda(symmetrized_cuda(L, "spectral_filter"));
  if (Bt == 0 || n == 0 || d == 0)
    return {at::zeros({Bt, n, d}, x.options()), evals, evecs, at::zeros({Bt, fourier ? K : n, d}, x.options())};
  const at::Tensor xc = x.contiguous(), thc = theta.contiguous();
  const at::Tensor UK = fourier ? evecs.narrow(2, 0, K) : evecs;
  const at::Tensor zx = at::bmm(UK.transpose(1, 2), xc);
  const at::Tensor scale = fourier ? theta_rows(thc).unsqueeze(-1) : response(evals, thc, K, basis).unsqueeze(-1);
  at::Tensor y = at::bmm(UK, at::mul(zx, scale));
  return {y, evals, evecs, zx};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spectral_filter_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& zx, const at::Tensor& theta,
    const at::Tensor& evals, const at::Tensor& evecs, c10::string_view basis_name, std::array<bool, 3> output_mask) {
  const SpectralBasis basis = parse_basis(basis_name);
  const int64_t K = check_spectral_filter_backward_inputs(grad_y, x, zx, theta, evals, evecs, basis);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t Bt = evecs.size(0), n = evecs.size(1), d = x.size(2);
  const bool fourier = basis == SpectralBasis::kFourier;
  const int64_t m = fourier ? K : n;
  const bool per_graph = theta.dim() == 2;
  const auto opts = x.options();
  at::Tensor gx = at::empty({0}, opts), gL = at::empty({0}, opts), gth = at::empty({0}, opts);
  if (Bt == 0 || n == 0 || d == 0) {
    if (output_mask[0]) gx = at::zeros_like(x, at::MemoryFormat::Contiguous);
    if (output_mask[1]) gL = at::zeros({Bt, n, n}, opts);
    if (output_mask[2]) gth = at::zeros_like(theta, at::MemoryFormat::Contiguous);
    return {gx, gL, gth};
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor gyc = grad_y.contiguous(), thc = theta.contiguous(), lam = evals.contiguous();
  const at::Tensor U = evecs, UK = fourier ? evecs.narrow(2, 0, K) : evecs;
  const at::Tensor Zg = at::bmm(UK.transpose(1, 2), gyc);  // [Bt, m, d]
  at::Tensor g, dg;
  if (!fourier && (output_mask[0] || output_mask[1])) g = response(lam, thc, K, basis, &dg);
  if (output_mask[0]) gx = at::bmm(UK, at::mul(Zg, fourier ? theta_rows(thc).unsqueeze(-1) : g.unsqueeze(-1)));
  if (output_mask[2]) {
    const at::Tensor r = at::sum(at::mul(Zg, zx), {2}).contiguous();  // [Bt, m]
    at::Tensor per = at::empty({Bt, K}, opts);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spectral_filter_theta_grad_cuda", [&] {
      theta_grad_kernel<scalar_t><<<blocks_for(Bt, 128, int64_t{1} << 31), 128, 0, stream>>>(
          r.const_data_ptr<scalar_t>(), m, lam.const_data_ptr<scalar_t>(), Bt, n, K, basis,
          per.mutable_data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    gth = per_graph ? per : at::sum(per, {0});
  }
  if (output_mask[1]) {
    at::Tensor M, MT;
    if (fourier) {
      M = at::bmm(at::bmm(Zg, x.contiguous().transpose(1, 2)), U).contiguous();  // [Bt, K, n]
      MT = at::bmm(at::bmm(zx, gyc.transpose(1, 2)), U).contiguous();
    } else {
      M = at::bmm(Zg, zx.transpose(1, 2)).contiguous();  // [Bt, n, n]
    }
    at::Tensor W = at::empty_like(M);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spectral_filter_dk_cuda", [&] {
      using T = scalar_t;
      dk_weights_kernel<T><<<blocks_for(M.numel(), kThreads), kThreads, 0, stream>>>(
          M.const_data_ptr<T>(), fourier ? MT.const_data_ptr<T>() : nullptr, lam.const_data_ptr<T>(),
          fourier ? nullptr : g.const_data_ptr<T>(), fourier ? nullptr : dg.const_data_ptr<T>(),
          thc.const_data_ptr<T>(), per_graph, Bt, n, K, basis, W.mutable_data_ptr<T>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (fourier) {
      const at::Tensor Tm = at::bmm(UK, at::bmm(W, U.transpose(1, 2)));
      gL = at::add(Tm, Tm.transpose(1, 2));
    } else {
      gL = at::bmm(at::bmm(U, W), U.transpose(1, 2));
    }
  }
  return {gx, gL, gth};
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) {
  m.impl("_spectral_filter_forward", &spectral_filter_forward_cuda);
  m.impl("_spectral_filter_backward", &spectral_filter_backward_cuda);
}

}  // namespace deephash
