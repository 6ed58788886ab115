// Host-side Hamming distance over packed codes: XOR + popcount on 64-bit words.
//
// A query is loaded once into a small word array (FixedCode for the fast widths, so the word
// loop unrolls and the query stays in registers; AnyCode for every other width), then compared
// against database rows read from memory. Loads go through memcpy: rows are only byte-aligned,
// and memcpy of a constant size compiles to one unaligned load.
//
// Scans (hamming_topk, topk_map, hamming_range, hamming_distance) run at every width on a fast
// layout: dispatch_scan_code picks FixedCode<P> for the padded width P (8, 16, 24, 32, 48 or 64
// bytes) at or above the code width, and ScanRows copies each database tile into rows of P bytes
// with zero padding, which the block of queries sharing the tile then rereads from cache. Zero bytes
// add nothing to a distance, so 48-bit codes run the 64-bit kernel on a copy that costs one load,
// mask and store per row. Wider codes (> 64 bytes) take AnyCode: whole words and one tail word.
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


// Word i of a code of `bytes` bytes; the bytes past the end read as zero. (A memcpy of a size
// known at compile time; elsewhere it is a call: see load_tail.)
inline uint64_t load_word(const uint8_t* p, int64_t i, int64_t bytes) {
  uint64_t v = 0;
  const int64_t n = std::clamp<int64_t>(bytes - 8 * i, 0, 8);
  std::memcpy(&v, p + 8 * i, static_cast<size_t>(n));
  return v;
}

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// The n bytes at p (0 <= n <= 8) as the low bytes of a word, reading only those bytes: two
// overlapping fixed-size loads (the bytes they share are the same, so OR joins them) instead of a
// memcpy call of a run-time size. n is the same for every row of a scan, so the branches predict.
inline uint64_t load_tail(const uint8_t* p, int64_t n) {
  if (n >= 4) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + n - 4, 4);
    return static_cast<uint64_t>(lo) | (static_cast<uint64_t>(hi) << (8 * (n - 4)));
  }
  if (n >= 2) {
    uint16_t lo, hi;
    std::memcpy(&lo, p, 2);
    std::memcpy(&hi, p + n - 2, 2);
    return static_cast<uint64_t>(lo) | (static_cast<uint64_t>(hi) << (8 * (n - 2)));
  }
  return n == 1 ? p[0] : 0;
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

  // p: a query of `bytes` <= Bytes bytes (a padded width reads zero past them).
  FixedCode(const uint8_t* p, int64_t bytes) {
    for (int i = 0; i < kWords; ++i) w[i] = load_word(p, i, std::min<int64_t>(bytes, Bytes));
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

// Any width: whole 64-bit words, then one tail word. Codes of 8 bytes or more load the tail as
// the row's last 8 bytes, shifted (the query's tail word is stored shifted alike); shorter codes
// by load_tail. Never reads past a row's end.
struct AnyCode {
  std::vector<uint64_t> w;  // whole words, then the tail word (if any) as the distance reads it
  int64_t bytes;
  int64_t full;   // whole 64-bit words
  int64_t tail;   // bytes past them (0..7)
  int shift;      // codes of >= 8 bytes: the tail word is load64(row + bytes - 8) >> shift

  static int64_t stride(int64_t bytes) { return bytes; }

  AnyCode(const uint8_t* p, int64_t bytes_)
      : w((bytes_ + 7) / 8), bytes(bytes_), full(bytes_ / 8), tail(bytes_ % 8), shift(static_cast<int>(8 * (8 - tail))) {
    for (int64_t i = 0; i < full; ++i) w[i] = load64(p + 8 * i);
    if (tail) w[full] = tail_word(p);
  }
  inline uint64_t tail_word(const uint8_t* row) const {
    return full > 0 ? load64(row + bytes - 8) >> shift : load_tail(row, tail);
  }
  inline int distance(const uint8_t* row) const {
    int d = 0;
    for (int64_t i = 0; i < full; ++i) d += popcount64(w[i] ^ load64(row + 8 * i));
    if (tail) d += popcount64(w[full] ^ tail_word(row));
    return d;
  }
  static constexpr int kRowsPerTest = 8;
  inline uint32_t within(const uint8_t* rows, int32_t limit, int32_t* d) const {
    return within8_scalar(*this, rows, bytes, limit, d);
  }
};

// Calls f(Code*) with the code type specialised for `bytes` (4, 8, 16, 32, 64) or AnyCode, for
// rows read in place at any width (MIH's candidate checks: the rows of a bucket are few).
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

// The row width a scan of `bytes`-byte codes reads: the padded width of dispatch_scan_code (see
// the top of this file), or `bytes` itself for 0 and > 64 bytes.
inline int64_t scan_stride(int64_t bytes) {
  if (bytes == 0 || bytes > 64) return bytes;
  if (bytes <= 8) return 8;
  if (bytes <= 16) return 16;
  if (bytes <= 24) return 24;
  if (bytes <= 32) return 32;
  if (bytes <= 48) return 48;
  return 64;
}

// Calls f(Code*) with the code type of a scan over rows of scan_stride(bytes) bytes (ScanRows).
template <class F>
inline void dispatch_scan_code(int64_t bytes, F&& f) {
  switch (scan_stride(bytes)) {
    case 8: f(static_cast<FixedCode<8>*>(nullptr)); break;
    case 16: f(static_cast<FixedCode<16>*>(nullptr)); break;
    case 24: f(static_cast<FixedCode<24>*>(nullptr)); break;
    case 32: f(static_cast<FixedCode<32>*>(nullptr)); break;
    case 48: f(static_cast<FixedCode<48>*>(nullptr)); break;
    case 64: f(static_cast<FixedCode<64>*>(nullptr)); break;
    default: f(static_cast<AnyCode*>(nullptr)); break;
  }
}

// Copies n rows of `bytes` bytes at src into rows of Stride (> bytes, a multiple of 8) bytes at
// dst, zero-padded. A row is read as Stride bytes (running into the next rows) and masked, word
// by word, while those bytes end before `end` (the first byte that may not be read): a fixed
// sequence of loads, ands and stores per row, which the compiler vectorises. The last rows, whose
// Stride bytes would pass `end`, are read by whole words and load_tail.
template <int Stride>
inline void pad_rows(const uint8_t* src, int64_t n, int64_t bytes, const uint8_t* end, uint8_t* dst) {
  constexpr int kWords = Stride / 8;
  const int64_t full = bytes / 8, tail = bytes % 8;
  uint64_t mask[kWords];
  for (int i = 0; i < kWords; ++i)
    mask[i] = i < full ? ~uint64_t{0} : i == full && tail ? ~uint64_t{0} >> (8 * (8 - tail)) : 0;
  // Rows r with src + r * bytes + Stride <= end.
  const int64_t room = (end - src) - Stride;
  const int64_t fast = room < 0 ? 0 : std::min<int64_t>(n, room / bytes + 1);
  int64_t r = 0;
  for (; r < fast; ++r, src += bytes, dst += Stride) {
    uint64_t v[kWords];
    std::memcpy(v, src, Stride);
    for (int i = 0; i < kWords; ++i) v[i] &= mask[i];
    std::memcpy(dst, v, Stride);
  }
  for (; r < n; ++r, src += bytes, dst += Stride) {
    uint64_t v[kWords] = {};
    for (int64_t i = 0; i < full; ++i) v[i] = load64(src + 8 * i);
    if (tail) v[full] = load_tail(src + 8 * full, tail);
    std::memcpy(dst, v, Stride);
  }
}

// The database rows of a scan in the layout of its Code (rows of Code::stride(bytes) bytes): the
// rows themselves (AnyCode, or a FixedCode of the code's own width), or a zero-padded copy of one
// tile at a time (pad_rows).
template <class Code>
class ScanRows {
 public:
  // db: rows [0, n) of `bytes` bytes; no byte past row n - 1 is read.
  ScanRows(const uint8_t* db, int64_t n, int64_t bytes)
      : db_(db), end_(db + n * bytes), bytes_(bytes), stride_(Code::stride(bytes)) {}

  int64_t stride() const { return stride_; }

  // Rows [t0, t1), as a pointer to row t0 with rows stride() bytes apart; valid until the next call.
  const uint8_t* tile(int64_t t0, int64_t t1) {
    if constexpr (std::is_same_v<Code, AnyCode>) {
      return db_ + t0 * bytes_;
    } else {
      if (stride_ == bytes_) return db_ + t0 * bytes_;
      const auto need = static_cast<size_t>((t1 - t0) * stride_);
      if (buf_.size() < need) buf_.resize(need);
      pad_rows<Code::stride(0)>(db_ + t0 * bytes_, t1 - t0, bytes_, end_, buf_.data());
      return buf_.data();
    }
  }

 private:
  const uint8_t* db_;
  const uint8_t* end_;
  int64_t bytes_, stride_;
  std::vector<uint8_t> buf_;
};

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
