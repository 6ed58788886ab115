// Emulation stand-in for c10/cuda/CUDAGuard.h (csrc/emu): the guard of the emu device (a
// DeviceGuardImpl for PrivateUse1, csrc/emu/device.cpp).
#pragma once

#include <c10/core/DeviceGuard.h>

#include "c10/cuda/CUDAStream.h"

namespace c10::cuda {

struct CUDAGuard {
  explicit CUDAGuard(c10::Device device) : guard_(device) {}
  explicit CUDAGuard(c10::DeviceIndex index) : guard_(c10::Device(c10::DeviceType::PrivateUse1, index)) {}
  c10::DeviceGuard guard_;
};

struct OptionalCUDAGuard {
  explicit OptionalCUDAGuard(std::optional<c10::Device> device) : guard_(device) {}
  c10::OptionalDeviceGuard guard_;
};

}  // namespace c10::cuda
