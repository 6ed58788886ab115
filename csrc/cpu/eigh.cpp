// eigh on the CPU: batched symmetric eigendecomposition, the batch spread over threads.
//
// torch.linalg.eigh walks a batch one matrix at a time and leaves the threads to LAPACK, whose
// divide-and-conquer gains little from a second thread at n <= 256 (on the 2-core machine of the
// recorded benchmarks, 2 threads were often slower than 1). The threads here instead share out the
// batch, each running batched at::linalg_eigh calls over slices of it: inside a parallel region
// ATen and MKL stay single-threaded (nested OpenMP regions get one thread), so the threads never
// oversubscribe. Small matrices (n <= kSmallN) use a solver of our own, below.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/linalg_eigh.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "common/spectral_checks.h"
#include "cpu/spectral_cpu.h"

namespace deephash {

namespace {

// s = (l + lᵀ) / 2 for one graph [n, n], after checking that l is finite and symmetric to within
// kSymmetryTol · max(1, max |l|). Fused into the eigendecomposition's threads: the matrix is
// then hot in cache for the solver.
template <class T>
void symmetrize_one(const T* l, T* s, int64_t n, int64_t b, const char* op) {
  double asym = 0.0, scale = 1.0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double a = l[i * n + j];
      TORCH_CHECK(std::isfinite(a), op, ": L must be finite, but graph ", b, " has L[", i, ", ", j, "] = ", a);
      asym = std::max(asym, std::abs(a - static_cast<double>(l[j * n + i])));
      scale = std::max(scale, std::abs(a));
      // Halves first: (a + b) / 2 overflows for entries above half the largest finite value.
      s[i * n + j] = l[i * n + j] * T(0.5) + l[j * n + i] * T(0.5);
    }
  }
  TORCH_CHECK(asym <= kSymmetryTol * scale, op, ": L must be symmetric, but graph ", b, " has max |L - L^T| = ", asym,
              " > ", kSymmetryTol, " * max(1, max |L|) = ", kSymmetryTol * scale);
}

// ---------------------------------------------------------------------------------------------
// Small matrices: Householder tridiagonalisation and implicit QL (tred2/tql2 of EISPACK, as in
// JAMA), single-threaded per matrix. For n <= kSmallN this beats a LAPACK call per matrix, whose
// set-up and blocking do not pay off on matrices this small (they fit in L2). Everything works in
// place on the output, V stored column-major, so the inner loops of both phases (down the columns
// of V in tred2, the QL rotations of pairs of eigenvectors in tql2) run over contiguous memory.

// Measured on the benchmark machine (64 matrices, 2 threads, against MKL's syevd through
// at::linalg_eigh): float32 1.4x faster at n = 64, 1.15x at 128, 1.1x at 160, even at 192, slower
// at 256; float64 1.5x at 64, 1.25x at 128, 1.1x at 160. The two reductions of tred2 below must
// run on vectors (omp simd) for that: left scalar, n = 128 took 1.25x LAPACK's time.
constexpr int64_t kSmallN = 160;

// |(a, b)| without overflow, one division cheaper than std::hypot's care for every edge case.
template <class T>
inline T norm2(T a, T b) {
  a = std::abs(a);
  b = std::abs(b);
  if (a < b) std::swap(a, b);
  if (a == T(0)) return T(0);
  const T r = b / a;
  return a * std::sqrt(T(1) + r * r);
}

template <class T>
void eigh_small(const T* A,  // [n, n] symmetric; may be Vt itself
                int64_t n,
                T* d,        // [n] out: eigenvalues, ascending
                T* e,        // [n] work
                T* Vt) {     // [n, n] out: row i = eigenvector i (the column-major eigenvector matrix)
  T* V = Vt;
  // V is stored column-major: the O(n³) loops of tred2 run down columns, so they read contiguous
  // memory, and the final V's storage is already Vt. A is symmetric, so its copy needs no transpose.
  if (A != V) std::copy(A, A + n * n, V);
  auto v = [&](int64_t i, int64_t j) -> T& { return V[j * n + i]; };
  // tred2: V <- the orthogonal Q with Qᵀ A Q tridiagonal, d <- its diagonal, e <- its subdiagonal.
  for (int64_t j = 0; j < n; ++j) d[j] = v(n - 1, j);
  for (int64_t i = n - 1; i > 0; --i) {
    T scale = T(0), h = T(0);
    for (int64_t k = 0; k < i; ++k) scale += std::abs(d[k]);
    if (scale == T(0)) {
      e[i] = d[i - 1];
      for (int64_t j = 0; j < i; ++j) {
        d[j] = v(i - 1, j);
        v(i, j) = T(0);
        v(j, i) = T(0);
      }
    } else {
      for (int64_t k = 0; k < i; ++k) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      T f = d[i - 1];
      T g = std::sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (int64_t j = 0; j < i; ++j) e[j] = T(0);
      for (int64_t j = 0; j < i; ++j) {
        f = d[j];
        v(j, i) = f;
        g = e[j] + v(j, j) * f;
        // Vector partial sums: a float reduction is otherwise left in its serial order.
#pragma omp simd reduction(+ : g)
        for (int64_t k = j + 1; k <= i - 1; ++k) {
          g += v(k, j) * d[k];
          e[k] += v(k, j) * f;
        }
        e[j] = g;
      }
      f = T(0);
      for (int64_t j = 0; j < i; ++j) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const T hh = f / (h + h);
      for (int64_t j = 0; j < i; ++j) e[j] -= hh * d[j];
      for (int64_t j = 0; j < i; ++j) {
        f = d[j];
        g = e[j];
        for (int64_t k = j; k <= i - 1; ++k) v(k, j) -= (f * e[k] + g * d[k]);
        d[j] = v(i - 1, j);
        v(i, j) = T(0);
      }
    }
    d[i] = h;
  }
  for (int64_t i = 0; i < n - 1; ++i) {
    v(n - 1, i) = v(i, i);
    v(i, i) = T(1);
    const T h = d[i + 1];
    if (h != T(0)) {
      for (int64_t k = 0; k <= i; ++k) d[k] = v(k, i + 1) / h;
      for (int64_t j = 0; j <= i; ++j) {
        T g = T(0);
#pragma omp simd reduction(+ : g)
        for (int64_t k = 0; k <= i; ++k) g += v(k, i + 1) * v(k, j);
        for (int64_t k = 0; k <= i; ++k) v(k, j) -= g * d[k];
      }
    }
    for (int64_t k = 0; k <= i; ++k) v(k, i + 1) = T(0);
  }
  for (int64_t j = 0; j < n; ++j) {
    d[j] = v(n - 1, j);
    v(n - 1, j) = T(0);
  }
  v(n - 1, n - 1) = T(1);
  e[0] = T(0);

  // tql2: implicit QL on (d, e), the rotations applied to the rows of Vt.
  for (int64_t i = 1; i < n; ++i) e[i - 1] = e[i];
  e[n - 1] = T(0);
  T f = T(0), tst1 = T(0);
  const T eps = std::numeric_limits<T>::epsilon();
  for (int64_t l = 0; l < n; ++l) {
    tst1 = std::max(tst1, std::abs(d[l]) + std::abs(e[l]));
    int64_t m = l;
    while (m < n - 1 && std::abs(e[m]) > eps * tst1) ++m;
    if (m > l) {
      // Converges in 1–2 iterations per eigenvalue; the cap only guards against a loop forever.
      for (int iter = 0; iter < 60; ++iter) {
        T g = d[l];
        T p = (d[l + 1] - g) / (T(2) * e[l]);
        T r = norm2(p, T(1));
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const T dl1 = d[l + 1];
        T h = g - d[l];
        for (int64_t i = l + 2; i < n; ++i) d[i] -= h;
        f += h;
        p = d[m];
        T c = T(1), c2 = c, c3 = c;
        const T el1 = e[l + 1];
        T s = T(0), s2 = T(0);
        for (int64_t i = m - 1; i >= l; --i) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = norm2(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          T* vi = Vt + i * n;
          T* vi1 = Vt + (i + 1) * n;
          for (int64_t k = 0; k < n; ++k) {
            const T hk = vi1[k];
            vi1[k] = s * vi[k] + c * hk;
            vi[k] = c * vi[k] - s * hk;
          }
        }
        p = -s * s2 * c3 * el1 * e[l] / dl1;
        e[l] = s * p;
        d[l] = c * p;
        if (std::abs(e[l]) <= eps * tst1) break;
      }
    }
    d[l] += f;
    e[l] = T(0);
  }
  // Ascending order (selection sort: n swaps of contiguous rows at most).
  for (int64_t i = 0; i < n - 1; ++i) {
    int64_t k = i;
    T p = d[i];
    for (int64_t j = i + 1; j < n; ++j)
      if (d[j] < p) {
        k = j;
        p = d[j];
      }
    if (k != i) {
      d[k] = d[i];
      d[i] = p;
      std::swap_ranges(Vt + i * n, Vt + (i + 1) * n, Vt + k * n);
    }
  }
}

// Power-of-two exponent e that brings max |a| to about 1, when it lies outside [rmin, rmax]; else 0.
// tred2 and tql2 square entries (h, norm2, the QL shifts), so a matrix whose norm is near the
// overflow or underflow threshold loses everything (NaN above ~1e19 in float32, ~1e154 in
// float64, wrong digits below the mirror thresholds). LAPACK's syev* scale the same way and for
// the same range: rmin = sqrt(smallest normal / eps), rmax = 1 / rmin. A power of two scales
// every entry exactly (save for entries pushed into the subnormals), and the eigenvectors do not
// change; the eigenvalues are scaled back by 2^e.
template <class T>
int scale_exponent(const T* a, int64_t n) {
  T anrm = T(0);
  for (int64_t i = 0; i < n * n; ++i) anrm = std::max(anrm, std::abs(a[i]));
  const T rmin = std::sqrt(std::numeric_limits<T>::min() / std::numeric_limits<T>::epsilon());
  const T rmax = T(1) / rmin;
  if (anrm == T(0) || (anrm >= rmin && anrm <= rmax)) return 0;
  return std::ilogb(anrm);
}

template <class T>
void eigh_small_scaled(T* a,  // [n, n] symmetric, in place: out the column-major eigenvectors
                       int64_t n, T* d, T* e) {
  const int ex = scale_exponent(a, n);
  if (ex != 0)
    for (int64_t i = 0; i < n * n; ++i) a[i] = std::ldexp(a[i], -ex);
  eigh_small<T>(a, n, d, e, a);
  if (ex != 0)
    for (int64_t i = 0; i < n; ++i) d[i] = std::ldexp(d[i], ex);
}

// Runs f(b0, b1) over slices [b0, b1) of the batch, `slice` matrices at a time, on the intra-op
// threads: each thread pulls the next slice from a shared counter, so that a thread the OS delays
// (the cores are often shared) holds back only the slice in hand, not a fixed half of the batch.
template <class F>
void for_each_slice(int64_t Bt, int64_t slice, const F& f) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), Bt);
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t b0 = next.fetch_add(slice); b0 < Bt; b0 = next.fetch_add(slice)) f(b0, std::min(Bt, b0 + slice));
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> symmetric_eigh_cpu(const at::Tensor& L, const char* op) {
  const at::Tensor Lc = L.contiguous();
  const int64_t Bt = Lc.size(0), n = Lc.size(1);
  at::Tensor values = at::empty({Bt, n}, Lc.options());
  // Column-major matrices, as LAPACK writes them (and as torch.linalg.eigh returns them), so that
  // at::linalg_eigh_out fills each slice in place with no copy.
  at::Tensor vectors = at::empty_strided({Bt, n, n}, {n * n, 1, n}, Lc.options());
  if (Bt == 0 || n == 0) return {values, vectors};
  if (n <= kSmallN) {
    AT_DISPATCH_FLOATING_TYPES(Lc.scalar_type(), "eigh_small", [&] {
      const scalar_t* l = Lc.const_data_ptr<scalar_t>();
      scalar_t* w = values.mutable_data_ptr<scalar_t>();
      scalar_t* vt = vectors.mutable_data_ptr<scalar_t>();
      // One matrix at a time (64 when they are tiny, to keep the counter off the hot path).
      for_each_slice(Bt, n < 16 ? 64 : 1, [&](int64_t b0, int64_t b1) {
        std::vector<scalar_t> e(n);  // one allocation per slice: nothing beside an O(n^3) solve
        for (int64_t b = b0; b < b1; ++b) {
          // The symmetric matrix reads the same in either order, so it goes straight into the
          // column-major output that the solver works in.
          symmetrize_one<scalar_t>(l + b * n * n, vt + b * n * n, n, b, op);
          eigh_small_scaled<scalar_t>(vt + b * n * n, n, w + b * n, e.data());
        }
      });
    });
    return {values, vectors};
  }
  // Slices of about Bt / (4 · threads) matrices: a batched at::linalg_eigh call per slice amortises
  // its set-up.
  at::Tensor Ls = at::empty_like(Lc);
  const int64_t slice = std::max<int64_t>(1, Bt / (4 * std::min<int64_t>(at::get_num_threads(), Bt)));
  for_each_slice(Bt, slice, [&](int64_t b0, int64_t b1) {
    AT_DISPATCH_FLOATING_TYPES(Lc.scalar_type(), "symmetrize", [&] {
      for (int64_t b = b0; b < b1; ++b)
        symmetrize_one<scalar_t>(Lc.const_data_ptr<scalar_t>() + b * n * n, Ls.mutable_data_ptr<scalar_t>() + b * n * n,
                                 n, b, op);
    });
    at::Tensor w = values.slice(0, b0, b1), v = vectors.slice(0, b0, b1);
    at::linalg_eigh_out(w, v, Ls.slice(0, b0, b1), "L");
  });
  return {values, vectors};
}

namespace {

std::tuple<at::Tensor, at::Tensor> eigh_cpu(const at::Tensor& L) {
  check_square_batch(L, "eigh", "L");
  return symmetric_eigh_cpu(L, "eigh");
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) { m.impl("eigh", &eigh_cpu); }

}  // namespace deephash
