// eigh on the CPU: batched symmetric eigendecomposition, the batch spread over threads.
//
// torch.linalg.eigh walks a batch one matrix at a time and leaves the threads to LAPACK, whose
// divide-and-conquer gains little from a second thread at n <= 256 (on the 2-core machine of the
// recorded benchmarks, 2 threads were slower than 1). Each thread here instead runs one batched
// at::linalg_eigh over its own slice of the batch: inside a parallel region ATen and MKL stay
// single-threaded, so the threads never oversubscribe.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/linalg_eigh.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "common/spectral_checks.h"
#include "cpu/spectral_cpu.h"

namespace deephash {

namespace {

template <class T>
void symmetrize_kernel(const T* L,  // [Bt, n, n]
                       T* S,        // [Bt, n, n]
                       int64_t Bt, int64_t n, const char* op) {
  // One pass per graph: the asymmetry and the scale it is judged against, then the mean of L and Lᵀ.
  at::parallel_for(0, Bt, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* l = L + b * n * n;
      T* s = S + b * n * n;
      double asym = 0.0, scale = 1.0;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          const double a = l[i * n + j];
          asym = std::max(asym, std::abs(a - static_cast<double>(l[j * n + i])));
          scale = std::max(scale, std::abs(a));
          s[i * n + j] = (l[i * n + j] + l[j * n + i]) * T(0.5);
        }
      }
      // NaN fails the comparison too, so a NaN in L is refused here rather than handed to LAPACK.
      TORCH_CHECK(asym <= kSymmetryTol * scale, op, ": L must be symmetric, but graph ", b, " has max |L - L^T| = ",
                  asym, " > ", kSymmetryTol, " * max(1, max |L|) = ", kSymmetryTol * scale);
    }
  });
}

}  // namespace

at::Tensor symmetrized_cpu(const at::Tensor& L, const char* op) {
  const at::Tensor Lc = L.contiguous();
  at::Tensor S = at::empty_like(Lc);
  const int64_t Bt = Lc.size(0), n = Lc.size(1);
  if (Bt == 0 || n == 0) return S;
  AT_DISPATCH_FLOATING_TYPES(Lc.scalar_type(), "symmetrized_cpu", [&] {
    symmetrize_kernel<scalar_t>(Lc.const_data_ptr<scalar_t>(), S.mutable_data_ptr<scalar_t>(), Bt, n, op);
  });
  return S;
}

std::tuple<at::Tensor, at::Tensor> batched_eigh_cpu(const at::Tensor& Ls) {
  const int64_t Bt = Ls.size(0), n = Ls.size(1);
  at::Tensor values = at::empty({Bt, n}, Ls.options());
  at::Tensor vectors = at::empty({Bt, n, n}, Ls.options());
  if (Bt == 0 || n == 0) return {values, vectors};
  // One slice per thread (grain 1): fewer, larger at::linalg_eigh calls amortise their set-up.
  at::parallel_for(0, Bt, 1, [&](int64_t b0, int64_t b1) {
    auto [w, v] = at::linalg_eigh(Ls.slice(0, b0, b1), "L");
    values.slice(0, b0, b1).copy_(w);
    vectors.slice(0, b0, b1).copy_(v);
  });
  return {values, vectors};
}

namespace {

std::tuple<at::Tensor, at::Tensor> eigh_cpu(const at::Tensor& L) {
  check_square_batch(L, "eigh", "L");
  return batched_eigh_cpu(symmetrized_cpu(L, "eigh"));
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) { m.impl("eigh", &eigh_cpu); }

}  // namespace deephash
