// Emulation stand-in for c10/cuda/CUDAStream.h (csrc/emu): launches run at once, in order, so every
// stream is the one stream of the emu device.
#pragma once

#include <c10/core/Device.h>

#include "emu/cuda_emu.h"

namespace c10::cuda {

struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
  cudaStream_t stream() const { return nullptr; }
};

inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex = -1) { return {}; }
inline CUDAStream getDefaultCUDAStream(c10::DeviceIndex = -1) { return {}; }

}  // namespace c10::cuda
