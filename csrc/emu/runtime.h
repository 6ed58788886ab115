// The emulated runtime's host-side controls (csrc/emu/runtime.cpp): schedules, poison, the device's
// shared-memory limit, guarded allocations for the emu device, and what ran.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "emu/cuda_emu.h"

namespace deephash_emu {

enum class Schedule : int { kForward = 0, kReverse = 1, kShuffle = 2 };

// The order in which the scheduler runs a block's ready threads between barriers; shuffles are
// seeded by (seed, block, phase).
DEEPHASH_EMU_API void set_schedule(Schedule s, uint64_t seed);
DEEPHASH_EMU_API Schedule schedule();
DEEPHASH_EMU_API uint64_t schedule_seed();
// The byte that fills shared memory at the start of every block.
DEEPHASH_EMU_API void set_poison(uint8_t byte);
DEEPHASH_EMU_API uint8_t poison();
// cudaDevAttrMaxSharedMemoryPerBlockOptin of the emulated device (default 232448, sm_90).
DEEPHASH_EMU_API void set_device_smem_optin(int bytes);

// Memory of the emu device: `bytes` ending at a guard page (the slack up to it, < 16 bytes, holds
// canary bytes that every launch checks afterwards).
DEEPHASH_EMU_API void* device_alloc(size_t bytes);
DEEPHASH_EMU_API void device_free(void* data);

struct KernelStats {
  int64_t launches = 0, blocks = 0, threads = 0, barriers = 0;
};
// Per kernel name (template arguments dropped): what ran since the last reset.
DEEPHASH_EMU_API std::map<std::string, KernelStats> kernel_stats();
DEEPHASH_EMU_API void reset_kernel_stats();

}  // namespace deephash_emu
