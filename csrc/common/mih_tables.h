// The multi-index hash tables shared by mih_build and mih_search (Norouzi, Punjani and Fleet, "Fast
// Exact Search in Hamming Space with Multi-Index Hashing", PAMI 2014).
//
// The first `bits` bits of every code are cut into m disjoint substrings of
// floor(bits / m) or ceil(bits / m) bits (the longer ones first), each at most 32 bits. Per
// substring z the tables are three ordinary tensors, so that an index is saveable and checkable:
//
//   rows    int32[m, N]      row ids ordered by (substring value, row): bucket after bucket
//   offsets int32[m, U + 1]  bucket b of substring z is rows[z, offsets[z, b] : offsets[z, b + 1]];
//                            U is the largest number of distinct substring values over z, and the
//                            unused tail of a shorter row repeats N
//   slots   int64[m, P]      open addressing (linear probing, load <= 1/2, P a power of two):
//                            (value << 32) | bucket, or -1 for an empty slot
//   bucket_codes uint8[m, N, B] codes[rows[z]]: each bucket's codes in sequence
//
// A lookup reads one slot (empty buckets, the common case at larger radii, cost one cache line),
// then the two offsets, then the bucket's codes in sequence; only the rows that pass the distance
// test have their id read. The paper keeps ids only and reads each candidate's code at random (one
// cache miss, ~100 ns, per candidate); the copy costs m B bytes per code and makes a candidate cost
// about as much as a code in a scan. (Fingerprints of 64 bits instead of whole codes, a lower bound
// checked against the code at random, halve that at 128 bits, but on Fashion-MNIST-like codes the
// bound passes so many near-duplicates that the random reads made the search 2-6x slower.)
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace deephash::mih {

constexpr int64_t kMaxSubstringBits = 32;
constexpr int64_t kEmptySlot = -1;

// Codes of `bits` bits must fill exactly `bytes` bytes, and m must give substrings of 1..32 bits.
inline void check_layout(int64_t bits, int64_t bytes, int64_t m, const char* op) {
  TORCH_CHECK(bits >= 1, op, ": bits must be >= 1, got ", bits);
  TORCH_CHECK((bits + 7) / 8 == bytes, op, ": ", bits, "-bit codes are ", (bits + 7) / 8,
              " bytes wide, but the codes have ", bytes, " bytes per row");
  const int64_t lo = (bits + kMaxSubstringBits - 1) / kMaxSubstringBits;
  TORCH_CHECK(m >= lo && m <= bits, op, ": m (the number of substrings) must be in [", lo, ", ", bits, "] for ",
              bits, "-bit codes (substrings of 1 to 32 bits), got ", m);
}

struct Substrings {
  std::vector<int> start, len;  // [m] first bit and length of each substring

  Substrings(int64_t bits, int64_t m) {
    const int64_t base = bits / m, longer = bits % m;
    int64_t s = 0;
    for (int64_t z = 0; z < m; ++z) {
      const int64_t l = base + (z < longer ? 1 : 0);
      start.push_back(static_cast<int>(s));
      len.push_back(static_cast<int>(l));
      s += l;
    }
  }
  int64_t size() const { return static_cast<int64_t>(len.size()); }
};

// Bits [start, start + len) of a packed code of `bytes` bytes (bit j: bit j % 8 of byte j / 8).
inline uint32_t substring_value(const uint8_t* code, int64_t bytes, int start, int len) {
  const int64_t byte = start >> 3;
  uint64_t v = 0;
  if (byte + 8 <= bytes)
    std::memcpy(&v, code + byte, 8);  // a constant size: one load
  else
    std::memcpy(&v, code + byte, static_cast<size_t>(bytes - byte));
  // len + (start & 7) <= 39 bits: one 64-bit load holds the whole substring.
  return static_cast<uint32_t>((v >> (start & 7)) & ((uint64_t{1} << len) - 1));
}


// Fibonacci hashing: the high bits of value * 2^64 / phi spread consecutive values over the table.
inline uint64_t home_slot(uint32_t value, int log2_slots) {
  return (uint64_t{value} * 0x9E3779B97F4A7C15ull) >> (64 - log2_slots);
}

inline int64_t pack_slot(uint32_t value, int64_t bucket) {
  return static_cast<int64_t>((uint64_t{value} << 32) | static_cast<uint32_t>(bucket));
}

// Slots for `buckets` distinct values: a power of two, at least twice as many, at least 2.
inline int64_t slot_count(int64_t buckets) {
  int64_t p = 2;
  while (p < 2 * buckets) p *= 2;
  return p;
}

// The bucket of `value` in one substring's slots [P], or -1. At most P steps, so that a table
// without an empty slot cannot hang a lookup.
inline int64_t find_bucket(const int64_t* slots, int64_t P, int log2p, uint32_t value) {
  uint64_t i = home_slot(value, log2p);
  for (int64_t step = 0; step < P; ++step, i = (i + 1) & static_cast<uint64_t>(P - 1)) {
    const int64_t e = slots[i];
    if (e == kEmptySlot) return -1;
    if (static_cast<uint32_t>(static_cast<uint64_t>(e) >> 32) == value) return e & 0xffffffff;
  }
  return -1;
}

inline int log2_exact(int64_t p) {
  int l = 0;
  while ((int64_t{1} << l) < p) ++l;
  return l;
}

}  // namespace deephash::mih
