// eigh on CUDA: one thread block per matrix, a parallel cyclic Jacobi method in shared memory.
//
// torch.linalg.eigh on CUDA loops over the batch for n > 32. Here each block holds its matrix A
// and the accumulated rotations V in shared memory. A sweep visits every pair (p, q) once in
// m - 1 steps of m / 2 disjoint pairs (the round-robin "circle" ordering; m = n rounded up to even,
// the extra index a zero row and column that never rotates). The pairs of a step do not share an
// index, so their rotations commute: the block computes all m / 2 rotations from the current A,
// applies them to the rows, then to the columns of A and V. Sweeps stop when the off-diagonal
// mass is below eps² of the total. Matrices too large for shared memory go to ATen's
// linalg_eigh (cuSOLVER).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/linalg_eigh.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cfloat>
#include <cmath>
#include <tuple>

#include "common/codes_cuda.cuh"
#include "common/spectral_checks.h"
#include "cuda/spectral_cuda.h"

namespace deephash {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxSweeps = 30;

template <class T>
__device__ __forceinline__ T block_sum(T v, T* scratch /* [32] */) {
  for (int s = 16; s > 0; s >>= 1) v += __shfl_down_sync(0xffffffffu, v, s);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < (blockDim.x + 31) / 32; ++w) total += scratch[w];
  return total;
}

// Position i of the round-robin at step s: index 0 stays, the others rotate.
__device__ __forceinline__ int circle(int i, int s, int m) { return i == 0 ? 0 : 1 + (i - 1 + s) % (m - 1); }

template <class T>
__global__ void jacobi_eigh_kernel(const T* __restrict__ S,  // [Bt, n, n], symmetric
                                   T* __restrict__ values,   // [Bt, n]
                                   T* __restrict__ vectors,  // [Bt, n, n]
                                   int n, T tol2) {
  extern __shared__ unsigned char smem_raw[];
  const int m = n + (n & 1);
  T* A = reinterpret_cast<T*>(smem_raw);  // [m, m]
  T* V = A + m * m;                       // [m, m]
  T* cs = V + m * m;                      // [m / 2]
  T* sn = cs + m / 2;                     // [m / 2]
  __shared__ T scratch[32];
  const T* s = S + static_cast<int64_t>(blockIdx.x) * n * n;
  for (int i = threadIdx.x; i < m * m; i += blockDim.x) {
    const int r = i / m, c = i % m;
    A[i] = r < n && c < n ? s[r * n + c] : T(0);
    V[i] = r == c ? T(1) : T(0);
  }
  __syncthreads();
  const int half = m / 2;
  for (int sweep = 0; sweep < kMaxSweeps; ++sweep) {
    T off = 0, all = 0;
    for (int i = threadIdx.x; i < m * m; i += blockDim.x) {
      const T a2 = A[i] * A[i];
      all += a2;
      if (i / m != i % m) off += a2;
    }
    off = block_sum(off, scratch);
    all = block_sum(all, scratch);
    if (off <= tol2 * all) break;
    for (int step = 0; step < m - 1; ++step) {
      for (int k = threadIdx.x; k < half; k += blockDim.x) {
        const int p = circle(k, step, m), q = circle(m - 1 - k, step, m);
        const T apq = A[p * m + q];
        T c = 1, sv = 0;
        if (apq != T(0)) {
          const T theta = (A[q * m + q] - A[p * m + p]) / (T(2) * apq);
          const T t = (theta >= T(0) ? T(1) : T(-1)) / (fabs(theta) + sqrt(theta * theta + T(1)));
          c = T(1) / sqrt(t * t + T(1));
          sv = t * c;
        }
        cs[k] = c;
        sn[k] = sv;
      }
      __syncthreads();
      // Rows p and q of A: Jᵀ A.
      for (int i = threadIdx.x; i < half * m; i += blockDim.x) {
        const int k = i / m, j = i % m;
        const int p = circle(k, step, m), q = circle(m - 1 - k, step, m);
        const T ap = A[p * m + j], aq = A[q * m + j];
        A[p * m + j] = cs[k] * ap - sn[k] * aq;
        A[q * m + j] = sn[k] * ap + cs[k] * aq;
      }
      __syncthreads();
      // Columns p and q of A and V: A J, V J.
      for (int i = threadIdx.x; i < half * m; i += blockDim.x) {
        const int k = i / m, r = i % m;
        const int p = circle(k, step, m), q = circle(m - 1 - k, step, m);
        const T ap = A[r * m + p], aq = A[r * m + q];
        A[r * m + p] = cs[k] * ap - sn[k] * aq;
        A[r * m + q] = sn[k] * ap + cs[k] * aq;
        const T vp = V[r * m + p], vq = V[r * m + q];
        V[r * m + p] = cs[k] * vp - sn[k] * vq;
        V[r * m + q] = sn[k] * vp + cs[k] * vq;
      }
      __syncthreads();
    }
  }
  // Ascending order: each eigenvalue's rank counts the smaller ones (ties by index).
  T* w = values + static_cast<int64_t>(blockIdx.x) * n;
  T* v = vectors + static_cast<int64_t>(blockIdx.x) * n * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const T di = A[i * m + i];
    int rank = 0;
    for (int j = 0; j < n; ++j) {
      const T dj = A[j * m + j];
      rank += dj < di || (dj == di && j < i);
    }
    w[rank] = di;
    for (int r = 0; r < n; ++r) v[r * n + rank] = V[r * m + i];
  }
}

template <class T>
__global__ void symmetrize_kernel(const T* __restrict__ L,  // [Bt, n, n]
                                  T* __restrict__ S,        // [Bt, n, n]
                                  double* __restrict__ stats,  // [Bt, 2]: max |L - Lᵀ|, max(1, max |L|)
                                  int64_t n) {
  __shared__ double red_asym[kThreads], red_scale[kThreads];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * n * n;
  double asym = 0.0, scale = 1.0;
  for (int64_t i = threadIdx.x; i < n * n; i += blockDim.x) {
    const int64_t r = i / n, c = i % n;
    const double a = L[base + r * n + c], b = L[base + c * n + r];
    const double diff = fabs(a - b);
    // A NaN must fail the check: carry it as an infinite asymmetry.
    asym = fmax(asym, diff != diff ? HUGE_VAL : diff);
    scale = fmax(scale, fabs(a));
    S[base + i] = static_cast<T>((a + b) * 0.5);
  }
  red_asym[threadIdx.x] = asym;
  red_scale[threadIdx.x] = scale;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      red_asym[threadIdx.x] = fmax(red_asym[threadIdx.x], red_asym[threadIdx.x + s]);
      red_scale[threadIdx.x] = fmax(red_scale[threadIdx.x], red_scale[threadIdx.x + s]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats[2 * blockIdx.x] = red_asym[0];
    stats[2 * blockIdx.x + 1] = red_scale[0];
  }
}

template <class T>
size_t jacobi_smem(int64_t n) {
  const int64_t m = n + (n & 1);
  return static_cast<size_t>(2 * m * m + m) * sizeof(T);
}

std::tuple<at::Tensor, at::Tensor> eigh_cuda(const at::Tensor& L) {
  check_square_batch(L, "eigh", "L");
  const c10::cuda::CUDAGuard guard(L.device());
  return batched_eigh_cuda(symmetrized_cuda(L, "eigh"));
}

}  // namespace

at::Tensor symmetrized_cuda(const at::Tensor& L, const char* op) {
  const at::Tensor Lc = L.contiguous();
  at::Tensor S = at::empty_like(Lc);
  const int64_t Bt = Lc.size(0), n = Lc.size(1);
  if (Bt == 0 || n == 0) return S;
  at::Tensor stats = at::empty({Bt, 2}, Lc.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(Lc.scalar_type(), "symmetrized_cuda", [&] {
    symmetrize_kernel<scalar_t><<<static_cast<unsigned>(Bt), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        Lc.const_data_ptr<scalar_t>(), S.mutable_data_ptr<scalar_t>(), stats.mutable_data_ptr<double>(), n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor host = stats.cpu();
  const double* st = host.const_data_ptr<double>();
  for (int64_t b = 0; b < Bt; ++b)
    TORCH_CHECK(st[2 * b] <= kSymmetryTol * st[2 * b + 1], op, ": L must be symmetric, but graph ", b,
                " has max |L - L^T| = ", st[2 * b], " > ", kSymmetryTol, " * max(1, max |L|) = ",
                kSymmetryTol * st[2 * b + 1]);
  return S;
}

std::tuple<at::Tensor, at::Tensor> batched_eigh_cuda(const at::Tensor& Ls) {
  const int64_t Bt = Ls.size(0), n = Ls.size(1);
  at::Tensor values = at::empty({Bt, n}, Ls.options());
  at::Tensor vectors = at::empty({Bt, n, n}, Ls.options());
  if (Bt == 0 || n == 0) return {values, vectors};
  int device = 0, max_smem = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  bool done = false;
  AT_DISPATCH_FLOATING_TYPES(Ls.scalar_type(), "batched_eigh_cuda", [&] {
    using T = scalar_t;
    const size_t smem = jacobi_smem<T>(n);
    if (smem + 32 * sizeof(T) > static_cast<size_t>(max_smem) || Bt > 0x7fffffff) return;
    if (smem > 48 * 1024)
      C10_CUDA_CHECK(cudaFuncSetAttribute(jacobi_eigh_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
    // Stop at the rounding floor: off-diagonal entries of a few ulps each leave an off-diagonal
    // mass of about n (eps)² times the total.
    const T eps = sizeof(T) == 8 ? T(DBL_EPSILON) : T(FLT_EPSILON);
    jacobi_eigh_kernel<T><<<static_cast<unsigned>(Bt), kThreads, smem, c10::cuda::getCurrentCUDAStream()>>>(
        Ls.const_data_ptr<T>(), values.mutable_data_ptr<T>(), vectors.mutable_data_ptr<T>(), static_cast<int>(n),
        T(16) * static_cast<T>(n) * eps * eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    done = true;
  });
  if (done) return {values, vectors};
  auto [w, v] = at::linalg_eigh(Ls, "L");
  return {w, v};
}

TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) { m.impl("eigh", &eigh_cuda); }

}  // namespace deephash
