// spectral_filter: y = U g(Λ) Uᵀ x per graph, with a backward that stays finite on repeated
// eigenvalues. This file is the whole op above its kernels, for every device: the checks, the
// empty-input shortcuts and the chain of batched products of forward and backward. The parts that
// differ per backend (the eigensolver, the filter response, the Daleckii–Krein weights, the θ
// gradient) come in a SpectralFilterKernels table (common/spectral_filter_kernels.h) from
// csrc/cpu/spectral_filter_kernels.cpp or csrc/cuda/spectral_filter_cuda.cu; the registrations at
// the bottom pair each dispatch key with its table. The contract (shapes, errors, the gap
// condition of fourier) is in docs/ops.md.
//
// Forward: one eigendecomposition of (L + Lᵀ)/2, the filter response g(λ_i) evaluated once per
// eigenvalue, and two batched matrix products. The eigenpairs go back to autograd
// (deephash_ext/ops.py), so the backward needs no second eigendecomposition.
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
// function of L (it depends on the basis the solver picks inside the eigenspace) and the term is
// dropped. Gap condition: λ_{K-1} < λ_K, and λ_i ≠ λ_j for i, j < K unless θ_i = θ_j.
// Fourier only needs the K smallest eigenpairs for y and ∂x, and ∂L = T + Tᵀ with
// T = U_K (W[:K, :] Uᵀ) (W's [K:, K:] block is 0, its [:K, :K] block halved): with K << n its
// backward is O(K n (n + d)), not O(n³ + n² d).
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/add.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <array>
#include <string>
#include <string_view>
#include <tuple>

#include "common/checks.h"
#include "common/spectral_basis.h"
#include "common/spectral_checks.h"
#include "common/spectral_filter_kernels.h"

namespace deephash {
namespace {

SpectralBasis parse_basis(std::string_view basis) {
  if (basis == "chebyshev") return SpectralBasis::kChebyshev;
  if (basis == "spline") return SpectralBasis::kSpline;
  if (basis == "fourier") return SpectralBasis::kFourier;
  TORCH_CHECK(false, "spectral_filter: basis must be \"chebyshev\", \"spline\" or \"fourier\", got \"",
              std::string(basis), "\"");
}

// x [Bt, n, d], L [Bt, n, n], theta [K] or [Bt, K]: same dtype and device, matching Bt and n, and a
// K the basis can use. Returns K.
int64_t check_inputs(const at::Tensor& x, const at::Tensor& L, const at::Tensor& theta, SpectralBasis basis) {
  constexpr const char* op = "spectral_filter";
  check_square_batch(L, op, "L");
  TORCH_CHECK(x.dim() == 3, op, ": x must be [Bt, n, d], got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == L.scalar_type() && theta.scalar_type() == L.scalar_type(), op,
              ": x, L and theta must have the same dtype, got ", x.scalar_type(), ", ", L.scalar_type(), " and ",
              theta.scalar_type());
  TORCH_CHECK(x.device() == L.device() && theta.device() == L.device(), op,
              ": x, L and theta must be on the same device, got ", x.device(), ", ", L.device(), " and ",
              theta.device());
  TORCH_CHECK(x.size(0) == L.size(0), op, ": x and L must have the same batch size, got ", x.size(0), " and ",
              L.size(0));
  TORCH_CHECK(x.size(1) == L.size(1), op, ": x has ", x.size(1), " nodes per graph but L has ", L.size(1));
  TORCH_CHECK(theta.dim() == 1 || theta.dim() == 2, op,
              ": theta must be [K] (shared) or [Bt, K] (per graph), got shape ", theta.sizes());
  if (theta.dim() == 2)
    TORCH_CHECK(theta.size(0) == L.size(0), op, ": per-graph theta must have one row per graph, got ",
                theta.size(0), " rows for ", L.size(0), " graphs");
  const int64_t K = theta.size(-1);
  switch (basis) {
    case SpectralBasis::kChebyshev:
      TORCH_CHECK(K >= 1, op, ": the chebyshev basis needs K >= 1 coefficients, got K=", K);
      break;
    case SpectralBasis::kSpline:
      TORCH_CHECK(K >= 4, op, ": the cubic spline basis needs K >= 4 coefficients, got K=", K);
      break;
    case SpectralBasis::kFourier:
      TORCH_CHECK(K >= 1 && K <= L.size(1), op,
                  ": the fourier basis keeps the K smallest eigenpairs, so it needs 1 <= K <= n, got K=", K,
                  " with n=", L.size(1));
      break;
  }
  return K;
}

// _spectral_filter_backward: the forward's inputs (x, theta) and outputs (evals [Bt, n], evecs
// [Bt, n, n], zx [Bt, m, d] with m = K for fourier, else n) with grad_y like x; one dtype, one
// device. Returns K.
int64_t check_backward_inputs(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& zx,
                              const at::Tensor& theta, const at::Tensor& evals, const at::Tensor& evecs,
                              SpectralBasis basis) {
  constexpr const char* op = "spectral_filter_backward";
  const int64_t K = check_inputs(x, evecs, theta, basis);
  const int64_t Bt = evecs.size(0), n = evecs.size(1), d = x.size(2);
  const int64_t m = basis == SpectralBasis::kFourier ? K : n;  // eigenpairs that g weights
  TORCH_CHECK(grad_y.sizes() == x.sizes(), op, ": grad_y must have the shape of x, got ", grad_y.sizes(), " and ",
              x.sizes());
  TORCH_CHECK(evals.dim() == 2 && evals.size(0) == Bt && evals.size(1) == n, op, ": evals must be [Bt, n], got ",
              evals.sizes());
  TORCH_CHECK(zx.dim() == 3 && zx.size(0) == Bt && zx.size(1) == m && zx.size(2) == d, op, ": zx must be [Bt, ", m,
              ", d], got ", zx.sizes());
  TORCH_CHECK(grad_y.scalar_type() == x.scalar_type() && zx.scalar_type() == x.scalar_type() &&
                  evals.scalar_type() == x.scalar_type(),
              op, ": grad_y, zx and evals must have the dtype of x (", x.scalar_type(), "), got ",
              grad_y.scalar_type(), ", ", zx.scalar_type(), " and ", evals.scalar_type());
  check_same_device(op, {{"x", x}, {"grad_y", grad_y}, {"zx", zx}, {"theta", theta}, {"evals", evals},
                         {"evecs", evecs}});
  return K;
}

// The filter g per eigenpair, [Bt or 1, m] (m = n; fourier: θ itself, m = K).
at::Tensor filter_values(const SpectralFilterKernels& kernels, const at::Tensor& evals, const at::Tensor& theta,
                         SpectralBasis basis) {
  if (basis == SpectralBasis::kFourier) return theta.dim() == 1 ? theta.unsqueeze(0) : theta;
  return kernels.response(evals, theta, basis);
}

// U_K g(Λ) Z for Z [Bt, m, d]: g scales the columns of U_K (n·m numbers) rather than the rows of Z
// (m·d). The two round alike (one product per term either way); with d >= n, as in the graphs of a
// HAGCN batch (n nodes, d features), this is the smaller operand, and on the CPU it measured faster
// (64 x 128 x 256: 7% in float32, 2x in float64, the product included).
at::Tensor filtered(const at::Tensor& UK, const at::Tensor& g, const at::Tensor& Z) {
  return at::bmm(at::mul(UK, g.unsqueeze(1)), Z);
}

// Returns (y, evals, evecs, zx) with zx = Uᵀ x [Bt, n, d] (fourier: U_Kᵀ x [Bt, K, d]), which the
// forward forms anyway and the backward would otherwise recompute.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> spectral_filter_forward(
    const SpectralFilterKernels& kernels, const at::Tensor& x, const at::Tensor& L, const at::Tensor& theta,
    c10::string_view basis_name) {
  const SpectralBasis basis = parse_basis(basis_name);
  const int64_t K = check_inputs(x, L, theta, basis);
  const c10::OptionalDeviceGuard guard(L.device());
  const int64_t Bt = L.size(0), n = L.size(1), d = x.size(2);
  const bool fourier = basis == SpectralBasis::kFourier;
  auto [evals, evecs] = kernels.eigh(L);
  if (Bt == 0 || n == 0 || d == 0)
    return {at::zeros({Bt, n, d}, x.options()), evals, evecs, at::zeros({Bt, fourier ? K : n, d}, x.options())};

  const at::Tensor thc = theta.contiguous();
  const at::Tensor UK = fourier ? evecs.narrow(2, 0, K) : evecs;        // [Bt, n, m]
  const at::Tensor zx = at::bmm(UK.transpose(1, 2), x.contiguous());   // [Bt, m, d]
  at::Tensor y = filtered(UK, filter_values(kernels, evals, thc, basis), zx);
  return {y, evals, evecs, zx};
}

// zx is the fourth output of the forward. x is read only by fourier's ∂L, which forms
// (Zg Zxᵀ)[:K, :] as (U_Kᵀ ∂y) xᵀ U: O(K n (n + d)) instead of the full Uᵀ x.
std::tuple<at::Tensor, at::Tensor, at::Tensor> spectral_filter_backward(
    const SpectralFilterKernels& kernels, const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& zx,
    const at::Tensor& theta, const at::Tensor& evals, const at::Tensor& evecs, c10::string_view basis_name,
    std::array<bool, 3> output_mask) {
  const SpectralBasis basis = parse_basis(basis_name);
  const int64_t K = check_backward_inputs(grad_y, x, zx, theta, evals, evecs, basis);
  const int64_t Bt = evecs.size(0), n = evecs.size(1), d = x.size(2);
  const bool fourier = basis == SpectralBasis::kFourier;
  const c10::OptionalDeviceGuard guard(x.device());
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
  const at::Tensor Zg = at::bmm(UK.transpose(1, 2), gyc);                    // [Bt, m, d]
  if (output_mask[0]) gx = filtered(UK, filter_values(kernels, lam, thc, basis), Zg);
  if (output_mask[2]) {
    const at::Tensor per = kernels.theta_grad(Zg, zx, lam, K, basis);  // [Bt, K]
    gth = theta.dim() == 2 ? per : at::sum(per, {0});
  }
  if (output_mask[1]) {
    if (fourier) {
      const at::Tensor M = at::bmm(at::bmm(Zg, x.contiguous().transpose(1, 2)), U);  // [Bt, K, n] = (Zg Zxᵀ)[:K, :]
      const at::Tensor MT = at::bmm(at::bmm(zx, gyc.transpose(1, 2)), U);           // ((Zg Zxᵀ)[:, :K])ᵀ
      const at::Tensor W = kernels.dk_weights(M, MT, lam, thc, basis);
      const at::Tensor Tm = at::bmm(UK, at::bmm(W, U.transpose(1, 2)));             // [Bt, n, n]
      gL = at::add(Tm, Tm.transpose(1, 2));
    } else {
      const at::Tensor W = kernels.dk_weights(at::bmm(Zg, zx.transpose(1, 2)), at::Tensor(), lam, thc, basis);
      gL = at::bmm(at::bmm(U, W), U.transpose(1, 2));
    }
  }
  return {gx, gL, gth};
}

// y of _spectral_filter_forward, which saves its eigendecomposition (and Uᵀ x) for its own backward.
at::Tensor spectral_filter(const at::Tensor& x, const at::Tensor& L, const at::Tensor& theta,
                           c10::string_view basis) {
  static const auto forward =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("deephash_ext::_spectral_filter_forward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                             const at::Tensor&, c10::string_view)>();
  return std::get<0>(forward.call(x, L, theta, basis));
}

// The forward and backward of one backend: the host code above over that backend's kernels.
template <const SpectralFilterKernels& kKernels>
struct Backend {
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& x,
                                                                            const at::Tensor& L,
                                                                            const at::Tensor& theta,
                                                                            c10::string_view basis) {
    return spectral_filter_forward(kKernels, x, L, theta, basis);
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
      const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& zx, const at::Tensor& theta,
      const at::Tensor& evals, const at::Tensor& evecs, c10::string_view basis, std::array<bool, 3> output_mask) {
    return spectral_filter_backward(kKernels, grad_y, x, zx, theta, evals, evecs, basis, output_mask);
  }
};

}  // namespace

#ifdef DEEPHASH_EMU
// The emulation module (csrc/emu) compiles this file again for its emu device only; the main
// library registers the rest.
TORCH_LIBRARY_IMPL(deephash_ext, PrivateUse1, m) {
  m.impl("_spectral_filter_forward", &Backend<kSpectralFilterCuda>::forward);
  m.impl("_spectral_filter_backward", &Backend<kSpectralFilterCuda>::backward);
}
#else
// spectral_filter decomposes into _spectral_filter_forward before autograd and backend dispatch, so
// it needs no kernels or formulas of its own.
TORCH_LIBRARY_IMPL(deephash_ext, CompositeImplicitAutograd, m) { m.impl("spectral_filter", &spectral_filter); }

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) {
  m.impl("_spectral_filter_forward", &Backend<kSpectralFilterCpu>::forward);
  m.impl("_spectral_filter_backward", &Backend<kSpectralFilterCpu>::backward);
}
#endif

#if defined(DEEPHASH_WITH_CUDA) && !defined(DEEPHASH_EMU)
TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) {
  m.impl("_spectral_filter_forward", &Backend<kSpectralFilterCuda>::forward);
  m.impl("_spectral_filter_backward", &Backend<kSpectralFilterCuda>::backward);
}
#endif

}  // namespace deephash
