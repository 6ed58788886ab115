// pack_bits on CUDA: one thread per output byte.
//
// Cost model: reads the input once (bits x sizeof(T) per row) and writes bits / 8 bytes; a thread
// reads 8 consecutive elements (a warp 256 of them, coalesced up to the row's end). Memory-bound:
// 1e8 float32 bits = 400 MB in, ~0.1 ms at HBM speed.
#include <ATen/Dispatch.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <type_traits>
#include <torch/library.h>

#include "common/checks.h"

#include "common/codes_cuda.cuh"

namespace deephash {
namespace {

// Half, bfloat16 and float8 compare through float; every other dtype compares in its own type, as on the CPU.
template <typename scalar_t>
__global__ void pack_bits_kernel(const scalar_t* __restrict__ x,  // [rows, bits]
                                 uint8_t* __restrict__ out,       // [rows, bytes]
                                 int64_t rows, int64_t bits, int64_t bytes) {
  constexpr bool kViaFloat = !std::is_arithmetic_v<scalar_t>;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * bytes;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / bytes, byte = i % bytes;
    const scalar_t* xr = x + r * bits;
    const int64_t lo = byte * 8, hi = lo + 8 < bits ? lo + 8 : bits;
    uint8_t v = 0;
    for (int64_t j = lo; j < hi; ++j) {
      bool positive;
      if constexpr (kViaFloat)
        positive = static_cast<float>(xr[j]) > 0.f;
      else
        positive = xr[j] > scalar_t(0);
      v |= static_cast<uint8_t>(positive) << (j - lo);
    }
    out[i] = v;
  }
}

at::Tensor pack_bits_cuda(const at::Tensor& x) {
  check_pack_bits_input(x);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t bits = x.size(-1), bytes = (bits + 7) / 8;
  auto sizes = x.sizes().vec();
  sizes.back() = bytes;
  at::Tensor out = at::empty(sizes, x.options().dtype(at::kByte));
  const int64_t rows = out.numel() == 0 ? 0 : out.numel() / bytes;
  if (rows == 0 || bytes == 0) return out;
  const at::Tensor xc = x.contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned blocks = blocks_for(rows * bytes, 256);
  // The dtypes of pack_bits_dtype (common/checks.h).
  AT_DISPATCH_V2(xc.scalar_type(), "pack_bits_cuda", AT_WRAP([&] {
    pack_bits_kernel<scalar_t><<<blocks, 256, 0, stream>>>(xc.const_data_ptr<scalar_t>(),
                                                            out.mutable_data_ptr<uint8_t>(), rows, bits, bytes);
  }), AT_EXPAND(AT_ALL_TYPES), AT_EXPAND(AT_BAREBONES_UNSIGNED_TYPES), AT_EXPAND(AT_FLOAT8_TYPES), at::kBool,
                 at::kHalf, at::kBFloat16);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) { m.impl("pack_bits", &pack_bits_cuda); }

}  // namespace deephash
