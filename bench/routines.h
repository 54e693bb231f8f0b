// The helpers the families' benchmark routines (bench/<family>/) and `qfuse demo` share.
#pragma once

#include <cstdint>

#include "bench/harness.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::bench {

/// Registers every family's routines, suites, bench ops and demo sections (bench/family.h);
/// later calls do nothing.
void register_all_routines();

/// Bytes of the values and of the scale buffer (padding included, scale_shape()) that an op
/// writes for `spec` on an output of [T, H] values. `spec` must not be none.
Status quant_output_bytes(const QuantSpec& spec, int64_t T, int64_t H, int64_t* value_bytes,
                          int64_t* scale_bytes);

/// Caller-owned device buffers of one quantized output of [T, H] values, and the QuantOutput
/// viewing them.
struct QuantBuffers {
  DeviceBuffer out;
  DeviceBuffer scales;
  QuantOutput q;
};

/// Allocates (and zeroes) the buffers of `spec` for [T, H]; `given_scale` is the device fp32 that
/// per-tensor and NVFP4 specs read (it may be null for the others).
Status make_quant_buffers(const QuantSpec& spec, int64_t T, int64_t H, const float* given_scale,
                          QuantBuffers* b);

/// The given scale the benchmarks use for `spec`: 0.05 for per-tensor FP8, 448 * 6 / 8 as the
/// NVFP4 global scale, 1 otherwise (unused).
float bench_given_scale(const QuantSpec& spec);

}  // namespace qfuse::bench
