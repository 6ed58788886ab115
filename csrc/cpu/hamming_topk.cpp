// hamming_topk on the CPU: exact k nearest database rows per query, ordered by (distance, row).
//
// Distances live in the tiny range 0..bits, so selection needs no heap: each query keeps the rows
// it has accepted so far (in row order) with a histogram of their distances. When the buffer
// fills, the histogram gives the distance t at which the k-th best row sits; rows beyond it are
// dropped and from then on only rows with distance < t are accepted (a later row at distance t
// loses the tie to every kept one, being of higher index). The threshold only shrinks, so after
// the first few thousand rows almost every row is rejected by one compare. A final counting sort
// over the distance range orders the survivors; they are already in row order within a distance.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/codes_cpu.h"

namespace deephash {
namespace {

constexpr int64_t kQueryBlock = 16;

struct Candidates {
  int32_t accept = 0;         // rows with distance <= accept are taken
  int64_t size = 0;
  std::vector<int32_t> dist;  // [cap], row order
  std::vector<int64_t> row;   // [cap]
  std::vector<int64_t> hist;  // [bits + 1], distances of the kept rows

  void reset(int64_t cap, int32_t max_dist) {
    accept = max_dist;
    size = 0;
    dist.resize(cap);
    row.resize(cap);
    hist.assign(max_dist + 1, 0);
  }

  // Keep exactly min(k, size) best rows; return the distance of the worst kept one.
  int32_t trim(int64_t k) {
    int64_t below = 0;
    int32_t t = 0;
    const auto max_dist = static_cast<int32_t>(hist.size()) - 1;
    while (t < max_dist && below + hist[t] < k) below += hist[t++];
    int64_t ties_left = std::min(hist[t], k - below);
    int64_t n = 0;
    // Branch-free compaction: whether a row survives is a coin flip to the branch predictor.
    for (int64_t i = 0; i < size; ++i) {
      const int32_t d = dist[i];
      const int64_t tie = d == t;
      const int64_t keep = (d < t) | (tie & (ties_left > 0));
      ties_left -= tie & keep;
      dist[n] = d;
      row[n] = row[i];
      n += keep;
    }
    size = n;
    hist[t] = k - below < hist[t] ? k - below : hist[t];
    std::fill(hist.begin() + t + 1, hist.end(), 0);
    return t;
  }

  // Counting sort of the kept rows by distance (stable, so ties stay in row order).
  void write_sorted(int32_t* out_d, int64_t* out_i) const {
    std::vector<int64_t> offset(hist.size());
    int64_t acc = 0;
    for (size_t d = 0; d < hist.size(); ++d) {
      offset[d] = acc;
      acc += hist[d];
    }
    for (int64_t i = 0; i < size; ++i) {
      const int64_t o = offset[dist[i]]++;
      out_d[o] = dist[i];
      out_i[o] = row[i];
    }
  }
};

// Scans database rows [r0, r1) for queries [q0, q1), leaving each query's candidates in cand.
template <class Code>
void scan(const uint8_t* q,   // [Q, B]
          const uint8_t* db,  // [N, B]
          int64_t B, int64_t q0, int64_t q1, int64_t r0, int64_t r1, int64_t k, int64_t cap,
          std::vector<Candidates>& cand) {
  constexpr int64_t kStep = Code::kRowsPerTest;
  const int64_t tile = scan_tile_rows(B, kStep);
  const auto max_dist = static_cast<int32_t>(8 * B);
  std::vector<Code> codes;
  codes.reserve(q1 - q0);
  for (int64_t i = q0; i < q1; ++i) {
    codes.emplace_back(q + i * B, B);
    cand[i - q0].reset(cap, max_dist);
  }
  const int64_t stride = Code::stride(B);  // a constant for the fixed widths
  for (int64_t t0 = r0; t0 < r1; t0 += tile) {
    const int64_t t1 = std::min(r1, t0 + tile);
    for (int64_t i = 0; i < q1 - q0; ++i) {
      // A local copy: stores to row[] (int64) may alias the query words (uint64) of a shared
      // object, which would reload them for every row.
      const Code code = codes[i];
      Candidates& c = cand[i];
      int32_t accept = c.accept;
      int64_t size = c.size;
      int32_t* dist = c.dist.data();
      int64_t* row = c.row.data();
      int64_t* hist = c.hist.data();
      auto take = [&](int32_t d, int64_t r) {
        if (d > accept) return;
        dist[size] = d;
        row[size] = r;
        ++hist[d];
        if (++size == cap) {
          c.size = size;
          accept = c.trim(k) - 1;
          size = c.size;
        }
      };
      const uint8_t* p = db + t0 * stride;
      int64_t r = t0;
      // A group of rows per step (8, or 20 for the AVX2 widths) and one test of their minimum:
      // past the first rows of a scan almost every step is rejected by that single branch.
      for (; r + kStep <= t1; r += kStep, p += kStep * stride) {
        int32_t d[kStep];
        // Groups pass k ln(N / k) times per scan, mostly for one row: visit only the rows that pass
        // (a trim inside take() may lower accept meanwhile; take() checks again).
        if (uint32_t pass = code.within(p, accept, d); __builtin_expect(pass != 0, 0)) {
          for (; pass; pass &= pass - 1) {
            const int u = __builtin_ctz(pass);
            take(d[u], r + u);
          }
        }
      }
      for (; r < t1; ++r, p += stride) take(code.distance(p), r);
      c.accept = accept;
      c.size = size;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> hamming_topk_cpu(const at::Tensor& q, const at::Tensor& db, int64_t k) {
  check_code_pair(q, db);
  TORCH_CHECK(k >= 1, "hamming_topk: k must be >= 1, got ", k);
  const int64_t Q = q.size(0), N = db.size(0), B = q.size(1);
  const int64_t kk = std::min(k, N);
  at::Tensor out_d = at::empty({Q, kk}, q.options().dtype(at::kInt));
  at::Tensor out_i = at::empty({Q, kk}, q.options().dtype(at::kLong));
  if (Q == 0 || kk == 0) return {out_d, out_i};

  const at::Tensor qc = q.contiguous(), dbc = db.contiguous();
  const uint8_t* qp = qc.const_data_ptr<uint8_t>();
  const uint8_t* dp = dbc.const_data_ptr<uint8_t>();
  int32_t* od = out_d.mutable_data_ptr<int32_t>();
  int64_t* oi = out_i.mutable_data_ptr<int64_t>();

  // With few queries the database is split across threads and the per-chunk winners merged.
  const int64_t qblocks = (Q + kQueryBlock - 1) / kQueryBlock;
  const int64_t threads = at::get_num_threads();
  const int64_t chunks =
      qblocks >= 2 * threads ? 1 : std::max<int64_t>(1, std::min<int64_t>(2 * threads, N / std::max<int64_t>(4 * kk, 8192)));
  const int64_t chunk = (N + chunks - 1) / chunks;

  // Per (query, chunk) winners when the database is split: [Q][chunks] lists of (distance, row).
  std::vector<std::vector<std::pair<int32_t, int64_t>>> partial(chunks > 1 ? Q * chunks : 0);

  dispatch_code(B, [&](auto tag) {
    using Code = code_t<decltype(tag)>;
    at::parallel_for(0, qblocks * chunks, 1, [&](int64_t w0, int64_t w1) {
      std::vector<Candidates> cand(kQueryBlock);
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t b = w / chunks, c = w % chunks;
        const int64_t q0 = b * kQueryBlock, q1 = std::min(Q, q0 + kQueryBlock);
        const int64_t r0 = c * chunk, r1 = std::min(N, r0 + chunk);
        const int64_t n = r1 - r0;
        // Capacity past k amortises the trims; never above the rows scanned, so a scan of <= k rows
        // never trims.
        const int64_t cap = std::min(n + 1, 3 * kk + 256);
        scan<Code>(qp, dp, B, q0, q1, r0, r1, kk, cap, cand);
        for (int64_t i = q0; i < q1; ++i) {
          Candidates& cd = cand[i - q0];
          cd.trim(kk);
          if (chunks == 1) {
            cd.write_sorted(od + i * kk, oi + i * kk);
          } else {
            auto& p = partial[i * chunks + c];
            p.resize(cd.size);
            for (int64_t j = 0; j < cd.size; ++j) p[j] = {cd.dist[j], cd.row[j]};
          }
        }
      }
    });
  });

  if (chunks > 1) {
    at::parallel_for(0, Q, 1, [&](int64_t i0, int64_t i1) {
      std::vector<std::pair<int32_t, int64_t>> all;
      for (int64_t i = i0; i < i1; ++i) {
        all.clear();
        for (int64_t c = 0; c < chunks; ++c) {
          const auto& p = partial[i * chunks + c];
          all.insert(all.end(), p.begin(), p.end());
        }
        std::partial_sort(all.begin(), all.begin() + kk, all.end());
        for (int64_t j = 0; j < kk; ++j) {
          od[i * kk + j] = all[j].first;
          oi[i * kk + j] = all[j].second;
        }
      }
    });
  }
  return {out_d, out_i};
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) { m.impl("hamming_topk", &hamming_topk_cpu); }

}  // namespace deephash
