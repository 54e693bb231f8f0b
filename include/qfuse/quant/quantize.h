// Standalone quantization ops (also the unfused baselines of every fused kernel).
//
//   quantize(x [T, H] bf16|fp16|fp32, out) writes x in the output form `out.spec` describes:
//     fp8_per_tensor   out.out [T, H] e4m3, out.scale = device fp32 (given)
//     fp8_per_token    out.out [T, H] e4m3, out.scales [T] fp32 (computed)
//     fp8_groupG:*     out.out [T, H] e4m3, out.scales in the spec's layout (computed)
//     nvfp4:*          out.out [T, H/2] e2m1x2, out.scales e4m3 block scales (computed),
//                      out.scale = device fp32 global scale (given)
//     none             out.out [T, H] bf16|fp16|fp32 (a cast)
// Shapes of the scale buffers: scale_shape() in kind.h and docs/formats.md.
#pragma once

#include <cuda_runtime_api.h>

#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "qfuse/quant/kind.h"

namespace qfuse {

/// Where and how an op writes its (possibly quantized) output. Caller-owned device memory.
struct QuantOutput {
  QuantSpec spec;
  TensorRef out;                    // values: [T, H] (e4m3 / float) or [T, H/2] (e2m1x2)
  TensorRef scales;                 // computed scales (per-token, per-group, NVFP4); else empty
  const float* scale = nullptr;     // device fp32: static per-tensor scale or NVFP4 global scale
  const float* scale_ub = nullptr;  // device fp32, optional: upper bound of dynamic FP8 scales
  // Per-group FP8 with the engine rule only (QuantRule::kEngine), else 0: the floor of a group's
  // amax, s = max(amax, eps) / 448, which then replaces the scale floor 1 / (448 * 512) (the
  // reference engine's per_token_group_fp8_quant and its `eps`; no scale_ub with it). 0: no amax
  // floor, the scale floor applies (its silu_and_mul_per_block_quant). A host value: a constant
  // of the op.
  float eps = 0.0f;
};

/// Validates `q` for an output of [rows, cols] values (SPEC §7); `name` prefixes argument names.
/// Checks only what needs no device; device pointers are checked by check_device_pointers().
Status validate_quant_output(const QuantOutput& q, int64_t rows, int64_t cols);

/// Quantizes x. Validates every argument first; on error nothing is written. T = 0 is a no-op.
Status quantize(const TensorRef& x, const QuantOutput& out, cudaStream_t stream);

/// Dynamic per-tensor FP8 (the reference engine's dynamic `scaled_fp8_quant`, SPEC §9): computes
///   scale = max(amax / 448, FLT_MIN) in fp32, amax = max |x| over the whole tensor (NaN if any
///   value is NaN), writes it to `scale` (device fp32), then quantizes as fp8_per_tensor with it
///   (out [T, H] e4m3 = e4m3(x * (1 / scale))).
/// Not a QuantSpec kind: no single producer kernel can write it (its scale needs the whole tensor
/// before the first value is stored), so it runs as three launches on `stream` (zero the scale, a
/// grid-wide amax with atomics, the static quantizer reading the scale), capturable in a CUDA
/// graph. Validates every argument first; on error nothing is written. T = 0 is a no-op (the
/// scale is not written).
Status quantize_fp8_dynamic_per_tensor(const TensorRef& x, const TensorRef& out, float* scale,
                                       cudaStream_t stream);

}  // namespace qfuse
