// The threshold scan of hamming_topk and of topk_map's small-k path: per query, one pass over the
// database that keeps every row that can still be among the k first in (distance, row) order.
//
// Distances live in the tiny range 0..bits, so selection needs no heap: each query keeps the rows
// it has accepted so far, in row order, with a histogram of their distances. Once k kept rows lie
// at distance <= t, a later row at distance t ranks after all of them (its index is higher), so
// from then on only rows below t are accepted. The threshold only shrinks, so after the first few
// thousand rows almost every row is rejected by one compare. When the buffer fills, the rows past
// the k-th distance t are dropped and the whole group at t stays: topk_map ranks it past the k-th
// row anyway, and hamming_topk takes the group's first rows when it writes the result. Cutting the
// group by count instead would cost the compaction a counter and buy nothing.
//
// A scan runs in three modes, tile by tile:
//   dense   many rows pass (the start of a scan, or a large k): every row writes a slot and keeps it
//           when it passes, branch-free, since a branch on that would be mispredicted often;
//   sparse  few rows pass: one test of a group of rows (8, or 20 for the AVX2 widths), rarely taken,
//           and then only the rows that pass are visited. As soon as k kept rows lie within the
//           threshold, it drops below the k-th distance; waiting for the buffer to fill would, with
//           a small k and large tied groups, tighten it late or never;
//   tail    the last rows of a tile that do not fill a group, one at a time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/codes_cpu.h"

namespace deephash {

// Queries that share each tile of the database (at most). A padded width (codes_cpu.h) copies the
// tile once for them all: with 64 rather than 16, 48-bit codes scanned 1.04x the time of 64-bit
// ones instead of 1.15x, and 96-bit 1.03x that of 128-bit instead of 1.10x (1e6 codes, CPU time
// on the 2-core benchmark machine); the unpadded widths ran the same.
constexpr int64_t kScanQueryBlock = 64;

// Buffer rows for a scan of n rows with cut-off kk: room past kk amortises the trims, and a scan
// of fewer rows than that never trims (the slack covers the rows a group test writes at once).
inline int64_t scan_capacity(int64_t kk, int64_t n) { return std::min(n + 32, 2 * kk + 1024); }

// Queries per block of a scan of n rows with cut-off kk: kScanQueryBlock, or fewer (not below 16)
// where the block's candidate buffers (12 bytes a slot) would pass 32 MiB, as with a large k.
inline int64_t scan_query_block(int64_t kk, int64_t n) {
  const int64_t per_query = 12 * scan_capacity(kk, n);
  return std::clamp<int64_t>((int64_t{32} << 20) / std::max<int64_t>(per_query, 1), 16, kScanQueryBlock);
}

class Candidates {
 public:
  void reset(int64_t cap, int32_t max_dist) {
    accept_ = kth_ = max_dist;
    within_ = size_ = 0;
    dense_ = true;
    dist_.resize(cap);
    row_.resize(cap);
    hist_.assign(max_dist + 1, 0);
  }

  // Scans rows [r0, r1) for code; rows: row r0, the rows `stride` bytes apart.
  template <class Code>
  void scan(const Code& query, const uint8_t* rows, int64_t stride, int64_t r0, int64_t r1, int64_t kk) {
    // A local copy: stores to row[] (int64) may alias the query words (uint64) of a shared object,
    // which would then be reloaded for every row.
    const Code code = query;
    Regs s = regs();
    int64_t r = r0;
    while (dense_ && r + Code::kRowsPerTest <= r1) r = scan_dense(code, rows + (r - r0) * stride, stride, r, r1, kk, s);
    r = scan_sparse(code, rows + (r - r0) * stride, stride, r, r1, kk, s);
    scan_tail(code, rows + (r - r0) * stride, stride, r, r1, kk, s);

    size_ = s.size;
    accept_ = s.accept;
    within_ = s.within;
  }

  // Recounts the histogram from the buffer, sets kth to the distance of the kk-th ranked row, and
  // drops the rows past it (keeping its whole group). Afterwards the histogram is exact up to kth.
  void trim(int64_t kk) {
    std::fill(hist_.begin(), hist_.end(), 0);
    for (int64_t i = 0; i < size_; ++i) ++hist_[dist_[i]];
    select(kk);
    const int32_t t = kth_;
    int64_t n = 0;
    for (int64_t i = 0; i < size_; ++i) {  // branch-free compaction
      const int32_t d = dist_[i];
      dist_[n] = d;
      row_[n] = row_[i];
      n += d <= t;
    }
    size_ = n;
    // A large tied group can leave the buffer nearly full: grow it so that trims stay rare.
    const auto cap = static_cast<int64_t>(dist_.size());
    if (2 * size_ > cap) {
      dist_.resize(2 * cap);
      row_.resize(2 * cap);
    }
  }

  // After trim(kk): calls f(rank, distance, row) for the first min(kk, size) rows in (distance,
  // row) order, by a counting sort (the buffer is in row order within each distance). Returns their
  // number.
  template <class F>
  int64_t for_each_ranked(int64_t kk, F&& f) const {
    std::vector<int64_t> offset(kth_ + 1);
    int64_t acc = 0;
    for (int32_t d = 0; d <= kth_; ++d) {
      offset[d] = acc;
      acc += hist_[d];
    }
    for (int64_t i = 0; i < size_; ++i) {
      const int64_t o = offset[dist_[i]]++;
      if (o < kk) f(o, dist_[i], row_[i]);
    }
    return std::min(kk, size_);
  }

  // After trim: the kept rows in row order, their distances, and the histogram (exact up to kth).
  int64_t size() const { return size_; }
  int32_t kth() const { return kth_; }
  const int32_t* dist() const { return dist_.data(); }
  const int64_t* row() const { return row_.data(); }
  const int64_t* hist() const { return hist_.data(); }

 private:
  // What a scan updates per row, as a value that the compiler keeps in registers. Were these
  // members, every store to row[] (int64) could alias size and within (also int64) and force
  // their reload per row.
  struct Regs {
    int32_t accept;
    int64_t size, cap, within;
    int32_t* dist;
    int64_t* row;
    int64_t* hist;
  };

  Regs regs() {
    return {accept_, size_, static_cast<int64_t>(dist_.size()), within_, dist_.data(), row_.data(), hist_.data()};
  }

  // The buffer is full: trim (which may lower the threshold and grow the buffer) and reload.
  [[gnu::noinline]] Regs trimmed(Regs s, int64_t kk) {
    size_ = s.size;
    trim(kk);
    return regs();
  }

  // From the histogram (exact up to accept): kth <- the distance at which the kept rows first
  // number kk, and from then on only rows below it are taken. With fewer than kk rows kept so far,
  // every row is still taken.
  void select(int64_t kk) {
    const auto max_dist = static_cast<int32_t>(hist_.size()) - 1;
    int64_t below = 0;
    int32_t t = 0;
    while (t < max_dist && below + hist_[t] < kk) below += hist_[t++];
    kth_ = t;
    const bool full = below + hist_[t] >= kk;
    accept_ = full ? t - 1 : t;
    within_ = full ? below : below + hist_[t];
  }

  // Dense mode over at most kDenseRows rows from r (at p); leaves it when no more than 1 row in 4
  // passed (the histogram, which this mode does not keep, is then recounted by a trim). Returns the
  // next row.
  template <class Code>
  [[gnu::always_inline]] int64_t scan_dense(const Code& code, const uint8_t* p, int64_t stride, int64_t r,
                                            int64_t r1, int64_t kk, Regs& s) {
    constexpr int64_t kDenseRows = 1024;
    const int64_t r_begin = r, e = r + std::min(r1 - r, kDenseRows) / 4 * 4;
    int64_t passed = 0, mark = s.size;  // rows kept in this chunk, across trims
    for (; r < e; r += 4, p += 4 * stride) {
      if (s.size + 4 > s.cap) {
        passed += s.size - mark;
        s = trimmed(s, kk);
        mark = s.size;
      }
      for (int u = 0; u < 4; ++u) {
        const int32_t d = code.distance(p + u * stride);
        s.dist[s.size] = d;
        s.row[s.size] = r + u;
        s.size += d <= s.accept;
      }
    }
    dense_ = 4 * (passed + s.size - mark) > r - r_begin;
    if (!dense_) s = trimmed(s, kk);
    return r;
  }

  // Sparse mode: groups of Code::kRowsPerTest rows from r (at first) up to r1. Returns the next row.
  template <class Code>
  [[gnu::always_inline]] int64_t scan_sparse(const Code& code, const uint8_t* first, int64_t stride, int64_t r,
                                             int64_t r1, int64_t kk, Regs& s) {
    constexpr int64_t kStep = Code::kRowsPerTest;
    const int64_t groups = (r1 - r) / kStep;
    const uint8_t* const end = first + groups * kStep * stride;
    for (const uint8_t* p = first; p != end; p += kStep * stride) {
      int32_t d[kStep];
      uint32_t pass = 0;
      p = next_passing_group(code, p, end, kStep * stride, s.accept, d, pass);
      if (p == end) break;
      const int64_t row = r + (p - first) / stride;
      if (s.size + kStep > s.cap) {
        s = trimmed(s, kk);  // the threshold may drop: only rows within the new one may count
        pass = 0;
        for (int u = 0; u < kStep; ++u) pass |= static_cast<uint32_t>(d[u] <= s.accept) << u;
      }
      s.within += __builtin_popcount(pass);
      for (; pass; pass &= pass - 1) {
        const int u = __builtin_ctz(pass);
        s.dist[s.size] = d[u];
        s.row[s.size] = row + u;
        ++s.size;
        ++s.hist[d[u]];
      }
      if (s.within >= kk) {
        select(kk);
        s.accept = accept_;
        s.within = within_;
      }
    }
    return r + groups * kStep;
  }

  // From the group of rows at p on, the first with a row within accept (pass: the mask of those rows,
  // d: the group's distances), or end. The scan's hot loop, kept apart so that it holds no call: with
  // the trim's call in the same loop the compiler kept the query and the popcount tables in memory and
  // reloaded them at every step (hamming_topk 20% slower at 128 bits than with this split).
  template <class Code>
  [[gnu::noinline, gnu::flatten]] static const uint8_t* next_passing_group(const Code& code, const uint8_t* p,
                                                                           const uint8_t* end, int64_t step,
                                                                           int32_t accept, int32_t* d,
                                                                           uint32_t& pass) {
    for (; p != end; p += step) {
      if (const uint32_t m = code.within(p, accept, d); __builtin_expect(m != 0, 0)) {
        pass = m;
        return p;
      }
    }
    return end;
  }

  template <class Code>
  [[gnu::always_inline]] void scan_tail(const Code& code, const uint8_t* p, int64_t stride, int64_t r, int64_t r1,
                                        int64_t kk, Regs& s) {
    for (; r < r1; ++r, p += stride) {
      if (s.size + 1 > s.cap) s = trimmed(s, kk);
      const int32_t d = code.distance(p);
      const int64_t keep = d <= s.accept;
      s.dist[s.size] = d;
      s.row[s.size] = r;
      s.hist[d] += keep;  // exact up to accept, as the sparse mode needs
      s.within += keep;
      s.size += keep;
    }
  }

  int32_t accept_ = 0;  // rows with distance <= accept are kept (-1: none)
  int32_t kth_ = 0;     // after a trim, the distance of the k-th ranked row
  int64_t within_ = 0;  // kept rows with distance <= accept (sparse and tail modes)
  int64_t size_ = 0;
  bool dense_ = true;         // whether the last dense chunk kept more than 1 row in 4
  std::vector<int32_t> dist_;  // [cap], row order
  std::vector<int64_t> row_;   // [cap]
  std::vector<int64_t> hist_;  // [bits + 1], distances of the kept rows
};

// Scans database rows [r0, r1) for queries [q0, q1) (a block of at most kScanQueryBlock) and trims,
// leaving query i's candidates in cand[i - q0]. Tile by tile, so that each query of the block
// rereads the tile (padded to the Code's width: codes_cpu.h) from the L1 cache.
template <class Code>
void scan_queries(const uint8_t* q,   // [Q, B]
                  const uint8_t* db,  // [N, B]
                  int64_t B, int64_t q0, int64_t q1, int64_t r0, int64_t r1, int64_t kk,
                  std::vector<Candidates>& cand) {
  const int64_t stride = Code::stride(B);  // a constant for the fixed widths
  const int64_t tile = scan_tile_rows(stride, Code::kRowsPerTest);
  ScanRows<Code> rows(db, r1, B);
  std::vector<Code> codes;
  codes.reserve(q1 - q0);
  for (int64_t i = q0; i < q1; ++i) {
    codes.emplace_back(q + i * B, B);
    cand[i - q0].reset(scan_capacity(kk, r1 - r0), static_cast<int32_t>(8 * B));
  }
  for (int64_t t0 = r0; t0 < r1; t0 += tile) {
    const int64_t t1 = std::min(r1, t0 + tile);
    const uint8_t* p = rows.tile(t0, t1);
    for (int64_t i = 0; i < q1 - q0; ++i) cand[i].scan(codes[i], p, stride, t0, t1, kk);
  }
  for (int64_t i = 0; i < q1 - q0; ++i) cand[i].trim(kk);
}

}  // namespace deephash
