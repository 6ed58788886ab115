// Device-side Hamming distance over packed codes, and the launch helpers the CUDA kernels share.
//
// A database row is loaded once into registers as 64-bit words (WordRowCode, when the width is a
// multiple of 8 bytes and the rows are 8-byte aligned; AnyRowCode for any other width up to 128
// bytes) and compared against queries held in shared memory by word popcounts; wider rows
// (WideRowCode) are read per query as 32-bit words. No width compares byte by byte.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>

namespace deephash {

// Rows of a whole number of 64-bit words at 8-byte aligned addresses.
template <int Words>
struct WordRowCode {
  uint64_t w[Words];
  __device__ __forceinline__ WordRowCode() {}  // for arrays of rows filled in a loop
  __device__ __forceinline__ WordRowCode(const uint8_t* p, int64_t /*bytes*/) {
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

// Rows of any width up to 8 * Words bytes at any address, held in registers as words: loaded once
// per row (32-bit loads where the row is 4-byte aligned and a whole number of them, else bytes;
// the words past the row are 0), then compared against each query by word popcounts. A query's
// slot in shared memory is query_stride(bytes) long and its bytes past `bytes` are not written by
// every kernel, so the last word is masked and no word past the slot is read.
template <int Words>
struct AnyRowCode {
  uint64_t w[Words];
  uint64_t tail_mask;  // the code bits of its last word
  int words;           // (bytes + 7) / 8 <= Words
  __device__ __forceinline__ AnyRowCode() {}
  __device__ __forceinline__ AnyRowCode(const uint8_t* p, int64_t bytes) {
    words = static_cast<int>((bytes + 7) / 8);
    tail_mask = bytes % 8 ? ~uint64_t{0} >> (8 * (8 - bytes % 8)) : ~uint64_t{0};
#pragma unroll
    for (int i = 0; i < Words; ++i) w[i] = 0;
    if (((reinterpret_cast<uintptr_t>(p) | static_cast<uintptr_t>(bytes)) & 3) == 0) {
      const auto* p4 = reinterpret_cast<const uint32_t*>(p);
#pragma unroll
      for (int i = 0; i < 2 * Words; ++i)
        if (4 * i < bytes) w[i / 2] |= static_cast<uint64_t>(__ldg(p4 + i)) << (32 * (i % 2));
    } else {
#pragma unroll
      for (int i = 0; i < 8 * Words; ++i)
        if (i < bytes) w[i / 8] |= static_cast<uint64_t>(__ldg(p + i)) << (8 * (i % 8));
    }
  }
  __device__ __forceinline__ int distance(const uint8_t* query) const {
    const auto* q = reinterpret_cast<const uint64_t*>(query);
    int d = 0;
#pragma unroll
    for (int i = 0; i < Words; ++i)
      if (i < words) d += __popcll((w[i] ^ q[i]) & (i == words - 1 ? tail_mask : ~uint64_t{0}));
    return d;
  }
};

// Rows wider than AnyRowCode holds (> 128 bytes) at any address, read per query as 32-bit words:
// each from the two aligned words that hold it (a funnel shift), the second only when the word
// reaches into it, so no load passes the aligned word of the row's last byte.
struct WideRowCode {
  const uint32_t* base;  // the aligned word holding the row's first byte
  int64_t bytes;
  int shift;  // 8 * (the row's offset in that word)
  __device__ __forceinline__ WideRowCode() : base(nullptr), bytes(0), shift(0) {}
  __device__ __forceinline__ WideRowCode(const uint8_t* p, int64_t bytes_) : bytes(bytes_) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    base = reinterpret_cast<const uint32_t*>(a & ~uintptr_t{3});
    shift = static_cast<int>(8 * (a & 3));
  }
  __device__ __forceinline__ int distance(const uint8_t* query) const {
    const auto* q = reinterpret_cast<const uint32_t*>(query);  // 8-byte aligned slot
    const int64_t n4 = (bytes + 3) / 4;
    int d = 0;
    for (int64_t i = 0; i < n4; ++i) {
      const int64_t left = bytes - 4 * i;  // code bytes from this word on
      const uint32_t lo = __ldg(base + i);
      const uint32_t hi = shift != 0 && shift / 8 + (left < 4 ? left : 4) > 4 ? __ldg(base + i + 1) : 0u;
      const uint32_t v = __funnelshift_r(lo, hi, shift);
      const uint32_t mask = left >= 4 ? ~0u : (1u << (8 * left)) - 1;
      d += __popc((v ^ q[i]) & mask);
    }
    return d;
  }
};

// The row code of a kernel instantiated with `Words` (dispatch_words): > 0 whole aligned words,
// kAnyWidth + W any width up to 8 W bytes, 0 wider than that.
constexpr int kAnyWidth = 1000;
template <int Words>
using RowCode = std::conditional_t<(Words > kAnyWidth), AnyRowCode<Words - kAnyWidth>,
                                   std::conditional_t<(Words > 0), WordRowCode<Words>, WideRowCode>>;

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

// Calls f(std::integral_constant<int, Words>) with the RowCode of `bytes`: the word count when the
// word path applies (8, 16, 32, 64 or 128 bytes, aligned rows), kAnyWidth + W for any other width
// up to 8 W = 8, 16, 32, 64 or 128 bytes (the words past the code cost a skipped popcount), else 0.
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
  if (bytes <= 8) return f(std::integral_constant<int, kAnyWidth + 1>{});
  if (bytes <= 16) return f(std::integral_constant<int, kAnyWidth + 2>{});
  if (bytes <= 32) return f(std::integral_constant<int, kAnyWidth + 4>{});
  if (bytes <= 64) return f(std::integral_constant<int, kAnyWidth + 8>{});
  if (bytes <= 128) return f(std::integral_constant<int, kAnyWidth + 16>{});
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
