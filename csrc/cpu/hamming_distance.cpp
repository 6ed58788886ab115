// hamming_distance on the CPU: all pairs of packed codes, int32[Q, N].
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/codes_cpu.h"

namespace deephash {
namespace {

// Queries per sweep of a database tile (scan_tile_rows), which stays in cache meanwhile.
constexpr int64_t kQueryBlock = 16;

template <class Code>
void distance_block(const uint8_t* q,   // [Q, B]
                    const uint8_t* db,  // [N, B]
                    int32_t* out,       // [Q, N]
                    int64_t q0, int64_t q1, int64_t r0, int64_t r1, int64_t N, int64_t B) {
  const int64_t stride = Code::stride(B);
  const int64_t tile = scan_tile_rows(stride, 1);
  ScanRows<Code> rows(db, r1, B);
  for (int64_t t0 = r0; t0 < r1; t0 += tile) {
    const int64_t t1 = std::min(r1, t0 + tile);
    const uint8_t* const p = rows.tile(t0, t1);
    for (int64_t i = q0; i < q1; ++i) {
      const Code code(q + i * B, B);
      int32_t* o = out + i * N;
      for (int64_t r = t0; r < t1; ++r) o[r] = code.distance(p + (r - t0) * stride);
    }
  }
}

at::Tensor hamming_distance_cpu(const at::Tensor& q, const at::Tensor& db) {
  check_code_pair(q, db);
  const int64_t Q = q.size(0), N = db.size(0), B = q.size(1);
  at::Tensor out = at::empty({Q, N}, q.options().dtype(at::kInt));
  if (Q == 0 || N == 0) return out;
  const at::Tensor qc = q.contiguous(), dbc = db.contiguous();
  const uint8_t* qp = qc.const_data_ptr<uint8_t>();
  const uint8_t* dp = dbc.const_data_ptr<uint8_t>();
  int32_t* op = out.mutable_data_ptr<int32_t>();
  // Work items are (query block, database chunk) pairs, so that a handful of queries against a
  // large database still uses every thread.
  const int64_t qblocks = (Q + kQueryBlock - 1) / kQueryBlock;
  const int64_t threads = at::get_num_threads();
  const int64_t chunks = qblocks >= 4 * threads ? 1 : std::min<int64_t>(4 * threads, (N + 4095) / 4096);
  const int64_t chunk = (N + chunks - 1) / chunks;
  dispatch_scan_code(B, [&](auto tag) {
    using Code = code_t<decltype(tag)>;
    at::parallel_for(0, qblocks * chunks, 1, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t b = w / chunks, c = w % chunks;
        distance_block<Code>(qp, dp, op, b * kQueryBlock, std::min(Q, (b + 1) * kQueryBlock), c * chunk,
                             std::min(N, (c + 1) * chunk), N, B);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) { m.impl("hamming_distance", &hamming_distance_cpu); }

}  // namespace deephash
