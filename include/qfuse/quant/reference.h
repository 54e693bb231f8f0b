// Host references of the quantizers: the rules of rules.h applied in fp32 on the host, writing
// byte-for-byte the buffers a device op writes (codes, scales in their layout, padding zeroed).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "qfuse/core/dtype.h"
#include "qfuse/core/status.h"
#include "qfuse/quant/kind.h"

namespace qfuse::ref {

/// Software fp32 -> E4M3 (e4m3fn): clamp to +-448, round to nearest even, saturating; NaN -> 0x7F.
uint8_t e4m3_encode(float x);
/// fp32 -> bf16 / fp16 bits, round to nearest even (NaN stays NaN).
uint16_t bf16_bits(float x);
uint16_t f16_bits(float x);
float bf16_value(uint16_t bits);
float f16_value(uint16_t bits);

/// Host buffers with the exact byte layout of a device op's outputs.
struct QuantResult {
  Status status = Status::Ok();  // an invalid spec or shape: the error, and nothing else is set
  std::vector<uint8_t> out;      // values: e4m3 bytes, packed e2m1 bytes, or float bits (kNone)
  std::vector<uint8_t> scales;   // scale buffer bytes, storage form of scale_shape()
  DType out_dtype = DType::kE4M3;
};

/// Parameters a quantizer reads from the device in the real op, given here as values.
struct RefScalars {
  float scale = 1.0f;               // per-tensor scale / NVFP4 global scale
  float scale_ub = INFINITY;        // dynamic FP8 upper bound (+inf: none)
  DType none_dtype = DType::kBF16;  // output dtype for QuantKind::kNone
  float eps = 0.0f;                 // QuantOutput::eps (engine-rule per-group FP8)
  // The engine rule's rcp.approx.ftz (NVFP4): empty for the host model of rules::RcpApproxFtz
  // (the correctly rounded reciprocal); GPU tests pass the device's own results.
  std::function<float(float)> rcp_approx;
};

/// Quantizes the fp32 matrix y [rows, cols] (row-major, contiguous) as the device op would. An
/// invalid spec or shape is reported in the result's status (never thrown).
QuantResult quantize(const float* y, int64_t rows, int64_t cols, const QuantSpec& spec,
                     const RefScalars& scalars);

/// Offset of scale (row, group) in the storage form (elements of the scale dtype).
int64_t scale_offset(const QuantSpec& spec, const ScaleShape& shape, int64_t row, int64_t group);

}  // namespace qfuse::ref
