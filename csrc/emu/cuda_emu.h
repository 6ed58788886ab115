// The CUDA execution model on the CPU: what the kernels of csrc/cuda use, mapped onto cooperatively
// scheduled fibers (csrc/emu/runtime.cpp). A .cu file compiles as C++ against this header after
// csrc/emu/rewrite.py has turned its launches and __shared__ declarations into the calls below.
//
// Each block's threads run as fibers on one OS thread, blocks one after another. A thread runs until
// it reaches __syncthreads, a warp collective or its end; the scheduler then runs the next ready
// thread in the order of the current schedule (forward, reverse or a seeded shuffle, drawn anew
// after every barrier), so a result that depends on the order of threads between barriers changes
// with the schedule. What a GPU would not report, the emulation raises as an error naming the kernel,
// block and thread: a barrier reached by some threads and not others; a warp collective whose mask
// names a lane that exited, waits elsewhere, or does not exist, or that excludes the caller; a
// shuffle that reads a lane outside its mask; an access past the end of a shared array or an emu
// allocation (a guard page after each, and canary bytes up to it); more dynamic shared memory than
// the launch may use. Shared memory starts every block filled with the poison byte.
//
// This header needs no torch: the mutation tests compile single kernels against it quickly.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define DEEPHASH_EMU_API __attribute__((visibility("default")))

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "invalid value"; }

namespace deephash_emu {

struct Site {
  const char* file;
  int line;
};

// The running emulated thread's coordinates (one set per fiber; the scheduler points this at the
// fiber it resumes).
struct Coords {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
};
DEEPHASH_EMU_API extern thread_local Coords* tls_coords;

// --- barriers and warp collectives (runtime.cpp) ---
enum class WarpOp : int { kSyncwarp, kBallot, kShfl, kMatchAny };
DEEPHASH_EMU_API void syncthreads(Site site);
// Every lane of `mask` arrives with its value and the lane it reads (shuffles); returns, per lane,
// the ballot, the read value, or the match mask.
DEEPHASH_EMU_API uint64_t warp_collective(Site site, WarpOp op, unsigned mask, uint64_t value, int src_lane);
DEEPHASH_EMU_API int lane_id();

template <class T>
uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp collectives move values of up to 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

inline void syncwarp(Site s, unsigned mask = 0xffffffffu) { warp_collective(s, WarpOp::kSyncwarp, mask, 0, 0); }
inline unsigned ballot_sync(Site s, unsigned mask, int pred) {
  return static_cast<unsigned>(warp_collective(s, WarpOp::kBallot, mask, pred != 0, 0));
}
template <class T>
unsigned match_any_sync(Site s, unsigned mask, T v) {
  return static_cast<unsigned>(warp_collective(s, WarpOp::kMatchAny, mask, to_bits(v), 0));
}
// Lane arithmetic of the PTX shfl modes: a source outside the lane's segment of `width` lanes reads
// the lane's own value.
template <class T>
T shfl_sync(Site s, unsigned mask, T v, int src, int width = 32) {
  const int lane = lane_id(), seg = lane & ~(width - 1);
  return from_bits<T>(warp_collective(s, WarpOp::kShfl, mask, to_bits(v), seg + (src & (width - 1))));
}
template <class T>
T shfl_down_sync(Site s, unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = lane_id();
  const int src = (lane & (width - 1)) + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return from_bits<T>(warp_collective(s, WarpOp::kShfl, mask, to_bits(v), src));
}
template <class T>
T shfl_up_sync(Site s, unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = lane_id();
  const int src = (lane & (width - 1)) >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane;
  return from_bits<T>(warp_collective(s, WarpOp::kShfl, mask, to_bits(v), src));
}
template <class T>
T shfl_xor_sync(Site s, unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = lane_id();
  const int src = lane ^ lane_mask;
  return from_bits<T>(warp_collective(s, WarpOp::kShfl, mask, to_bits(v), (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane));
}

// --- shared memory (runtime.cpp) ---
// Storage of one static __shared__ declaration (per template instance): a region ending at a guard
// page, poisoned when a block first touches it.
struct DEEPHASH_EMU_API SharedSite {
  void* region = nullptr;
  void* touch(size_t bytes, size_t align, const char* name);
  template <class T>
  T& get(const char* name) {
    return *static_cast<T*>(touch(sizeof(T), alignof(T), name));
  }
};
DEEPHASH_EMU_API void* dynamic_shared_base();
template <class T>
T* dynamic_shared() {
  return static_cast<T*>(dynamic_shared_base());
}

// --- launches (runtime.cpp) ---
struct LaunchSpec {
  const char* name;
  const void* fn;
  dim3 grid, block;
  size_t smem;
};
DEEPHASH_EMU_API void run_launch(const LaunchSpec& spec, const std::function<void()>& body);

template <class... P>
struct Launcher {
  LaunchSpec spec;
  void (*fn)(P...);
  // Takes the kernel's own parameter types, so arguments convert as in a CUDA launch.
  void operator()(P... args) const {
    run_launch(spec, [&] { fn(args...); });
  }
};

template <class... P>
Launcher<P...> launch(const char* name, void (*fn)(P...), dim3 grid, dim3 block, size_t smem = 0,
                      cudaStream_t = nullptr) {
  return Launcher<P...>{LaunchSpec{name, reinterpret_cast<const void*>(fn), grid, block, smem}, fn};
}

DEEPHASH_EMU_API cudaError_t set_max_dynamic_smem(const void* fn, int bytes);
DEEPHASH_EMU_API int device_smem_optin();

}  // namespace deephash_emu

// --- the CUDA names the kernels use ---
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define threadIdx (::deephash_emu::tls_coords->thread_idx)
#define blockIdx (::deephash_emu::tls_coords->block_idx)
#define blockDim (::deephash_emu::tls_coords->block_dim)
#define gridDim (::deephash_emu::tls_coords->grid_dim)
#define warpSize 32
#define DEEPHASH_EMU_SITE (::deephash_emu::Site{__FILE__, __LINE__})
#define __syncthreads() ::deephash_emu::syncthreads(DEEPHASH_EMU_SITE)
#define __syncwarp(...) ::deephash_emu::syncwarp(DEEPHASH_EMU_SITE __VA_OPT__(, ) __VA_ARGS__)
#define __ballot_sync(...) ::deephash_emu::ballot_sync(DEEPHASH_EMU_SITE, __VA_ARGS__)
#define __match_any_sync(...) ::deephash_emu::match_any_sync(DEEPHASH_EMU_SITE, __VA_ARGS__)
#define __shfl_sync(...) ::deephash_emu::shfl_sync(DEEPHASH_EMU_SITE, __VA_ARGS__)
#define __shfl_down_sync(...) ::deephash_emu::shfl_down_sync(DEEPHASH_EMU_SITE, __VA_ARGS__)
#define __shfl_up_sync(...) ::deephash_emu::shfl_up_sync(DEEPHASH_EMU_SITE, __VA_ARGS__)
#define __shfl_xor_sync(...) ::deephash_emu::shfl_xor_sync(DEEPHASH_EMU_SITE, __VA_ARGS__)

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
// The 32 bits of hi:lo shifted right (left) by shift & 31, as the PTX shf.r.wrap / shf.l.wrap.
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  return static_cast<unsigned>((static_cast<unsigned long long>(hi) << 32 | lo) >> (shift & 31));
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  return static_cast<unsigned>((static_cast<unsigned long long>(hi) << 32 | lo) << (shift & 31) >> 32);
}
template <class T>
inline T __ldg(const T* p) {
  return *p;
}

// Atomics: the fibers of a launch share one OS thread and switch only at barriers and collectives,
// so a read-modify-write is atomic as written.
template <class T>
inline T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
  const T old = *p;
  *p = v < old ? v : old;
  return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
  const T old = *p;
  *p = v > old ? v : old;
  return old;
}
template <class T>
inline T atomicCAS(T* p, T compare, T v) {
  const T old = *p;
  if (old == compare) *p = v;
  return old;
}
template <class T>
inline T atomicExch(T* p, T v) {
  const T old = *p;
  *p = v;
  return old;
}

// Device math: the host's, plus rsqrt (correctly rounded here, ~1 ulp on a GPU).
using std::fabs;
using std::fmax;
using std::fmin;
using std::hypot;
using std::isfinite;
using std::isinf;
using std::isnan;
using std::sqrt;
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// --- the runtime API the host code uses ---
template <class F>
inline cudaError_t cudaFuncSetAttribute(F* fn, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  return ::deephash_emu::set_max_dynamic_smem(reinterpret_cast<const void*>(fn), value);
}
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int /*device*/) {
  if (attr != cudaDevAttrMaxSharedMemoryPerBlockOptin) return cudaErrorInvalidValue;
  *value = ::deephash_emu::device_smem_optin();
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
