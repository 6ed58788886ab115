// topk_map on the CPU: per-query AP@k over Hamming ranking, without a Q x N matrix or an argsort.
//
// Pass 1 computes each row's distance and relevance and histograms both over 0..bits. For
// ties="average" the histograms alone give the exact expected AP. For ties="index" the rank of
// row r is start[d] + (rows of distance d before r), and the relevant rows ahead of it are
// rel_start[d] + (relevant rows of distance d before r): pass 2 walks the rows in index order with
// running per-distance counters, which is a counting sort without the sort.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

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
    const int64_t* db;
    int64_t label;
    bool operator()(int64_t r) const { return db[r] == label; }
  };
  Query query(int64_t i) const { return {db, q[i]}; }
};

// Multi-hot labels as 64-bit masks: relevant = the masks share a bit.
struct MultiHot {
  const uint64_t* q;   // [Q, W]
  const uint64_t* db;  // [N, W]
  int64_t W;
  struct Query {
    const uint64_t* db;
    const uint64_t* q;
    int64_t W;
    bool operator()(int64_t r) const {
      uint64_t any = 0;
      for (int64_t w = 0; w < W; ++w) any |= q[w] & db[r * W + w];
      return any != 0;
    }
  };
  Query query(int64_t i) const { return {db, q + i * W, W}; }
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

template <class Code, class Labels>
void map_queries(const uint8_t* q,   // [Q, B]
                 const uint8_t* db,  // [N, B]
                 const Labels& labels, int64_t Q, int64_t N, int64_t B, int64_t kk, Ties ties,
                 double* out) {  // [Q]
  const int64_t bins = 8 * B + 1;
  at::parallel_for(0, Q, 1, [&](int64_t i0, int64_t i1) {
    std::vector<uint32_t> key(N);  // distance << 1 | relevant
    std::vector<int64_t> hist(2 * bins);  // [distance << 1 | relevant]: one increment per row
    std::vector<int64_t> all(bins), rel(bins), start(bins), rel_start(bins);
    for (int64_t i = i0; i < i1; ++i) {
      const Code code(q + i * B, B);
      const auto relevant = labels.query(i);
      std::fill(hist.begin(), hist.end(), 0);
      for (int64_t r = 0; r < N; ++r) {
        const uint32_t d = code.distance(db + r * B);
        const uint32_t y = relevant(r);
        key[r] = d << 1 | y;
        ++hist[d << 1 | y];
      }
      for (int64_t d = 0; d < bins; ++d) {
        rel[d] = hist[2 * d + 1];
        all[d] = hist[2 * d] + rel[d];
      }
      double ap = 0.0;
      if (ties == Ties::kAverage) {
        int64_t n_before = 0, r_before = 0;
        for (int64_t d = 0; d < bins; ++d) {
          ap += tied_group_precision_sum(all[d], rel[d], n_before, r_before);
          n_before += all[d];
          r_before += rel[d];
        }
        out[i] = r_before > 0 ? ap / static_cast<double>(r_before) : 0.0;
        continue;
      }
      int64_t acc = 0, rel_acc = 0;
      uint32_t last = 0;  // rows beyond this distance all rank past k
      for (int64_t d = 0; d < bins; ++d) {
        start[d] = acc;
        rel_start[d] = rel_acc;
        if (acc < kk) last = static_cast<uint32_t>(d);
        acc += all[d];
        rel_acc += rel[d];
      }
      int64_t hits = 0;
      for (int64_t r = 0; r < N; ++r) {
        const uint32_t d = key[r] >> 1;
        if (d > last) continue;
        const int64_t pos = start[d]++;  // 0-based rank of row r
        if (key[r] & 1) {
          const int64_t ahead = rel_start[d]++;  // relevant rows ranked before r
          if (pos < kk) {
            ap += static_cast<double>(ahead + 1) / static_cast<double>(pos + 1);
            ++hits;
          }
        }
      }
      out[i] = hits > 0 ? ap / static_cast<double>(hits) : 0.0;
    }
  });
}

at::Tensor topk_map_cpu(const at::Tensor& q, const at::Tensor& db, const at::Tensor& q_labels,
                        const at::Tensor& db_labels, int64_t k, c10::string_view ties_name) {
  check_code_pair(q, db);
  const Ties ties = parse_ties(ties_name);
  const int64_t Q = q.size(0), N = db.size(0), B = q.size(1);
  const bool multi_hot = check_labels(q_labels, db_labels, Q, N);
  check_device(q_labels, "q_labels", q);
  check_device(db_labels, "db_labels", q);
  const int64_t kk = effective_map_k(k, N, ties);
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
