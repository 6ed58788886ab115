// hamming_range on CUDA, in two passes over the database because the output size depends on the data:
// 1. count: every block holds a group of queries in shared memory, each thread a database row; a
//    warp counts its hits per query with one ballot, a block adds its counts to the query's total
//    with one global atomic. lims = the running sum of the counts (one host sync for the size M).
// 2. fill: the same scan again; a warp reserves room for its hits of a query with one atomic on the
//    query's cursor (starting at lims[q]) and writes key = distance << 40 | row and the query.
// Within a query the fill order depends on scheduling, so the hits are put in (query, distance, row)
// order by two stable sorts: by key, then by query.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
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
constexpr int kQueries = 16;

// Grid-stride loops whose trip count is the same for every thread of a block, so that the warp
// ballots below always see all 32 lanes; rows past N take part as misses.
template <int Words, bool Fill>
__global__ void range_kernel(const uint8_t* __restrict__ q,              // [Q, B]
                             const uint8_t* __restrict__ db,             // [N, B]
                             unsigned long long* __restrict__ counters,  // [Q]: counts (pass 1), cursors (pass 2)
                             int64_t* __restrict__ keys,                 // [M] (pass 2)
                             int64_t* __restrict__ qidx,                 // [M] (pass 2)
                             int64_t Q, int64_t N, int64_t B, int radius) {
  extern __shared__ uint64_t smem[];  // [kQueries, query_stride(B) / 8]
  __shared__ unsigned long long block_count[kQueries];
  auto* sq = reinterpret_cast<uint8_t*>(smem);
  const int64_t stride = query_stride(B);
  const int lane = threadIdx.x % 32;
  const unsigned lanes_below = (1u << lane) - 1;
  const int64_t groups = (Q + kQueries - 1) / kQueries;
  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const int64_t q0 = g * kQueries;
    const int nq = static_cast<int>(Q - q0 < kQueries ? Q - q0 : kQueries);
    __syncthreads();
    load_queries(q, q0, nq, B, sq);
    if (!Fill && threadIdx.x < kQueries) block_count[threadIdx.x] = 0;
    __syncthreads();
    for (int64_t base = blockIdx.x * static_cast<int64_t>(blockDim.x); base < N;
         base += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const int64_t r = base + threadIdx.x;
      const bool valid = r < N;
      const RowCode<Words> row(db + (valid ? r : N - 1) * B, B);
      for (int qi = 0; qi < nq; ++qi) {
        const int d = row.distance(sq + qi * stride);
        const bool hit = valid && d <= radius;
        const unsigned mask = __ballot_sync(0xffffffffu, hit);
        if (mask == 0) continue;
        const int leader = __ffs(mask) - 1;
        if (!Fill) {
          if (lane == leader) atomicAdd(&block_count[qi], static_cast<unsigned long long>(__popc(mask)));
        } else {
          unsigned long long start = 0;
          if (lane == leader) start = atomicAdd(&counters[q0 + qi], static_cast<unsigned long long>(__popc(mask)));
          start = __shfl_sync(0xffffffffu, start, leader);
          if (hit) {
            const int64_t o = static_cast<int64_t>(start) + __popc(mask & lanes_below);
            keys[o] = (static_cast<int64_t>(d) << kRowShift) | r;
            qidx[o] = q0 + qi;
          }
        }
      }
    }
    if (!Fill) {
      __syncthreads();
      if (threadIdx.x < nq && block_count[threadIdx.x] != 0) atomicAdd(&counters[q0 + threadIdx.x], block_count[threadIdx.x]);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> hamming_range_cuda(const at::Tensor& q, const at::Tensor& db,
                                                                  int64_t radius) {
  check_range_inputs(q, db, radius);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t Q = q.size(0), N = db.size(0), B = q.size(1);
  const auto i64 = q.options().dtype(at::kLong);
  at::Tensor lims = at::zeros({Q + 1}, i64);
  if (Q == 0 || N == 0) return {lims, at::empty({0}, q.options().dtype(at::kInt)), at::empty({0}, i64)};
  check_cuda_code_width(B, "hamming_range");
  TORCH_CHECK(N < (int64_t{1} << kRowShift), "hamming_range on CUDA supports up to 2^40 database rows");
  const int limit = static_cast<int>(radius < 8 * B ? radius : 8 * B);

  const at::Tensor qc = q.contiguous(), dbc = db.contiguous();
  const uint8_t* qp = qc.const_data_ptr<uint8_t>();
  const uint8_t* dp = dbc.const_data_ptr<uint8_t>();
  const dim3 grid(blocks_for(N, kThreads, 4096), blocks_for(Q, kQueries, 65535));
  const size_t smem = kQueries * query_stride(B);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const bool aligned = words_aligned(qp, dp, B);

  at::Tensor counts = at::zeros({Q}, i64);
  dispatch_words(B, aligned, [&](auto words) {
    range_kernel<decltype(words)::value, false><<<grid, kThreads, smem, stream>>>(
        qp, dp, reinterpret_cast<unsigned long long*>(counts.mutable_data_ptr<int64_t>()), nullptr, nullptr, Q, N, B,
        limit);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  lims.narrow(0, 1, Q).copy_(counts.cumsum(0));
  const int64_t M = lims.select(0, Q).item<int64_t>();
  at::Tensor dist = at::empty({M}, q.options().dtype(at::kInt));
  at::Tensor rows = at::empty({M}, i64);
  if (M == 0) return {lims, dist, rows};

  at::Tensor cursors = lims.narrow(0, 0, Q).clone();
  at::Tensor keys = at::empty({M}, i64);
  at::Tensor qidx = at::empty({M}, i64);
  dispatch_words(B, aligned, [&](auto words) {
    range_kernel<decltype(words)::value, true><<<grid, kThreads, smem, stream>>>(
        qp, dp, reinterpret_cast<unsigned long long*>(cursors.mutable_data_ptr<int64_t>()),
        keys.mutable_data_ptr<int64_t>(), qidx.mutable_data_ptr<int64_t>(), Q, N, B, limit);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // Stable sorts, least significant key first: (distance, row) within the key, then the query.
  auto [by_key, perm1] = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor perm2 = std::get<1>(at::sort(qidx.index_select(0, perm1), /*stable=*/true, 0, false));
  const at::Tensor ordered = by_key.index_select(0, perm2);
  split_keys_kernel<kRowShift><<<blocks_for(M, 256), 256, 0, stream>>>(ordered.const_data_ptr<int64_t>(),
                                                             dist.mutable_data_ptr<int32_t>(),
                                                             rows.mutable_data_ptr<int64_t>(), M);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {lims, dist, rows};
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) { m.impl("hamming_range", &hamming_range_cuda); }

}  // namespace deephash
