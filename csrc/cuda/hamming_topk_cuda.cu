// hamming_topk on CUDA: exact for any k, without a Q x N distance matrix.
//
// 1. histogram: each block takes a chunk of rows and a group of queries and counts distances in
//    shared memory; the counts add up per query in global memory.
// 2. threshold: per query, the distance t of the k-th row, the count `below` of rows closer than
//    t, and `need` = k - below rows of distance t to take (those of lowest index).
// 3. ties: per (query, chunk) the number of rows at distance t; a scan over chunks tells each
//    chunk how many ties precede it.
// 4. collect: rows closer than t take any free slot of [0, below); rows at distance t get their
//    rank in row order (chunk prefix + ballot rank inside the block) and are kept if it is < need.
// 5. sort each query's k keys (distance << 40 | row) with ATen's segmented sort and split them.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "common/checks.h"
#include "common/codes_cuda.cuh"

namespace deephash {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kQueries = 8;         // queries per block
constexpr int64_t kChunk = 16384;   // database rows per block
constexpr int kRowShift = 40;       // key = distance << 40 | row

struct Grid {
  int64_t chunks, groups;
  dim3 dims() const {
    return dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(groups < 65535 ? groups : 65535));
  }
};

template <int Words>
__global__ void topk_histogram_kernel(const uint8_t* __restrict__ q,   // [Q, B]
                                      const uint8_t* __restrict__ db,  // [N, B]
                                      unsigned long long* __restrict__ hist,  // [Q, bins]
                                      int64_t Q, int64_t N, int64_t B, int64_t groups) {
  extern __shared__ uint64_t smem[];  // queries [kQueries, stride], then counts [kQueries, bins]
  auto* sq = reinterpret_cast<uint8_t*>(smem);
  const int64_t stride = query_stride(B), bins = 8 * B + 1;
  auto* counts = reinterpret_cast<unsigned*>(sq + kQueries * stride);
  const int64_t r0 = blockIdx.x * kChunk, r1 = r0 + kChunk < N ? r0 + kChunk : N;
  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const int64_t q0 = g * kQueries;
    const int nq = static_cast<int>(Q - q0 < kQueries ? Q - q0 : kQueries);
    __syncthreads();
    load_queries(q, q0, nq, B, sq);
    for (int64_t i = threadIdx.x; i < kQueries * bins; i += blockDim.x) counts[i] = 0;
    __syncthreads();
    for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) {
      const RowCode<Words> row(db + r * B, B);
      for (int qi = 0; qi < nq; ++qi) atomicAdd(&counts[qi * bins + row.distance(sq + qi * stride)], 1u);
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < nq * bins; i += blockDim.x)
      if (counts[i]) atomicAdd(&hist[q0 * bins + i], static_cast<unsigned long long>(counts[i]));
  }
}

// One thread per query: t, below, need (see the file comment).
__global__ void topk_threshold_kernel(const unsigned long long* __restrict__ hist,  // [Q, bins]
                                      int64_t* __restrict__ plan,                    // [Q, 3]
                                      int64_t Q, int64_t bins, int64_t k) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= Q) return;
  const unsigned long long* h = hist + i * bins;
  int64_t t = 0, below = 0;
  while (t < bins - 1 && below + static_cast<int64_t>(h[t]) < k) below += static_cast<int64_t>(h[t++]);
  plan[i * 3 + 0] = t;
  plan[i * 3 + 1] = below;
  plan[i * 3 + 2] = k - below;
}

template <int Words>
__global__ void topk_tie_count_kernel(const uint8_t* __restrict__ q, const uint8_t* __restrict__ db,
                                      const int64_t* __restrict__ plan,  // [Q, 3]
                                      int64_t* __restrict__ ties,        // [Q, chunks]
                                      int64_t Q, int64_t N, int64_t B, int64_t groups) {
  extern __shared__ uint64_t smem[];
  auto* sq = reinterpret_cast<uint8_t*>(smem);
  const int64_t stride = query_stride(B);
  __shared__ unsigned counts[kQueries];
  const int64_t r0 = blockIdx.x * kChunk, r1 = r0 + kChunk < N ? r0 + kChunk : N;
  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const int64_t q0 = g * kQueries;
    const int nq = static_cast<int>(Q - q0 < kQueries ? Q - q0 : kQueries);
    __syncthreads();
    load_queries(q, q0, nq, B, sq);
    if (threadIdx.x < kQueries) counts[threadIdx.x] = 0;
    __syncthreads();
    for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) {
      const RowCode<Words> row(db + r * B, B);
      for (int qi = 0; qi < nq; ++qi)
        if (row.distance(sq + qi * stride) == plan[(q0 + qi) * 3]) atomicAdd(&counts[qi], 1u);
    }
    __syncthreads();
    if (threadIdx.x < nq) ties[(q0 + threadIdx.x) * gridDim.x + blockIdx.x] = counts[threadIdx.x];
  }
}

template <int Words>
__global__ void topk_collect_kernel(const uint8_t* __restrict__ q, const uint8_t* __restrict__ db,
                                    const int64_t* __restrict__ plan,         // [Q, 3]
                                    const int64_t* __restrict__ ties_before,  // [Q, chunks], exclusive
                                    unsigned long long* __restrict__ fill,    // [Q], slots taken below t
                                    int64_t* __restrict__ keys,               // [Q, k]
                                    int64_t Q, int64_t N, int64_t B, int64_t k, int64_t groups) {
  extern __shared__ uint64_t smem[];
  auto* sq = reinterpret_cast<uint8_t*>(smem);
  const int64_t stride = query_stride(B);
  __shared__ int64_t seen[kQueries];            // ties met in earlier tiles of this chunk
  __shared__ unsigned warp_ties[kQueries][kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned lanes_before = (1u << lane) - 1;
  const int64_t r0 = blockIdx.x * kChunk, r1 = r0 + kChunk < N ? r0 + kChunk : N;
  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const int64_t q0 = g * kQueries;
    const int nq = static_cast<int>(Q - q0 < kQueries ? Q - q0 : kQueries);
    __syncthreads();
    load_queries(q, q0, nq, B, sq);
    if (threadIdx.x < kQueries) seen[threadIdx.x] = 0;
    __syncthreads();
    for (int64_t base = r0; base < r1; base += blockDim.x) {
      const int64_t r = base + threadIdx.x;
      const bool valid = r < r1;
      for (int qi = 0; qi < nq; ++qi) {
        const int64_t qq = q0 + qi;
        const int64_t t = plan[qq * 3], below = plan[qq * 3 + 1], need = plan[qq * 3 + 2];
        const int64_t d = valid ? RowCode<Words>(db + r * B, B).distance(sq + qi * stride) : -1;
        if (valid && d < t) {
          const auto slot = static_cast<int64_t>(atomicAdd(&fill[qq], 1ull));
          keys[qq * k + slot] = d << kRowShift | r;
        }
        const bool tie = valid && d == t;
        const unsigned mask = __ballot_sync(0xffffffffu, tie);
        if (lane == 0) warp_ties[qi][warp] = __popc(mask);
        __syncthreads();
        if (tie) {
          int64_t rank = ties_before[qq * gridDim.x + blockIdx.x] + seen[qi] + __popc(mask & lanes_before);
          for (int w = 0; w < warp; ++w) rank += warp_ties[qi][w];
          if (rank < need) keys[qq * k + below + rank] = t << kRowShift | r;
        }
        __syncthreads();
        if (threadIdx.x == 0)
          for (int w = 0; w < kWarps; ++w) seen[qi] += warp_ties[qi][w];
      }
    }
  }
}

__global__ void topk_split_kernel(const int64_t* __restrict__ keys,  // [Q * k], sorted per query
                                  int32_t* __restrict__ dist, int64_t* __restrict__ rows, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dist[i] = static_cast<int32_t>(keys[i] >> kRowShift);
    rows[i] = keys[i] & ((int64_t{1} << kRowShift) - 1);
  }
}

std::tuple<at::Tensor, at::Tensor> hamming_topk_cuda(const at::Tensor& q, const at::Tensor& db, int64_t k) {
  check_code_pair(q, db);
  TORCH_CHECK(k >= 1, "hamming_topk: k must be >= 1, got ", k);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t Q = q.size(0), N = db.size(0), B = q.size(1);
  const int64_t kk = k < N ? k : N;
  at::Tensor out_d = at::empty({Q, kk}, q.options().dtype(at::kInt));
  at::Tensor out_i = at::empty({Q, kk}, q.options().dtype(at::kLong));
  if (Q == 0 || kk == 0) return {out_d, out_i};
  check_cuda_code_width(B, "hamming_topk");
  TORCH_CHECK(N < (int64_t{1} << kRowShift), "hamming_topk on CUDA supports up to 2^40 database rows");

  const at::Tensor qc = q.contiguous(), dbc = db.contiguous();
  const int64_t bins = 8 * B + 1;
  const Grid grid{(N + kChunk - 1) / kChunk, (Q + kQueries - 1) / kQueries};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto i64 = q.options().dtype(at::kLong);
  at::Tensor hist = at::zeros({Q, bins}, i64);
  at::Tensor plan = at::empty({Q, 3}, i64);
  at::Tensor ties = at::empty({Q, grid.chunks}, i64);
  at::Tensor fill = at::zeros({Q}, i64);
  at::Tensor keys = at::empty({Q, kk}, i64);
  const size_t query_smem = kQueries * query_stride(B);
  const size_t hist_smem = query_smem + kQueries * bins * sizeof(unsigned);
  const uint8_t* qp = qc.const_data_ptr<uint8_t>();
  const uint8_t* dp = dbc.const_data_ptr<uint8_t>();
  dispatch_words(B, words_aligned(qp, dp, B), [&](auto words) {
    constexpr int W = decltype(words)::value;
    if (hist_smem > 48 * 1024) {
      // Up to 8 x 4097 counters for 512-byte codes: opt in to the larger shared memory of sm_80+.
      C10_CUDA_CHECK(cudaFuncSetAttribute(topk_histogram_kernel<W>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(hist_smem)));
    }
    topk_histogram_kernel<W><<<grid.dims(), kThreads, hist_smem, stream>>>(
        qp, dp, reinterpret_cast<unsigned long long*>(hist.mutable_data_ptr<int64_t>()), Q, N, B, grid.groups);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    topk_threshold_kernel<<<blocks_for(Q, 128), 128, 0, stream>>>(
        reinterpret_cast<const unsigned long long*>(hist.const_data_ptr<int64_t>()), plan.mutable_data_ptr<int64_t>(),
        Q, bins, kk);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    topk_tie_count_kernel<W><<<grid.dims(), kThreads, query_smem, stream>>>(
        qp, dp, plan.const_data_ptr<int64_t>(), ties.mutable_data_ptr<int64_t>(), Q, N, B, grid.groups);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const at::Tensor ties_before = ties.cumsum(1).sub(ties);
    topk_collect_kernel<W><<<grid.dims(), kThreads, query_smem, stream>>>(
        qp, dp, plan.const_data_ptr<int64_t>(), ties_before.const_data_ptr<int64_t>(),
        reinterpret_cast<unsigned long long*>(fill.mutable_data_ptr<int64_t>()), keys.mutable_data_ptr<int64_t>(), Q,
        N, B, kk, grid.groups);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const at::Tensor sorted = std::get<0>(at::sort(keys, 1));
  topk_split_kernel<<<blocks_for(Q * kk, 256), 256, 0, stream>>>(
      sorted.const_data_ptr<int64_t>(), out_d.mutable_data_ptr<int32_t>(), out_i.mutable_data_ptr<int64_t>(), Q * kk);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out_d, out_i};
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) { m.impl("hamming_topk", &hamming_topk_cuda); }

}  // namespace deephash
