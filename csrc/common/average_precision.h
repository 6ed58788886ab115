// AP arithmetic shared by the CPU and CUDA topk_map kernels.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DEEPHASH_HD __host__ __device__
#else
#define DEEPHASH_HD
#endif

namespace deephash {

// Expected sum of precisions at the ranks of the r relevant rows of a group of n rows tied at one
// distance, the order inside the group uniformly random, with n_before rows (r_before relevant)
// ranked ahead of the group. A relevant row at place p of the group has, in expectation,
// (p - 1)(r - 1)/(n - 1) other relevant rows ahead of it inside the group (hypergeometric), and
// precision is linear in that count, so the expectation is exact (McSherry & Najork 2008).
DEEPHASH_HD inline double tied_group_precision_sum(int64_t n, int64_t r, int64_t n_before, int64_t r_before) {
  if (r == 0) return 0.0;
  const double slope = n > 1 ? static_cast<double>(r - 1) / static_cast<double>(n - 1) : 0.0;
  double s = 0.0;
  for (int64_t p = 1; p <= n; ++p)
    s += (static_cast<double>(r_before + 1) + static_cast<double>(p - 1) * slope) /
         static_cast<double>(n_before + p);
  return s * static_cast<double>(r) / static_cast<double>(n);
}

}  // namespace deephash
