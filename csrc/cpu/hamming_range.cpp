// hamming_range on the CPU: every database row within a Hamming radius of each query, in FAISS's
// range-search layout (lims, distances, rows), each query's hits ordered by (distance, row).
//
// Work items are (query block, database chunk) pairs, as in hamming_distance, so that a few
// queries against a large database still use every thread. A scan keeps the hits of one
// (query, chunk) in row order; the output size is only known once every scan is done, so the hits
// are counted first and then moved, query by query, into their place by a counting sort over the
// distance (stable: rows stay ascending within a distance, and chunks are visited in row order).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/codes_cpu.h"

namespace deephash {
namespace {

constexpr int64_t kQueryBlock = 64;  // queries that share a (padded) tile: see kScanQueryBlock

struct Hits {
  std::vector<int32_t> dist;  // row order
  std::vector<int64_t> row;
};

// Scans database rows [r0, r1) for queries [q0, q1); hits of query i go to out[i - q0].
template <class Code>
void scan(const uint8_t* q,   // [Q, B]
          const uint8_t* db,  // [N, B]
          int64_t B, int64_t q0, int64_t q1, int64_t r0, int64_t r1, int32_t radius, Hits* out) {
  constexpr int64_t kStep = Code::kRowsPerTest;
  const int64_t stride = Code::stride(B);
  const int64_t tile = scan_tile_rows(stride, kStep);
  ScanRows<Code> rows(db, r1, B);
  std::vector<Code> codes;
  codes.reserve(q1 - q0);
  for (int64_t i = q0; i < q1; ++i) codes.emplace_back(q + i * B, B);
  for (int64_t t0 = r0; t0 < r1; t0 += tile) {
    const int64_t t1 = std::min(r1, t0 + tile);
    const uint8_t* const tile_rows = rows.tile(t0, t1);
    for (int64_t i = 0; i < q1 - q0; ++i) {
      const Code code = codes[i];  // a local copy keeps the query words in registers
      Hits& h = out[i];
      const uint8_t* p = tile_rows;
      int64_t r = t0;
      for (; r + kStep <= t1; r += kStep, p += kStep * stride) {
        int32_t d[kStep];
        for (uint32_t pass = code.within(p, radius, d); pass; pass &= pass - 1) {
          const int u = __builtin_ctz(pass);
          h.dist.push_back(d[u]);
          h.row.push_back(r + u);
        }
      }
      for (; r < t1; ++r, p += stride) {
        const int32_t d = code.distance(p);
        if (d <= radius) {
          h.dist.push_back(d);
          h.row.push_back(r);
        }
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> hamming_range_cpu(const at::Tensor& q, const at::Tensor& db,
                                                                 int64_t radius) {
  check_range_inputs(q, db, radius);
  const int64_t Q = q.size(0), N = db.size(0), B = q.size(1);
  at::Tensor lims = at::zeros({Q + 1}, q.options().dtype(at::kLong));
  if (Q == 0 || N == 0) {
    return {lims, at::empty({0}, q.options().dtype(at::kInt)), at::empty({0}, q.options().dtype(at::kLong))};
  }
  // No distance exceeds 8 B, so a larger radius is the same query (and fits the int32 compares).
  const auto limit = static_cast<int32_t>(std::min<int64_t>(radius, 8 * B));

  const at::Tensor qc = q.contiguous(), dbc = db.contiguous();
  const uint8_t* qp = qc.const_data_ptr<uint8_t>();
  const uint8_t* dp = dbc.const_data_ptr<uint8_t>();

  const int64_t qblocks = (Q + kQueryBlock - 1) / kQueryBlock;
  const int64_t threads = at::get_num_threads();
  const int64_t chunks = qblocks >= 4 * threads ? 1 : std::max<int64_t>(1, std::min<int64_t>(4 * threads, N / 8192));
  const int64_t chunk = (N + chunks - 1) / chunks;
  std::vector<Hits> hits(Q * chunks);  // [query][chunk]

  dispatch_scan_code(B, [&](auto tag) {
    using Code = code_t<decltype(tag)>;
    at::parallel_for(0, qblocks * chunks, 1, [&](int64_t w0, int64_t w1) {
      std::vector<Hits> local(kQueryBlock);
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t b = w / chunks, c = w % chunks;
        const int64_t q0 = b * kQueryBlock, q1 = std::min(Q, q0 + kQueryBlock);
        const int64_t r0 = c * chunk, r1 = std::min(N, r0 + chunk);
        if (r0 >= r1) continue;
        scan<Code>(qp, dp, B, q0, q1, r0, r1, limit, local.data());
        for (int64_t i = q0; i < q1; ++i) {
          hits[i * chunks + c] = std::move(local[i - q0]);
          local[i - q0] = Hits{};
        }
      }
    });
  });

  int64_t* lp = lims.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < Q; ++i) {
    int64_t n = 0;
    for (int64_t c = 0; c < chunks; ++c) n += static_cast<int64_t>(hits[i * chunks + c].row.size());
    lp[i + 1] = lp[i] + n;
  }
  const int64_t M = lp[Q];
  at::Tensor dist = at::empty({M}, q.options().dtype(at::kInt));
  at::Tensor rows = at::empty({M}, q.options().dtype(at::kLong));
  int32_t* od = dist.mutable_data_ptr<int32_t>();
  int64_t* orow = rows.mutable_data_ptr<int64_t>();
  at::parallel_for(0, Q, 1, [&](int64_t i0, int64_t i1) {
    std::vector<int64_t> offset(limit + 2);
    for (int64_t i = i0; i < i1; ++i) {
      std::fill(offset.begin(), offset.end(), 0);
      for (int64_t c = 0; c < chunks; ++c)
        for (int32_t d : hits[i * chunks + c].dist) ++offset[d + 1];
      for (int32_t d = 0; d <= limit; ++d) offset[d + 1] += offset[d];
      for (int64_t c = 0; c < chunks; ++c) {
        Hits& h = hits[i * chunks + c];
        for (size_t j = 0; j < h.row.size(); ++j) {
          const int64_t o = lp[i] + offset[h.dist[j]]++;
          od[o] = h.dist[j];
          orow[o] = h.row[j];
        }
        h = Hits{};  // give the memory back as soon as it is copied
      }
    }
  });
  return {lims, dist, rows};
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) { m.impl("hamming_range", &hamming_range_cpu); }

}  // namespace deephash
