// Division by a run-time constant with a multiply-high and a shift (Granlund-Montgomery): the
// row-wise kernels split a task index into (row, segment) once per chunk, and a plain 32-bit
// division there is ~20 instructions (I2F, MUFU.RCP, F2I, IMADs and fix-ups) on the path to the
// task's first load.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define QFUSE_FD_HD __host__ __device__ __forceinline__
#else
#define QFUSE_FD_HD inline
#endif

namespace qfuse {

/// n / d for every n < 2^30 (the row-wise launcher's bound on task indices) and d < 2^31. With
/// l = ceil(log2 d), p = 30 + l and m = ceil(2^p / d) <= 2^31, floor(n * m / 2^p) is exact since
/// m * d - 2^p < d <= 2^(p - 30). Computed as the high word of (4 n) * m shifted right by l:
/// 32-bit operations only (a 64-bit product cost the streaming kernels registers they spilled).
struct FastDiv {
  uint32_t d = 1, mul = 1u << 30, shift = 0;

  static FastDiv make(uint32_t divisor) {
    FastDiv f;
    f.d = divisor < 1 ? 1 : divisor;
    uint32_t l = 0;
    while ((uint64_t{1} << l) < f.d) ++l;
    f.shift = l;
    f.mul = static_cast<uint32_t>(((uint64_t{1} << (30 + l)) + f.d - 1) / f.d);
    return f;
  }
  QFUSE_FD_HD uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    return __umulhi(n << 2, mul) >> shift;
#else
    return static_cast<uint32_t>((static_cast<uint64_t>(n << 2) * mul) >> 32) >> shift;
#endif
  }
};

}  // namespace qfuse
