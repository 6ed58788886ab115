// topk_map on the CPU: per-query AP@k over Hamming ranking, without a Q x N matrix or an argsort.
//
// One pass over the database per block of queries histograms each query's rows by (distance,
// relevant). For ties="average" the histograms alone give the exact expected AP. For ties="index"
// the rank of relevant row r is start[d] + (rows of distance d before r): the pass records, for
// relevant rows only, the distance and the count of non-relevant rows of that distance seen so far
// (the histogram bin before its increment); the relevant rows before r are counted when the records
// are replayed in row order. A counting sort without the sort, and one pass instead of two.
// With a small k (k <= N/32: mAP@1000 and the like) a hamming_topk-like scan replaces both: see
// map_queries_small_k.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

#include "common/average_precision.h"
#include "common/checks.h"
#include "common/codes_cpu.h"

namespace deephash {
namespace {

struct ClassIds {
  const int64_t* q;   // [Q]
  const int64_t* db;  // [N]
  struct Query {
    int64_t label;
    bool operator()(int64_t row_label) const { return row_label == label; }
  };
  int64_t row(int64_t r) const { return db[r]; }
  Query query(int64_t i) const { return {q[i]}; }
};

// Multi-hot labels as 64-bit masks: relevant = the masks share a bit.
struct MultiHot {
  const uint64_t* q;   // [Q, W]
  const uint64_t* db;  // [N, W]
  int64_t W;
  struct Query {
    const uint64_t* q;
    int64_t W;
    bool operator()(const uint64_t* row_mask) const {
      uint64_t any = 0;
      for (int64_t w = 0; w < W; ++w) any |= q[w] & row_mask[w];
      return any != 0;
    }
  };
  const uint64_t* row(int64_t r) const { return db + r * W; }
  Query query(int64_t i) const { return {q + i * W, W}; }
};

at::Tensor label_masks(const at::Tensor& labels) {  // [rows, C] -> int64 [rows, ceil(C/64)]
  const at::Tensor present = labels.ne(0).contiguous();
  const int64_t rows = present.size(0), C = present.size(1), W = (C + 63) / 64;
  at::Tensor masks = at::zeros({rows, W}, labels.options().dtype(at::kLong));
  const bool* p = present.const_data_ptr<bool>();
  auto* m = reinterpret_cast<uint64_t*>(masks.mutable_data_ptr<int64_t>());
  at::parallel_for(0, rows, 1024, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < C; ++c) m[r * W + c / 64] |= static_cast<uint64_t>(p[r * C + c]) << (c % 64);
  });
  return masks;
}

constexpr int64_t kQueryBlock = 4;  // queries per database pass: each row's code and label load once
constexpr int64_t kRowTile = 4096;   // rows between checks of the record buffers' room
constexpr int kRecordShift = 40;     // record = distance << 40 | non-relevant rows of that distance before
static_assert(kQueryBlock == 4, "map_queries spells out the block's four queries");

// AP@k of one query under ties="index" from its histogram [bins][2] (non-relevant, relevant) and the
// records of its relevant rows in row order.
double index_ap(const int64_t* hist, int64_t bins, const uint64_t* rec, int64_t n_rec, int64_t kk,
                std::vector<int64_t>& start, std::vector<int64_t>& rel_start, std::vector<int64_t>& rel_seen) {
  int64_t acc = 0, rel_acc = 0;
  uint64_t last = 0;  // rows beyond this distance all rank past k
  for (int64_t d = 0; d < bins; ++d) {
    start[d] = acc;
    rel_start[d] = rel_acc;
    rel_seen[d] = 0;
    if (acc < kk) last = static_cast<uint64_t>(d);
    acc += hist[2 * d] + hist[2 * d + 1];
    rel_acc += hist[2 * d + 1];
  }
  double ap = 0.0;
  int64_t hits = 0;
  constexpr uint64_t kMask = (uint64_t{1} << kRecordShift) - 1;
  for (int64_t j = 0; j < n_rec; ++j) {
    const uint64_t d = rec[j] >> kRecordShift;
    if (d > last) continue;
    const int64_t before = rel_seen[d]++;  // relevant rows of distance d ahead of this one
    const int64_t pos = start[d] + static_cast<int64_t>(rec[j] & kMask) + before;  // 0-based rank
    if (pos < kk) {
      ap += static_cast<double>(rel_start[d] + before + 1) / static_cast<double>(pos + 1);
      ++hits;
    }
  }
  return hits > 0 ? ap / static_cast<double>(hits) : 0.0;
}

double average_ap(const int64_t* hist, int64_t bins) {
  double ap = 0.0;
  int64_t n_before = 0, r_before = 0;
  for (int64_t d = 0; d < bins; ++d) {
    const int64_t rel = hist[2 * d + 1], all = hist[2 * d] + rel;
    ap += tied_group_precision_sum(all, rel, n_before, r_before);
    n_before += all;
    r_before += rel;
  }
  return r_before > 0 ? ap / static_cast<double>(r_before) : 0.0;
}

// How a block's pass treats ties: histograms only (average), or records of relevant rows (index).
enum class Pass { kAverage, kIndexRecords };

template <Pass kPass, class Code, class Labels>
void map_queries(const uint8_t* q,   // [Q, B]
                 const uint8_t* db,  // [N, B]
                 const Labels& labels, int64_t Q, int64_t N, int64_t B, int64_t kk,
                 double* out) {  // [Q]
  const int64_t bins = 8 * B + 1;
  const int64_t stride = Code::stride(B);
  const int64_t blocks = (Q + kQueryBlock - 1) / kQueryBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<int64_t> hist_all(kQueryBlock * 2 * bins);  // [QB][bins][2]: (non-relevant, relevant)
    constexpr bool kRecords = kPass == Pass::kIndexRecords;
    std::vector<std::vector<uint64_t>> rec(kRecords ? kQueryBlock : 0);
    std::vector<int64_t> start(bins), rel_start(bins), rel_seen(bins);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kQueryBlock, nq = std::min(kQueryBlock, Q - i0);
      // A short last block repeats its last query, so the row loop has no tail case.
      auto qi = [&](int64_t j) { return i0 + std::min(j, nq - 1); };
      // Local copies: the histogram stores would otherwise force reloads of the query words.
      const std::array<Code, kQueryBlock> code{Code(q + qi(0) * B, B), Code(q + qi(1) * B, B),
                                               Code(q + qi(2) * B, B), Code(q + qi(3) * B, B)};
      const std::array<typename Labels::Query, kQueryBlock> relevant{
          labels.query(qi(0)), labels.query(qi(1)), labels.query(qi(2)), labels.query(qi(3))};
      std::fill(hist_all.begin(), hist_all.end(), 0);
      int64_t* hist = hist_all.data();
      std::array<int64_t, kQueryBlock> n_rec{};
      for (int64_t t0 = 0; t0 < N; t0 += kRowTile) {
        const int64_t t1 = std::min(N, t0 + kRowTile);
        std::array<uint64_t*, kQueryBlock> recp{};
        if constexpr (kRecords) {
          // Every row writes a record slot and keeps it only when relevant (n_rec += y): relevance
          // is a coin flip to the branch predictor. So each buffer needs a tile of room.
          for (int64_t j = 0; j < kQueryBlock; ++j) {
            if (static_cast<int64_t>(rec[j].size()) < n_rec[j] + (t1 - t0)) rec[j].resize(2 * (n_rec[j] + (t1 - t0)));
            recp[j] = rec[j].data();
          }
        }
        const uint8_t* p = db + t0 * stride;
        for (int64_t r = t0; r < t1; ++r, p += stride) {
          const auto row_label = labels.row(r);
#pragma GCC unroll 4
          for (int64_t j = 0; j < kQueryBlock; ++j) {
            const uint64_t d = static_cast<uint64_t>(code[j].distance(p));
            const int64_t y = relevant[j](row_label);
            int64_t* h = hist + (j * bins + static_cast<int64_t>(d)) * 2;
            if constexpr (kRecords) {
              recp[j][n_rec[j]] = d << kRecordShift | static_cast<uint64_t>(h[0]);
              n_rec[j] += y;
            }
            h[y] += 1;
          }
        }
      }
      for (int64_t j = 0; j < nq; ++j) {
        const int64_t* h = hist + j * bins * 2;
        if constexpr (kRecords)
          out[i0 + j] = index_ap(h, bins, rec[j].data(), n_rec[j], kk, start, rel_start, rel_seen);
        else
          out[i0 + j] = average_ap(h, bins);
      }
    }
  });
}

// ties="index" with a small k (k <= N/32: mAP@1000 and the like). Only rows at a distance <= that of
// the k-th ranked row matter, and all of them do (a row's rank counts the rows of its own distance
// ahead of it). So the scan is hamming_topk's: each query keeps, in row order, every row within a
// threshold that shrinks as rows arrive; a trim drops the rows past the distance at which the kept
// ones first number k, keeping that distance's whole group. At the end the kept rows are exactly
// the rows of distance <= the k-th row's, and the AP walks them in row order. Most rows cost one
// popcount and a compare; labels are read for the kept rows only.
constexpr int64_t kScanQueryBlock = 16;
constexpr int64_t kScanTileBytes = 32 * 1024;

struct GroupCandidates {
  int32_t accept = 0;         // rows with distance <= accept are kept
  int64_t size = 0;
  bool dense = true;          // whether the last tile kept more than 1 row in 64
  std::vector<int32_t> dist;  // [cap], row order
  std::vector<int64_t> row;   // [cap]
  std::vector<int64_t> hist;  // [bins], distances of the kept rows

  void reset(int64_t cap, int32_t max_dist) {
    accept = max_dist;
    size = 0;
    dense = true;
    dist.resize(cap);
    row.resize(cap);
    hist.assign(max_dist + 1, 0);
  }

  // Recounts hist from the buffer (the branch-free scan below does not keep it), then drops the rows
  // past the distance at which the kept rows first number kk, keeping that distance's whole group.
  void trim(int64_t kk) {
    std::fill(hist.begin(), hist.end(), 0);
    for (int64_t i = 0; i < size; ++i) ++hist[dist[i]];
    const auto max_dist = static_cast<int32_t>(hist.size()) - 1;
    int64_t below = 0;
    int32_t t = 0;
    while (t < max_dist && below + hist[t] < kk) below += hist[t++];
    int64_t n = 0;
    for (int64_t i = 0; i < size; ++i) {  // branch-free compaction
      const int32_t d = dist[i];
      dist[n] = d;
      row[n] = row[i];
      n += d <= t;
    }
    size = n;
    accept = t;
    // A large tied group can leave the buffer nearly full: grow it so that trims stay rare.
    const auto cap = static_cast<int64_t>(dist.size());
    if (2 * size > cap) {
      dist.resize(2 * cap);
      row.resize(2 * cap);
    }
  }
};

template <class Code, class Labels>
void map_queries_small_k(const uint8_t* q,   // [Q, B]
                         const uint8_t* db,  // [N, B]
                         const Labels& labels, int64_t Q, int64_t N, int64_t B, int64_t kk,
                         double* out) {  // [Q]
  const int64_t bins = 8 * B + 1;
  const int64_t stride = Code::stride(B);
  const int64_t tile = std::max<int64_t>(64, kScanTileBytes / std::max<int64_t>(B, 1));
  const int64_t cap0 = std::min(N + 1, 2 * kk + 1024);
  const int64_t blocks = (Q + kScanQueryBlock - 1) / kScanQueryBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<GroupCandidates> cand(kScanQueryBlock);
    std::vector<int64_t> start(bins), rel_start(bins);
    std::vector<uint8_t> rel;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kScanQueryBlock, i1 = std::min(Q, i0 + kScanQueryBlock);
      for (int64_t i = i0; i < i1; ++i) cand[i - i0].reset(cap0, static_cast<int32_t>(bins - 1));
      for (int64_t t0 = 0; t0 < N; t0 += tile) {
        const int64_t t1 = std::min(N, t0 + tile);
        for (int64_t i = i0; i < i1; ++i) {
          const Code code(q + i * B, B);  // local: the stores below may alias a shared copy
          GroupCandidates& c = cand[i - i0];
          int32_t accept = c.accept;
          int64_t size = c.size, cap = static_cast<int64_t>(c.dist.size());
          int32_t* dist = c.dist.data();
          int64_t* row = c.row.data();
          // The trim goes through c alone: a lambda holding references to the locals above would
          // take their addresses, and then every store to dist[] / row[] (same types) could alias
          // them, forcing a reload of size and accept per row.
          int64_t passed = 0, mark = size;  // rows kept in this tile, across trims
#define DEEPHASH_TRIM()                            \
  do {                                             \
    passed += size - mark;                         \
    c.size = size;                                 \
    c.trim(kk);                                    \
    accept = c.accept;                             \
    size = mark = c.size;                          \
    cap = static_cast<int64_t>(c.dist.size());     \
    dist = c.dist.data();                          \
    row = c.row.data();                            \
  } while (0)
          const uint8_t* p = db + t0 * stride;
          int64_t r = t0;
          if (c.dense) {
            // Many rows pass (early in the scan, or a large k): every row writes a slot and keeps it
            // when it passes, since a branch on that would be mispredicted often.
            for (; r + 4 <= t1; r += 4, p += 4 * stride) {
              if (size + 4 > cap) DEEPHASH_TRIM();
              for (int u = 0; u < 4; ++u) {
                const int32_t d = code.distance(p + u * stride);
                dist[size] = d;
                row[size] = r + u;
                size += d <= accept;
              }
            }
            c.dense = 64 * (passed + size - mark) > (t1 - t0);
          } else {
            // Few rows pass: one test of the minimum of four rows, rarely taken.
            for (; r + 4 <= t1; r += 4, p += 4 * stride) {
              const int32_t d0 = code.distance(p), d1 = code.distance(p + stride);
              const int32_t d2 = code.distance(p + 2 * stride), d3 = code.distance(p + 3 * stride);
              if (__builtin_expect(std::min(std::min(d0, d1), std::min(d2, d3)) <= accept, 0)) {
                if (size + 4 > cap) DEEPHASH_TRIM();
                const int32_t ds[4] = {d0, d1, d2, d3};
                for (int u = 0; u < 4; ++u) {
                  dist[size] = ds[u];
                  row[size] = r + u;
                  size += ds[u] <= accept;
                }
              }
            }
          }
          for (; r < t1; ++r, p += stride) {
            if (size + 1 > cap) DEEPHASH_TRIM();
            const int32_t d = code.distance(p);
            dist[size] = d;
            row[size] = r;
            size += d <= accept;
          }
#undef DEEPHASH_TRIM
          c.accept = accept;
          c.size = size;
        }
      }
      for (int64_t i = i0; i < i1; ++i) {
        GroupCandidates& c = cand[i - i0];
        c.trim(kk);  // now accept is the distance of the k-th ranked row
        const auto relevant = labels.query(i);
        rel.resize(c.size);
        std::fill(rel_start.begin(), rel_start.end(), 0);
        for (int64_t j = 0; j < c.size; ++j) {
          rel[j] = relevant(labels.row(c.row[j]));
          rel_start[c.dist[j]] += rel[j];
        }
        // The trim's histogram counts every kept distance exactly (bins past accept are unused).
        int64_t acc = 0, rel_acc = 0;
        for (int64_t d = 0; d <= c.accept; ++d) {
          const int64_t all_d = c.hist[d], rel_d = rel_start[d];
          start[d] = acc;
          rel_start[d] = rel_acc;
          acc += all_d;
          rel_acc += rel_d;
        }
        double ap = 0.0;
        int64_t hits = 0;
        for (int64_t j = 0; j < c.size; ++j) {
          const int64_t pos = start[c.dist[j]]++;  // 0-based rank
          if (rel[j]) {
            const int64_t ahead = rel_start[c.dist[j]]++;
            if (pos < kk) {
              ap += static_cast<double>(ahead + 1) / static_cast<double>(pos + 1);
              ++hits;
            }
          }
        }
        out[i] = hits > 0 ? ap / static_cast<double>(hits) : 0.0;
      }
    }
  });
}

template <class Code, class Labels>
void map_queries(const uint8_t* q, const uint8_t* db, const Labels& labels, int64_t Q, int64_t N, int64_t B,
                 int64_t kk, Ties ties, double* out) {
  if (ties == Ties::kAverage)
    map_queries<Pass::kAverage, Code>(q, db, labels, Q, N, B, kk, out);
  else if (32 * kk <= N)  // measured: the scan wins below ~N/25 (k=1000 of 69k: 49 vs 68 ms), loses at N/9
    map_queries_small_k<Code>(q, db, labels, Q, N, B, kk, out);
  else
    map_queries<Pass::kIndexRecords, Code>(q, db, labels, Q, N, B, kk, out);
}

at::Tensor topk_map_cpu(const at::Tensor& q, const at::Tensor& db, const at::Tensor& q_labels,
                        const at::Tensor& db_labels, int64_t k, c10::string_view ties_name) {
  const auto [ties, multi_hot, kk] = check_topk_map_inputs(q, db, q_labels, db_labels, k, ties_name);
  const int64_t Q = q.size(0), N = db.size(0), B = q.size(1);
  at::Tensor out = at::zeros({Q}, q.options().dtype(at::kDouble));
  if (Q == 0 || N == 0) return out;

  const at::Tensor qc = q.contiguous(), dbc = db.contiguous();
  const uint8_t* qp = qc.const_data_ptr<uint8_t>();
  const uint8_t* dp = dbc.const_data_ptr<uint8_t>();
  double* op = out.mutable_data_ptr<double>();
  dispatch_code(B, [&](auto tag) {
    using Code = code_t<decltype(tag)>;
    if (multi_hot) {
      const at::Tensor qm = label_masks(q_labels), dm = label_masks(db_labels);
      const MultiHot labels{reinterpret_cast<const uint64_t*>(qm.const_data_ptr<int64_t>()),
                            reinterpret_cast<const uint64_t*>(dm.const_data_ptr<int64_t>()), qm.size(1)};
      map_queries<Code>(qp, dp, labels, Q, N, B, kk, ties, op);
    } else {
      const at::Tensor ql = q_labels.contiguous(), dl = db_labels.contiguous();
      const ClassIds labels{ql.const_data_ptr<int64_t>(), dl.const_data_ptr<int64_t>()};
      map_queries<Code>(qp, dp, labels, Q, N, B, kk, ties, op);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) { m.impl("topk_map", &topk_map_cpu); }

}  // namespace deephash
