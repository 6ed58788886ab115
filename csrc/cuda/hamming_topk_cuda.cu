// hamming_topk on CUDA: exact for any k, without a Q x N distance matrix, in one pass over the
// database per query batch when the data allow it (they nearly always do).
//
// Fast path (per batch of queries):
// 1. sample histogram: per query, the distance counts of a sample of the database (one run of
//    kSampleRun rows in every kSamplePeriod, spread over the whole database; the whole database
//    when N <= kExactN, which makes the histogram exact).
// 2. bound: per query, the largest distance b whose estimated count of rows at distance <= b fits
//    half of a candidate buffer of C slots (exact histogram: the k-th distance, if its count fits C).
// 3. candidates (the one pass): every row at distance <= b appends key = distance << 40 | row to
//    the query's buffer (warp-aggregated atomic on a per-query counter; the counter keeps counting
//    past C).
// 4. the result is exact for every query whose counter ended in [k, C]: the buffer then holds every
//    row at distance <= b and at least k of them, so its k smallest keys are the k nearest rows in
//    (distance, row) order. The k smallest keys come from ATen's topk (or sort when C == k).
// Exact path, for the queries whose estimate missed (too few rows within b, buffer overflow, or
// one distance holding more rows than the buffer: massive ties): an exact histogram, the k-th
// distance t, per-chunk tie counts and a collect that gives rows closer than t any free slot and
// rows at distance t their rank in row order, as in the previous design (three passes). Its kernels
// run for every batch and leave at once when no query of their group needs them, so the host
// never waits on the device to choose a path.
//
// Cost model, per database code of B bytes and batch of queries (H200, ~4.3 TB/s measured copy
// bandwidth, 132 SMs x 16 popcounts per clock): the fast path reads each code once (B bytes) plus
// the sample (B / 64 in runs of 1024 coalesced rows), and per query writes and reads C keys of 8
// bytes (C = max(4k, k + 4096), capped at N). At N = 1e8, 64 bits, Q = 1: 0.80 GB + 12.5 MB,
// bound 0.19 ms at 4.3 TB/s; the compare costs 2 popcounts per 64-bit word per query, 0.05 ms of
// popcount throughput, so the pass is memory-bound up to ~4 queries per group (64 bits) or ~2
// (128 bits); beyond that the bound is the popcount rate (Q x N x words x 2 / 4.2e12 per second).
// Reaching >= 50% of the HBM bound at Q = 1 needs about 3 MB of loads in flight chip-wide: each
// thread issues kUnroll = 4 independent row loads before its first compare, 256 threads x 8
// resident blocks per SM x 4 x 8 B = 64 KB per SM (8.4 MB chip-wide) for 64-bit codes. ptxas
// (sm_90): the candidate kernel takes 32 registers per thread for 64-bit codes (8 blocks of 256
// per SM) and 40 for 128-bit codes (6 blocks), no spills.
// The exact path costs three more passes (histogram, tie count, collect), each B bytes per code
// per group of kQueries queries, and only for the queries that need it.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/topk.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

#include "common/checks.h"
#include "common/codes_cuda.cuh"

namespace deephash {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kQueries = 8;          // queries per block
constexpr int kUnroll = 4;           // rows in flight per thread in the candidate pass
constexpr int64_t kChunk = 16384;    // database rows per block
constexpr int64_t kNoKey = INT64_MAX;
constexpr int64_t kExactN = int64_t{1} << 18;  // up to here the "sample" is the whole database
constexpr int64_t kSampleRun = 1024;          // sampled rows come in runs of this many...
constexpr int64_t kSamplePeriod = 64;         // ...one run in this many
constexpr int64_t kBudgetBytes = int64_t{1} << 30;  // scratch per query batch

__host__ __device__ inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

dim3 grid_of(int64_t blocks_x, int64_t groups) {
  return dim3(static_cast<unsigned>(blocks_x), static_cast<unsigned>(groups < 65535 ? groups : 65535));
}

// Whether any query of group [q0, q0 + nq) needs the exact path (all do when `active` is null).
// Block-uniform; every thread reads the same few flags.
__device__ __forceinline__ bool group_active(const int32_t* active, int64_t q0, int nq) {
  if (!active) return true;
  for (int i = 0; i < nq; ++i)
    if (active[q0 + i]) return true;
  return false;
}

// Distance counts of the rows [x * row_stride, x * row_stride + row_run) of block x, per query.
template <int Words>
__global__ void topk_histogram_kernel(const uint8_t* __restrict__ q,    // [Qb, B]
                                      const uint8_t* __restrict__ db,   // [N, B]
                                      const int32_t* __restrict__ active,  // [Qb] or null
                                      unsigned long long* __restrict__ hist,  // [Qb, bins]
                                      int64_t Qb, int64_t N, int64_t B, int64_t groups, int64_t row_stride,
                                      int64_t row_run) {
  extern __shared__ uint64_t smem[];  // queries [kQueries, stride], then counts [kQueries, bins]
  auto* sq = reinterpret_cast<uint8_t*>(smem);
  const int64_t stride = query_stride(B), bins = 8 * B + 1;
  auto* counts = reinterpret_cast<unsigned*>(sq + kQueries * stride);
  const int64_t r0 = blockIdx.x * row_stride, r1 = min64(r0 + row_run, N);
  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const int64_t q0 = g * kQueries;
    const int nq = static_cast<int>(min64(Qb - q0, kQueries));
    if (!group_active(active, q0, nq)) continue;
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

// Per query, the candidate bound (see the file comment); -1 sends the query to the exact path.
__global__ void topk_bound_kernel(const unsigned long long* __restrict__ hist,  // [Qb, bins]
                                  int32_t* __restrict__ bound,                  // [Qb]
                                  int64_t Qb, int64_t bins, int64_t kk, int64_t C, double scale, bool exact) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < Qb;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const unsigned long long* h = hist + i * bins;
    int32_t b = -1;
    if (exact) {
      int64_t t = 0, cum = 0;
      while (t < bins - 1 && cum + static_cast<int64_t>(h[t]) < kk) cum += static_cast<int64_t>(h[t++]);
      cum += static_cast<int64_t>(h[t]);
      b = cum <= C ? static_cast<int32_t>(t) : -1;
    } else {
      double cum = 0.0, best_est = 0.0;
      for (int64_t t = 0; t < bins; ++t) {
        cum += static_cast<double>(h[t]);
        const double est = cum * scale;
        if (est > 0.5 * static_cast<double>(C)) break;
        b = static_cast<int32_t>(t);
        best_est = est;
      }
      if (best_est < static_cast<double>(kk)) b = -1;
    }
    bound[i] = b;
  }
}

// The one pass: rows at distance <= bound[q] append their key to query q's buffer.
template <int Words>
__global__ void __launch_bounds__(kThreads) topk_candidates_kernel(
    const uint8_t* __restrict__ q,         // [Qb, B]
    const uint8_t* __restrict__ db,        // [N, B]
    const int32_t* __restrict__ bound,     // [Qb]
    unsigned long long* __restrict__ fill,  // [Qb]: rows within the bound (may exceed C)
    int64_t* __restrict__ keys,            // [Qb, C]
    int64_t Qb, int64_t N, int64_t B, int64_t C, int64_t groups) {
  extern __shared__ uint64_t smem[];  // queries [kQueries, stride]
  auto* sq = reinterpret_cast<uint8_t*>(smem);
  __shared__ int32_t sb[kQueries];
  const int64_t stride = query_stride(B);
  const int lane = threadIdx.x & 31;
  const unsigned lanes_before = (1u << lane) - 1;
  const int64_t r0 = blockIdx.x * kChunk, r1 = min64(r0 + kChunk, N);
  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const int64_t q0 = g * kQueries;
    const int nq = static_cast<int>(min64(Qb - q0, kQueries));
    __syncthreads();
    load_queries(q, q0, nq, B, sq);
    if (threadIdx.x < kQueries) sb[threadIdx.x] = threadIdx.x < nq ? bound[q0 + threadIdx.x] : -1;
    __syncthreads();
    int32_t top = -1;
    for (int qi = 0; qi < nq; ++qi) top = sb[qi] > top ? sb[qi] : top;
    if (top < 0) continue;  // block-uniform: every query of the group takes the exact path
    for (int64_t base = r0; base < r1; base += static_cast<int64_t>(kThreads) * kUnroll) {
      RowCode<Words> rows[kUnroll];
      bool valid[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t r = base + u * kThreads + threadIdx.x;
        valid[u] = r < r1;
        rows[u] = RowCode<Words>(db + (valid[u] ? r : r0) * B, B);
      }
      for (int qi = 0; qi < nq; ++qi) {
        const int32_t bq = sb[qi];
        const uint8_t* query = sq + qi * stride;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int d = rows[u].distance(query);
          const bool pass = valid[u] && d <= bq;
          const unsigned mask = __ballot_sync(0xffffffffu, pass);
          if (mask == 0) continue;  // warp-uniform
          const int leader = __ffs(mask) - 1;
          unsigned long long first = 0;
          if (lane == leader) first = atomicAdd(&fill[q0 + qi], static_cast<unsigned long long>(__popc(mask)));
          first = __shfl_sync(0xffffffffu, first, leader);
          if (pass) {
            const int64_t slot = static_cast<int64_t>(first) + __popc(mask & lanes_before);
            const int64_t r = base + u * kThreads + threadIdx.x;
            if (slot < C) keys[(q0 + qi) * C + slot] = static_cast<int64_t>(d) << kRowShift | r;
          }
        }
      }
    }
  }
}

// A query's fast path failed unless it had a bound and its count ended in [k, C].
__global__ void topk_resolve_kernel(const int32_t* __restrict__ bound, const unsigned long long* __restrict__ fill,
                                    int32_t* __restrict__ failed, int64_t Qb, int64_t kk, int64_t C) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < Qb;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const auto f = static_cast<int64_t>(fill[i]);
    failed[i] = bound[i] < 0 || f < kk || f > C;
  }
}

// Clears the buffers of the failed queries (the exact path writes their first k slots).
__global__ void topk_reset_kernel(const int32_t* __restrict__ failed, int64_t* __restrict__ keys, int64_t Qb,
                                  int64_t C) {
  for (int64_t qq = blockIdx.y; qq < Qb; qq += gridDim.y) {
    if (!failed[qq]) continue;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < C;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
      keys[qq * C + i] = kNoKey;
  }
}

// Exact path, one thread per query (grid-stride, so any Q): t, below, need. Inactive queries get
// t = -1, which no distance matches.
__global__ void topk_threshold_kernel(const unsigned long long* __restrict__ hist,  // [Qb, bins]
                                      const int32_t* __restrict__ active,           // [Qb]
                                      int64_t* __restrict__ plan,                   // [Qb, 3]
                                      int64_t Qb, int64_t bins, int64_t k) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < Qb;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!active[i]) {
      plan[i * 3 + 0] = -1;
      plan[i * 3 + 1] = 0;
      plan[i * 3 + 2] = 0;
      continue;
    }
    const unsigned long long* h = hist + i * bins;
    int64_t t = 0, below = 0;
    while (t < bins - 1 && below + static_cast<int64_t>(h[t]) < k) below += static_cast<int64_t>(h[t++]);
    plan[i * 3 + 0] = t;
    plan[i * 3 + 1] = below;
    plan[i * 3 + 2] = k - below;
  }
}

template <int Words>
__global__ void topk_tie_count_kernel(const uint8_t* __restrict__ q, const uint8_t* __restrict__ db,
                                      const int32_t* __restrict__ active,  // [Qb]
                                      const int64_t* __restrict__ plan,    // [Qb, 3]
                                      int64_t* __restrict__ ties,          // [Qb, chunks]
                                      int64_t Qb, int64_t N, int64_t B, int64_t groups) {
  extern __shared__ uint64_t smem[];
  auto* sq = reinterpret_cast<uint8_t*>(smem);
  const int64_t stride = query_stride(B);
  __shared__ unsigned counts[kQueries];
  const int64_t r0 = blockIdx.x * kChunk, r1 = min64(r0 + kChunk, N);
  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const int64_t q0 = g * kQueries;
    const int nq = static_cast<int>(min64(Qb - q0, kQueries));
    if (!group_active(active, q0, nq)) continue;
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

// Exact path collect. Per tile and query: warps publish their tie counts (barrier), every thread
// ranks its tie and adds the tile's total to its own running count (barrier). The running counts
// live in registers, identical in every thread, so no thread writes shared memory that another may
// still read: the next write to warp_ties[qi] comes after the second barrier.
template <int Words>
__global__ void topk_collect_kernel(const uint8_t* __restrict__ q, const uint8_t* __restrict__ db,
                                    const int32_t* __restrict__ active,       // [Qb]
                                    const int64_t* __restrict__ plan,         // [Qb, 3]
                                    const int64_t* __restrict__ ties_before,  // [Qb, chunks], exclusive
                                    unsigned long long* __restrict__ fill,    // [Qb], slots taken below t
                                    int64_t* __restrict__ keys,               // [Qb, C]
                                    int64_t Qb, int64_t N, int64_t B, int64_t C, int64_t groups) {
  extern __shared__ uint64_t smem[];
  auto* sq = reinterpret_cast<uint8_t*>(smem);
  const int64_t stride = query_stride(B);
  __shared__ unsigned warp_ties[kQueries][kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned lanes_before = (1u << lane) - 1;
  const int64_t r0 = blockIdx.x * kChunk, r1 = min64(r0 + kChunk, N);
  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const int64_t q0 = g * kQueries;
    const int nq = static_cast<int>(min64(Qb - q0, kQueries));
    if (!group_active(active, q0, nq)) continue;
    __syncthreads();
    load_queries(q, q0, nq, B, sq);
    __syncthreads();
    int64_t seen[kQueries];  // ties met in earlier tiles of this chunk, per query
#pragma unroll
    for (int qi = 0; qi < kQueries; ++qi) seen[qi] = 0;
    for (int64_t base = r0; base < r1; base += blockDim.x) {
      const int64_t r = base + threadIdx.x;
      const bool valid = r < r1;
      const RowCode<Words> row(db + (valid ? r : r0) * B, B);
#pragma unroll
      for (int qi = 0; qi < kQueries; ++qi) {
        if (qi >= nq) break;  // block-uniform
        const int64_t qq = q0 + qi;
        const int64_t t = plan[qq * 3], below = plan[qq * 3 + 1], need = plan[qq * 3 + 2];
        const int64_t d = valid ? row.distance(sq + qi * stride) : -2;
        if (valid && d < t) {
          const auto slot = static_cast<int64_t>(atomicAdd(&fill[qq], 1ull));
          keys[qq * C + slot] = d << kRowShift | r;
        }
        const bool tie = valid && d == t;
        const unsigned mask = __ballot_sync(0xffffffffu, tie);
        if (lane == 0) warp_ties[qi][warp] = __popc(mask);
        __syncthreads();
        int64_t before_warp = 0, total = 0;
        for (int w = 0; w < kWarps; ++w) {
          const unsigned c = warp_ties[qi][w];
          before_warp += w < warp ? c : 0;
          total += c;
        }
        if (tie) {
          const int64_t rank = ties_before[qq * gridDim.x + blockIdx.x] + seen[qi] + before_warp +
                               __popc(mask & lanes_before);
          if (rank < need) keys[qq * C + below + rank] = t << kRowShift | r;
        }
        seen[qi] += total;
        __syncthreads();
      }
    }
  }
}

// One batch of queries [0, Qb) of `qp`; results to out_d / out_i [Qb, kk].
template <int W>
void topk_batch(const uint8_t* qp, const uint8_t* dp, int64_t Qb, int64_t N, int64_t B, int64_t kk, int64_t C,
                const at::TensorOptions& opts, int32_t* out_d, int64_t* out_i) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto i64 = opts.dtype(at::kLong), i32 = opts.dtype(at::kInt);
  const int64_t bins = 8 * B + 1, chunks = (N + kChunk - 1) / kChunk, groups = (Qb + kQueries - 1) / kQueries;
  const size_t query_smem = kQueries * query_stride(B);
  const size_t hist_smem = query_smem + kQueries * bins * sizeof(unsigned);
  if (hist_smem > 48 * 1024) {
    // Up to 8 x 4097 counters for 512-byte codes: opt in to the larger shared memory of sm_80+.
    C10_CUDA_CHECK(cudaFuncSetAttribute(topk_histogram_kernel<W>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(hist_smem)));
  }
  auto hist_of = [](at::Tensor& t) { return reinterpret_cast<unsigned long long*>(t.mutable_data_ptr<int64_t>()); };

  // 1-2. Sample histogram and bounds.
  const bool exact = N <= kExactN;
  const int64_t period = exact ? kChunk : kSampleRun * kSamplePeriod, run = exact ? kChunk : kSampleRun;
  const int64_t sample_blocks = (N + period - 1) / period;
  const int64_t sampled = exact ? N : (N / period) * run + min64(N % period, run);
  at::Tensor hist = at::zeros({Qb, bins}, i64);
  topk_histogram_kernel<W><<<grid_of(sample_blocks, groups), kThreads, hist_smem, stream>>>(
      qp, dp, nullptr, hist_of(hist), Qb, N, B, groups, period, run);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor bound = at::empty({Qb}, i32);
  topk_bound_kernel<<<blocks_for(Qb, 128), 128, 0, stream>>>(
      reinterpret_cast<const unsigned long long*>(hist.const_data_ptr<int64_t>()), bound.mutable_data_ptr<int32_t>(),
      Qb, bins, kk, C, static_cast<double>(N) / static_cast<double>(sampled), exact);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // 3. The candidate pass.
  at::Tensor fill = at::zeros({Qb}, i64);
  at::Tensor keys = at::full({Qb, C}, kNoKey, i64);
  topk_candidates_kernel<W><<<grid_of(chunks, groups), kThreads, query_smem, stream>>>(
      qp, dp, bound.const_data_ptr<int32_t>(), hist_of(fill), keys.mutable_data_ptr<int64_t>(), Qb, N, B, C, groups);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // 4. Exact path for the queries whose buffer missed; its kernels skip every other group.
  at::Tensor failed = at::empty({Qb}, i32);
  topk_resolve_kernel<<<blocks_for(Qb, 128), 128, 0, stream>>>(
      bound.const_data_ptr<int32_t>(), reinterpret_cast<const unsigned long long*>(fill.const_data_ptr<int64_t>()),
      failed.mutable_data_ptr<int32_t>(), Qb, kk, C);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int32_t* act = failed.const_data_ptr<int32_t>();
  topk_reset_kernel<<<dim3(blocks_for(C, 256, 64), static_cast<unsigned>(Qb < 65535 ? Qb : 65535)), 256, 0, stream>>>(
      act, keys.mutable_data_ptr<int64_t>(), Qb, C);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  hist.zero_();
  topk_histogram_kernel<W><<<grid_of(chunks, groups), kThreads, hist_smem, stream>>>(qp, dp, act, hist_of(hist), Qb,
                                                                                     N, B, groups, kChunk, kChunk);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor plan = at::empty({Qb, 3}, i64);
  topk_threshold_kernel<<<blocks_for(Qb, 128), 128, 0, stream>>>(
      reinterpret_cast<const unsigned long long*>(hist.const_data_ptr<int64_t>()), act, plan.mutable_data_ptr<int64_t>(),
      Qb, bins, kk);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor ties = at::zeros({Qb, chunks}, i64);  // rows of skipped groups stay 0
  topk_tie_count_kernel<W><<<grid_of(chunks, groups), kThreads, query_smem, stream>>>(
      qp, dp, act, plan.const_data_ptr<int64_t>(), ties.mutable_data_ptr<int64_t>(), Qb, N, B, groups);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor ties_before = ties.cumsum(1).sub_(ties);
  at::Tensor fill_exact = at::zeros({Qb}, i64);
  topk_collect_kernel<W><<<grid_of(chunks, groups), kThreads, query_smem, stream>>>(
      qp, dp, act, plan.const_data_ptr<int64_t>(), ties_before.const_data_ptr<int64_t>(), hist_of(fill_exact),
      keys.mutable_data_ptr<int64_t>(), Qb, N, B, C, groups);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // 5. The k smallest keys per query, in order.
  const at::Tensor best = kk == C ? std::get<0>(at::sort(keys, 1)) : std::get<0>(at::topk(keys, kk, 1, false, true));
  const at::Tensor bc = best.contiguous();
  split_keys_kernel<kRowShift><<<blocks_for(Qb * kk, 256), 256, 0, stream>>>(bc.const_data_ptr<int64_t>(), out_d, out_i, Qb * kk);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
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
  const int64_t bins = 8 * B + 1, chunks = (N + kChunk - 1) / kChunk;
  const int64_t C = min64(N, kk * 4 > kk + 4096 ? kk * 4 : kk + 4096);
  // Scratch per query: the buffer, two histograms' worth, tie counts and their prefix (3 arrays of
  // chunks), the top-k values and indices, and small per-query figures.
  const int64_t per_query = 8 * (C + bins + 3 * chunks + 2 * kk + 8);
  int64_t batch = kBudgetBytes / per_query;
  batch = batch < 1 ? 1 : (batch > 65535 ? 65535 : batch);
  const uint8_t* qp = qc.const_data_ptr<uint8_t>();
  const uint8_t* dp = dbc.const_data_ptr<uint8_t>();
  dispatch_words(B, words_aligned(qp, dp, B), [&](auto words) {
    constexpr int W = decltype(words)::value;
    for (int64_t q0 = 0; q0 < Q; q0 += batch) {
      const int64_t Qb = min64(Q - q0, batch);
      topk_batch<W>(qp + q0 * B, dp, Qb, N, B, kk, C, q.options(), out_d.mutable_data_ptr<int32_t>() + q0 * kk,
                    out_i.mutable_data_ptr<int64_t>() + q0 * kk);
    }
  });
  return {out_d, out_i};
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) { m.impl("hamming_topk", &hamming_topk_cuda); }

}  // namespace deephash
