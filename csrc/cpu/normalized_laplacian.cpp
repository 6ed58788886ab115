// normalized_laplacian on the CPU: L = I - D^-1/2 A D^-1/2 per graph, with its backward.
//
// With s_i = d_i^-1/2 (d_i = Σ_j A_ij) and s_i = 0 for a node of degree 0, L_ij = δ_ij - A_ij s_i s_j
// gives such a node its identity row and column with no special case. The product is formed as
// A_ij · (s_i s_j), so a symmetric A gives a bitwise symmetric L.
//
// Backward: ∂loss/∂A_kl = -s_k s_l G_kl + ½ s_k³ (r_k + c_k), where G = ∂loss/∂L,
// r_k = Σ_j G_kj A_kj s_j and c_k = Σ_i G_ik A_ik s_i (the degree d_k depends on row k of A). A node of
// degree 0 gets gradient 0 (its s is 0): L is not differentiable there, since any positive
// edge weight moves its row from the identity by O(√weight).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/spectral_checks.h"

namespace deephash {
namespace {

// s_i = d_i^-1/2, or 0 for degree 0; degrees summed in double.
template <class T>
void inv_sqrt_degree(const T* a,  // [n, n]
                     int64_t n, std::vector<double>& s) {
  for (int64_t i = 0; i < n; ++i) {
    double d = 0.0;
    for (int64_t j = 0; j < n; ++j) d += a[i * n + j];
    s[i] = d > 0.0 ? 1.0 / std::sqrt(d) : 0.0;
  }
}

template <class T>
void check_adjacency(const T* a,  // [n, n]
                     int64_t n, int64_t b) {
  double asym = 0.0, scale = 1.0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double v = a[i * n + j];
      // inf would pass the sign and symmetry tests (inf - inf is NaN, which compares false) and
      // give a NaN L: refused on both backends.
      TORCH_CHECK(std::isfinite(v), "normalized_laplacian: A must be finite, but graph ", b,
                  " has a non-finite entry A[", i, ", ", j, "] = ", v);
      TORCH_CHECK(v >= 0.0, "normalized_laplacian: A must be non-negative, but graph ", b, " has A[", i, ", ", j,
                  "] = ", v);
      asym = std::max(asym, std::abs(v - static_cast<double>(a[j * n + i])));
      scale = std::max(scale, v);
    }
  }
  TORCH_CHECK(asym <= kSymmetryTol * scale, "normalized_laplacian: A must be symmetric, but graph ", b,
              " has max |A - A^T| = ", asym, " > ", kSymmetryTol, " * max(1, max A) = ", kSymmetryTol * scale);
}

at::Tensor normalized_laplacian_cpu(const at::Tensor& A) {
  check_square_batch(A, "normalized_laplacian", "A");
  const at::Tensor Ac = A.contiguous();
  at::Tensor L = at::empty_like(Ac);
  const int64_t Bt = Ac.size(0), n = Ac.size(1);
  if (Bt == 0 || n == 0) return L;
  AT_DISPATCH_FLOATING_TYPES(Ac.scalar_type(), "normalized_laplacian_cpu", [&] {
    const scalar_t* ap = Ac.const_data_ptr<scalar_t>();
    scalar_t* lp = L.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, Bt, 1, [&](int64_t b0, int64_t b1) {
      std::vector<double> s(n);
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* a = ap + b * n * n;
        scalar_t* l = lp + b * n * n;
        check_adjacency(a, n, b);
        inv_sqrt_degree(a, n, s);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j)
            l[i * n + j] = static_cast<scalar_t>((i == j ? 1.0 : 0.0) - a[i * n + j] * (s[i] * s[j]));
      }
    });
  });
  return L;
}

at::Tensor normalized_laplacian_backward_cpu(const at::Tensor& grad_L, const at::Tensor& A) {
  check_normalized_laplacian_backward_inputs(grad_L, A);
  const at::Tensor Ac = A.contiguous(), Gc = grad_L.contiguous();
  at::Tensor gA = at::empty_like(Ac);
  const int64_t Bt = Ac.size(0), n = Ac.size(1);
  if (Bt == 0 || n == 0) return gA;
  AT_DISPATCH_FLOATING_TYPES(Ac.scalar_type(), "normalized_laplacian_backward_cpu", [&] {
    const scalar_t* ap = Ac.const_data_ptr<scalar_t>();
    const scalar_t* gp = Gc.const_data_ptr<scalar_t>();
    scalar_t* op = gA.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, Bt, 1, [&](int64_t b0, int64_t b1) {
      std::vector<double> s(n), rc(n);
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* a = ap + b * n * n;
        const scalar_t* g = gp + b * n * n;
        scalar_t* o = op + b * n * n;
        inv_sqrt_degree(a, n, s);
        std::fill(rc.begin(), rc.end(), 0.0);
        for (int64_t i = 0; i < n; ++i) {
          double r = 0.0;
          for (int64_t j = 0; j < n; ++j) {
            const double ga = static_cast<double>(g[i * n + j]) * a[i * n + j];
            r += ga * s[j];        // r_i
            rc[j] += ga * s[i];    // c_j
          }
          rc[i] += r;
        }
        for (int64_t k = 0; k < n; ++k) {
          const double row = 0.5 * s[k] * s[k] * s[k] * rc[k];
          for (int64_t l = 0; l < n; ++l)
            o[k * n + l] = static_cast<scalar_t>(row - s[k] * s[l] * g[k * n + l]);
        }
      }
    });
  });
  return gA;
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) {
  m.impl("normalized_laplacian", &normalized_laplacian_cpu);
  m.impl("_normalized_laplacian_backward", &normalized_laplacian_backward_cpu);
}

}  // namespace deephash
