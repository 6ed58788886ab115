// Host-side Hamming distance over packed codes: XOR + popcount on 64-bit words.
//
// A query is loaded once into a small word array (FixedCode for the common widths, so the word
// loop unrolls and the query stays in registers; AnyCode for every other width), then compared
// against database rows read straight from memory. Loads go through memcpy: rows are only
// byte-aligned, and memcpy of a constant size compiles to one unaligned load.
#pragma once

#include <algorithm>
#include <cstdint>
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

// The type tag that dispatch_code hands to its callback.
template <class Tag>
using code_t = std::remove_pointer_t<Tag>;

}  // namespace deephash
