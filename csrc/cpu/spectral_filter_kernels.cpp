// spectral_filter's CPU kernels: the eigensolver call, the filter response, the Daleckii–Krein
// weights and the θ gradient, each threaded over the batch. csrc/spectral_filter.cpp runs the op
// around them (checks, batched products) and explains the formulas.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <tuple>
#include <vector>

#include "common/spectral_basis.h"
#include "common/spectral_filter_kernels.h"
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


std::tuple<at::Tensor, at::Tensor> filter_eigh_cpu(const at::Tensor& L) { return symmetric_eigh_cpu(L, "spectral_filter"); }

at::Tensor response_cpu(const at::Tensor& evals, const at::Tensor& theta, SpectralBasis basis) {
  const int64_t Bt = evals.size(0), n = evals.size(1), K = theta.size(-1);
  const at::Tensor lam = evals.contiguous();
  at::Tensor g = at::empty({Bt, n}, evals.options());
  AT_DISPATCH_FLOATING_TYPES(evals.scalar_type(), "spectral_filter_response", [&] {
    filter_response<scalar_t>(lam.const_data_ptr<scalar_t>(), theta.const_data_ptr<scalar_t>(), theta.dim() == 2, Bt,
                              n, K, basis, g.mutable_data_ptr<scalar_t>());
  });
  return g;
}

at::Tensor dk_weights_cpu(at::Tensor M, const at::Tensor& MT, const at::Tensor& evals, const at::Tensor& theta,
                             SpectralBasis basis) {
  const int64_t Bt = evals.size(0), n = evals.size(1), K = theta.size(-1);
  const bool fourier = basis == SpectralBasis::kFourier;
  M = M.contiguous();
  const at::Tensor MTc = fourier ? MT.contiguous() : MT, lam = evals.contiguous();
  AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "spectral_filter_dk_weights", [&] {
    dk_weights<scalar_t>(M.mutable_data_ptr<scalar_t>(), fourier ? MTc.const_data_ptr<scalar_t>() : nullptr,
                         lam.const_data_ptr<scalar_t>(), theta.const_data_ptr<scalar_t>(), theta.dim() == 2, Bt, n,
                         K, basis);
  });
  return M;
}

at::Tensor theta_grad_cpu(const at::Tensor& Zg, const at::Tensor& zx, const at::Tensor& evals, int64_t K,
                             SpectralBasis basis) {
  const int64_t Bt = Zg.size(0), m = Zg.size(1), d = Zg.size(2), n = evals.size(1);
  const at::Tensor a = Zg.contiguous(), b = zx.contiguous(), lam = evals.contiguous();
  at::Tensor r = at::empty({Bt, m}, Zg.options()), per = at::empty({Bt, K}, Zg.options());
  AT_DISPATCH_FLOATING_TYPES(Zg.scalar_type(), "spectral_filter_theta_grad", [&] {
    using T = scalar_t;
    row_dots<T>(a.const_data_ptr<T>(), b.const_data_ptr<T>(), Bt * m, d, r.mutable_data_ptr<T>());
    theta_grad<T>(r.const_data_ptr<T>(), m, lam.const_data_ptr<T>(), Bt, n, K, basis, per.mutable_data_ptr<T>());
  });
  return per;
}

}  // namespace

const SpectralFilterKernels kSpectralFilterCpu = {&filter_eigh_cpu, &response_cpu, &dk_weights_cpu, &theta_grad_cpu};

}  // namespace deephash
