// Device-side Hamming distance over packed codes, and the launch helpers the CUDA kernels share.
//
// A database row is loaded once into registers as 64-bit words (RowCode<Words>, when the width is
// a multiple of 8 bytes and the rows are 8-byte aligned) and compared against queries held in
// shared memory; RowCode<0> is the byte-wise path for every other width.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>

namespace deephash {

template <int Words>
struct RowCode {
  uint64_t w[Words];
  __device__ __forceinline__ RowCode() {}  // for arrays of rows filled in a loop
  __device__ __forceinline__ RowCode(const uint8_t* p, int64_t /*bytes*/) {
    const auto* q = reinterpret_cast<const uint64_t*>(p);
#pragma unroll
    for (int i = 0; i < Words; ++i) w[i] = __ldg(q + i);
  }
  // `query` is 8-byte aligned (shared memory laid out by query_stride).
  __device__ __forceinline__ int distance(const uint8_t* query) const {
    const auto* q = reinterpret_cast<const uint64_t*>(query);
    int d = 0;
#pragma unroll
    for (int i = 0; i < Words; ++i) d += __popcll(w[i] ^ q[i]);
    return d;
  }
};

template <>
struct RowCode<0> {
  const uint8_t* p;
  int64_t bytes;
  __device__ __forceinline__ RowCode() : p(nullptr), bytes(0) {}
  __device__ __forceinline__ RowCode(const uint8_t* p_, int64_t bytes_) : p(p_), bytes(bytes_) {}
  __device__ __forceinline__ int distance(const uint8_t* query) const {
    int d = 0;
    for (int64_t i = 0; i < bytes; ++i) d += __popc(static_cast<unsigned>(p[i] ^ query[i]));
    return d;
  }
};

// Bytes between consecutive queries in shared memory: rounded up to whole words.
__host__ __device__ inline int64_t query_stride(int64_t bytes) { return (bytes + 7) / 8 * 8; }

// Copies queries [q0, q0 + nq) into shared memory (all threads of the block take part).
__device__ __forceinline__ void load_queries(const uint8_t* q, int64_t q0, int nq, int64_t bytes, uint8_t* sq) {
  const int64_t stride = query_stride(bytes);
  for (int64_t i = threadIdx.x; i < nq * bytes; i += blockDim.x) {
    const int64_t qi = i / bytes, b = i % bytes;
    sq[qi * stride + b] = q[(q0 + qi) * bytes + b];
  }
}

// Calls f(std::integral_constant<int, Words>) with the word count of `bytes` when the word path
// applies (whole words, aligned rows), else with 0.
template <class F>
inline void dispatch_words(int64_t bytes, bool aligned, F&& f) {
  if (aligned) {
    switch (bytes) {
      case 8: return f(std::integral_constant<int, 1>{});
      case 16: return f(std::integral_constant<int, 2>{});
      case 32: return f(std::integral_constant<int, 4>{});
      case 64: return f(std::integral_constant<int, 8>{});
      case 128: return f(std::integral_constant<int, 16>{});
      default: break;
    }
  }
  f(std::integral_constant<int, 0>{});
}

inline bool words_aligned(const void* a, const void* b, int64_t bytes) {
  return bytes % 8 == 0 && reinterpret_cast<uintptr_t>(a) % 8 == 0 && reinterpret_cast<uintptr_t>(b) % 8 == 0;
}

inline unsigned blocks_for(int64_t n, int threads, int64_t cap = 65535) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > cap ? cap : b));
}

// Search hits travel as one int64 key each, distance << kRowShift | row, so that one sort orders them
// by (distance, row); rows stay below 2^40.
constexpr int kRowShift = 40;

// keys [n] -> dist [n] (int32), rows [n] (int64). A template so that every .cu file may launch it.
template <int Shift = kRowShift>
__global__ void split_keys_kernel(const int64_t* __restrict__ keys, int32_t* __restrict__ dist,
                                  int64_t* __restrict__ rows, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dist[i] = static_cast<int32_t>(keys[i] >> Shift);
    rows[i] = keys[i] & ((int64_t{1} << Shift) - 1);
  }
}

// Distance histograms live in shared memory: bins = 8 * bytes + 1.
constexpr int64_t kMaxCudaCodeBytes = 512;

inline void check_cuda_code_width(int64_t bytes, const char* op) {
  TORCH_CHECK(bytes <= kMaxCudaCodeBytes, op, " on CUDA supports codes of up to ", kMaxCudaCodeBytes * 8,
              " bits (", kMaxCudaCodeBytes, " bytes), got ", bytes, " bytes; use the CPU op for wider codes");
}

}  // namespace deephash
