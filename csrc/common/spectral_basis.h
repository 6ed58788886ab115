// Filter bases of spectral_filter, evaluated one eigenvalue at a time: φ_k(λ), and
// g(λ) = Σ_k θ_k φ_k(λ) with its derivative g'(λ) (the Daleckii–Krein backward needs g' on
// near-equal eigenvalues). No allocation and no std:: calls, so the same code can run in CUDA
// device code.
#pragma once

#include <cstdint>

#ifndef DEEPHASH_HD
#if defined(__CUDACC__)
#define DEEPHASH_HD __host__ __device__
#else
#define DEEPHASH_HD
#endif
#endif

namespace deephash {

enum class SpectralBasis : int { kChebyshev = 0, kSpline = 1, kFourier = 2 };

// ---------------------------------------------------------------------------------------------
// Chebyshev: φ_k(λ) = T_k(λ - 1). Derivatives by differentiating the three-term recurrence,
// T'_{k+1} = 2 T_k + 2x T'_k - T'_{k-1}, which is as stable as the recurrence itself on [-1, 1].

template <class T>
DEEPHASH_HD inline void chebyshev_g(const T* theta,  // [K]
                                    int64_t K, T lam, T& g, T& dg) {
  const T x = lam - T(1);
  T t0 = T(1), t1 = x, d0 = T(0), d1 = T(1);
  g = K > 0 ? theta[0] : T(0);
  dg = T(0);
  if (K > 1) {
    g += theta[1] * t1;
    dg += theta[1] * d1;
  }
  for (int64_t k = 2; k < K; ++k) {
    const T t2 = T(2) * x * t1 - t0;
    const T d2 = T(2) * t1 + T(2) * x * d1 - d0;
    g += theta[k] * t2;
    dg += theta[k] * d2;
    t0 = t1;
    t1 = t2;
    d0 = d1;
    d1 = d2;
  }
}

// Accumulates out[k] += w · φ_k(λ), k < K (the θ gradient is Σ_i φ_k(λ_i) w_i).
template <class T>
DEEPHASH_HD inline void chebyshev_accumulate(int64_t K, T lam, T w, T* out /* [K] */) {
  const T x = lam - T(1);
  T t0 = T(1), t1 = x;
  if (K > 0) out[0] += w;
  if (K > 1) out[1] += w * x;
  for (int64_t k = 2; k < K; ++k) {
    const T t2 = T(2) * x * t1 - t0;
    out[k] += w * t2;
    t0 = t1;
    t1 = t2;
  }
}

// ---------------------------------------------------------------------------------------------
// Spline: the K >= 4 cubic B-splines on the clamped knots t = [0,0,0] + linspace(0,2,K-2) + [2,2,2]
// (K + 4 knots), the basis of scipy.interpolate.BSpline.design_matrix(λ, t, 3). λ is clamped into
// [0, 2] for the values; the derivative is that of the end polynomial piece at the clamped λ, so an
// eigenvalue that round-off put at -1e-16 gets the one-sided derivative from inside [0, 2] instead
// of the 0 of the flat extension (normalized Laplacians have λ = 0 exactly, once per component).

template <class T>
DEEPHASH_HD inline T spline_knot(int64_t K, int64_t j) {
  if (j <= 3) return T(0);
  if (j >= K) return T(2);
  return T(2) * static_cast<T>(j - 3) / static_cast<T>(K - 3);
}

// The four basis functions that may be nonzero at λ: φ_{first + r}(λ) = N[r] and φ'_{first + r}(λ) =
// dN[r], r = 0..3. Returns first.
template <class T>
DEEPHASH_HD inline int64_t spline_basis(int64_t K, T lam, T N[4], T dN[4]) {
  const T x = lam < T(0) ? T(0) : (lam > T(2) ? T(2) : lam);
  // Knot span mu with t_mu <= x < t_{mu+1}, mu in [3, K-1]; x = 2 belongs to the last span.
  int64_t mu = 3 + static_cast<int64_t>(x * static_cast<T>(K - 3) / T(2));
  if (mu > K - 1) mu = K - 1;
  if (mu < 3) mu = 3;
  // Cox–de Boor, triangular form (Piegl & Tiller, The NURBS Book, A2.2), keeping the degree-2
  // functions for the derivative: φ'_{i,3} = 3 (N_{i,2} / (t_{i+3} - t_i) - N_{i+1,2} / (t_{i+4} - t_{i+1})).
  T left[4], right[4], N2[3];
  N[0] = T(1);
  for (int j = 1; j <= 3; ++j) {
    left[j] = x - spline_knot<T>(K, mu + 1 - j);
    right[j] = spline_knot<T>(K, mu + j) - x;
    T saved = T(0);
    for (int r = 0; r < j; ++r) {
      const T temp = N[r] / (right[r + 1] + left[j - r]);
      N[r] = saved + right[r + 1] * temp;
      saved = left[j - r] * temp;
    }
    N[j] = saved;
    if (j == 2) {
      N2[0] = N[0];
      N2[1] = N[1];
      N2[2] = N[2];
    }
  }
  const int64_t first = mu - 3;
  for (int r = 0; r < 4; ++r) {
    const int64_t i = first + r;
    const T a = r >= 1 ? N2[r - 1] / (spline_knot<T>(K, i + 3) - spline_knot<T>(K, i)) : T(0);
    const T b = r <= 2 ? N2[r] / (spline_knot<T>(K, i + 4) - spline_knot<T>(K, i + 1)) : T(0);
    dN[r] = T(3) * (a - b);
  }
  return first;
}

template <class T>
DEEPHASH_HD inline void spline_g(const T* theta,  // [K]
                                 int64_t K, T lam, T& g, T& dg) {
  T N[4], dN[4];
  const int64_t first = spline_basis<T>(K, lam, N, dN);
  g = T(0);
  dg = T(0);
  for (int r = 0; r < 4; ++r) {
    g += theta[first + r] * N[r];
    dg += theta[first + r] * dN[r];
  }
}

template <class T>
DEEPHASH_HD inline void spline_accumulate(int64_t K, T lam, T w, T* out /* [K] */) {
  T N[4], dN[4];
  const int64_t first = spline_basis<T>(K, lam, N, dN);
  for (int r = 0; r < 4; ++r) out[first + r] += w * N[r];
}

// g and g' of the polynomial bases (Chebyshev, spline). Fourier has no g(λ): its filter is
// indexed by eigenvalue rank, see csrc/spectral_filter.cpp.
template <class T>
DEEPHASH_HD inline void basis_g(SpectralBasis basis, const T* theta, int64_t K, T lam, T& g, T& dg) {
  if (basis == SpectralBasis::kChebyshev)
    chebyshev_g<T>(theta, K, lam, g, dg);
  else
    spline_g<T>(theta, K, lam, g, dg);
}

template <class T>
DEEPHASH_HD inline void basis_accumulate(SpectralBasis basis, int64_t K, T lam, T w, T* out) {
  if (basis == SpectralBasis::kChebyshev)
    chebyshev_accumulate<T>(K, lam, w, out);
  else
    spline_accumulate<T>(K, lam, w, out);
}

// Daleckii–Krein kernel entry K_ij: the divided difference (g_i - g_j) / (λ_i - λ_j), or g' at the
// midpoint where the eigenvalues are equal to within tol · max(1, |λ_i|, |λ_j|). There the divided
// difference would lose all its digits to cancellation, while g' at the midpoint differs from the
// true divided difference by O(g''' Δ²). Fourier, whose g is indexed by eigenvalue rank,
// drops tied pairs instead (see its gap condition in csrc/spectral_filter.cpp).
template <class T>
DEEPHASH_HD inline bool near_tie(T li, T lj, T tol) {
  T a = li < T(0) ? -li : li, b = lj < T(0) ? -lj : lj;
  T scale = a > b ? a : b;
  if (scale < T(1)) scale = T(1);
  const T d = li - lj;
  return (d < T(0) ? -d : d) <= tol * scale;
}

// The tol of near_tie: about the cube root of the machine epsilon, where cancellation in the
// divided difference (eps · |g| / Δ) and the midpoint error (|g'''| Δ² / 24) are of the same order.
template <class T>
DEEPHASH_HD constexpr T tie_tol() {
  return sizeof(T) == 8 ? T(1e-6) : T(1e-3);
}

}  // namespace deephash
