// The quantization vocabulary shared by every op, the fusion pass and the CLI (SPEC §0.2).
//
// A QuantSpec says how an op writes its output: the kind, the group size, where the scales live
// and how they are encoded. It has a stable string form, e.g.
//   none | fp8_per_tensor | fp8_per_token | fp8_group128:col_tma:ue8m0_packed | nvfp4:swizzled
// which to_string() writes and parse_quant_spec() reads back. A kind whose rounding differs from
// the reference engine's has a second form with the suffix ":engine" (QuantRule), e.g.
//   fp8_per_token:engine | fp8_group128:row:f32:engine | nvfp4:swizzled:engine
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qfuse/core/dtype.h"
#include "qfuse/core/status.h"

namespace qfuse {

enum class QuantKind : uint8_t {
  kNone,          // output in a plain float dtype (bf16/fp16/fp32)
  kFp8PerTensor,  // static: one fp32 scale on the device, given
  kFp8PerToken,   // dynamic: one fp32 scale per row, computed
  kFp8PerGroup,   // dynamic: one scale per (row, group of g consecutive columns), g in {64, 128}
  kNvfp4,         // E2M1 values, E4M3 scale per 16 elements, fp32 global scale given
};

/// Where scales are stored.
enum class ScaleLayout : uint8_t {
  kNone,           // no scale buffer (none, per-tensor) or a plain [T] vector (per-token)
  kRowMajor,       // per-group [T, G]; NVFP4 "linear" [T, H/16]
  kColMajor,       // per-group [G, T]: element (t, j) at j*T + t
  kColMajorTma,    // per-group [G, ld], ld = round_up(T, 4): element (t, j) at j*ld + t
  kNvfp4Swizzled,  // NVFP4 128x4 swizzle (SPEC §0.3), rows padded to 128, columns to 4
};

/// What one scale of a kind covers. It decides which producers can write the kind: a kernel must
/// see every value one scale covers before it can store any of them.
enum class ScaleScope : uint8_t {
  kNone,    // no scale (plain output)
  kTensor,  // one given scale for the whole tensor (read from the device)
  kGroup,   // a computed scale per group of consecutive columns of one row (per-group, NVFP4)
  kRow,     // a computed scale per row (per-token)
};

/// How scales are encoded.
enum class ScaleFormat : uint8_t {
  kF32,          // fp32 values
  kUe8m0F32,     // powers of two 2^ceil(log2 s), stored as fp32
  kUe8m0Packed,  // powers of two stored as UE8M0 exponent bytes (docs/formats.md)
  kE4M3,         // NVFP4 block scales
};

/// How a quantized output is rounded: qfuse's rules (docs/tolerances.md), or the reference engine's
/// arithmetic, which its drop-in ops need to write the same codes and scales as the engine's own
/// kernels (docs/python.md). Both are written in rules.h. Only the kinds where the two differ
/// have the engine rule (has_engine_rule): dynamic FP8 per-token and per-group (the engine divides
/// every value by the scale, correctly rounded, where qfuse multiplies by a reciprocal computed
/// once; per-group also its amax floor `eps` and its UE8M0 rounding) and NVFP4 (its approximate
/// reciprocals). none and fp8_per_tensor already round as the engine does (x * (1 / s)).
enum class QuantRule : uint8_t {
  kNative,  // qfuse's rules: one rule for every kind
  kEngine,  // the reference engine's arithmetic (rules.h, "the engine rule"); spec suffix ":engine"
};

struct QuantSpec {
  QuantKind kind = QuantKind::kNone;
  int group_size = 0;  // 64 or 128 for kFp8PerGroup, 16 for kNvfp4, 0 otherwise
  ScaleLayout layout = ScaleLayout::kNone;
  ScaleFormat format = ScaleFormat::kF32;
  QuantRule rule = QuantRule::kNative;

  static QuantSpec none() { return {}; }
  static QuantSpec fp8_per_tensor() {
    return {QuantKind::kFp8PerTensor, 0, ScaleLayout::kNone, ScaleFormat::kF32};
  }
  static QuantSpec fp8_per_token() {
    return {QuantKind::kFp8PerToken, 0, ScaleLayout::kNone, ScaleFormat::kF32};
  }
  static QuantSpec fp8_per_group(int g, ScaleLayout layout = ScaleLayout::kRowMajor,
                                 ScaleFormat format = ScaleFormat::kF32) {
    return {QuantKind::kFp8PerGroup, g, layout, format};
  }
  static QuantSpec nvfp4(ScaleLayout layout = ScaleLayout::kNvfp4Swizzled) {
    return {QuantKind::kNvfp4, 16, layout, ScaleFormat::kE4M3};
  }
  /// The same kind with rule `r`.
  QuantSpec with_rule(QuantRule r) const {
    QuantSpec s = *this;
    s.rule = r;
    return s;
  }
  /// True for the kinds whose rounding differs from the reference engine's (QuantRule).
  bool has_engine_rule() const {
    return kind == QuantKind::kFp8PerToken || kind == QuantKind::kFp8PerGroup ||
           kind == QuantKind::kNvfp4;
  }

  bool is_fp8() const {
    return kind == QuantKind::kFp8PerTensor || kind == QuantKind::kFp8PerToken ||
           kind == QuantKind::kFp8PerGroup;
  }
  /// True when the op computes scales and writes them to a scale buffer.
  bool writes_scales() const {
    return kind == QuantKind::kFp8PerToken || kind == QuantKind::kFp8PerGroup ||
           kind == QuantKind::kNvfp4;
  }
  /// True when the op reads a given fp32 scale from the device (per-tensor scale or NVFP4 global
  /// scale).
  bool reads_scale() const { return kind == QuantKind::kFp8PerTensor || kind == QuantKind::kNvfp4; }
  /// Dynamic FP8 kinds accept an optional scale upper bound.
  bool accepts_scale_ub() const {
    return kind == QuantKind::kFp8PerToken || kind == QuantKind::kFp8PerGroup;
  }

  /// Checks that the fields form a kind of SPEC §0.2 (and that the engine rule is one it has).
  Status validate() const;
  bool operator==(const QuantSpec& o) const {
    return kind == o.kind && group_size == o.group_size && layout == o.layout &&
           format == o.format && rule == o.rule;
  }
  bool operator!=(const QuantSpec& o) const { return !(*this == o); }
};

/// What writing `spec` needs of a producer: the scope of a scale and, for group scope, the columns
/// of a group (16, 64 or 128). Capability rows are derived from it (capabilities.h).
struct QuantNeeds {
  ScaleScope scope = ScaleScope::kNone;
  int group_cols = 0;
};
QuantNeeds quant_needs(const QuantSpec& spec);
/// Whether a producer that sees `cols` columns of an output row starting at column `col0` of
/// `out_cols` can write `spec`: a group must lie inside (cols and col0 multiples of g), a row
/// scale needs the whole row (col0 == 0, cols >= out_cols). The quantizer adapters' rule.
bool sees_whole_scale_units(const QuantSpec& spec, int64_t cols, int64_t col0, int64_t out_cols);

/// Stable string form (see the file comment).
std::string to_string(const QuantSpec& spec);
std::string_view to_string(QuantKind kind);
std::string_view to_string(ScaleLayout layout);
std::string_view to_string(ScaleFormat format);
std::string_view to_string(QuantRule rule);
/// Parses the form to_string() writes. Errors name the text and the accepted forms.
Status parse_quant_spec(std::string_view text, QuantSpec* out);
/// Every valid spec with qfuse's own rule (QuantRule::kNative), in a stable order (for capability
/// tables, tests and `qfuse info`).
std::vector<QuantSpec> all_quant_specs();
/// Every valid spec with the reference engine's rule: the specs of all_quant_specs() that
/// has_engine_rule(), in that order, with QuantRule::kEngine.
std::vector<QuantSpec> engine_quant_specs();

/// The storage form of a scale buffer for `spec` on an output of [rows, cols] values.
struct ScaleShape {
  DType dtype = DType::kF32;
  int rank = 0;  // 0: no scale buffer
  int64_t sizes[3] = {0, 0, 0};
  int64_t num_groups = 0;   // scales per row that carry data (G, or cols/16 for NVFP4)
  int64_t padded_rows = 0;  // rows the buffer covers, padding included
};
Status scale_shape(const QuantSpec& spec, int64_t rows, int64_t cols, ScaleShape* out);
namespace detail {
/// scale_shape() of a spec the caller has already validated (QuantSpec::validate()).
Status scale_shape_valid(const QuantSpec& spec, int64_t rows, int64_t cols, ScaleShape* out);
}  // namespace detail

/// The output dtype a quantized op writes for `spec` (kNone: caller's choice, returns nullopt).
std::optional<DType> quantized_dtype(const QuantSpec& spec);

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
inline int64_t round_up(int64_t a, int64_t b) {
  return ceil_div(a, b) * b;
}

}  // namespace qfuse
