// Device output buffers for any QuantSpec and the comparator every GPU test of a quantizing op
// uses (docs/tolerances.md):
//   exact mode  (standalone quant ops): the device's codes and scales equal, byte for byte, the
//               host reference applied to the same fp32 inputs.
//   fused mode  (ops that compute their values, e.g. silu): scales within a few fp32 ulps of the
//               reference computed from the fp64 values, and every code within one FP8 (or
//               E2M1) step of y / scale_device (SPEC §0.4); bf16/fp16 outputs within one ulp.
// Both modes check that the scale-buffer padding is zero and that bytes between rows of a
// strided output are untouched.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "common/gpu.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::test {

struct DeviceQuantOutput {
  QuantSpec spec;
  int64_t rows = 0, cols = 0;
  int64_t out_ld = 0;  // row stride of out, storage units
  DType out_dtype = DType::kE4M3;
  ScaleShape shape;
  DeviceBuffer out, scales, scale, scale_ub;
  bool has_ub = false;

  /// Allocates and poisons. `scale_value` is the per-tensor / NVFP4 global scale; `ub` an
  /// optional scale upper bound; `row_pad` extra storage units per output row.
  static DeviceQuantOutput make(const QuantSpec& spec, int64_t rows, int64_t cols, DType none_dtype,
                                float scale_value, std::optional<float> ub = std::nullopt,
                                int64_t row_pad = 0);
  QuantOutput view() const;
  void poison();
};

struct CheckOptions {
  bool exact = true;
  float scale_value = 1.0f;  // same as given to make()
  float scale_ub = INFINITY;
  DType none_dtype = DType::kBF16;
  std::vector<int64_t> rows;  // rows to compare (empty: all)
  double scale_ulps = 8.0;    // fused mode: scale tolerance in fp32 ulps
  // Fused mode, plain outputs: extra tolerance on top of the ulps (sums computed in fp32 can
  // cancel, so their error is relative to the terms, not to the result).
  double abs_tol = 0.0;
  double rel_tol = 0.0;
  // The engine rule (exact mode): QuantOutput::eps, and the device's rcp.approx.ftz for NVFP4
  // (common/engine_device.h; empty: the host model).
  float eps = 0.0f;
  std::function<float(float)> rcp_approx;
};

/// y: the exact values [rows, cols] row-major (fp64; in exact mode they must be fp32 values).
::testing::AssertionResult check_quant_output(const DeviceQuantOutput& d,
                                              const std::vector<double>& y,
                                              const CheckOptions& opt);

/// Rows to compare for a [rows, cols] problem: all when small, else a random sample with the
/// first 8 rows (where tests put special values) and the last.
std::vector<int64_t> sample_rows(int64_t rows, int64_t cols, uint64_t seed);

}  // namespace qfuse::test
