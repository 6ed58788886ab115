// unpack_bits on the CPU: uint8[..., B] -> uint8 0/1 [..., bits], bits <= 8 * B.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/checks.h"

#include <array>
#include <cstring>

namespace deephash {
namespace {

// Byte value -> its 8 bits as 8 bytes (little bit order), so a whole byte unpacks with one 8-byte store
// instead of eight shift-and-mask steps.
constexpr std::array<uint64_t, 256> make_spread_table() {
  std::array<uint64_t, 256> t{};
  for (int v = 0; v < 256; ++v) {
    uint64_t w = 0;
    for (int b = 0; b < 8; ++b) w |= static_cast<uint64_t>((v >> b) & 1) << (8 * b);
    t[v] = w;
  }
  return t;
}
constexpr std::array<uint64_t, 256> kSpread = make_spread_table();
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "kSpread stores bit b in byte b of a little-endian word");

at::Tensor unpack_bits_cpu(const at::Tensor& packed, int64_t bits) {
  check_unpack_bits_input(packed, bits);
  const int64_t bytes = packed.size(-1);
  auto sizes = packed.sizes().vec();
  sizes.back() = bits;
  at::Tensor out = at::empty(sizes, packed.options());
  const int64_t rows = bytes == 0 ? 0 : packed.numel() / bytes;
  if (rows == 0 || bits == 0) return out;
  const at::Tensor pc = packed.contiguous();
  const uint8_t* p = pc.const_data_ptr<uint8_t>();
  uint8_t* o = out.mutable_data_ptr<uint8_t>();
  at::parallel_for(0, rows, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint8_t* pr = p + r * bytes;
      uint8_t* orow = o + r * bits;
      const int64_t full = bits >> 3;
      for (int64_t j = 0; j < full; ++j) std::memcpy(orow + 8 * j, &kSpread[pr[j]], 8);
      for (int64_t j = 8 * full; j < bits; ++j) orow[j] = (pr[j >> 3] >> (j & 7)) & 1;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) { m.impl("unpack_bits", &unpack_bits_cpu); }

}  // namespace deephash
