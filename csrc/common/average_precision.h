// AP arithmetic shared by the CPU and CUDA topk_map kernels.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DEEPHASH_HD __host__ __device__
#else
#define DEEPHASH_HD
#endif

namespace deephash {

// sum_{m=lo}^{hi-1} 1/m for 1 <= lo <= hi. Short ranges and small m add the terms; the rest is
// digamma(hi) - digamma(lo) from its asymptotic series (error below 1e-20 for m >= 64), so a group
// of n tied rows costs O(1), not n divisions.
DEEPHASH_HD inline double harmonic_range(int64_t lo, int64_t hi) {
  double s = 0.0;
  if (hi - lo <= 64) {
    for (int64_t m = lo; m < hi; ++m) s += 1.0 / static_cast<double>(m);
    return s;
  }
  for (; lo < 64; ++lo) s += 1.0 / static_cast<double>(lo);
  const double a = static_cast<double>(lo), b = static_cast<double>(hi);
  // digamma(x) = ln x - 1/(2x) - tail(x), tail(x) = 1/(12x^2) - 1/(120x^4) + 1/(252x^6) - 1/(240x^8).
  auto tail = [](double x) {
    const double x2 = 1.0 / (x * x);
    return x2 * (1.0 / 12 - x2 * (1.0 / 120 - x2 * (1.0 / 252 - x2 * (1.0 / 240))));
  };
  return s + log1p((b - a) / a) + 0.5 * (b - a) / (a * b) - (tail(b) - tail(a));
}

// Expected sum of precisions at the ranks of the r relevant rows of a group of n rows tied at one
// distance, the order inside the group uniformly random, with n_before rows (r_before relevant)
// ranked ahead of the group. A relevant row at place p of the group has, in expectation,
// (p - 1)(r - 1)/(n - 1) other relevant rows ahead of it inside the group (hypergeometric), and
// precision is linear in that count, so the expectation is exact (McSherry & Najork 2008):
//   (r/n) sum_{p=1..n} (r_before + 1 + (p - 1) slope) / (n_before + p),  slope = (r - 1)/(n - 1)
//   = (r/n) (slope n + (r_before + 1 - slope (n_before + 1)) sum_{m=n_before+1..n_before+n} 1/m).
// Small groups take the first form (the second cancels when slope n dominates), large ones the second.
DEEPHASH_HD inline double tied_group_precision_sum(int64_t n, int64_t r, int64_t n_before, int64_t r_before) {
  if (r == 0) return 0.0;
  const double slope = n > 1 ? static_cast<double>(r - 1) / static_cast<double>(n - 1) : 0.0;
  double s = 0.0;
  if (n <= 64) {
    for (int64_t p = 1; p <= n; ++p)
      s += (static_cast<double>(r_before + 1) + static_cast<double>(p - 1) * slope) /
           static_cast<double>(n_before + p);
  } else {
    const double c = static_cast<double>(r_before + 1) - slope * static_cast<double>(n_before + 1);
    s = slope * static_cast<double>(n) + c * harmonic_range(n_before + 1, n_before + n + 1);
  }
  return s * static_cast<double>(r) / static_cast<double>(n);
}

}  // namespace deephash
