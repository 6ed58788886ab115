// topk_map on CUDA: per-query AP@k without a Q x N distance matrix or a sort, deterministic (no
// floating-point atomics: every sum runs in a fixed order, so two runs agree to the bit).
//
// 1. histogram: per query (and, for ties="index", per chunk of rows) the number of rows and of
//    relevant rows at each distance (integer atomics only).
// 2. ties="average": the totals alone give the exact expected AP; one thread per query adds the
//    tied-group expectations in the O(1) closed form of common/average_precision.h, as the CPU does.
// 3. ties="index": the rank of row r is start[d] + (rows at distance d before r). A scan kernel
//    turns the chunk histograms into each (query, chunk)'s counters at the chunk's first row; then
//    one warp per (query, chunk), several queries' warps per block, walks the chunk in row order,
//    ranks lanes of equal distance with __match_any_sync, and sums (relevant ahead + 1) / (rank + 1)
//    over relevant rows within k into its own slot; a last kernel adds the slots in chunk order.
// Queries run in batches so the per-chunk counters stay within a fixed memory budget.
//
// Cost model (H200, ~4.3 TB/s, 132 SMs). Histogram pass: B bytes per code per group of kQueries
// queries (the groups of one chunk run close together, so the re-reads mostly hit L2), one shared
// atomic per (query, row). At Q = 10,000, N = 1e6, 64 bits: 1e10 (query, row) pairs; shared
// atomics at ~1 per clock per bank-free lane, ~132 x 32 x 1.98e9 = 8e12 per second at best, with
// same-address conflicts on the ~10 populated bins of a warp maybe 4x slower: ~5 ms. ties="index"
// adds per (query, chunk) 24 B per distance bin of counters (written by the scan, read by the walk),
// 0.4 GB at Q = 10,000 with 64 bits and 123 chunks, ~0.1 ms of HBM, and a second pass over the
// codes by warps of 8 queries per block (full occupancy when 8 x 2 x bins x 8 B fits).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/average_precision.h"
#include "common/checks.h"
#include "common/codes_cuda.cuh"

namespace deephash {
namespace {

constexpr int kThreads = 256;
constexpr int kQueries = 4;        // queries per histogram block
constexpr int64_t kChunk = 8192;   // database rows per block
constexpr int64_t kBudgetBytes = int64_t{1} << 30;

struct ClassIds {
  const int64_t* q;   // [Q]
  const int64_t* db;  // [N]
  __device__ __forceinline__ bool operator()(int64_t qi, int64_t r) const { return q[qi] == db[r]; }
};

struct MultiHot {
  const uint64_t* q;   // [Q, W]
  const uint64_t* db;  // [N, W]
  int64_t W;
  __device__ __forceinline__ bool operator()(int64_t qi, int64_t r) const {
    uint64_t any = 0;
    for (int64_t w = 0; w < W; ++w) any |= q[qi * W + w] & db[r * W + w];
    return any != 0;
  }
};

__global__ void label_mask_kernel(const bool* __restrict__ present,  // [rows, C]
                                  uint64_t* __restrict__ masks,      // [rows, W]
                                  int64_t rows, int64_t C, int64_t W) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * W;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / W, w = i % W;
    uint64_t m = 0;
    for (int64_t c = w * 64; c < C && c < w * 64 + 64; ++c) m |= static_cast<uint64_t>(present[r * C + c]) << (c % 64);
    masks[i] = m;
  }
}

at::Tensor label_masks(const at::Tensor& labels) {  // [rows, C] -> int64 [rows, ceil(C/64)]
  const at::Tensor present = labels.ne(0).contiguous();
  const int64_t rows = present.size(0), C = present.size(1), W = (C + 63) / 64;
  at::Tensor masks = at::empty({rows, W}, labels.options().dtype(at::kLong));
  if (rows * W == 0) return masks;
  label_mask_kernel<<<blocks_for(rows * W, 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
      present.const_data_ptr<bool>(), reinterpret_cast<uint64_t*>(masks.mutable_data_ptr<int64_t>()), rows, C, W);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return masks;
}

// Counts [distance << 1 | relevant] for queries [q_begin, q_begin + Qb).
template <int Words, class Rel>
__global__ void map_histogram_kernel(const uint8_t* __restrict__ q,   // [Q, B]
                                     const uint8_t* __restrict__ db,  // [N, B]
                                     Rel relevant,
                                     unsigned long long* __restrict__ totals,  // [Qb, 2 * bins]
                                     int32_t* __restrict__ per_chunk,          // [Qb, chunks, 2 * bins] or null
                                     int64_t q_begin, int64_t Qb, int64_t N, int64_t B, int64_t groups) {
  extern __shared__ uint64_t smem[];  // queries [kQueries, stride], counts [kQueries, 2 * bins]
  auto* sq = reinterpret_cast<uint8_t*>(smem);
  const int64_t stride = query_stride(B), cells = 2 * (8 * B + 1);
  auto* counts = reinterpret_cast<unsigned*>(sq + kQueries * stride);
  const int64_t r0 = blockIdx.x * kChunk, r1 = r0 + kChunk < N ? r0 + kChunk : N;
  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const int64_t l0 = g * kQueries;
    const int nq = static_cast<int>(Qb - l0 < kQueries ? Qb - l0 : kQueries);
    __syncthreads();
    load_queries(q, q_begin + l0, nq, B, sq);
    for (int64_t i = threadIdx.x; i < kQueries * cells; i += blockDim.x) counts[i] = 0;
    __syncthreads();
    for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) {
      const RowCode<Words> row(db + r * B, B);
      for (int qi = 0; qi < nq; ++qi) {
        const int d = row.distance(sq + qi * stride);
        atomicAdd(&counts[qi * cells + 2 * d + relevant(q_begin + l0 + qi, r)], 1u);
      }
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < nq * cells; i += blockDim.x) {
      const unsigned c = counts[i];
      const int64_t qi = i / cells, cell = i % cells;
      if (c) atomicAdd(&totals[(l0 + qi) * cells + cell], static_cast<unsigned long long>(c));
      if (per_chunk) per_chunk[((l0 + qi) * gridDim.x + blockIdx.x) * cells + cell] = static_cast<int32_t>(c);
    }
  }
}

// ties="average": one thread per query, the closed form per distance group (as the CPU kernel).
__global__ void map_average_kernel(const unsigned long long* __restrict__ totals,  // [Qb, 2 * bins]
                                   double* __restrict__ out,                       // [Qb]
                                   int64_t Qb, int64_t bins) {
  for (int64_t qi = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; qi < Qb;
       qi += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const unsigned long long* h = totals + qi * 2 * bins;
    double acc = 0.0;
    int64_t n_before = 0, r_before = 0;
    for (int64_t d = 0; d < bins; ++d) {
      const auto r = static_cast<int64_t>(h[2 * d + 1]), n = static_cast<int64_t>(h[2 * d]) + r;
      acc += tied_group_precision_sum(n, r, n_before, r_before);
      n_before += n;
      r_before += r;
    }
    out[qi] = r_before > 0 ? acc / static_cast<double>(r_before) : 0.0;
  }
}

// ties="index": each (query, distance) walks the chunks in order and writes the counters at every
// chunk's first row: rows ranked before it (earlier distances, then earlier chunks at d) and the
// relevant ones among them.
__global__ void map_chunk_scan_kernel(const int32_t* __restrict__ per_chunk,  // [Qb, chunks, 2 * bins]
                                      const int64_t* __restrict__ start,      // [Qb, bins]
                                      const int64_t* __restrict__ rel_start,  // [Qb, bins]
                                      int64_t* __restrict__ first_all,        // [Qb, chunks, bins]
                                      int64_t* __restrict__ first_rel,        // [Qb, chunks, bins]
                                      int64_t Qb, int64_t chunks, int64_t bins) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < Qb * bins;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ql = i / bins, d = i % bins;
    int64_t all = start[i], rel = rel_start[i];
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t cell = (ql * chunks + c) * bins + d;
      first_all[cell] = all;
      first_rel[cell] = rel;
      const int32_t* pc = per_chunk + 2 * cell;
      all += pc[0] + pc[1];
      rel += pc[1];
    }
  }
}

// ties="index": one warp per (query, chunk), walking the chunk in row order; a block holds the
// warps of `blockDim.x / 32` consecutive queries on one chunk (the chunk's codes are read once from
// HBM and then from L1/L2).
template <int Words, class Rel>
__global__ void map_index_kernel(const uint8_t* __restrict__ q, const uint8_t* __restrict__ db, Rel relevant,
                                 const int64_t* __restrict__ first_all,  // [Qb, chunks, bins]: rank of the chunk's first row at d
                                 const int64_t* __restrict__ first_rel,  // [Qb, chunks, bins]: relevant rows ranked before it
                                 const int64_t* __restrict__ last,       // [Qb]: larger distances rank past k
                                 double* __restrict__ ap_part,           // [Qb, chunks]
                                 int64_t* __restrict__ hit_part,         // [Qb, chunks]
                                 int64_t q_begin, int64_t Qb, int64_t N, int64_t B, int64_t kk) {
  extern __shared__ uint64_t smem[];  // per warp: counters [2, bins] int64, then the query
  const int64_t bins = 8 * B + 1, per_warp_words = 2 * bins + query_stride(B) / 8;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t ql = blockIdx.y * static_cast<int64_t>(blockDim.x >> 5) + warp;
  if (ql >= Qb) return;  // whole warps only; no block-wide barrier below
  auto* cnt_all = reinterpret_cast<int64_t*>(smem + warp * per_warp_words);
  int64_t* cnt_rel = cnt_all + bins;
  auto* sq = reinterpret_cast<uint8_t*>(cnt_rel + bins);
  const int64_t chunk = blockIdx.x, chunks = gridDim.x;
  const unsigned lanes_before = (1u << lane) - 1;
  const int64_t base_idx = (ql * chunks + chunk) * bins;
  for (int64_t d = lane; d < bins; d += 32) {
    cnt_all[d] = first_all[base_idx + d];
    cnt_rel[d] = first_rel[base_idx + d];
  }
  for (int64_t i = lane; i < B; i += 32) sq[i] = q[(q_begin + ql) * B + i];
  __syncwarp();
  const int64_t lst = last[ql];
  const int64_t r0 = chunk * kChunk, r1 = r0 + kChunk < N ? r0 + kChunk : N;
  double acc = 0.0;
  int64_t found = 0;
  for (int64_t base = r0; base < r1; base += 32) {
    const int64_t r = base + lane;
    int64_t key = -1;
    bool y = false;
    if (r < r1) {
      const int64_t d = RowCode<Words>(db + r * B, B).distance(sq);
      if (d <= lst) {
        key = d;
        y = relevant(q_begin + ql, r);
      }
    }
    const unsigned peers = __match_any_sync(0xffffffffu, key);
    const unsigned yes = __ballot_sync(0xffffffffu, y);
    if (key >= 0 && y) {
      const int64_t pos = cnt_all[key] + __popc(peers & lanes_before);
      const int64_t ahead = cnt_rel[key] + __popc(peers & yes & lanes_before);
      if (pos < kk) {
        acc += static_cast<double>(ahead + 1) / static_cast<double>(pos + 1);
        ++found;
      }
    }
    __syncwarp();
    if (key >= 0 && __ffs(peers) - 1 == lane) {
      cnt_all[key] += __popc(peers);
      cnt_rel[key] += __popc(peers & yes);
    }
    __syncwarp();
  }
  for (int s = 16; s > 0; s >>= 1) {
    acc += __shfl_down_sync(0xffffffffu, acc, s);
    found += __shfl_down_sync(0xffffffffu, found, s);
  }
  if (lane == 0) {
    ap_part[ql * chunks + chunk] = acc;
    hit_part[ql * chunks + chunk] = found;
  }
}

// Per query, the chunks' partial sums added in chunk order.
__global__ void map_finish_kernel(const double* __restrict__ ap_part, const int64_t* __restrict__ hit_part,
                                  double* __restrict__ out, int64_t Qb, int64_t chunks) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < Qb;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double ap = 0.0;
    int64_t hits = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      ap += ap_part[i * chunks + c];
      hits += hit_part[i * chunks + c];
    }
    out[i] = hits ? ap / static_cast<double>(hits) : 0.0;
  }
}

// Queries per block of the index walk: up to 8 warps while their counters fit in 96 KB.
int index_warps(int64_t B) {
  const int64_t per_warp = (2 * (8 * B + 1)) * 8 + query_stride(B);
  const int64_t w = (96 * 1024) / per_warp;
  return static_cast<int>(w < 1 ? 1 : (w > 8 ? 8 : w));
}

template <int Words, class Rel>
void map_batch(const uint8_t* qp, const uint8_t* dp, const Rel& relevant, int64_t q_begin, int64_t Qb, int64_t N,
               int64_t B, int64_t kk, Ties ties, const at::TensorOptions& opts, double* out) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t bins = 8 * B + 1, cells = 2 * bins, chunks = (N + kChunk - 1) / kChunk;
  const int64_t groups = (Qb + kQueries - 1) / kQueries;
  at::Tensor totals = at::zeros({Qb, cells}, opts.dtype(at::kLong));
  at::Tensor per_chunk;
  if (ties == Ties::kIndex) per_chunk = at::empty({Qb, chunks, cells}, opts.dtype(at::kInt));
  const size_t hist_smem = kQueries * query_stride(B) + kQueries * cells * sizeof(unsigned);
  if (hist_smem > 48 * 1024)
    C10_CUDA_CHECK(cudaFuncSetAttribute(map_histogram_kernel<Words, Rel>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(hist_smem)));
  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(groups < 65535 ? groups : 65535));
  map_histogram_kernel<Words, Rel><<<grid, kThreads, hist_smem, stream>>>(
      qp, dp, relevant, reinterpret_cast<unsigned long long*>(totals.mutable_data_ptr<int64_t>()),
      per_chunk.defined() ? per_chunk.mutable_data_ptr<int32_t>() : nullptr, q_begin, Qb, N, B, groups);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  if (ties == Ties::kAverage) {
    map_average_kernel<<<blocks_for(Qb, 128), 128, 0, stream>>>(
        reinterpret_cast<const unsigned long long*>(totals.const_data_ptr<int64_t>()), out, Qb, bins);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  // Ranks of earlier distances (start) and their relevant rows (rel_start), per query.
  const at::Tensor t2 = totals.view({Qb, bins, 2});
  const at::Tensor rel_t = t2.select(2, 1), all_t = rel_t.add(t2.select(2, 0));
  const at::Tensor start = all_t.cumsum(1).sub_(all_t).contiguous();
  const at::Tensor rel_start = rel_t.cumsum(1).sub_(rel_t).contiguous();
  const at::Tensor last = start.lt(kk).sum(1).sub_(1).contiguous();  // start is non-decreasing
  at::Tensor first_all = at::empty({Qb, chunks, bins}, opts.dtype(at::kLong));
  at::Tensor first_rel = at::empty({Qb, chunks, bins}, opts.dtype(at::kLong));
  map_chunk_scan_kernel<<<blocks_for(Qb * bins, 256), 256, 0, stream>>>(
      per_chunk.const_data_ptr<int32_t>(), start.const_data_ptr<int64_t>(), rel_start.const_data_ptr<int64_t>(),
      first_all.mutable_data_ptr<int64_t>(), first_rel.mutable_data_ptr<int64_t>(), Qb, chunks, bins);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  per_chunk.reset();
  at::Tensor ap_part = at::empty({Qb, chunks}, opts.dtype(at::kDouble));
  at::Tensor hit_part = at::empty({Qb, chunks}, opts.dtype(at::kLong));
  const int warps = index_warps(B);
  const size_t index_smem = static_cast<size_t>(warps) * ((2 * bins) * 8 + query_stride(B));
  if (index_smem > 48 * 1024)
    C10_CUDA_CHECK(cudaFuncSetAttribute(map_index_kernel<Words, Rel>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(index_smem)));
  const int64_t qblocks = (Qb + warps - 1) / warps;
  map_index_kernel<Words, Rel><<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(qblocks)), 32 * warps,
                                 index_smem, stream>>>(
      qp, dp, relevant, first_all.const_data_ptr<int64_t>(), first_rel.const_data_ptr<int64_t>(),
      last.const_data_ptr<int64_t>(), ap_part.mutable_data_ptr<double>(), hit_part.mutable_data_ptr<int64_t>(),
      q_begin, Qb, N, B, kk);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  map_finish_kernel<<<blocks_for(Qb, 128), 128, 0, stream>>>(ap_part.const_data_ptr<double>(),
                                                             hit_part.const_data_ptr<int64_t>(), out, Qb, chunks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor topk_map_cuda(const at::Tensor& q, const at::Tensor& db, const at::Tensor& q_labels,
                         const at::Tensor& db_labels, int64_t k, c10::string_view ties_name) {
  const auto [ties, multi_hot, kk] = check_topk_map_inputs(q, db, q_labels, db_labels, k, ties_name);
  const int64_t Q = q.size(0), N = db.size(0), B = q.size(1);
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor out = at::zeros({Q}, q.options().dtype(at::kDouble));
  if (Q == 0 || N == 0) return out;
  check_cuda_code_width(B, "topk_map");

  const at::Tensor qc = q.contiguous(), dbc = db.contiguous();
  const uint8_t* qp = qc.const_data_ptr<uint8_t>();
  const uint8_t* dp = dbc.const_data_ptr<uint8_t>();
  const int64_t bins = 8 * B + 1, chunks = (N + kChunk - 1) / kChunk;
  // Bytes per query: totals and their prefixes (~12 int64 per bin with the temporaries); for the
  // index path also, per (chunk, bin), the chunk counts (2 x int32) and the two counter arrays
  // (2 x int64), and per chunk the partial sums (2 x 8 bytes).
  const int64_t per_query = 12 * 8 * bins + (ties == Ties::kIndex ? chunks * bins * 24 + chunks * 16 : 0);
  int64_t batch = kBudgetBytes / per_query;
  // Grid y limits: histogram groups of kQueries (grid-strided), index blocks of up to 8 queries.
  batch = batch < 1 ? 1 : (batch > 65535 ? 65535 : batch);
  dispatch_words(B, words_aligned(qp, dp, B), [&](auto words) {
    constexpr int W = decltype(words)::value;
    auto run = [&](const auto& relevant) {
      for (int64_t q0 = 0; q0 < Q; q0 += batch) {
        const int64_t Qb = Q - q0 < batch ? Q - q0 : batch;
        map_batch<W>(qp, dp, relevant, q0, Qb, N, B, kk, ties, q.options(), out.mutable_data_ptr<double>() + q0);
      }
    };
    if (multi_hot) {
      const at::Tensor qm = label_masks(q_labels), dm = label_masks(db_labels);
      run(MultiHot{reinterpret_cast<const uint64_t*>(qm.const_data_ptr<int64_t>()),
                   reinterpret_cast<const uint64_t*>(dm.const_data_ptr<int64_t>()), qm.size(1)});
    } else {
      const at::Tensor ql = q_labels.contiguous(), dl = db_labels.contiguous();
      run(ClassIds{ql.const_data_ptr<int64_t>(), dl.const_data_ptr<int64_t>()});
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) { m.impl("topk_map", &topk_map_cuda); }

}  // namespace deephash
