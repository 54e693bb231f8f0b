#include "qfuse/core/dtype.h"

#include <array>
#include <utility>

namespace qfuse {
namespace {
constexpr std::array<std::pair<DType, std::string_view>, 9> kNames = {{
    {DType::kBF16, "bf16"},
    {DType::kF16, "fp16"},
    {DType::kF32, "fp32"},
    {DType::kE4M3, "e4m3"},
    {DType::kE2M1x2, "e2m1x2"},
    {DType::kUE8M0, "ue8m0"},
    {DType::kI32, "i32"},
    {DType::kU8, "u8"},
    {DType::kI64, "i64"},
}};
}  // namespace

std::string_view to_string(DType t) {
  for (const auto& [d, n] : kNames)
    if (d == t) return n;
  return "unknown";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& [d, n] : kNames)
    if (n == name) return d;
  return std::nullopt;
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
    case DType::kE4M3:
    case DType::kE2M1x2:
    case DType::kUE8M0:
    case DType::kU8:
      return 1;
  }
  return 0;
}

}  // namespace qfuse
