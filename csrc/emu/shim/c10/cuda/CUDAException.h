// Emulation stand-in for c10/cuda/CUDAException.h (csrc/emu): errors of the emulated runtime are
// raised where they happen, so the checks only test the returned codes.
#pragma once

#include <c10/util/Exception.h>

#include "emu/cuda_emu.h"

#define C10_CUDA_CHECK(EXPR)                                                                    \
  do {                                                                                          \
    const cudaError_t deephash_emu_err = (EXPR);                                                \
    TORCH_CHECK(deephash_emu_err == cudaSuccess, "CUDA error (emulated): ", cudaGetErrorString(deephash_emu_err)); \
  } while (0)
#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
