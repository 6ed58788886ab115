// mih_build on the CPU: the multi-index hash tables of packed codes (layout in common/mih_tables.h).
//
// Per substring, the (value, row) pairs are put in value order by an LSD radix sort on the value
// bits (11-bit digits: two passes for the 21..22-bit substrings of 1e7 codes at 64 bits), which is
// stable, so rows stay ascending inside a bucket; the codes are then copied in that order (a
// gather: the one random read per code and substring, prefetched ahead). Buckets enter the hash
// table in value order, so a build is deterministic. Substrings are built in parallel.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/mih_tables.h"

namespace deephash {
namespace {

constexpr int kDigitBits = 11;

// Sorts (value << 32 | row) words by their value bits [32, 32 + len), stably.
void radix_sort_by_value(std::vector<uint64_t>& a, std::vector<uint64_t>& scratch, int len) {
  const int64_t n = static_cast<int64_t>(a.size());
  scratch.resize(a.size());
  std::vector<int64_t> count;
  for (int shift = 0; shift < len; shift += kDigitBits) {
    const int width = std::min(kDigitBits, len - shift);
    const uint64_t mask = (uint64_t{1} << width) - 1;
    const int s = 32 + shift;
    count.assign((size_t{1} << width) + 1, 0);
    for (int64_t i = 0; i < n; ++i) ++count[((a[i] >> s) & mask) + 1];
    for (size_t d = 1; d < count.size(); ++d) count[d] += count[d - 1];
    for (int64_t i = 0; i < n; ++i) scratch[count[(a[i] >> s) & mask]++] = a[i];
    a.swap(scratch);
  }
}

// memcpy of a constant size compiles to a load and a store; of a variable one, to a call.
inline void copy_code(uint8_t* dst, const uint8_t* src, int64_t B) {
  switch (B) {
    case 8: std::memcpy(dst, src, 8); break;
    case 16: std::memcpy(dst, src, 16); break;
    case 32: std::memcpy(dst, src, 32); break;
    default: std::memcpy(dst, src, static_cast<size_t>(B)); break;
  }
}

struct SortedSubstring {
  std::vector<uint32_t> values;  // [U] distinct substring values, ascending
  std::vector<int32_t> starts;   // [U] first position of each bucket in the row order
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mih_build_cpu(const at::Tensor& codes, int64_t bits,
                                                                          int64_t m) {
  check_codes(codes, "codes");
  mih::check_layout(bits, codes.size(1), m, "mih_build");
  const int64_t N = codes.size(0), B = codes.size(1);
  TORCH_CHECK(N < std::numeric_limits<int32_t>::max(),
              "mih_build: at most 2^31 - 2 codes per index (row ids are int32), got ", N);
  const mih::Substrings sub(bits, m);
  const at::Tensor cc = codes.contiguous();
  const uint8_t* cp = cc.const_data_ptr<uint8_t>();

  at::Tensor rows = at::empty({m, N}, codes.options().dtype(at::kInt));
  at::Tensor bucket_codes = at::empty({m, N, B}, codes.options());
  int32_t* rp = rows.mutable_data_ptr<int32_t>();
  uint8_t* bp = bucket_codes.mutable_data_ptr<uint8_t>();
  std::vector<SortedSubstring> sorted(m);
  at::parallel_for(0, m, 1, [&](int64_t z0, int64_t z1) {
    std::vector<uint64_t> a, scratch;
    for (int64_t z = z0; z < z1; ++z) {
      const int start = sub.start[z], len = sub.len[z];
      a.resize(N);
      for (int64_t i = 0; i < N; ++i)
        a[i] = (uint64_t{mih::substring_value(cp + i * B, B, start, len)} << 32) | static_cast<uint32_t>(i);
      radix_sort_by_value(a, scratch, len);
      SortedSubstring& s = sorted[z];
      int32_t* out = rp + z * N;
      uint8_t* out_codes = bp + z * N * B;
      constexpr int64_t kAhead = 32;  // rows whose codes are prefetched ahead of the copy: it reads at random
      for (int64_t i = 0; i < N; ++i) {
        if (i + kAhead < N) __builtin_prefetch(cp + static_cast<int64_t>(a[i + kAhead] & 0xffffffffu) * B);
        const auto value = static_cast<uint32_t>(a[i] >> 32);
        if (i == 0 || value != s.values.back()) {
          s.values.push_back(value);
          s.starts.push_back(static_cast<int32_t>(i));
        }
        const int64_t row = static_cast<int64_t>(a[i] & 0xffffffffu);
        out[i] = static_cast<int32_t>(row);
        copy_code(out_codes + i * B, cp + row * B, B);
      }
    }
  });

  int64_t U = 0;
  for (const auto& s : sorted) U = std::max<int64_t>(U, static_cast<int64_t>(s.values.size()));
  const int64_t P = mih::slot_count(U);
  const int log2p = mih::log2_exact(P);
  at::Tensor offsets = at::full({m, U + 1}, N, codes.options().dtype(at::kInt));
  at::Tensor slots = at::full({m, P}, mih::kEmptySlot, codes.options().dtype(at::kLong));
  int32_t* op = offsets.mutable_data_ptr<int32_t>();
  int64_t* sp = slots.mutable_data_ptr<int64_t>();
  at::parallel_for(0, m, 1, [&](int64_t z0, int64_t z1) {
    for (int64_t z = z0; z < z1; ++z) {
      const SortedSubstring& s = sorted[z];
      int32_t* off = op + z * (U + 1);
      int64_t* sl = sp + z * P;
      for (size_t b = 0; b < s.values.size(); ++b) {
        off[b] = s.starts[b];
        uint64_t i = mih::home_slot(s.values[b], log2p);
        while (sl[i] != mih::kEmptySlot) i = (i + 1) & (P - 1);
        sl[i] = mih::pack_slot(s.values[b], static_cast<int64_t>(b));
      }
    }
  });
  return {rows, offsets, slots, bucket_codes};
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) { m.impl("mih_build", &mih_build_cpu); }

}  // namespace deephash
