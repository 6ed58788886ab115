// eigh on CUDA: one thread block per matrix, a parallel cyclic Jacobi method in shared memory.
//
// torch.linalg.eigh on CUDA loops over the batch for n > 32 (one cuSOLVER syevd per matrix,
// latency-bound at these sizes). Here each block holds its matrix A (scaled, see below) and the
// accumulated rotations Vt (row i = eigenvector i) in shared memory. A sweep visits every pair
// (p, q) once in m - 1 steps of m / 2 disjoint pairs (the round-robin "circle" ordering; m = n
// rounded up to even, the extra index a zero row and column that never rotates). The pairs of a
// step share no index, so A' = Jᵀ A J splits into independent 2 x 2 blocks (pair I's rows, pair J's
// columns): one pass updates every block in place, with no barrier between the row and the column
// rotation, and the diagonal blocks take the exact Jacobi update (a_pp - t a_pq, a_qq + t a_pq, 0),
// so rounding never regrows the annihilated entries.
//
// Scaling and stopping. The block divides A by max |A| on load (eigenvalues are scaled back), so no
// square below can overflow or underflow whatever the input's magnitude, as LAPACK's scaling of
// syevd guarantees for torch.linalg.eigh. A pair rotates only when |a_pq| is not negligible: above
// eps² ‖A‖_F (absolute, second order in eigenvalues) and above eps/128 min(|a_pp|, |a_qq|)
// (relative to its own diagonal, the classical Rutishauser test). A sweep in which no pair rotates
// ends the solve; no sum of squares decides it, so clusters of equal eigenvalues (complete or star
// graphs) stop as soon as their entries are negligible instead of chasing a rounding floor.
// kMaxSweeps only guards against a loop forever (quadratic convergence: 6-10 sweeps at n <= 160).
//
// Shared-memory layout. A has an odd row stride (m + 1): the 32 lanes of a warp take 32
// consecutive pairs J of one pair I, whose columns are consecutive round-robin positions, so they
// fall in distinct banks (float64: two wavefronts, the minimum). Vt rows are updated with lanes
// along the row (contiguous). The pair positions and rotations of a step are computed once into
// shared arrays, so the update loop does no division or modulo. Eigenvectors leave the block
// column-major (strides (n², 1, n), like torch.linalg.eigh and the CPU op): eigenvector i is row i
// of Vt and column rank(i) of the output, written contiguously.
//
// Cost model (H200: 132 SMs, 227 KB shared memory per block, ~128 B/clock/SM of shared memory at
// ~1.98 GHz = ~33 TB/s chip-wide). One step reads and writes every active 2 x 2 block of A and
// the two rows of Vt of each active pair: at most 4 m² accesses of sizeof(T) bytes, 2 barriers.
// A sweep is m - 1 steps; late sweeps skip the converged pairs. For n = 128 float32 (m² = 16384):
// <= 256 KB per step, ~2,000 clocks at the shared-memory rate, ~8 sweeps x 127 steps = ~1 ms per
// matrix with 1024 threads (32 warps) on one SM; smem 131 KB -> one block per SM, so 1024 matrices
// take ~8 waves = ~8 ms. torch.linalg.eigh at that size costs about 1 ms per matrix on a GPU
// (one syevd each, 1024 in sequence): >= 20x needs <= ~50 ms, met with room for a 4x miss of this
// estimate. n = 64 float32: 33 KB, 256 threads, 4 blocks per SM (56 registers per thread, the
// limit before shared memory's 6), ~0.1 ms per matrix, 1024 matrices ~1 ms. float64 moves twice
// the bytes per access (~2x the time). ptxas (sm_90): 56 registers (float32) and 64 (float64) per
// thread under the 1024-thread launch bound, no spills.
// Sweeps, in a float emulation of this kernel (benchmarks/jacobi_emulation.py) at n = 65: 8-9 on random matrices and Laplacians,
// 13-16 on clusters of equal eigenvalues (complete and star graphs, two equal components).
// The baseline: torch.linalg.eigh takes cuSOLVER's batched syev only for n <= 32 and otherwise
// runs one syevd per matrix (unmeasured here: the GPU check measures it).
// spectral_filter at 64 x 128 x 256 (the HAGCN shape) runs 64 such blocks, one per graph, on 64 of
// the 132 SMs: one wave of ~1 ms (float32) for the eigendecomposition, plus cuBLAS products of
// ~1 GFLOP forward and ~3 GFLOP backward (well under 1 ms). Against the pure-PyTorch formulation
// (64 syevd calls, ~64 ms at the per-matrix cost above, plus autograd through eigh), >= 10x holds
// with half the chip idle; splitting one matrix over a cluster of blocks (distributed shared
// memory) would fill it, and is left until a measurement asks for it.
// Limits: V stays in shared memory while 2 m² + m words fit (float32 n <= 168, float64 n <= 118);
// beyond, Vt lives in a global workspace (L2-resident: float32 n <= 238, float64 n <= 168) and
// past that the batch goes to ATen's linalg_eigh (cuSOLVER), whose vectors are copied into the
// same column-major layout. The thresholds come from the device's opt-in shared-memory limit.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/linalg_eigh.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cfloat>
#include <climits>
#include <cmath>
#include <tuple>

#include "common/codes_cuda.cuh"
#include "common/spectral_checks.h"
#include "cuda/spectral_cuda.h"

namespace deephash {
namespace {

constexpr int kMaxSweeps = 40;
constexpr int kReduceThreads = 256;

template <class T>
struct Sum {
  __device__ T operator()(T a, T b) const { return a + b; }
};
template <class T>
struct Max {
  __device__ T operator()(T a, T b) const { return a > b ? a : b; }
};

// Every thread gets the block-wide reduction. The leading barrier frees `scratch` from its last use.
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T v, T* scratch /* [32] */, Op op) {
  for (int s = 16; s > 0; s >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, s));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = scratch[0];
  for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) total = op(total, scratch[w]);
  return total;
}

// Position i of the round-robin at step s: index 0 stays, the others rotate.
__device__ __forceinline__ int circle(int i, int s, int m) { return i == 0 ? 0 : 1 + (i - 1 + s) % (m - 1); }


// Shared memory of one block: A [m, m + 1], Vt [m, m] when `v_shared`, cs/sn/tn [m / 2] each,
// then ints P/Q [m / 2] each and rank [m].
template <class T>
size_t jacobi_smem(int64_t n, bool v_shared) {
  const int64_t m = n + (n & 1), half = m / 2;
  return static_cast<size_t>(m * (m + 1) + (v_shared ? m * m : 0) + 3 * half) * sizeof(T) +
         static_cast<size_t>(2 * half + m) * sizeof(int);
}

// Threads per block: about four 2 x 2 blocks of A per thread and step, whole warps, 64..1024.
int jacobi_threads(int64_t n) {
  const int64_t half = (n + (n & 1)) / 2;
  const int64_t warps = (half * half + 127) / 128;
  return static_cast<int>(32 * (warps < 2 ? 2 : (warps > 32 ? 32 : warps)));
}

template <class T>
__global__ void __launch_bounds__(1024) jacobi_eigh_kernel(const T* __restrict__ S,  // [Bt, n, n], symmetric
                                                           T* __restrict__ values,   // [Bt, n]
                                                           T* __restrict__ vectors,  // [Bt, n, n], column-major
                                                           T* __restrict__ work,     // [Bt, m, m] or null: Vt
                                                           int n, T eps) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ T scratch[32];
  __shared__ int rotated;
  const int m = n + (n & 1), half = m / 2, lda = m + 1;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
  T* A = reinterpret_cast<T*>(smem_raw);  // [m, lda]
  T* Vt = work ? work + static_cast<int64_t>(blockIdx.x) * m * m : A + m * lda;  // [m, m]
  T* cs = (work ? A + m * lda : Vt + m * m);  // [half]
  T* sn = cs + half;                          // [half]
  T* tn = sn + half;                          // [half]
  int* P = reinterpret_cast<int*>(tn + half);  // [half]
  int* Qd = P + half;                          // [half]
  int* rank = Qd + half;                       // [m]

  const T* s = S + static_cast<int64_t>(blockIdx.x) * n * n;
  T amax = 0;
  for (int r = warp; r < m; r += nwarps) {
    for (int c = lane; c < m; c += 32) {
      const T v = r < n && c < n ? s[r * n + c] : T(0);
      A[r * lda + c] = v;
      amax = fmax(amax, fabs(v));
      Vt[r * m + c] = r == c ? T(1) : T(0);
    }
  }
  amax = block_reduce(amax, scratch, Max<T>());
  const T scale = amax > T(0) ? amax : T(1);
  T fro2 = 0;
  for (int r = warp; r < n; r += nwarps) {
    for (int c = lane; c < n; c += 32) {
      const T v = A[r * lda + c] / scale;
      A[r * lda + c] = v;
      fro2 += v * v;
    }
  }
  // Entries are <= 1 and one of them is 1, so fro2 lies in [1, n²]: no overflow, no underflow.
  const T floor_abs = eps * eps * sqrt(block_reduce(fro2, scratch, Sum<T>()));
  const T rel = eps / T(128);

  for (int sweep = 0; sweep < kMaxSweeps; ++sweep) {
    if (tid == 0) rotated = 0;
    for (int step = 0; step < m - 1; ++step) {
      __syncthreads();  // the previous step's updates (and the reset of `rotated`) are visible
      for (int k = tid; k < half; k += blockDim.x) {
        const int p = circle(k, step, m), q = circle(m - 1 - k, step, m);
        P[k] = p;
        Qd[k] = q;
        const T apq = A[p * lda + q], app = A[p * lda + p], aqq = A[q * lda + q];
        T c = 1, sv = 0, t = 0;
        if (fabs(apq) > floor_abs && fabs(apq) > rel * fmin(fabs(app), fabs(aqq))) {
          // |apq| > eps² and |aqq - app| <= 2n after scaling: theta is finite, hypot avoids theta².
          const T theta = (aqq - app) / (T(2) * apq);
          t = (theta >= T(0) ? T(1) : T(-1)) / (fabs(theta) + hypot(T(1), theta));
          c = T(1) / sqrt(t * t + T(1));
          sv = t * c;
          rotated = 1;
        }
        cs[k] = c;
        sn[k] = sv;
        tn[k] = t;
      }
      __syncthreads();
      // A <- Jᵀ A J, one 2 x 2 block per (I, J): lanes along J (consecutive columns, distinct banks).
      for (int I = warp; I < half; I += nwarps) {
        const int p1 = P[I], q1 = Qd[I];
        const T c1 = cs[I], s1 = sn[I];
        for (int J = lane; J < half; J += 32) {
          const T s2 = sn[J];
          if (s1 == T(0) && s2 == T(0)) continue;
          if (I == J) {
            const T t = tn[I], apq = A[p1 * lda + q1];
            A[p1 * lda + p1] -= t * apq;
            A[q1 * lda + q1] += t * apq;
            A[p1 * lda + q1] = T(0);
            A[q1 * lda + p1] = T(0);
            continue;
          }
          const int p2 = P[J], q2 = Qd[J];
          const T c2 = cs[J];
          const T a = A[p1 * lda + p2], b = A[p1 * lda + q2], c = A[q1 * lda + p2], d = A[q1 * lda + q2];
          const T r00 = c1 * a - s1 * c, r01 = c1 * b - s1 * d;
          const T r10 = s1 * a + c1 * c, r11 = s1 * b + c1 * d;
          A[p1 * lda + p2] = c2 * r00 - s2 * r01;
          A[p1 * lda + q2] = s2 * r00 + c2 * r01;
          A[q1 * lda + p2] = c2 * r10 - s2 * r11;
          A[q1 * lda + q2] = s2 * r10 + c2 * r11;
        }
      }
      // V <- V J: rows P[J], Q[J] of Vt, lanes along the row (contiguous).
      for (int J = warp; J < half; J += nwarps) {
        const T c = cs[J], sv = sn[J];
        if (sv == T(0)) continue;
        T* vp = Vt + P[J] * m;
        T* vq = Vt + Qd[J] * m;
        for (int r = lane; r < n; r += 32) {
          const T x = vp[r], y = vq[r];
          vp[r] = c * x - sv * y;
          vq[r] = sv * x + c * y;
        }
      }
    }
    __syncthreads();
    const int any = rotated;
    __syncthreads();  // every thread has read `rotated` before thread 0 resets it
    if (!any) break;
  }
  // Ascending order: each eigenvalue's rank counts the smaller ones (ties by index).
  T* w = values + static_cast<int64_t>(blockIdx.x) * n;
  for (int i = tid; i < n; i += blockDim.x) {
    const T di = A[i * lda + i];
    int rk = 0;
    for (int j = 0; j < n; ++j) {
      const T dj = A[j * lda + j];
      rk += dj < di || (dj == di && j < i);
    }
    rank[i] = rk;
    w[rk] = di * scale;
  }
  __syncthreads();
  // Column rank(i) of the column-major output is row i of Vt: contiguous on both sides.
  T* v = vectors + static_cast<int64_t>(blockIdx.x) * n * n;
  for (int i = warp; i < n; i += nwarps) {
    T* col = v + static_cast<int64_t>(rank[i]) * n;
    const T* row = Vt + i * m;
    for (int r = lane; r < n; r += 32) col[r] = row[r];
  }
}

// Per graph: S = L/2 + Lᵀ/2, and the figures of the input checks (common/spectral_checks.h).
template <class T>
__global__ void symmetrize_kernel(const T* __restrict__ L,   // [Bt, n, n]
                                  T* __restrict__ S,         // [Bt, n, n]
                                  double* __restrict__ stats,  // [Bt, 4]: max|L - Lᵀ|, max(1, max|L|),
                                                               // first non-finite flat index (or -1), its value
                                  int64_t n) {
  __shared__ double red_asym[kReduceThreads], red_scale[kReduceThreads];
  __shared__ long long red_bad[kReduceThreads];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * n * n;
  double asym = 0.0, scale = 1.0;
  long long bad = LLONG_MAX;
  for (int64_t i = threadIdx.x; i < n * n; i += blockDim.x) {
    const int64_t r = i / n, c = i % n;
    const T a = L[base + r * n + c], b = L[base + c * n + r];
    if (!isfinite(static_cast<double>(a))) bad = bad < i ? bad : i;
    asym = fmax(asym, fabs(static_cast<double>(a) - static_cast<double>(b)));
    scale = fmax(scale, fabs(static_cast<double>(a)));
    // Halves first: (a + b) / 2 overflows for entries above half the largest finite value.
    S[base + i] = a * T(0.5) + b * T(0.5);
  }
  red_asym[threadIdx.x] = asym;
  red_scale[threadIdx.x] = scale;
  red_bad[threadIdx.x] = bad;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      red_asym[threadIdx.x] = fmax(red_asym[threadIdx.x], red_asym[threadIdx.x + s]);
      red_scale[threadIdx.x] = fmax(red_scale[threadIdx.x], red_scale[threadIdx.x + s]);
      red_bad[threadIdx.x] = red_bad[threadIdx.x] < red_bad[threadIdx.x + s] ? red_bad[threadIdx.x] : red_bad[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    double* st = stats + 4 * blockIdx.x;
    st[0] = red_asym[0];
    st[1] = red_scale[0];
    st[2] = red_bad[0] == LLONG_MAX ? -1.0 : static_cast<double>(red_bad[0]);
    st[3] = red_bad[0] == LLONG_MAX ? 0.0 : static_cast<double>(L[base + red_bad[0]]);
  }
}

// The first graph that fails a check, and its figures: report = [graph or -1, stats of that graph].
// One block; the host then copies 5 doubles (one small synchronisation per call, no host loop).
__global__ void first_invalid_kernel(const double* __restrict__ stats, int64_t Bt, double tol,
                                     double* __restrict__ report) {
  __shared__ long long red[kReduceThreads];
  long long first = LLONG_MAX;
  for (int64_t b = threadIdx.x; b < Bt; b += blockDim.x) {
    const double* st = stats + 4 * b;
    if ((st[2] >= 0.0 || !(st[0] <= tol * st[1])) && b < first) first = b;
  }
  red[threadIdx.x] = first;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s && red[threadIdx.x + s] < red[threadIdx.x]) red[threadIdx.x] = red[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const long long b = red[0];
    report[0] = b == LLONG_MAX ? -1.0 : static_cast<double>(b);
    for (int j = 0; j < 4; ++j) report[1 + j] = b == LLONG_MAX ? 0.0 : stats[4 * b + j];
  }
}

std::tuple<at::Tensor, at::Tensor> eigh_cuda(const at::Tensor& L) {
  check_square_batch(L, "eigh", "L");
  const c10::cuda::CUDAGuard guard(L.device());
  return batched_eigh_cuda(symmetrized_cuda(L, "eigh"));
}

}  // namespace

at::Tensor first_invalid_graph(const at::Tensor& stats, double tol) {
  at::Tensor report = at::empty({5}, stats.options());
  first_invalid_kernel<<<1, kReduceThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      stats.const_data_ptr<double>(), stats.size(0), tol, report.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return report.cpu();
}

at::Tensor symmetrized_cuda(const at::Tensor& L, const char* op) {
  const at::Tensor Lc = L.contiguous();
  at::Tensor S = at::empty_like(Lc);
  const int64_t Bt = Lc.size(0), n = Lc.size(1);
  if (Bt == 0 || n == 0) return S;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor stats = at::empty({Bt, 4}, Lc.options().dtype(at::kDouble));
  TORCH_CHECK(Bt <= 0x7fffffff, op, ": at most 2^31 - 1 graphs per call on CUDA, got ", Bt);
  AT_DISPATCH_FLOATING_TYPES(Lc.scalar_type(), "symmetrized_cuda", [&] {
    symmetrize_kernel<scalar_t><<<static_cast<unsigned>(Bt), kReduceThreads, 0, stream>>>(
        Lc.const_data_ptr<scalar_t>(), S.mutable_data_ptr<scalar_t>(), stats.mutable_data_ptr<double>(), n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor host = first_invalid_graph(stats, kSymmetryTol);
  const double* rp = host.const_data_ptr<double>();
  if (rp[0] >= 0.0) {
    const auto b = static_cast<int64_t>(rp[0]);
    if (rp[3] >= 0.0) {
      const auto idx = static_cast<int64_t>(rp[3]);
      TORCH_CHECK(false, op, ": L must be finite, but graph ", b, " has L[", idx / n, ", ", idx % n, "] = ", rp[4]);
    }
    TORCH_CHECK(false, op, ": L must be symmetric, but graph ", b, " has max |L - L^T| = ", rp[1], " > ", kSymmetryTol,
                " * max(1, max |L|) = ", kSymmetryTol * rp[2]);
  }
  return S;
}

std::tuple<at::Tensor, at::Tensor> batched_eigh_cuda(const at::Tensor& Ls) {
  const int64_t Bt = Ls.size(0), n = Ls.size(1);
  at::Tensor values = at::empty({Bt, n}, Ls.options());
  // Column-major matrices, as the CPU op, the fake kernel and torch.linalg.eigh lay them out.
  at::Tensor vectors = at::empty_strided({Bt, n, n}, {n * n, 1, n}, Ls.options());
  if (Bt == 0 || n == 0) return {values, vectors};
  int device = 0, max_smem = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  bool done = false;
  AT_DISPATCH_FLOATING_TYPES(Ls.scalar_type(), "batched_eigh_cuda", [&] {
    using T = scalar_t;
    // Static shared memory of the kernel (scratch, flag) stays under 512 bytes.
    const size_t limit = static_cast<size_t>(max_smem) - 512;
    const bool v_shared = jacobi_smem<T>(n, true) <= limit;
    const size_t smem = jacobi_smem<T>(n, v_shared);
    if (smem > limit || Bt > 0x7fffffff) return;
    if (smem > 48 * 1024)
      C10_CUDA_CHECK(cudaFuncSetAttribute(jacobi_eigh_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
    const int64_t m = n + (n & 1);
    at::Tensor work;
    if (!v_shared) work = at::empty({Bt, m, m}, Ls.options());
    const T eps = sizeof(T) == 8 ? T(DBL_EPSILON) : T(FLT_EPSILON);
    const int threads = v_shared ? jacobi_threads(n) : 1024;
    jacobi_eigh_kernel<T><<<static_cast<unsigned>(Bt), threads, smem, c10::cuda::getCurrentCUDAStream()>>>(
        Ls.const_data_ptr<T>(), values.mutable_data_ptr<T>(), vectors.mutable_data_ptr<T>(),
        v_shared ? nullptr : work.mutable_data_ptr<T>(), static_cast<int>(n), eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    done = true;
  });
  if (done) return {values, vectors};
  TORCH_WARN_ONCE("eigh on CUDA: n = ", n, " is past the shared-memory Jacobi solver (float32 n <= ~238, float64 ",
                  "n <= ~168 on this device's ", max_smem / 1024, " KB per block); using torch.linalg.eigh (cuSOLVER)");
  auto [w, v] = at::linalg_eigh(Ls, "L");
  vectors.copy_(v);
  return {w, vectors};
}

TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) { m.impl("eigh", &eigh_cuda); }

}  // namespace deephash
