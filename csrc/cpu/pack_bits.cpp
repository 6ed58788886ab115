// pack_bits on the CPU: x[..., b] (any real or bool dtype) -> uint8[..., ceil(b/8)], bit = x > 0.
#include <ATen/Dispatch_v2.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <type_traits>

#include "common/checks.h"

namespace deephash {
namespace {

// Half, bfloat16 and float8 compare through float; every other dtype in its own type.
template <typename scalar_t>
inline bool positive(scalar_t v) {
  if constexpr (std::is_arithmetic_v<scalar_t>)
    return v > scalar_t(0);
  else
    return static_cast<float>(v) > 0.f;
}

template <typename scalar_t>
void pack_rows(const scalar_t* x,  // [rows, bits]
               uint8_t* out,       // [rows, bytes]
               int64_t rows, int64_t bits, int64_t bytes) {
  at::parallel_for(0, rows, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* xr = x + r * bits;
      uint8_t* o = out + r * bytes;
      for (int64_t byte = 0; byte < bytes; ++byte) {
        const int64_t lo = byte * 8, hi = std::min<int64_t>(lo + 8, bits);
        uint8_t v = 0;
        for (int64_t j = lo; j < hi; ++j) v |= static_cast<uint8_t>(positive(xr[j])) << (j - lo);
        o[byte] = v;
      }
    }
  });
}

at::Tensor pack_bits_cpu(const at::Tensor& x) {
  check_pack_bits_input(x);
  const int64_t bits = x.size(-1);
  const int64_t bytes = (bits + 7) / 8;
  auto sizes = x.sizes().vec();
  sizes.back() = bytes;
  at::Tensor out = at::empty(sizes, x.options().dtype(at::kByte));
  const int64_t rows = out.numel() == 0 ? 0 : out.numel() / bytes;
  if (rows == 0 || bytes == 0) return out;
  const at::Tensor xc = x.contiguous();
  // The dtypes of pack_bits_dtype (common/checks.h).
  AT_DISPATCH_V2(xc.scalar_type(), "pack_bits", AT_WRAP([&] {
    pack_rows<scalar_t>(xc.const_data_ptr<scalar_t>(), out.mutable_data_ptr<uint8_t>(), rows, bits, bytes);
  }), AT_EXPAND(AT_ALL_TYPES), AT_EXPAND(AT_BAREBONES_UNSIGNED_TYPES), AT_EXPAND(AT_FLOAT8_TYPES), at::kBool,
                 at::kHalf, at::kBFloat16);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) { m.impl("pack_bits", &pack_bits_cpu); }

}  // namespace deephash
