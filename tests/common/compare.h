// Comparators for quantized outputs (docs/tolerances.md).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "qfuse/core/status.h"

namespace qfuse::test {

/// Spacing of E4M3 values at magnitude |r| (the "one FP8 step" of SPEC §0.4).
double fp8_step(double r);

/// Checks a device E4M3 code against an exact value r (in scaled units, i.e. y / scale):
/// NaN r needs a NaN code; |r| >= 448 needs +-448; otherwise |decode(code) - r| <= one step.
bool fp8_code_near(uint8_t code, double r);

/// Relative difference of two fp32 scales in units of fp32 ulps (NaN == NaN counts as 0).
double ulp_distance(float a, float b);

/// The status is kInvalidArgument, names argument `arg`, and (if given) contains `also`.
void expect_invalid_argument(const Status& st, const std::string& arg,
                             const std::string& also = "");

/// First `max_report` mismatches, for assertion messages.
struct Mismatches {
  int64_t count = 0;
  std::string report;
  void add(const std::string& line, int max_report = 8) {
    if (count++ < max_report) report += line + "\n";
  }
};

}  // namespace qfuse::test
