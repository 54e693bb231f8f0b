// Element types qfuse reads and writes.
//
// A DType names the storage unit of a tensor. Packed types count storage units, not values:
// kE2M1x2 is one byte holding two E2M1 values (element 2k in the low nibble, 2k+1 in the high
// nibble), so an NVFP4 tensor of [T, H] values is a TensorRef of [T, H/2] kE2M1x2.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace qfuse {

enum class DType : uint8_t {
  kBF16,
  kF16,
  kF32,
  kE4M3,    // OCP FP8 e4m3fn
  kE2M1x2,  // two packed E2M1 values per byte
  kUE8M0,   // unsigned power-of-two exponent byte, value 2^(b - 127); 0xFF is NaN
  kI32,
  kU8,
  kI64,  // slot mappings (the MLA cache writer's)
};

/// Stable lower-case name ("bf16", "fp16", "fp32", "e4m3", "e2m1x2", "ue8m0", "i32", "u8",
/// "i64").
std::string_view to_string(DType t);
std::optional<DType> parse_dtype(std::string_view name);
/// Bytes per storage unit.
size_t dtype_size(DType t);

}  // namespace qfuse
