// Where scale (row, group) lives in a scale buffer, for every layout of SPEC §0.2.
//
// Affine layouts: offset = row * a + (group / 4) * b + (group % 4) * c, in elements of the scale
// dtype (fp32 or bytes). This one form covers row-major, column-major (plain and TMA-aligned) and
// the packed UE8M0 layouts (4 exponent bytes per 32-bit word along the groups, docs/formats.md).
// The NVFP4 128x4 swizzle has its own formula (rules::nvfp4_swizzled_offset).
// Used by the device policies and the host references alike.
#pragma once

#include <cstdint>

#include "qfuse/quant/kind.h"
#include "qfuse/quant/rules.h"

namespace qfuse {

struct ScaleAddr {
  int64_t a = 0, b = 0, c = 0;
  int64_t num_k_tiles = 0;    // > 0: NVFP4 swizzled layout
  int64_t rows = 0;           // rows that carry data
  int64_t groups = 0;         // groups per row that carry data
  int64_t padded_rows = 0;    // rows the buffer covers (>= rows)
  int64_t padded_groups = 0;  // groups per row the buffer covers (>= groups)
  int elem_bytes = 4;

  QFUSE_HD int64_t offset(int64_t row, int64_t group) const {
    return row_offset(row) + group_offset(group);
  }
  /// The parts of offset() that depend on the row and on the group alone (a lane with groups of
  /// one row computes the row's part once).
  /// NOTE: the swizzle (rules::nvfp4_swizzled_offset) in 32-bit pieces: row and group are
  /// non-negative and below 2^31, and the fields do not overlap (row: bits 2-8 and multiples of
  /// 512; group: bits 0-1 and multiples of 512), so the sum is the formula's; cheaper than its
  /// signed 64-bit divisions.
  QFUSE_HD int64_t row_offset(int64_t row) const {
    if (num_k_tiles > 0) {
      const uint32_t m = static_cast<uint32_t>(row);
      return static_cast<int64_t>(m >> 7) * (num_k_tiles * 512) +
             static_cast<int64_t>(((m & 31u) << 4) | (((m >> 5) & 3u) << 2));
    }
    return row * a;
  }
  QFUSE_HD int64_t group_offset(int64_t group) const {
    if (num_k_tiles > 0) {
      const uint32_t k = static_cast<uint32_t>(group);
      return static_cast<int64_t>(((k >> 2) << 9) | (k & 3u));
    }
    return (group >> 2) * b + (group & 3) * c;
  }

  /// Threads' work items that zero the padding (zero_scale_padding): padding rows x padded groups
  /// (in the NVFP4 swizzled layout: the 32 16-byte units of each k tile of the last row block)
  /// plus real rows x padding groups.
  QFUSE_HD int64_t padding_units() const {
    const int64_t row_units = padded_rows == rows ? 0
                              : num_k_tiles > 0   ? 32 * num_k_tiles
                                                  : (padded_rows - rows) * padded_groups;
    return row_units + rows * (padded_groups - groups);
  }

  /// Host: the addressing of `spec`'s scale buffer for `rows` rows of `shape.num_groups` groups.
  static ScaleAddr make(const QuantSpec& spec, const ScaleShape& shape, int64_t rows) {
    ScaleAddr s;
    s.rows = rows;
    s.groups = shape.num_groups;
    s.padded_rows = shape.padded_rows;
    s.padded_groups = shape.num_groups;
    s.elem_bytes = shape.dtype == DType::kF32 ? 4 : 1;
    const int64_t ld = shape.padded_rows;
    switch (spec.kind) {
      case QuantKind::kFp8PerToken:
        s.a = 1;
        break;
      case QuantKind::kFp8PerGroup:
        if (spec.format == ScaleFormat::kUe8m0Packed) {
          s.padded_groups = round_up(shape.num_groups, 4);
          if (spec.layout == ScaleLayout::kRowMajor) {
            s.a = s.padded_groups, s.b = 4, s.c = 1;
          } else {
            s.a = 4, s.b = 4 * ld, s.c = 1;
          }
        } else if (spec.layout == ScaleLayout::kRowMajor) {
          s.a = shape.num_groups, s.b = 4, s.c = 1;
        } else {
          s.a = 1, s.b = 4 * ld, s.c = ld;
        }
        break;
      case QuantKind::kNvfp4:
        if (spec.layout == ScaleLayout::kNvfp4Swizzled) {
          s.padded_groups = shape.sizes[1];
          s.num_k_tiles = shape.sizes[1] / 4;
        } else {
          s.a = shape.num_groups, s.b = 4, s.c = 1;
        }
        break;
      default:
        break;
    }
    return s;
  }
};

}  // namespace qfuse
