// topk_map on the CPU: per-query AP@k over Hamming ranking, without a Q x N matrix or an argsort.
//
// One pass over the database per block of four queries histograms each query's rows by distance.
// For ties="average" a histogram split by relevance gives the exact expected AP. For ties="index"
// the rank of relevant row r is start[d] + (rows of distance d before r): the pass records, for
// relevant rows only, the distance and that count (the histogram bin before its increment); the
// relevant rows ahead of r are counted when the records are replayed in row order. A counting sort
// without the sort, and one pass instead of two. Single-label queries go through the pass grouped
// by class, so that a row's relevance is one compare for the block and its records advance together.
// With a small k (k <= N/256: mAP@100 of 69k rows, mAP@1000 of a million) hamming_topk's scan
// replaces both: see map_queries_small_k.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <bit>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/average_precision.h"
#include "common/checks.h"
#include "common/codes_cpu.h"
#include "cpu/candidate_scan.h"

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
constexpr int64_t kBlocksPerTile = 16;  // blocks that share a padded tile (map_queries)

// ties="index" records: distance << shift | rows of that distance before it, with the distance in
// the top bit_width(8 B) bits (at most 31) and the count below (rows < 2^shift, 2^33 or more).
inline int record_shift(int64_t bins) {
  return std::min(63, 64 - static_cast<int>(std::bit_width(static_cast<uint64_t>(bins - 1))));
}

template <class T, class F, size_t... I>
std::array<T, sizeof...(I)> array_of(F&& f, std::index_sequence<I...>) {  // {f(0), f(1), ...}
  return {f(I)...};
}

// The queries of one database pass. `shared`: all of them have the same class label, so a row's
// relevance is one compare for the block, and the block's record buffers advance together.
struct QueryBlock {
  std::array<int64_t, kQueryBlock> query;  // a short block repeats its last query
  int64_t n;                               // real queries
  bool shared;
};

// Single-label queries are grouped by class into shared blocks; the rest (a class's last few, or
// multi-hot labels) fill mixed blocks in index order.
template <class Labels>
std::vector<QueryBlock> make_blocks(const Labels& labels, int64_t Q) {
  std::vector<QueryBlock> blocks;
  std::vector<int64_t> rest;
  auto add = [&](const int64_t* idx, int64_t n, bool shared) {
    QueryBlock b{{}, n, shared};
    for (int64_t j = 0; j < kQueryBlock; ++j) b.query[j] = idx[std::min(j, n - 1)];
    blocks.push_back(b);
  };
  if constexpr (std::is_same_v<Labels, ClassIds>) {
    std::vector<int64_t> order(Q);
    for (int64_t i = 0; i < Q; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return labels.q[a] < labels.q[b]; });
    for (int64_t s = 0; s < Q;) {
      int64_t e = s;
      while (e < Q && labels.q[order[e]] == labels.q[order[s]]) ++e;
      for (; s + kQueryBlock <= e; s += kQueryBlock) add(&order[s], kQueryBlock, true);
      for (; s < e; ++s) rest.push_back(order[s]);
    }
  } else {
    for (int64_t i = 0; i < Q; ++i) rest.push_back(i);
  }
  for (size_t s = 0; s < rest.size(); s += kQueryBlock)
    add(&rest[s], std::min<int64_t>(kQueryBlock, static_cast<int64_t>(rest.size() - s)), false);
  return blocks;
}

// AP@k of one query under ties="index" from the counts of all its rows per distance (hist[d] =
// d << shift | count) and the records of its relevant rows in row order. The per-distance
// counts of relevant rows come from the records.
double index_ap(const uint64_t* hist, int64_t hist_stride, int64_t bins, int shift, const uint64_t* rec,
                int64_t rec_stride, int64_t n_rec, int64_t kk,
                std::vector<int64_t>& start, std::vector<int64_t>& rel_start, std::vector<int64_t>& rel_seen) {
  const uint64_t mask = (uint64_t{1} << shift) - 1;
  std::fill(rel_seen.begin(), rel_seen.end(), 0);
  for (int64_t j = 0; j < n_rec; ++j) ++rel_seen[rec[j * rec_stride] >> shift];
  int64_t acc = 0, rel_acc = 0;
  uint64_t last = 0;  // rows beyond this distance all rank past k
  for (int64_t d = 0; d < bins; ++d) {
    start[d] = acc;
    rel_start[d] = rel_acc;
    if (acc < kk) last = static_cast<uint64_t>(d);
    acc += static_cast<int64_t>(hist[d * hist_stride] & mask);
    rel_acc += rel_seen[d];
    rel_seen[d] = 0;
  }
  double ap = 0.0;
  int64_t hits = 0;
  for (int64_t j = 0; j < n_rec; ++j) {
    const uint64_t v = rec[j * rec_stride], d = v >> shift;
    if (d > last) continue;
    const int64_t pos = start[d] + static_cast<int64_t>(v & mask);  // 0-based rank
    const int64_t ahead = rel_start[d] + rel_seen[d]++;                      // relevant rows ranked ahead
    if (pos < kk) {
      ap += static_cast<double>(ahead + 1) / static_cast<double>(pos + 1);
      ++hits;
    }
  }
  return hits > 0 ? ap / static_cast<double>(hits) : 0.0;
}

double average_ap(const int64_t* hist, int64_t hist_stride, int64_t bins) {  // hist[d * stride + y]
  double ap = 0.0;
  int64_t n_before = 0, r_before = 0;
  for (int64_t d = 0; d < bins; ++d) {
    const int64_t rel = hist[d * hist_stride + 1], all = hist[d * hist_stride] + rel;
    ap += tied_group_precision_sum(all, rel, n_before, r_before);
    n_before += all;
    r_before += rel;
  }
  return r_before > 0 ? ap / static_cast<double>(r_before) : 0.0;
}

// How a block's pass treats ties: histograms only (average), or records of relevant rows (index).
enum class Pass { kAverage, kIndexRecords };

// One tile (rows [t0, t1) at `tile`, `stride` bytes apart) of a pass over the database for the
// block's queries; hist is interleaved by query, so that one base register serves the four (the loop
// is short of registers). ties="average": hist
// [bins][QB][2] counts (non-relevant, relevant) rows per distance. ties="index": hist [bins][QB]
// counts all rows per distance, and every row writes a record slot (its distance and the rows of
// that distance before it), kept only when the row is relevant (n += y): relevance is a coin flip to
// the branch predictor, so each record buffer needs a tile of room. A shared block keeps one buffer
// [n][QB] in rec[0] (one count, one pointer); a mixed one a buffer per query.
template <Pass kPass, bool kShared, class Code, class Labels>
void block_pass(const std::array<Code, kQueryBlock>& code,
                const std::array<typename Labels::Query, kQueryBlock>& relevant, const uint8_t* tile,
                const Labels& labels, int64_t t0, int64_t t1, int64_t stride,
                uint64_t* hist, std::array<std::vector<uint64_t>, kQueryBlock>& rec,
                std::array<int64_t, kQueryBlock>& n_rec) {
  constexpr bool kRecords = kPass == Pass::kIndexRecords;
  constexpr int64_t QB = kQueryBlock;
  std::array<uint64_t*, kQueryBlock> recp{};
  if constexpr (kRecords) {
    for (int64_t j = 0; j < (kShared ? 1 : QB); ++j) {
      const int64_t need = (n_rec[j] + (t1 - t0)) * (kShared ? QB : 1);
      if (static_cast<int64_t>(rec[j].size()) < need) rec[j].resize(2 * need);
      recp[j] = rec[j].data();
    }
  }
  uint64_t* shared_rec = recp[0] + n_rec[0] * QB;  // kShared: this row's QB slots
  const uint8_t* p = tile;
  for (int64_t r = t0; r < t1; ++r, p += stride) {
    const auto row_label = labels.row(r);
    [[maybe_unused]] int64_t y_shared = 0;
    if constexpr (kShared) y_shared = relevant[0](row_label);
#pragma GCC unroll 16
    for (int64_t j = 0; j < QB; ++j) {
      const uint64_t d = static_cast<uint64_t>(code[j].distance(p));
      if constexpr (kRecords) {
        uint64_t* h = hist + static_cast<int64_t>(d) * QB + j;
        const uint64_t v = *h;  // the record itself: see map_queries
        if constexpr (kShared) {
          shared_rec[j] = v;
        } else {
          recp[j][n_rec[j]] = v;
          n_rec[j] += relevant[j](row_label);
        }
        *h = v + 1;
      } else {
        const int64_t y = kShared ? y_shared : relevant[j](row_label);
        hist[(static_cast<int64_t>(d) * QB + j) * 2 + y] += 1;
      }
    }
    if constexpr (kShared && kRecords) shared_rec += QB * y_shared;
  }
  if constexpr (kShared && kRecords) n_rec.fill((shared_rec - recp[0]) / QB);
}

template <Pass kPass, class Code, class Labels>
void map_queries(const uint8_t* q,   // [Q, B]
                 const uint8_t* db,  // [N, B]
                 const Labels& labels, int64_t Q, int64_t N, int64_t B, int64_t kk,
                 double* out) {  // [Q]
  const int64_t bins = 8 * B + 1;
  const int64_t stride = Code::stride(B);
  constexpr bool kRecords = kPass == Pass::kIndexRecords;
  const int shift = record_shift(bins);
  TORCH_CHECK(!kRecords || static_cast<uint64_t>(N) < (uint64_t{1} << shift), "topk_map: ", N, " database rows of ", 8 * B,
              " bits are more than ties=\"index\" can rank (2^", shift, ")");
  const std::vector<QueryBlock> blocks = make_blocks(labels, Q);
  // A padded width copies each tile (codes_cpu.h): a group of blocks shares the copy, tile by tile,
  // rather than one block of 4 queries (48-bit codes took 1.3x the 64-bit time with one). The
  // unpadded widths keep one block per pass. ties="index" holds a record buffer of up to N rows per
  // query: a group's buffers stay within about 64 MiB.
  const int64_t rec_cap = std::max<int64_t>(1, (int64_t{64} << 20) / (kQueryBlock * 8 * std::max<int64_t>(N, 1)));
  const int64_t group = stride == B ? 1 : std::min(kBlocksPerTile, kRecords ? rec_cap : kBlocksPerTile);
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t b0, int64_t b1) {
    struct State {
      std::array<Code, kQueryBlock> code;
      std::array<typename Labels::Query, kQueryBlock> relevant;
      std::vector<uint64_t> hist;
      std::array<std::vector<uint64_t>, kQueryBlock> rec;
      std::array<int64_t, kQueryBlock> n_rec{};
    };
    std::vector<State> st;
    std::vector<int64_t> start(bins), rel_start(bins), rel_seen(bins);
    ScanRows<Code> rows(db, N, B);
    for (int64_t g0 = b0; g0 < b1; g0 += group) {
      const int64_t g1 = std::min(b1, g0 + group);
      st.clear();
      for (int64_t b = g0; b < g1; ++b) {
        const auto& qi = blocks[b].query;
        constexpr auto kSeq = std::make_index_sequence<kQueryBlock>{};
        st.push_back(State{array_of<Code>([&](size_t j) { return Code(q + qi[j] * B, B); }, kSeq),
                           array_of<typename Labels::Query>([&](size_t j) { return labels.query(qi[j]); }, kSeq),
                           std::vector<uint64_t>(kQueryBlock * bins * (kRecords ? 1 : 2), 0)});
        // ties="index" counts distance d from d << shift, so that a bin's value is the record
        // of the next row at that distance (no shift and or per row).
        if constexpr (kRecords) {
          for (int64_t j = 0; j < kQueryBlock; ++j)
            for (int64_t d = 0; d < bins; ++d) st.back().hist[d * kQueryBlock + j] = static_cast<uint64_t>(d) << shift;
        }
      }
      for (int64_t t0 = 0; t0 < N; t0 += kRowTile) {
        const int64_t t1 = std::min(N, t0 + kRowTile);
        const uint8_t* tile = rows.tile(t0, t1);
        for (int64_t b = g0; b < g1; ++b) {
          // Local copies: the histogram stores would otherwise force reloads of the query words.
          State& s = st[b - g0];
          const auto code = s.code;
          const auto relevant = s.relevant;
          if (blocks[b].shared)
            block_pass<kPass, true>(code, relevant, tile, labels, t0, t1, stride, s.hist.data(), s.rec, s.n_rec);
          else
            block_pass<kPass, false>(code, relevant, tile, labels, t0, t1, stride, s.hist.data(), s.rec, s.n_rec);
        }
      }
      for (int64_t b = g0; b < g1; ++b) {
        const QueryBlock& blk = blocks[b];
        const State& s = st[b - g0];
        const auto& qi = blk.query;
        for (int64_t j = 0; j < blk.n; ++j) {
          if constexpr (kRecords)
            out[qi[j]] = blk.shared ? index_ap(s.hist.data() + j, kQueryBlock, bins, shift, s.rec[0].data() + j,
                                               kQueryBlock, s.n_rec[j], kk, start, rel_start, rel_seen)
                                    : index_ap(s.hist.data() + j, kQueryBlock, bins, shift, s.rec[j].data(), 1,
                                               s.n_rec[j], kk, start, rel_start, rel_seen);
          else
            out[qi[j]] = average_ap(reinterpret_cast<const int64_t*>(s.hist.data()) + j * 2, 2 * kQueryBlock, bins);
        }
      }
    }
  });
}

// ties="index" with a small k (k <= N/256). Only the k top-ranked rows matter, and a row's rank
// counts the rows of its own distance ahead of it, which come earlier in row order. So the scan is
// hamming_topk's (cpu/candidate_scan.h), and the AP walks the kept rows in row order; the whole
// group at the k-th distance may be kept, which is harmless: those rows rank after the k-th. Most
// rows cost one popcount and a compare; labels are read for the kept rows only.

// AP@kk of query i from its candidates after the scan's final trim. start, rel_start: [bins]
// scratch; rel: scratch.
template <class Labels>
double candidates_ap(const Candidates& c, const Labels& labels, int64_t i, int64_t kk, std::vector<int64_t>& start,
                     std::vector<int64_t>& rel_start, std::vector<uint8_t>& rel) {
  const auto relevant = labels.query(i);
  const int32_t* dist = c.dist();
  const int64_t* row = c.row();
  rel.resize(c.size());
  std::fill(rel_start.begin(), rel_start.end(), 0);
  for (int64_t j = 0; j < c.size(); ++j) {
    rel[j] = relevant(labels.row(row[j]));
    rel_start[dist[j]] += rel[j];
  }
  // The trim's histogram counts every kept distance exactly (bins past kth are unused).
  int64_t acc = 0, rel_acc = 0;
  for (int32_t d = 0; d <= c.kth(); ++d) {
    const int64_t all_d = c.hist()[d], rel_d = rel_start[d];
    start[d] = acc;
    rel_start[d] = rel_acc;
    acc += all_d;
    rel_acc += rel_d;
  }
  double ap = 0.0;
  int64_t hits = 0;
  for (int64_t j = 0; j < c.size(); ++j) {
    const int64_t pos = start[dist[j]]++;  // 0-based rank
    if (rel[j]) {
      const int64_t ahead = rel_start[dist[j]]++;
      if (pos < kk) {
        ap += static_cast<double>(ahead + 1) / static_cast<double>(pos + 1);
        ++hits;
      }
    }
  }
  return hits > 0 ? ap / static_cast<double>(hits) : 0.0;
}

template <class Code, class Labels>
void map_queries_small_k(const uint8_t* q,   // [Q, B]
                         const uint8_t* db,  // [N, B]
                         const Labels& labels, int64_t Q, int64_t N, int64_t B, int64_t kk,
                         double* out) {  // [Q]
  const int64_t bins = 8 * B + 1;
  // Blocks of up to scan_query_block queries, but at least one per thread (threads split only queries here).
  const int64_t qb = std::clamp<int64_t>((Q + at::get_num_threads() - 1) / at::get_num_threads(), 16,
                                         scan_query_block(kk, N));
  const int64_t blocks = (Q + qb - 1) / qb;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<Candidates> cand(qb);
    std::vector<int64_t> start(bins), rel_start(bins);
    std::vector<uint8_t> rel;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * qb, i1 = std::min(Q, i0 + qb);
      scan_queries<Code>(q, db, B, i0, i1, 0, N, kk, cand);
      for (int64_t i = i0; i < i1; ++i) out[i] = candidates_ap(cand[i - i0], labels, i, kk, start, rel_start, rel);
    }
  });
}

template <class Code, class Labels>
void map_queries(const uint8_t* q, const uint8_t* db, const Labels& labels, int64_t Q, int64_t N, int64_t B,
                 int64_t kk, Ties ties, double* out) {
  if (ties == Ties::kAverage)
    map_queries<Pass::kAverage, Code>(q, db, labels, Q, N, B, kk, out);
  else if (256 * kk <= N)  // measured crossover N/k ~ 230-330 (64 and 128 bits, N = 69k and 1e6)
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
  dispatch_scan_code(B, [&](auto tag) {
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
