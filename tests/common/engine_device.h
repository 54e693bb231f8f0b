// The device's own results of the approximate instructions the engine rule executes (rules.h:
// rcp.approx.ftz in NVFP4, ex2.approx.ftz inside the engine's expf), for host references that
// must match the device bit for bit (ref::RefScalars::rcp_approx, ref::silu_and_mul_engine).
// Each function is computed on the device once per distinct argument and cached; GPU tests only.
#pragma once

#include <functional>
#include <vector>

#include "qfuse/core/dtype.h"

namespace qfuse::test {

/// rules::RcpApproxFtz{}(x) and rules::Ex2ApproxFtz{}(x) on the device, for every x of xs.
std::vector<float> device_rcp_approx(const std::vector<float>& xs);
std::vector<float> device_ex2_approx(const std::vector<float>& xs);

/// The device's rcp.approx.ftz as a function (one launch per new argument).
std::function<float(float)> device_rcp_hook();
/// The device's ex2.approx.ftz as a function, its values for the gates of `dtype` (all 65536 bit
/// patterns, as rules::engine_sigmoid_den reduces them) fetched in one launch up front.
std::function<float(float)> device_ex2_hook(DType dtype);

}  // namespace qfuse::test
