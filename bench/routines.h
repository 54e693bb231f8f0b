// Benchmark routines of each op family, and the helpers they (and `qfuse demo`) share.
#pragma once

#include <cstdint>

#include "bench/harness.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::bench {

/// Registers silu_mul_quant/<spec> (fused) and silu_and_mul+quantize/<spec> (its unfused peer),
/// quantize/<spec> for every spec the capability table (qfuse/quant/capabilities.h) declares,
/// silu_and_mul, and the suites issue2, quick and specs.
void register_act_quant_routines();

/// Registers merge_states/<spec> (fused, stacked partials), merge_states+quantize/<spec> (its
/// unfused peer), merge_states (bf16 out) and the suite issue3. Shape keys N, T, H, D.
void register_merge_routines();

/// Registers mla_decode/<cache>[:whole|:simple], mla_decode_mixed/<cache>, mla_decode_even/<cache>,
/// read_only and the suite mla_decode (issue 13). Shape keys B, S, N, SQ, BS (read_only: MB).
void register_mla_decode_routines();

/// Registers every family's routines and suites; later calls do nothing.
inline void register_all_routines() {
  static const bool once = [] {
    register_act_quant_routines();
    register_merge_routines();
    register_mla_decode_routines();  // mla_decode family (issue 13)
    return true;
  }();
  (void)once;
}

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
