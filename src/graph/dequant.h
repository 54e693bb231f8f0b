// Dequantization of FP8 GEMM operands to bf16 (the executor's fallback for FP8 scalings that its
// cuBLASLt path does not take: per-token, per-group, 128x128 blocks; docs/graph.md).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "qfuse/core/status.h"
#include "qfuse/quant/kind.h"

namespace qfuse::graph::detail {

enum class DequantMode { kPerTensor, kScaleBuffer, kBlock128 };

struct DequantArgs {
  const uint8_t* codes = nullptr;  // [rows, cols] e4m3, contiguous
  int64_t rows = 0, cols = 0;
  DequantMode mode = DequantMode::kPerTensor;
  const float* scale = nullptr;  // kPerTensor: one device fp32
  const void* scales =
      nullptr;  // kScaleBuffer: scales of `spec`; kBlock128: [ceil(rows/128), ceil(cols/128)] fp32
  QuantSpec spec;       // kScaleBuffer: per-token or per-group FP8
  void* out = nullptr;  // [rows, cols] bf16, contiguous
};

/// out = float(code) * scale, rounded to bf16. Capture-safe (one launch, no allocation).
Status dequant_fp8_to_bf16(const DequantArgs& a, cudaStream_t stream);

}  // namespace qfuse::graph::detail
