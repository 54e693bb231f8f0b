// What `qfuse demo` sections share (bench/<family>/demo.cpp): the accuracy check of a quantized
// output against the fp64 reference, buffers, timing and the table layout.
//
// Accuracy (SPEC §0.4): the reference is ref::silu_and_mul / ref::merge_states in fp64, rounded
// to fp32 and written by ref::quantize. For each value, v = y / scale (FP8) or y * out_scale
// (NVFP4) with the scale the device wrote, saturated to the format's range; the error is |code
// value - v| in steps of the format at |v| and must be <= 1 step. Scales: fp32 within 8 ulps
// (merge: 64) of the reference for the fused path; the unfused path quantizes bf16(y), so its fp32
// scales may differ by 2^-8 relative and power-of-two scales by a factor of 2. NVFP4 block scales
// may differ by one E4M3 code.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "bench/routines.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/quant/kind.h"
#include "qfuse/quant/quantize.h"

// Inside demo sections a failed call ends the demo with its message (caught by `qfuse demo`).
#define DEMO_CHECK(expr)                                                        \
  do {                                                                          \
    const ::qfuse::Status demo_status_ = (expr);                                \
    if (!demo_status_.ok()) throw std::runtime_error(demo_status_.to_string()); \
  } while (0)
#define DEMO_CUDA(call) DEMO_CHECK(::qfuse::cuda_status((call), #call))

namespace qfuse::bench {

/// The specs every demo section shows.
extern const char* const kDemoSpecs[3];

/// Outputs of some rows of a T-row op: their codes and the whole scale buffer.
struct RowsOutput {
  std::vector<uint8_t> codes;       // rows x bytes per row
  std::vector<uint8_t> scales;      // the scale buffer, storage form of `shape`
  ScaleShape shape;                 // scale_shape() for the op's T rows
  std::vector<int64_t> scale_rows;  // row index in the scale buffer of each row of `codes`
};

struct Accuracy {
  int64_t values = 0, bad_values = 0, codes_differ = 0;
  int64_t scales = 0, bad_scales = 0, scales_differ = 0;
  double max_steps = 0.0;  // +inf when a value is NaN
  double max_abs_err = 0.0, sum_sq_err = 0.0, sum_sq_y = 0.0;
  bool ok() const { return bad_values == 0 && bad_scales == 0; }
};

float scale_at(const QuantSpec& spec, const RowsOutput& o, int64_t i, int64_t group);
uint8_t code_at(const QuantSpec& spec, const RowsOutput& o, int64_t i, int64_t c, int64_t H);
/// The factor that dequantizes code (i, c): x ~= code value * factor.
double dequant_factor(const QuantSpec& spec, const RowsOutput& o, int64_t i, int64_t c, int64_t H,
                      float given_scale);
/// Checks `dev` against the reference `ref` of the same rows; y holds those rows in fp64.
Accuracy check_rows(const QuantSpec& spec, const std::vector<double>& y, int64_t H,
                    const RowsOutput& dev, const RowsOutput& ref, float given_scale, bool fused,
                    double scale_ulps = 8.0);
/// Reference outputs of `rows` rows of y (fp64) for `spec`.
RowsOutput reference(const QuantSpec& spec, const std::vector<double>& y, int64_t rows, int64_t H,
                     float given_scale);
/// The given scale of the demo: the data's bound keeps NVFP4 block scales and per-tensor codes
/// inside their ranges.
float demo_given_scale(const QuantSpec& spec, double y_bound);
/// A bound of |silu(g) * u| for fill_random's inputs.
double y_bound();
/// "0.512" steps, or "NaN".
std::string steps(double s);

/// One demo case: an op writing [T, H] values, the fp64 reference of some of its rows, and the
/// fused and unfused ways of writing them through a QuantOutput.
struct DemoCase {
  int64_t T = 0, H = 0;
  std::vector<int64_t> rows;
  std::vector<double> y;    // rows.size() x H
  double y_bound = 0.0;     // bound of |y| (sets the given scales)
  double scale_ulps = 8.0;  // fused fp32 scales vs the reference
  std::function<void(const QuantOutput&)> fused, unfused;
};
/// Runs every demo spec of `dc` fused and unfused, prints a table; false when a check failed.
bool run_case(const DemoCase& dc, int reps);
/// The first and last 16 rows of T.
std::vector<int64_t> demo_rows(int64_t T);

}  // namespace qfuse::bench
