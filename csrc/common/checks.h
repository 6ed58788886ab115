// Input validation shared by the CPU and CUDA kernels, so both backends refuse the same inputs
// with the same messages.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <climits>
#include <initializer_list>
#include <string_view>

namespace deephash {

// Widest codes the distance ops take: distances are int32, so 8 · bytes must stay below 2^31.
constexpr int64_t kMaxCodeBytes = INT32_MAX / 8;  // 268435455 bytes, 2147483640 bits

// Packed codes: uint8[rows, bytes].
inline void check_codes(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kByte, name,
              " must hold packed codes of dtype uint8 (see deephash_ext.pack_bits), got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 2, name, " must be 2-D [rows, bytes], got shape ", t.sizes());
  TORCH_CHECK(t.size(1) <= kMaxCodeBytes, name, " holds codes of ", t.size(1), " bytes (", 8 * t.size(1),
              " bits), too wide: Hamming distances are int32, so codes may hold at most ", kMaxCodeBytes,
              " bytes (", 8 * kMaxCodeBytes, " bits)");
}

// A query set and a database that can be compared: same byte width, same device.
inline void check_code_pair(const at::Tensor& q, const at::Tensor& db) {
  check_codes(q, "q");
  check_codes(db, "db");
  TORCH_CHECK(q.size(1) == db.size(1), "q and db must have the same byte width, got ", q.size(1), " and ",
              db.size(1), " bytes");
  TORCH_CHECK(q.device() == db.device(), "q and db must be on the same device, got ", q.device(), " and ",
              db.device());
}

inline void check_device(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device() == like.device(), name, " must be on ", like.device(), " like the codes, got ",
              t.device());
}

// Every tensor argument of an op on one device. The dispatcher picks a kernel from the devices of all
// arguments together (CUDA over CPU, and Meta over both), so a kernel can be handed tensors of
// another device than its own: without this check it would read them through the wrong pointers.
struct NamedTensor {
  const char* name;
  const at::Tensor& tensor;
};

inline void check_same_device(const char* op, std::initializer_list<NamedTensor> args) {
  const NamedTensor& first = *args.begin();
  for (const NamedTensor& a : args)
    TORCH_CHECK(a.tensor.device() == first.tensor.device(), op, ": all tensors must be on one device, but ",
                first.name, " is on ", first.tensor.device(), " and ", a.name, " on ", a.tensor.device());
}

enum class Ties { kIndex, kAverage };

inline Ties parse_ties(std::string_view ties) {
  if (ties == "index") return Ties::kIndex;
  if (ties == "average") return Ties::kAverage;
  TORCH_CHECK(false, "ties must be \"index\" or \"average\", got \"", std::string(ties), "\"");
}

// Labels of topk_map: class ids int64[rows] on both sides, or multi-hot [rows, C] (bool, uint8 or
// floating) on both sides with the same C. Returns true for multi-hot.
inline bool check_labels(const at::Tensor& q_labels, const at::Tensor& db_labels, int64_t Q, int64_t N) {
  TORCH_CHECK(q_labels.dim() == db_labels.dim(),
              "q_labels and db_labels must be of the same kind (class ids [rows] or multi-hot [rows, C]), got "
              "shapes ",
              q_labels.sizes(), " and ", db_labels.sizes());
  TORCH_CHECK(q_labels.dim() == 1 || q_labels.dim() == 2,
              "labels must be class ids [rows] or multi-hot [rows, C], got shape ", q_labels.sizes());
  TORCH_CHECK(q_labels.size(0) == Q, "q_labels has ", q_labels.size(0), " rows but q has ", Q);
  TORCH_CHECK(db_labels.size(0) == N, "db_labels has ", db_labels.size(0), " rows but db has ", N);
  if (q_labels.dim() == 1) {
    TORCH_CHECK(q_labels.scalar_type() == at::kLong && db_labels.scalar_type() == at::kLong,
                "class-id labels must be int64, got ", q_labels.scalar_type(), " and ", db_labels.scalar_type());
    return false;
  }
  auto multi_hot_dtype = [](at::ScalarType s) {
    return s == at::kBool || s == at::kByte || s == at::kFloat || s == at::kDouble || s == at::kHalf ||
           s == at::kBFloat16;
  };
  TORCH_CHECK(multi_hot_dtype(q_labels.scalar_type()) && multi_hot_dtype(db_labels.scalar_type()),
              "multi-hot labels must be bool, uint8 or floating, got ", q_labels.scalar_type(), " and ",
              db_labels.scalar_type());
  TORCH_CHECK(q_labels.size(1) == db_labels.size(1), "multi-hot labels must have the same number of classes, got ",
              q_labels.size(1), " and ", db_labels.size(1));
  return true;
}

// The dtypes pack_bits reads: every real or bool dtype with one value per element (the kernels'
// dispatch lists: AT_ALL_TYPES, the unsigned 16/32/64-bit types, half, bfloat16, bool and float8).
// Complex, quantized, packed sub-byte and bit-container dtypes have no order against 0.
inline bool pack_bits_dtype(at::ScalarType s) {
  return c10::isIntegralType(s, /*includeBool=*/true) || s == at::kFloat || s == at::kDouble || s == at::kHalf ||
         s == at::kBFloat16 || c10::isFloat8Type(s);
}

// pack_bits: x [..., bits], any real or bool dtype.
inline void check_pack_bits_input(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1, "pack_bits: x must have at least one dimension (the bits), got a scalar");
  TORCH_CHECK(pack_bits_dtype(x.scalar_type()), "pack_bits: x must be real or bool, got ", x.scalar_type());
}

// unpack_bits: packed uint8 [..., B], 0 <= bits <= 8 B.
inline void check_unpack_bits_input(const at::Tensor& packed, int64_t bits) {
  TORCH_CHECK(packed.scalar_type() == at::kByte, "unpack_bits: packed must be uint8, got ", packed.scalar_type());
  TORCH_CHECK(packed.dim() >= 1, "unpack_bits: packed must have at least one dimension (the bytes)");
  const int64_t bytes = packed.size(-1);
  TORCH_CHECK(bits >= 0, "unpack_bits: bits must be >= 0, got ", bits);
  TORCH_CHECK(bits <= 8 * bytes, "unpack_bits: asked for ", bits, " bits but the codes hold only ", 8 * bytes,
              " (", bytes, " bytes)");
}

// k of topk_map: k <= 0 or k >= N means the full ranking; ties="average" is defined only there.
inline int64_t effective_map_k(int64_t k, int64_t N, Ties ties) {
  const bool full = k <= 0 || k >= N;
  TORCH_CHECK(full || ties == Ties::kIndex,
              "ties=\"average\" is defined over the full ranking only: pass k <= 0 (or k >= N), got k=", k,
              " with N=", N);
  return full ? N : k;
}

// Everything topk_map checks before any kernel, on every backend.
struct MapArgs {
  Ties ties;
  bool multi_hot;
  int64_t kk;  // the effective cut-off: N for the full ranking
};

inline MapArgs check_topk_map_inputs(const at::Tensor& q, const at::Tensor& db, const at::Tensor& q_labels,
                                     const at::Tensor& db_labels, int64_t k, std::string_view ties_name) {
  check_code_pair(q, db);
  const Ties ties = parse_ties(ties_name);
  const bool multi_hot = check_labels(q_labels, db_labels, q.size(0), db.size(0));
  check_device(q_labels, "q_labels", q);
  check_device(db_labels, "db_labels", q);
  return {ties, multi_hot, effective_map_k(k, db.size(0), ties)};
}

// hamming_range: a code pair, radius >= 0, and widths whose distances fit the int32 output.
inline void check_range_inputs(const at::Tensor& q, const at::Tensor& db, int64_t radius) {
  check_code_pair(q, db);
  TORCH_CHECK(radius >= 0, "hamming_range: radius must be >= 0, got ", radius);
}

}  // namespace deephash
