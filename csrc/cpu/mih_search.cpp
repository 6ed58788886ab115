// mih_search on the CPU: exact k nearest codes by multi-index hashing (Norouzi, Punjani and Fleet,
// PAMI 2014), with a cost model that hands a query to hamming_topk's scan where probing costs more.
//
// Probing. The query's substrings are probed at radius r = 0, 1, 2, ... in turn: every value at
// exactly distance r from the query's value in substring z is looked up, and the codes of each
// non-empty bucket are compared with the query (in sequence: the tables hold a copy in bucket order).
// Pigeonhole: a row not yet met when radius r is complete in substrings 0..a-1 and radius r - 1 in
// the others differs from the query in at least r + 1 bits of each of the first a substrings and r
// bits of the rest, so its distance is at least m r + a, whatever the substring lengths (and once a
// substring of l bits is complete at radius l, every row has been met). Rows are kept while within
// the k-th best distance found so far (all of them at a tie), so the search is final once that
// distance d_k is below m r + a: every row at distance <= d_k has then been met and kept, and
// sorting the kept rows by (distance, row) gives exactly hamming_topk's answer, ties included. In
// mode "auto", a radius whose values alone would cost more to look up than comparing every code is
// replaced by that comparison, which ends the search as well; mode "probe" is the paper's search
// alone (for tests and measurements: with long substrings it can take far longer than a scan).
//
// Cost model. Each query's work is counted in modelled nanoseconds (CostModel) against the scan's
// cost for one query. A query stops once past its budget and is scanned instead, with the others
// that stopped, in one hamming_topk call at the end. The batch's first kSample queries are a sample:
// if they show that probing (and scanning the stopped ones) costs about a scan or more, the rest of
// the batch is scanned without probing. So a batch costs at most about 1.25 scans per query on codes
// without structure, about 1.03 for a batch of 1000, and wins where probing is cheap.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <string_view>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/codes_cpu.h"
#include "common/mih_tables.h"

namespace deephash {
namespace {

// Values looked up together: their slots, offsets and first codes are prefetched stage by stage, so
// that the cache misses of a batch overlap instead of following one another.
constexpr int kBatch = 32;

// Modelled costs on one thread, in nanoseconds, fitted (within a factor of 2 on every set) to the
// single-thread times of probing Fashion-MNIST-derived, Gaussian-mixture and uniform codes, N = 1e6
// and 1e7, 64 and 128 bits, k = 1..1000, on the 2-core Zen 3 benchmark machine.
struct CostModel {
  double probe = 0;       // one value looked up (one slot read, mostly a cache miss)
  double bucket = 0;      // one non-empty bucket (its offsets and first codes)
  double row = 0;         // one code of a bucket (read in sequence) compared with the query
  double take = 0;        // one row within the threshold (seen-check, kept, counted)
  double query = 0;       // setting up and sorting one query's answer
  double scan_query = 0;  // hamming_topk's cost for one query over the N codes

  static CostModel of(int64_t N, int64_t B, int64_t kk) {
    CostModel c;
    c.probe = 80.0;
    c.bucket = 20.0;
    c.row = 1.6 * static_cast<double>((B + 7) / 8);
    c.take = 30.0;
    c.query = 2000.0 + 20.0 * static_cast<double>(kk);
    // The scan per code: the AVX2 paths of 8 and 16 bytes are the fastest, other widths compare
    // word by word; a large k costs it more trims.
    const double per_code = B <= 8 ? 0.35 : B <= 16 ? 0.75 : 0.75 * static_cast<double>(B) / 16.0;
    c.scan_query = per_code * static_cast<double>(N) * (1.0 + static_cast<double>(kk) / 2000.0);
    return c;
  }
};

// Work budgets, in scans of one query. The batch's first kSample queries stop after a budget of
// Q / 640 scans, within [kMinBudget, kBudget]: what the sample may waste is then at most about 2.5%
// of the batch's scans, or a quarter of a scan per query for a small batch, and a large batch sees
// its costs without cutting them short. If probing the sample, and scanning those that stopped,
// cost more than kKeepProbing scans a query, the rest of the batch is scanned; otherwise the rest
// probe with a budget of kBudget (a query far from every code costs at most 1 + kBudget scans), and
// the running mean is watched.
constexpr double kMinBudget = 0.25;
constexpr double kBudget = 1.0;
constexpr double kKeepProbing = 0.9;
constexpr int64_t kSample = 16;

struct Tables {
  int64_t N, B;
  const uint8_t* codes;         // [N, B]
  const int32_t* rows;          // [m, N]
  const int32_t* offsets;       // [m, U + 1]
  const int64_t* slots;         // [m, P]
  const uint8_t* bucket_codes;  // [m, N, B]
  int64_t U, P;
  int log2p;
  const mih::Substrings* sub;
};

[[noreturn]] void foreign_tables(const char* what) {
  TORCH_CHECK(false, "mih_search: the tables do not belong to these codes and bits (", what,
              "); rebuild them with mih_build from the same codes and bits");
}

// A few O(m) checks that catch tables built from other codes, or with another bits: the first and
// last row of each substring's bucket order must carry their own code and sit in the bucket that its
// substring value names. (The search bounds-checks every id and offset it reads.)
void spot_check(const Tables& t) {
  if (t.N == 0) return;
  const mih::Substrings& sub = *t.sub;
  for (int64_t z = 0; z < sub.size(); ++z) {
    const int32_t* off = t.offsets + z * (t.U + 1);
    for (const int64_t p : {int64_t{0}, t.N - 1}) {
      const int32_t row = t.rows[z * t.N + p];
      if (row < 0 || row >= t.N) foreign_tables("a row id out of range");
      const uint8_t* c = t.codes + static_cast<int64_t>(row) * t.B;
      const uint8_t* copy = t.bucket_codes + (z * t.N + p) * t.B;
      if (!std::equal(c, c + t.B, copy)) foreign_tables("bucket_codes differ from the codes");
      const int64_t b = mih::find_bucket(t.slots + z * t.P, t.P, t.log2p,
                                         mih::substring_value(c, t.B, sub.start[z], sub.len[z]));
      if (b < 0 || b >= t.U || !(off[b] <= p && p < off[b + 1])) foreign_tables("a code is not in its bucket");
    }
  }
}

// One thread's search state, reused from query to query.
template <class Code>
class Prober {
 public:
  // shortcut: replace a radius that costs more than comparing every code by that comparison.
  Prober(const Tables& t, int64_t kk, bool shortcut)
      : t_(t),
        kk_(kk),
        shortcut_(shortcut),
        max_dist_(static_cast<int32_t>(8 * t.B)),
        seen_((t.N + 63) / 64, 0),
        hist_(8 * t.B + 1, 0) {}

  // Writes the query's kk nearest rows and returns true, or returns false (writing nothing) once the
  // modelled cost passes budget. spent: the modelled cost either way.
  bool search(const uint8_t* q, double budget, const CostModel& cm, int32_t* out_d, int64_t* out_i, double* spent) {
    const Code code(q, t_.B);
    const mih::Substrings& sub = *t_.sub;
    const int64_t m = sub.size();
    start_query(cm);
    bool done = false, within = true;
    const int max_len = *std::max_element(sub.len.begin(), sub.len.end());
    uint32_t values[kBatch];
    for (int r = 0; r <= max_len && !done && within; ++r) {
      for (int64_t z = 0; z < m && !done && within; ++z) {
        const int len = sub.len[z];
        if (r > len) continue;
        if (shortcut_ && binomial(len, r) * cm.probe > cm.scan_query) {
          // This radius alone would cost more than comparing every code: compare them all and finish.
          cost_ += cm.scan_query;
          within = cost_ <= budget;
          if (within) compare_all(code);
          done = true;
          break;
        }
        const uint32_t qv = mih::substring_value(q, t_.B, sub.start[z], len);
        int n = 0;
        if (r == 0) {
          values[n++] = qv;
        } else {
          // Gosper's hack: the len-bit masks with r bits set, in increasing order.
          const uint64_t end = uint64_t{1} << len;
          for (uint64_t mask = (uint64_t{1} << r) - 1; mask < end && within;) {
            values[n++] = qv ^ static_cast<uint32_t>(mask);
            if (n == kBatch) {
              within = probe_batch(code, z, values, n, budget, cm);
              n = 0;
            }
            const uint64_t low = mask & (~mask + 1);
            const uint64_t ripple = mask + low;
            mask = (((ripple ^ mask) >> 2) >> __builtin_ctzll(low)) | ripple;
          }
        }
        if (n > 0 && within) within = probe_batch(code, z, values, n, budget, cm);
        // Unseen rows are at distance >= m r + z + 1 (see the top of the file); at r = len every
        // row has been compared through substring z.
        done = r == len || (total_ >= kk_ && threshold_ < m * r + z + 1);
      }
    }
    *spent = cost_;
    if (!within) {
      end_query();
      return false;
    }
    TORCH_INTERNAL_ASSERT(done && total_ >= kk_, "mih_search: the search ended with ", total_, " of ", kk_, " rows");
    write_result(out_d, out_i);
    end_query();
    return true;
  }

 private:
  static double binomial(int n, int r) {
    double c = 1;
    for (int i = 1; i <= r; ++i) c = c * (n - r + i) / i;
    return c;
  }

  void start_query(const CostModel& cm) {
    threshold_ = max_dist_;
    drop_at_ = 2 * kk_ + 1024;
    total_ = 0;
    cost_ = cm.query;
    take_cost_ = cm.take;
    kept_.clear();
  }

  // Clears what the query touched, so the next one starts from an empty state in time proportional
  // to this one's work.
  void end_query() {
    for (int32_t r : seen_list_) seen_[r >> 6] = 0;
    seen_list_.clear();
    for (uint64_t e : kept_) hist_[e >> 32] = 0;
    kept_.clear();
  }

  // Looks up n values of one substring and compares their buckets' rows; false once the budget is
  // passed.
  bool probe_batch(const Code& code, int64_t z, const uint32_t* values, int n, double budget, const CostModel& cm) {
    const int64_t* sl = t_.slots + z * t_.P;
    const int32_t* off = t_.offsets + z * (t_.U + 1);
    const uint8_t* bc = t_.bucket_codes + z * t_.N * t_.B;
    uint64_t home[kBatch];
    for (int j = 0; j < n; ++j) {
      home[j] = mih::home_slot(values[j], t_.log2p);
      __builtin_prefetch(sl + home[j]);
    }
    int32_t bucket[kBatch];
    int nb = 0;
    const uint64_t wrap = static_cast<uint64_t>(t_.P) - 1;
    for (int j = 0; j < n; ++j) {
      uint64_t i = home[j];
      // As mih::find_bucket, from a prefetched home slot.
      for (int64_t step = 0; step < t_.P; ++step, i = (i + 1) & wrap) {
        const int64_t e = sl[i];
        if (e == mih::kEmptySlot) break;
        if (static_cast<uint32_t>(static_cast<uint64_t>(e) >> 32) == values[j]) {
          const int64_t b = e & 0xffffffff;
          if (b >= t_.U) foreign_tables("a slot names a bucket past the offsets");
          bucket[nb++] = static_cast<int32_t>(b);
          __builtin_prefetch(off + b);
          break;
        }
      }
    }
    int32_t begin[kBatch], end[kBatch];
    for (int j = 0; j < nb; ++j) {
      begin[j] = off[bucket[j]];
      end[j] = off[bucket[j] + 1];
      if (!(0 <= begin[j] && begin[j] <= end[j] && end[j] <= t_.N)) foreign_tables("offsets out of order or past N");
      __builtin_prefetch(bc + static_cast<int64_t>(begin[j]) * t_.B);
    }
    cost_ += n * cm.probe + nb * cm.bucket;
    for (int j = 0; j < nb; ++j)
      if (!compare_bucket(code, z, begin[j], end[j], budget, cm)) return false;
    return cost_ <= budget;
  }

  // The bucket's codes lie in sequence: most fail the threshold test, a group at a time, and only
  // the rows that pass are looked up by id. The budget is checked every kBucketChunk rows, not only
  // after the bucket: with many duplicated codes one bucket can hold most of the rows (each kept at
  // a tie), and comparing it whole made such a query 17-33x slower than the scan it then fell back
  // to. False once the budget is passed.
  bool compare_bucket(const Code& code, int64_t z, int32_t begin, int32_t end, double budget, const CostModel& cm) {
    constexpr int32_t kBucketChunk = 1024;
    const int32_t* rw = t_.rows + z * t_.N;
    for (int32_t b = begin; b < end;) {
      const int32_t e = end - b > kBucketChunk ? b + kBucketChunk : end;
      compare_run(code, t_.bucket_codes + (z * t_.N + b) * t_.B, e - b, [&](int64_t i) { return rw[b + i]; });
      cost_ += (e - b) * cm.row;
      if (cost_ > budget) return false;
      b = e;
    }
    return true;
  }

  // Every code, in row order: for a radius that would cost more than this.
  void compare_all(const Code& code) {
    compare_run(code, t_.codes, t_.N, [](int64_t i) { return i; });
  }

  // Compares the n codes at p (consecutive) with the query; row_of(i): the row id of the i-th.
  template <class RowOf>
  void compare_run(const Code& code, const uint8_t* p, int64_t n, RowOf row_of) {
    constexpr int64_t kStep = Code::kRowsPerTest;
    const int64_t B = t_.B;
    auto pass = [&](int32_t d, int64_t i) {
      if (d > threshold_) return;  // lowered since the group's test
      const int64_t row = row_of(i);
      if (static_cast<uint64_t>(row) >= static_cast<uint64_t>(t_.N)) foreign_tables("a row id past N");
      if (!is_seen(static_cast<int32_t>(row))) take(d, static_cast<int32_t>(row));
    };
    int64_t i = 0;
    for (; i + kStep <= n; i += kStep, p += kStep * B) {
      int32_t d[kStep];
      for (uint32_t mask = code.within(p, threshold_, d); mask; mask &= mask - 1) {
        const int u = __builtin_ctz(mask);
        pass(d[u], i + u);
      }
    }
    for (; i < n; ++i, p += B) pass(code.distance(p), i);
  }

  bool is_seen(int32_t row) const { return (seen_[row >> 6] >> (row & 63)) & 1; }

  // Keeps every row at distance <= threshold_, the k-th best distance so far (ties kept), and marks
  // it seen: a row is met once per substring, and kept once.
  void take(int32_t d, int32_t r) {
    seen_[r >> 6] |= uint64_t{1} << (r & 63);
    seen_list_.push_back(r);
    cost_ += take_cost_;
    kept_.push_back((static_cast<uint64_t>(d) << 32) | static_cast<uint32_t>(r));
    ++hist_[d];
    ++total_;
    if (total_ < kk_) return;
    while (total_ - hist_[threshold_] >= kk_) {
      total_ -= hist_[threshold_];
      hist_[threshold_] = 0;
      --threshold_;
    }
    if (static_cast<int64_t>(kept_.size()) > drop_at_) drop_beyond_threshold();
  }

  // Rows tied at the threshold all stay (the smallest ids among them win), so a drop may keep many:
  // the next one waits until the list has doubled, which keeps the drops linear in all.
  void drop_beyond_threshold() {
    const uint64_t limit = (static_cast<uint64_t>(threshold_) + 1) << 32;
    kept_.erase(std::remove_if(kept_.begin(), kept_.end(), [&](uint64_t e) { return e >= limit; }), kept_.end());
    drop_at_ = std::max<int64_t>(2 * kk_ + 1024, 2 * static_cast<int64_t>(kept_.size()));
  }

  void write_result(int32_t* out_d, int64_t* out_i) {
    drop_beyond_threshold();
    // (distance << 32 | row) orders by distance, then row.
    std::partial_sort(kept_.begin(), kept_.begin() + kk_, kept_.end());
    for (int64_t j = 0; j < kk_; ++j) {
      out_d[j] = static_cast<int32_t>(kept_[j] >> 32);
      out_i[j] = static_cast<int64_t>(kept_[j] & 0xffffffffu);
    }
  }

  const Tables& t_;
  const int64_t kk_;
  const bool shortcut_;
  const int32_t max_dist_;
  std::vector<uint64_t> seen_;      // [ceil(N / 64)] rows kept by this query
  std::vector<int32_t> seen_list_;  // the same rows, to clear the bitmap
  std::vector<uint64_t> kept_;      // (distance << 32 | row), distance <= threshold_ (stale ones dropped lazily)
  std::vector<int64_t> hist_;       // [8 B + 1] distances of the kept rows at or below threshold_
  int32_t threshold_ = 0;
  int64_t total_ = 0;               // kept rows at distance <= threshold_
  int64_t drop_at_ = 0;             // kept_'s size that triggers the next drop
  double cost_ = 0;
  double take_cost_ = 0;
};

enum class Mode { kAuto, kProbe };

Mode parse_mode(std::string_view mode) {
  if (mode == "auto") return Mode::kAuto;
  if (mode == "probe") return Mode::kProbe;
  TORCH_CHECK(false, "mih_search: mode must be \"auto\" or \"probe\", got \"", std::string(mode), "\"");
}

void check_tables(const at::Tensor& codes, const at::Tensor& rows, const at::Tensor& offsets, const at::Tensor& slots,
                  const at::Tensor& bucket_codes) {
  const int64_t N = codes.size(0);
  TORCH_CHECK(rows.scalar_type() == at::kInt && rows.dim() == 2, "mih_search: rows must be int32[m, N], got ",
              rows.scalar_type(), " of shape ", rows.sizes());
  const int64_t m = rows.size(0);
  TORCH_CHECK(rows.size(1) == N, "mih_search: rows has ", rows.size(1), " columns but there are ", N,
              " codes; the tables do not belong to these codes");
  TORCH_CHECK(offsets.scalar_type() == at::kInt && offsets.dim() == 2 && offsets.size(0) == m && offsets.size(1) >= 1,
              "mih_search: offsets must be int32[m, U + 1] with m = ", m, ", got ", offsets.scalar_type(), " of shape ",
              offsets.sizes());
  const int64_t P = slots.size(slots.dim() - 1);
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.dim() == 2 && slots.size(0) == m && P >= 2 &&
                  (P & (P - 1)) == 0,
              "mih_search: slots must be int64[m, P] with m = ", m, " and P a power of two >= 2, got ",
              slots.scalar_type(), " of shape ", slots.sizes());
  TORCH_CHECK(bucket_codes.scalar_type() == at::kByte && bucket_codes.dim() == 3 && bucket_codes.size(0) == m &&
                  bucket_codes.size(1) == N && bucket_codes.size(2) == codes.size(1),
              "mih_search: bucket_codes must be uint8[m, N, B] = [", m, ", ", N, ", ", codes.size(1), "], got ",
              bucket_codes.scalar_type(), " of shape ", bucket_codes.sizes());
  for (const auto* t : {&rows, &offsets, &slots, &bucket_codes})
    TORCH_CHECK(t->device() == codes.device(), "mih_search: the tables must be on the device of the codes (",
                codes.device(), "), got ", t->device());
}

using TopkFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t);

std::tuple<at::Tensor, at::Tensor> scan(const at::Tensor& q, const at::Tensor& codes, int64_t k) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("deephash_ext::hamming_topk", "").typed<TopkFn>();
  return op.call(q, codes, k);
}

std::tuple<at::Tensor, at::Tensor> mih_search_cpu(const at::Tensor& q, const at::Tensor& codes, const at::Tensor& rows,
                                                  const at::Tensor& offsets, const at::Tensor& slots,
                                                  const at::Tensor& bucket_codes, int64_t bits,
                                                  int64_t k, c10::string_view mode_name) {
  check_codes(q, "q");
  check_codes(codes, "codes");
  TORCH_CHECK(q.size(1) == codes.size(1), "mih_search: q and codes must have the same byte width, got ", q.size(1),
              " and ", codes.size(1), " bytes");
  TORCH_CHECK(q.device() == codes.device(), "mih_search: q and codes must be on the same device, got ", q.device(),
              " and ", codes.device());
  const Mode mode = parse_mode(mode_name);
  TORCH_CHECK(k >= 1, "mih_search: k must be >= 1, got ", k);
  check_tables(codes, rows, offsets, slots, bucket_codes);
  const int64_t m = rows.size(0);
  mih::check_layout(bits, codes.size(1), m, "mih_search");

  const int64_t Q = q.size(0), N = codes.size(0), B = codes.size(1);
  const int64_t kk = std::min(k, N);
  at::Tensor out_d = at::empty({Q, kk}, q.options().dtype(at::kInt));
  at::Tensor out_i = at::empty({Q, kk}, q.options().dtype(at::kLong));

  const at::Tensor qc = q.contiguous(), cc = codes.contiguous();
  const at::Tensor rc = rows.contiguous(), oc = offsets.contiguous(), sc = slots.contiguous();
  const at::Tensor fc = bucket_codes.contiguous();
  const mih::Substrings sub(bits, m);
  const int64_t P = sc.size(1);
  const Tables tables{N,
                      B,
                      cc.const_data_ptr<uint8_t>(),
                      rc.const_data_ptr<int32_t>(),
                      oc.const_data_ptr<int32_t>(),
                      sc.const_data_ptr<int64_t>(),
                      fc.const_data_ptr<uint8_t>(),
                      oc.size(1) - 1,
                      P,
                      mih::log2_exact(P),
                      &sub};
  spot_check(tables);
  if (Q == 0 || kk == 0) return {out_d, out_i};
  // Every row is in the answer: nothing to prune.
  if (mode == Mode::kAuto && kk == N) return scan(qc, cc, k);
  const CostModel cm = CostModel::of(N, B, kk);
  const double inf = std::numeric_limits<double>::infinity();
  const uint8_t* qp = qc.const_data_ptr<uint8_t>();
  int32_t* od = out_d.mutable_data_ptr<int32_t>();
  int64_t* oi = out_i.mutable_data_ptr<int64_t>();

  const double sample_budget = std::clamp(static_cast<double>(Q) / 640.0, kMinBudget, kBudget);
  std::vector<uint8_t> to_scan(Q, 0);
  std::atomic<int64_t> next{0}, probed{0}, stopped{0};
  std::atomic<double> spent_total{0.0};
  std::atomic<bool> scan_rest{false};
  dispatch_code(B, [&](auto tag) {
    using Code = code_t<decltype(tag)>;
    // One worker per thread; queries are handed out one at a time, since their costs differ widely.
    at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
      Prober<Code> prober(tables, kk, mode == Mode::kAuto);
      for (int64_t i; (i = next.fetch_add(1)) < Q;) {
        if (scan_rest.load(std::memory_order_relaxed)) {
          to_scan[i] = 1;
          continue;
        }
        double spent = 0;
        const double budget =
            mode != Mode::kAuto ? inf : (probed.load() < kSample ? sample_budget : kBudget) * cm.scan_query;
        const bool ok = prober.search(qp + i * B, budget, cm, od + i * kk, oi + i * kk, &spent);
        to_scan[i] = !ok;
        if (mode != Mode::kAuto) continue;
        const int64_t n = probed.fetch_add(1) + 1;
        const int64_t s = stopped.fetch_add(ok ? 0 : 1) + (ok ? 0 : 1);
        const double total = spent_total.fetch_add(spent) + spent;
        if (n >= kSample &&
            (total + static_cast<double>(s) * cm.scan_query) / static_cast<double>(n) > kKeepProbing * cm.scan_query)
          scan_rest.store(true, std::memory_order_relaxed);
      }
    });
  });

  std::vector<int64_t> scanned;
  for (int64_t i = 0; i < Q; ++i)
    if (to_scan[i]) scanned.push_back(i);
  if (!scanned.empty()) {
    const auto n = static_cast<int64_t>(scanned.size());
    at::Tensor sub_q = at::empty({n, B}, q.options());
    uint8_t* sq = sub_q.mutable_data_ptr<uint8_t>();
    for (int64_t j = 0; j < n; ++j) std::copy_n(qp + scanned[j] * B, B, sq + j * B);
    auto [d, r] = scan(sub_q, cc, k);
    const int32_t* dp = d.const_data_ptr<int32_t>();
    const int64_t* rp = r.const_data_ptr<int64_t>();
    for (int64_t j = 0; j < n; ++j) {
      std::copy_n(dp + j * kk, kk, od + scanned[j] * kk);
      std::copy_n(rp + j * kk, kk, oi + scanned[j] * kk);
    }
  }
  return {out_d, out_i};
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CPU, m) { m.impl("mih_search", &mih_search_cpu); }

}  // namespace deephash
