// TensorRef: a non-owning view of device (or host) memory: pointer, dtype, sizes, int64 strides.
//
// Strides count storage units of `dtype` (see dtype.h for packed types). Rank is at most 4.
// A view built with more than kMaxRank sizes (or with as many strides as sizes missing) keeps the
// rank it was asked for, but only the first kMaxRank sizes: every entry point rejects its rank,
// and numel/describe/is_contiguous never read past the arrays.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "qfuse/core/dtype.h"

namespace qfuse {

struct TensorRef {
  static constexpr int kMaxRank = 4;

  void* data = nullptr;
  DType dtype = DType::kF32;
  int rank = 0;
  std::array<int64_t, kMaxRank> sizes{};
  std::array<int64_t, kMaxRank> strides{};

  /// A contiguous (row-major) view.
  static TensorRef contiguous(void* data, DType dtype, std::initializer_list<int64_t> sizes);
  /// An arbitrary strided view; `strides` has the same length as `sizes`.
  static TensorRef strided(void* data, DType dtype, std::initializer_list<int64_t> sizes,
                           std::initializer_list<int64_t> strides);

  bool empty_ref() const { return rank == 0 && data == nullptr; }
  int64_t size(int d) const { return sizes[d]; }
  int64_t stride(int d) const { return strides[d]; }
  /// Product of the sizes (0 for rank 0); saturates at INT64_MAX where it overflows. Entry
  /// points check sizes with check_sizes() (checked.h), which names the dimension.
  int64_t numel() const;
  bool is_contiguous() const;
  /// 0 <= rank <= kMaxRank.
  bool valid_rank() const { return rank >= 0 && rank <= kMaxRank; }
  /// "[4096, 7168] bf16 strides [14336, 1]"
  std::string describe() const;
  std::string shape_string() const;
};

}  // namespace qfuse
