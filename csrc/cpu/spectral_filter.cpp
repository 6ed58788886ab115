// spectral_filter on the CPU: y = U g(Λ) Uᵀ x per graph, with a backward that stays finite on
// repeated eigenvalues.
//
// Forward: one eigendecomposition of (L + Lᵀ)/2 (threaded over the batch, eigh.cpp), the filter
// response g(λ_i) evaluated once per eigenvalue (common/spectral_basis.h), and two batched matrix
// products. The eigenpairs go back to autograd (deephash_ext/ops.py), so the backward needs no
// second eigendecomposition.
//
// Backward, with Zg = Uᵀ ∂y and Zx = Uᵀ x ([n, d] per graph):
//   ∂x = U g(Λ) Zg,   ∂θ_k = Σ_i φ_k(λ_i) Σ_c Zg_ic Zx_ic,
//   ∂L = U (K ∘ sym(Zg Zxᵀ)) Uᵀ  (Daleckii–Krein: Zg Zxᵀ = Uᵀ (∂y xᵀ) U, and
//        K_ij = (g(λ_i) - g(λ_j)) / (λ_i - λ_j), or g'((λ_i + λ_j)/2) on a near-tie),
// symmetrised because the forward reads (L + Lᵀ)/2. Unlike differentiating through the
// eigenvectors, nothing divides by a gap that can be 0.
//
// Fourier filters by eigenvalue rank, g_i = θ_i for i < K and 0 beyond. Its K matrix is the same
// divided difference with g' = 0 on ties, which is exact when the eigenvalues that tie carry the
// same g (equal θ, or both past K); across a tie with different g the filter itself is not a
// function of L (it depends on the basis LAPACK picks inside the eigenspace) and the term is
// dropped. Gap condition: λ_{K-1} < λ_K, and λ_i ≠ λ_j for i, j < K unless θ_i = θ_j.
// Fourier only needs the K smallest eigenpairs for y and ∂x, and ∂L = T + Tᵀ with
// T = U_K (W[:K, :] Uᵀ) (W's [K:, K:] block is 0, its [:K, :K] block halved): with K << n its
// backward is O(K n (n + d)), not O(n³ + n² d).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <array>
#include <string_view>
#include <tuple>
#include <vector>

#include "common/spectral_basis.h"
#include "common/spectral_checks.h"
#include "cpu/spectral_cpu.h"

namespace deephash {
namespace {

// g(λ_i) per graph and eigenvalue: out [Bt, n].
template <class T>
void filter_response(const T* evals,  // [Bt, n]
                     const T* theta,  // [K] or [Bt, K]
                     bool per_graph, int64_t Bt, int64_t n, int64_t K, SpectralBasis basis, T* out /* [Bt, n] */) {
  at::parallel_for(0, Bt, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* th = theta + (per_graph ? b * K : 0);
      for (int64_t i = 0; i < n; ++i) {
        T g, dg;
        basis_g<T>(basis, th, K, evals[b * n + i], g, dg);
        out[b * n + i] = g;
      }
    }
  });
}

// θ broadcast to [Bt, K] for the fourier scaling.
at::Tensor theta_rows(const at::Tensor& theta) { return theta.dim() == 1 ? theta.unsqueeze(0) : theta; }

// Returns (y, evals, evecs, zx) with zx = Uᵀ x [Bt, n, d] (fourier: U_Kᵀ x [Bt, K, d]), which the
// forward forms anyway and the backward would otherwise recompute.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> spectral_filter_forward_cpu(const at::Tensor& x,
                                                                                       const at::Tensor& L,
                                                                                       const at::Tensor& theta,
                                                                                       c10::string_view basis_name) {
  const SpectralBasis basis = parse_basis(basis_name);
  const int64_t K = check_spectral_filter_inputs(x, L, theta, basis);
  const int64_t Bt = L.size(0), n = L.size(1), d = x.size(2);
  const bool fourier = basis == SpectralBasis::kFourier;
  auto [evals, evecs] = symmetric_eigh_cpu(L, "spectral_filter");
  if (Bt == 0 || n == 0 || d == 0)
    return {at::zeros({Bt, n, d}, x.options()), evals, evecs, at::zeros({Bt, fourier ? K : n, d}, x.options())};

  const at::Tensor xc = x.contiguous(), thc = theta.contiguous();
  const at::Tensor UK = fourier ? evecs.narrow(2, 0, K) : evecs;  // [Bt, n, K or n]
  const at::Tensor zx = at::bmm(UK.transpose(1, 2), xc);           // [Bt, K or n, d]
  at::Tensor g;  // [Bt or 1, m]: the filter per eigenpair
  if (fourier) {
    g = theta_rows(thc);
  } else {
    g = at::empty({Bt, n}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spectral_filter_response", [&] {
      filter_response<scalar_t>(evals.const_data_ptr<scalar_t>(), thc.const_data_ptr<scalar_t>(), thc.dim() == 2, Bt,
                                n, K, basis, g.mutable_data_ptr<scalar_t>());
    });
  }
  // g scales the columns of U (n·m numbers) rather than the rows of zx (m·d), which also leaves zx
  // unscaled for the backward.
  at::Tensor y = at::bmm(at::mul(UK, g.unsqueeze(1)), zx);
  return {y, evals, evecs, zx};
}

// The Daleckii–Krein weights, written over M in place: M_ij <- K_ij (M_ij + M_ji) / 2 for the
// rows i < rows (all n for chebyshev/spline; K for fourier, whose rows past K hold g = 0 on
// both sides and are never read).
//   M: [Bt, rows, n] when fourier holds M[:K, :] and MT[:K, :] = (M[:, :K])ᵀ separately,
//   else [Bt, n, n] with MT == nullptr.
template <class T>
void dk_weights(T* M, const T* MT, const T* evals /* [Bt, n] */, const T* theta, bool per_graph, int64_t Bt, int64_t n,
                int64_t K, SpectralBasis basis) {
  const T tol = tie_tol<T>();
  const bool fourier = basis == SpectralBasis::kFourier;
  const int64_t rows = fourier ? K : n;
  at::parallel_for(0, Bt, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> g(n), dg(n);
    for (int64_t b = b0; b < b1; ++b) {
      const T* th = theta + (per_graph ? b * K : 0);
      const T* lam = evals + b * n;
      T* m = M + b * rows * n;
      for (int64_t i = 0; i < n; ++i) {
        if (fourier) {
          g[i] = i < K ? th[i] : T(0);
          dg[i] = T(0);
        } else {
          basis_g<T>(basis, th, K, lam[i], g[i], dg[i]);
        }
      }
      if (fourier) {
        const T* mt = MT + b * rows * n;
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            const T kij = near_tie<T>(lam[i], lam[j], tol) ? T(0) : (g[i] - g[j]) / (lam[i] - lam[j]);
            // Rows i < K carry the [:K, :K] block, which T + Tᵀ counts twice: halve it there.
            const T w = kij * (m[i * n + j] + mt[i * n + j]) * T(0.5);
            m[i * n + j] = j < K ? w * T(0.5) : w;
          }
        }
        continue;
      }
      // Upper triangle and diagonal, mirrored: K and sym(M) are both symmetric.
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = i; j < n; ++j) {
          T kij;
          if (i == j) {
            kij = dg[i];
          } else if (near_tie<T>(lam[i], lam[j], tol)) {
            T gm;
            basis_g<T>(basis, th, K, (lam[i] + lam[j]) * T(0.5), gm, kij);
          } else {
            kij = (g[i] - g[j]) / (lam[i] - lam[j]);
          }
          const T w = kij * (m[i * n + j] + m[j * n + i]) * T(0.5);
          m[i * n + j] = w;
          m[j * n + i] = w;
        }
      }
    }
  });
}

// r_i = Σ_c a_ic b_ic over rows of length d, without the [rows, d] product tensor.
template <class T>
void row_dots(const T* a, const T* b, int64_t rows, int64_t d, T* r) {
  at::parallel_for(0, rows, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T acc = T(0);
      for (int64_t c = 0; c < d; ++c) acc += a[i * d + c] * b[i * d + c];
      r[i] = acc;
    }
  });
}

// ∂θ [Bt, K] per graph: Σ_i φ_k(λ_i) r_i, r [Bt, rs] = Σ_c Zg ∘ Zx (rs = n, or K for fourier, whose
// ∂θ_k is r_k itself).
template <class T>
void theta_grad(const T* r, int64_t rs, const T* evals /* [Bt, n] */, int64_t Bt, int64_t n, int64_t K,
                SpectralBasis basis, T* out /* [Bt, K] */) {
  at::parallel_for(0, Bt, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* o = out + b * K;
      if (basis == SpectralBasis::kFourier) {
        for (int64_t k = 0; k < K; ++k) o[k] = r[b * rs + k];
      } else {
        for (int64_t k = 0; k < K; ++k) o[k] = T(0);
        for (int64_t i = 0; i < n; ++i) basis_accumulate<T>(basis, K, evals[b * n + i], r[b * rs + i], o);
      }
    }
  });
}

// zx is the fourth output of the forward. x is read only by fourier's ∂L, which forms
// (Zg Zxᵀ)[:K, :] as (U_Kᵀ ∂y) xᵀ U: O(K n (n + d)) instead of the full Uᵀ x.
std::tuple<at::Tensor, at::Tensor, at::Tensor> spectral_filter_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& zx, const at::Tensor& theta,
    const at::Tensor& evals, const at::Tensor& evecs, c10::string_view basis_name, std::array<bool, 3> output_mask) {
  const SpectralBasis basis = parse_basis(basis_name);
  const int64_t K = check_spectral_filter_backward_inputs(grad_y, x, zx, theta, evals, evecs, basis);
  const int64_t Bt = evecs.size(0), n = evecs.size(1), d = x.size(2);
  const bool fourier = basis == SpectralBasis::kFourier;
  const int64_t m = fourier ? K : n;  // eigenpairs that g weights
  const bool per_graph = theta.dim() == 2;
  const auto opts = x.options();
  // Gradients not asked for are returned as empty [0] tensors (the schema has no optional returns).
  at::Tensor gx = at::empty({0}, opts), gL = at::empty({0}, opts), gth = at::empty({0}, opts);
  if (Bt == 0 || n == 0 || d == 0) {
    if (output_mask[0]) gx = at::zeros_like(x, at::MemoryFormat::Contiguous);
    if (output_mask[1]) gL = at::zeros({Bt, n, n}, opts);
    if (output_mask[2]) gth = at::zeros_like(theta, at::MemoryFormat::Contiguous);
    return {gx, gL, gth};
  }

  const at::Tensor gyc = grad_y.contiguous(), thc = theta.contiguous(), lam = evals.contiguous();
  const at::Tensor U = evecs, UK = fourier ? evecs.narrow(2, 0, K) : evecs;  // [Bt, n, m]

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spectral_filter_backward_cpu", [&] {
    using T = scalar_t;
    const T* thp = thc.const_data_ptr<T>();
    const T* lp = lam.const_data_ptr<T>();
    const at::Tensor Zg = at::bmm(UK.transpose(1, 2), gyc);  // [Bt, m, d]
    if (output_mask[0]) {
      at::Tensor g = fourier ? theta_rows(thc) : at::empty({Bt, n}, opts);  // [Bt or 1, m]
      if (!fourier) filter_response<T>(lp, thp, per_graph, Bt, n, K, basis, g.mutable_data_ptr<T>());
      gx = at::bmm(at::mul(UK, g.unsqueeze(1)), Zg);
    }
    if (output_mask[2]) {
      at::Tensor r = at::empty({Bt, m}, opts);
      row_dots<T>(Zg.const_data_ptr<T>(), zx.contiguous().const_data_ptr<T>(), Bt * m, d, r.mutable_data_ptr<T>());
      at::Tensor per = at::empty({Bt, K}, opts);
      theta_grad<T>(r.const_data_ptr<T>(), m, lp, Bt, n, K, basis, per.mutable_data_ptr<T>());
      gth = per_graph ? per : at::sum(per, {0});
    }
    if (output_mask[1]) {
      if (fourier) {
        const at::Tensor xc = x.contiguous();
        at::Tensor M = at::bmm(at::bmm(Zg, xc.transpose(1, 2)), U).contiguous();    // [Bt, K, n] = (Zg Zxᵀ)[:K, :]
        const at::Tensor MT = at::bmm(at::bmm(zx, gyc.transpose(1, 2)), U).contiguous();  // ((Zg Zxᵀ)[:, :K])ᵀ
        dk_weights<T>(M.mutable_data_ptr<T>(), MT.const_data_ptr<T>(), lp, thp, per_graph, Bt, n, K, basis);
        const at::Tensor Tm = at::bmm(UK, at::bmm(M, U.transpose(1, 2)));            // [Bt, n, n]
        gL = at::add(Tm, Tm.transpose(1, 2));
      } else {
        at::Tensor M = at::bmm(Zg, zx.transpose(1, 2)).contiguous();                 // [Bt, n, n]
        dk_weights<T>(M.mutable_data_ptr<T>(), nullptr, lp, thp, per_graph, Bt, n, K, basis);
        gL = at::bmm(at::bmm(U, M), U.transpose(1, 2));
      }
    }
  });
  return {gx, gL, gth};
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) {
  m.impl("_spectral_filter_forward", &spectral_filter_forward_cpu);
  m.impl("_spectral_filter_backward", &spectral_filter_backward_cpu);
}

}  // namespace deephash
