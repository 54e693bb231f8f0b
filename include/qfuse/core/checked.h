// Checked size arithmetic (SPEC §7): every product of sizes (numel, T·H·D, scale buffers, graph
// shapes, host buffers) goes through these, so that a huge shape is an error naming the tensor
// and the dimension instead of a count that wraps to something small.
//
// The rule: every size is >= 0 and the sizes of one tensor multiply, zero sizes counted as one,
// to at most kMaxElements. Counting zeros as one keeps every partial product of a shape (H·D of
// an empty [0, H, D] tensor, say) inside int64_t as well, so code after the check may multiply
// any of its sizes freely.
#pragma once

#include <cstdint>
#include <string>

#include "qfuse/core/status.h"

namespace qfuse {

/// The most elements (storage units) one tensor, or the span of a strided view, may cover:
/// 2^40. NOTE: an H200 holds 2^37 bytes; 2^40 leaves every byte offset (elements times at most
/// 8 bytes) and every product of two such offsets' factors far inside int64_t.
inline constexpr int64_t kMaxElements = int64_t{1} << 40;
inline constexpr const char* kMaxElementsText = "2^40";

/// a * b; false (and *out unchanged) when the product does not fit in int64_t.
inline bool checked_mul(int64_t a, int64_t b, int64_t* out) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return false;
  *out = r;
  return true;
}
/// a + b; false (and *out unchanged) when the sum does not fit in int64_t.
inline bool checked_add(int64_t a, int64_t b, int64_t* out) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return false;
  *out = r;
  return true;
}
/// a * b clamped to [INT64_MIN, INT64_MAX] (for counts that only need to compare as "huge").
inline int64_t saturating_mul(int64_t a, int64_t b) {
  int64_t r = 0;
  if (!__builtin_mul_overflow(a, b, &r)) return r;
  return (a < 0) != (b < 0) ? INT64_MIN : INT64_MAX;
}

/// a + b clamped to [INT64_MIN, INT64_MAX].
inline int64_t saturating_add(int64_t a, int64_t b) {
  int64_t r = 0;
  if (!__builtin_add_overflow(a, b, &r)) return r;
  return a < 0 ? INT64_MIN : INT64_MAX;
}

/// Where a shape breaks the rule (see the file comment).
struct SizeProblem {
  int dim = -1;        // the first dimension at fault; -1: none
  std::string reason;  // "a size >= 0", "... at most 2^40 elements ..."; empty: none
  bool ok() const { return dim < 0; }
};
/// Checks `rank` sizes; on success *numel (optional) is their true product (1 for rank 0).
SizeProblem check_sizes(const int64_t* sizes, int rank, int64_t* numel = nullptr);

/// "[4096, 7168]" for the first `rank` sizes (rank clamped to [0, 8]).
std::string sizes_text(const int64_t* sizes, int rank);

/// The Status form for a tensor argument named `name` (error: "argument '<name>.sizes[d]':
/// expected <reason>, got <size> (<name> is [..])").
Status check_sizes(const std::string& name, const int64_t* sizes, int rank, int64_t* numel);

}  // namespace qfuse
