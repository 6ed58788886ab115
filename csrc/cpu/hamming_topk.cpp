// hamming_topk on the CPU: exact k nearest database rows per query, ordered by (distance, row).
//
// The threshold scan of cpu/candidate_scan.h finds, per query, every row that can rank among the
// first k; a counting sort over the distance range orders them (they are already in row order
// within a distance) and keeps the first k. With few queries the database is split across threads
// and the per-chunk winners merged.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

#include "common/checks.h"
#include "common/codes_cpu.h"
#include "cpu/candidate_scan.h"

namespace deephash {
namespace {

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
  const int64_t qb = scan_query_block(kk, N);
  const int64_t qblocks = (Q + qb - 1) / qb;
  const int64_t threads = at::get_num_threads();
  const int64_t chunks =
      qblocks >= 2 * threads ? 1 : std::max<int64_t>(1, std::min<int64_t>(2 * threads, N / std::max<int64_t>(4 * kk, 8192)));
  const int64_t chunk = (N + chunks - 1) / chunks;

  // Per (query, chunk) winners when the database is split: [Q][chunks] lists of (distance, row).
  std::vector<std::vector<std::pair<int32_t, int64_t>>> partial(chunks > 1 ? Q * chunks : 0);

  dispatch_scan_code(B, [&](auto tag) {
    using Code = code_t<decltype(tag)>;
    at::parallel_for(0, qblocks * chunks, 1, [&](int64_t w0, int64_t w1) {
      std::vector<Candidates> cand(qb);
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t b = w / chunks, c = w % chunks;
        const int64_t q0 = b * qb, q1 = std::min(Q, q0 + qb);
        const int64_t r0 = c * chunk, r1 = std::min(N, r0 + chunk);
        scan_queries<Code>(qp, dp, B, q0, q1, r0, r1, kk, cand);
        for (int64_t i = q0; i < q1; ++i) {
          const Candidates& cd = cand[i - q0];
          if (chunks == 1) {
            cd.for_each_ranked(kk, [&](int64_t o, int32_t d, int64_t r) {
              od[i * kk + o] = d;
              oi[i * kk + o] = r;
            });
          } else {
            auto& p = partial[i * chunks + c];
            p.resize(std::min(kk, cd.size()));
            cd.for_each_ranked(kk, [&](int64_t o, int32_t d, int64_t r) { p[o] = {d, r}; });
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
