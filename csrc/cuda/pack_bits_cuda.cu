// pack_bits on CUDA: one thread per output byte.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/codes_cuda.cuh"

namespace deephash {
namespace {

template <typename scalar_t>
__global__ void pack_bits_kernel(const scalar_t* __restrict__ x,  // [rows, bits]
                                 uint8_t* __restrict__ out,       // [rows, bytes]
                                 int64_t rows, int64_t bits, int64_t bytes) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * bytes;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / bytes, byte = i % bytes;
    const scalar_t* xr = x + r * bits;
    const int64_t lo = byte * 8, hi = lo + 8 < bits ? lo + 8 : bits;
    uint8_t v = 0;
    for (int64_t j = lo; j < hi; ++j) v |= static_cast<uint8_t>(static_cast<float>(xr[j]) > 0.f) << (j - lo);
    out[i] = v;
  }
}

// Integer and bool inputs compare exactly, not through float.
template <typename scalar_t>
__global__ void pack_bits_exact_kernel(const scalar_t* __restrict__ x,  // [rows, bits]
                                       uint8_t* __restrict__ out,       // [rows, bytes]
                                       int64_t rows, int64_t bits, int64_t bytes) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * bytes;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / bytes, byte = i % bytes;
    const scalar_t* xr = x + r * bits;
    const int64_t lo = byte * 8, hi = lo + 8 < bits ? lo + 8 : bits;
    uint8_t v = 0;
    for (int64_t j = lo; j < hi; ++j) v |= static_cast<uint8_t>(xr[j] > scalar_t(0)) << (j - lo);
    out[i] = v;
  }
}

at::Tensor pack_bits_cuda(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1, "pack_bits: x must have at least one dimension (the bits), got a scalar");
  TORCH_CHECK(!x.is_complex(), "pack_bits: x must be real or bool, got ", x.scalar_type());
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
  if (at::isFloatingType(xc.scalar_type())) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xc.scalar_type(), "pack_bits_cuda", [&] {
      pack_bits_kernel<scalar_t><<<blocks, 256, 0, stream>>>(xc.const_data_ptr<scalar_t>(),
                                                              out.mutable_data_ptr<uint8_t>(), rows, bits, bytes);
    });
  } else {
    AT_DISPATCH_INTEGRAL_TYPES_AND(at::kBool, xc.scalar_type(), "pack_bits_cuda", [&] {
      pack_bits_exact_kernel<scalar_t><<<blocks, 256, 0, stream>>>(
          xc.const_data_ptr<scalar_t>(), out.mutable_data_ptr<uint8_t>(), rows, bits, bytes);
    });
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m) { m.impl("pack_bits", &pack_bits_cuda); }

}  // namespace deephash
