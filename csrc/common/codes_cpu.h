// Host-side Hamming distance over packed codes: XOR + popcount on 64-bit words.
//
// A query is loaded once into a small word array (FixedCode for the common widths, so the word
// loop unrolls and the query stays in registers; AnyCode for every other width), then compared
// against database rows read straight from memory. Loads go through memcpy: rows are only
// byte-aligned, and memcpy of a constant size compiles to one unaligned load.
#pragma once

#include <algorithm>
#include <cstdint>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <cstring>
#include <type_traits>
#include <vector>

namespace deephash {

inline int popcount64(uint64_t x) { return __builtin_popcountll(x); }


// Word i of a code of `bytes` bytes; the bytes past the end read as zero.
inline uint64_t load_word(const uint8_t* p, int64_t i, int64_t bytes) {
  uint64_t v = 0;
  const int64_t n = std::min<int64_t>(8, bytes - 8 * i);
  std::memcpy(&v, p + 8 * i, static_cast<size_t>(n));
  return v;
}

// Distances from code to the 8 rows of `stride` bytes at `rows`; returns the mask of the rows
// within limit (bit u: row u), 0 almost always, so that the test is one min and one compare.
template <class Code>
inline uint32_t within8_scalar(const Code& code, const uint8_t* rows, int64_t stride, int32_t limit, int32_t* d) {
  int32_t m = code.distance(rows);
  d[0] = m;
  for (int u = 1; u < 8; ++u) {
    d[u] = code.distance(rows + u * stride);
    m = std::min(m, d[u]);
  }
  if (m > limit) return 0;
  uint32_t pass = 0;
  for (int u = 0; u < 8; ++u) pass |= static_cast<uint32_t>(d[u] <= limit) << u;
  return pass;
}

template <int Bytes>
struct FixedCode {
  static constexpr int kWords = (Bytes + 7) / 8;
  uint64_t w[kWords];

  static constexpr int64_t stride(int64_t /*bytes*/) { return Bytes; }

  FixedCode(const uint8_t* p, int64_t /*bytes*/) {
    for (int i = 0; i < kWords; ++i) w[i] = load_word(p, i, Bytes);
  }
  inline int distance(const uint8_t* row) const {
    int d = 0;
    for (int i = 0; i < kWords; ++i) d += popcount64(w[i] ^ load_word(row, i, Bytes));
    return d;
  }

  // Distances to the kRowsPerTest consecutive rows at `rows` and the mask of those within limit (bit
  // u: row u); d[] is written only when the mask is not 0, so a scan's hot path needs no per-row
  // work at all. AVX2 for 8- and 16-byte codes, below.
#if defined(__AVX2__)
  static constexpr int kScalarRows = 4;  // of each group, on the integer unit (see within20_avx2)
  static constexpr int kRowsPerTest = (Bytes == 8 || Bytes == 16) ? 16 + kScalarRows : 8;
#else
  static constexpr int kRowsPerTest = 8;
#endif
  inline uint32_t within(const uint8_t* rows, int32_t limit, int32_t* d) const {
#if defined(__AVX2__)
    if constexpr (Bytes == 8 || Bytes == 16) return within20_avx2(rows, limit, d);
#endif
    return within8_scalar(*this, rows, Bytes, limit, d);
  }

#if defined(__AVX2__)
  // Popcount of each byte by a nibble table (vpshufb): on the 2-core Zen 3 benchmark machine
  // 3.8e9 code pairs/s per core at 64 bits against 2.2e9 for scalar POPCNT, whose 4 ALUs the XOR,
  // the add and the compare share.
  static inline __m256i byte_popcounts(__m256i x) {
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                           2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_and_si256(x, low)),
                           _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(x, 4), low)));
  }

  // 16 rows on the vector unit and 4 by scalar POPCNT: Zen 3 runs its integer and vector pipes side
  // by side, and the vector pipes alone are saturated (on the benchmark machine the bare loop ran
  // 10% faster at 64 bits and 12% at 128 than with all 20 rows on vectors; 2, 5, 6 or 8 scalar rows
  // measured the same or slower in the op).
  inline uint32_t within20_avx2(const uint8_t* rows, int32_t limit, int32_t* d) const {
    const __m256i zero = _mm256_setzero_si256();
    __m256i s[4];  // row distances in 64-bit lanes; lane -> row below
    if constexpr (Bytes == 8) {
      const __m256i qv = _mm256_set1_epi64x(static_cast<int64_t>(w[0]));
      for (int h = 0; h < 4; ++h)
        s[h] = _mm256_sad_epu8(
            byte_popcounts(_mm256_xor_si256(qv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + 32 * h)))),
            zero);
    } else {
      // Two rows per vector. unpacklo/hi of the byte counts of vectors a (rows 0, 1) and b (2, 3) put
      // each row's two halves in one lane in the order (0, 2, 1, 3); one vpsadbw then sums a row.
      const __m256i qv = _mm256_setr_epi64x(static_cast<int64_t>(w[0]), static_cast<int64_t>(w[1]),
                                            static_cast<int64_t>(w[0]), static_cast<int64_t>(w[1]));
      for (int h = 0; h < 4; ++h) {
        const __m256i a = byte_popcounts(
            _mm256_xor_si256(qv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + 64 * h))));
        const __m256i b = byte_popcounts(
            _mm256_xor_si256(qv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + 64 * h + 32))));
        s[h] = _mm256_sad_epu8(_mm256_add_epi8(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b)), zero);
      }
    }
    int32_t m = distance(rows + 16 * Bytes);
    for (int u = 1; u < kScalarRows; ++u) m = std::min(m, distance(rows + (16 + u) * Bytes));
    // Lane values are < 2^31 with a zero upper half, so a 32-bit min is the 64-bit min.
    const __m256i lo = _mm256_min_epu32(_mm256_min_epu32(s[0], s[1]), _mm256_min_epu32(s[2], s[3]));
    const __m256i bound = _mm256_set1_epi64x(static_cast<int64_t>(limit) + 1);
    if (_mm256_testz_si256(_mm256_cmpgt_epi64(bound, lo), _mm256_set1_epi64x(-1)) && m > limit) return 0;
    uint32_t pass = 0;
    for (int h = 0; h < 4; ++h) {
      auto bits = static_cast<uint32_t>(_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(bound, s[h]))));
      if constexpr (Bytes == 16) bits = (bits & 9u) | ((bits & 2u) << 1) | ((bits & 4u) >> 1);  // lanes (0, 2, 1, 3)
      pass |= bits << (4 * h);
    }
    alignas(32) int64_t v[16];
    for (int h = 0; h < 4; ++h) _mm256_store_si256(reinterpret_cast<__m256i*>(v + 4 * h), s[h]);
    constexpr int kLane16[4] = {0, 2, 1, 3};  // 16-byte codes: lane -> row within a group of 4
    for (int u = 0; u < 16; ++u) d[Bytes == 8 ? u : (u & ~3) + kLane16[u & 3]] = static_cast<int32_t>(v[u]);
    // Recounted rather than kept: kept (or merely seen to be the same values), the compiler packs
    // them into a vector on the hot path, spending vector uops on scalar work. The empty asm hides
    // that the pointer is the same one.
    const uint8_t* again = rows;
    asm("" : "+r"(again));
    for (int u = 0; u < kScalarRows; ++u) {
      d[16 + u] = distance(again + (16 + u) * Bytes);
      pass |= static_cast<uint32_t>(d[16 + u] <= limit) << (16 + u);
    }
    return pass;
  }
#endif
};

struct AnyCode {
  std::vector<uint64_t> w;
  int64_t bytes;
  int64_t full;  // whole 64-bit words

  static int64_t stride(int64_t bytes) { return bytes; }

  AnyCode(const uint8_t* p, int64_t bytes_) : w((bytes_ + 7) / 8), bytes(bytes_), full(bytes_ / 8) {
    for (size_t i = 0; i < w.size(); ++i) w[i] = load_word(p, static_cast<int64_t>(i), bytes);
  }
  inline int distance(const uint8_t* row) const {
    int d = 0;
    int64_t i = 0;
    for (; i < full; ++i) {
      uint64_t v;
      std::memcpy(&v, row + 8 * i, 8);
      d += popcount64(w[i] ^ v);
    }
    if (i < static_cast<int64_t>(w.size())) d += popcount64(w[i] ^ load_word(row, i, bytes));
    return d;
  }
  static constexpr int kRowsPerTest = 8;
  inline uint32_t within(const uint8_t* rows, int32_t limit, int32_t* d) const {
    return within8_scalar(*this, rows, bytes, limit, d);
  }
};

// Calls f(Code{}) with the code type specialised for `bytes` (4, 8, 16, 32, 64) or AnyCode.
template <class F>
inline void dispatch_code(int64_t bytes, F&& f) {
  switch (bytes) {
    case 4: f(static_cast<FixedCode<4>*>(nullptr)); break;
    case 8: f(static_cast<FixedCode<8>*>(nullptr)); break;
    case 16: f(static_cast<FixedCode<16>*>(nullptr)); break;
    case 32: f(static_cast<FixedCode<32>*>(nullptr)); break;
    case 64: f(static_cast<FixedCode<64>*>(nullptr)); break;
    default: f(static_cast<AnyCode*>(nullptr)); break;
  }
}

// Database rows per tile of a scan: about 32 KiB (the L1 data cache), so that a block of queries
// rereads the tile from cache, and a multiple of `step` rows (a scan's test group), so that only
// the last rows of a scan take its row-by-row loop.
inline int64_t scan_tile_rows(int64_t bytes, int64_t step) {
  constexpr int64_t kTileBytes = 32 * 1024;
  return std::max<int64_t>(64, kTileBytes / std::max<int64_t>(bytes, 1)) / step * step;
}

// The type tag that dispatch_code hands to its callback.
template <class Tag>
using code_t = std::remove_pointer_t<Tag>;

}  // namespace deephash
