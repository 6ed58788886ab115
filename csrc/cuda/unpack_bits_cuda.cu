// unpack_bits on CUDA: one thread per output bit.
//
// Cost model: writes one byte per bit (coalesced) and reads each packed byte 8 times from L1:
// memory-bound on the output, ~bits bytes per row at HBM speed.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/checks.h"

#include "common/codes_cuda.cuh"

namespace deephash {
namespace {

__global__ void unpack_bits_kernel(const uint8_t* __restrict__ packed,  // [rows, bytes]
                                   uint8_t* __restrict__ out,           // [rows, bits]
                                   int64_t rows, int64_t bytes, int64_t bits) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * bits;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / bits, j = i % bits;
    out[i] = (packed[r * bytes + (j >> 3)] >> (j & 7)) & 1;
  }
}

at::Tensor unpack_bits_cuda(const at::Tensor& packed, int64_t bits) {
  check_unpack_bits_input(packed, bits);
  const int64_t bytes = packed.size(-1);
  const c10::cuda::CUDAGuard guard(packed.device());
  auto sizes = packed.sizes().vec();
  sizes.back() = bits;
  at::Tensor out = at::empty(sizes, packed.options());
  const int64_t rows = bytes == 0 ? 0 : packed.numel() / bytes;
  if (rows == 0 || bits == 0) return out;
  const at::Tensor pc = packed.contiguous();
  unpack_bits_kernel<<<blocks_for(rows * bits, 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
      pc.const_data_ptr<uint8_t>(), out.mutable_data_ptr<uint8_t>(), rows, bytes, bits);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) { m.impl("unpack_bits", &unpack_bits_cuda); }

}  // namespace deephash
