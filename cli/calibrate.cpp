// `qfuse calibrate`: dynamic scaling of the ViT FP8 attention run over random inputs, written as
// the static scale file (bench/vit_attention/vit_tools.h, docs/vit_attention.md). The options are
// checked on the host first; only then is the device touched.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace qfuse::cli {

int run_calibrate(const bench::VitCalibrateOptions& opt) {
  bench::VitCalibratePlan plan;
  const Status checked = bench::plan_vit_calibrate(opt, &plan);
  if (!checked.ok()) {
    std::fprintf(stderr, "qfuse calibrate: %s\n", checked.message().c_str());
    return 1;
  }
  if (const Status dev = bench::check_vit_calibrate_device(); !dev.ok()) {
    std::fprintf(stderr, "qfuse calibrate: %s\n", dev.message().c_str());
    return dev.code() == StatusCode::kNotSupported ? 2 : 1;
  }
  std::printf(
      "qfuse calibrate: %zu layer(s), S=%lld H=%lld D=%lld (one image, random bf16 Q/K/V with "
      "distinct magnitudes per layer), %d forwards each, margin %g, seed %llu\n",
      plan.layers.size(), static_cast<long long>(plan.S), static_cast<long long>(plan.H),
      static_cast<long long>(plan.D), plan.forwards, plan.margin,
      static_cast<unsigned long long>(plan.seed));
  std::fflush(stdout);
  std::vector<bench::VitCalibrateRow> rows;
  const Status st = bench::run_vit_calibrate(plan, &rows);
  if (!st.ok()) {
    std::fprintf(
        stderr, "qfuse calibrate: %s\n",
        st.code() == StatusCode::kNotSupported ? st.message().c_str() : st.to_string().c_str());
    return st.code() == StatusCode::kNotSupported ? 2 : 1;
  }
  size_t w = 5;
  for (const bench::VitCalibrateRow& r : rows) w = std::max(w, r.layer.size());
  std::printf("\n%-*s  %8s  %-26s  %-32s  %-32s\n", static_cast<int>(w), "layer", "forwards",
              "input sigma q / k / v", "max amax q / k / v", "saved scale q / k / v (x margin)");
  for (const bench::VitCalibrateRow& r : rows) {
    char sigma[64], amax[64], saved[64];
    std::snprintf(sigma, sizeof sigma, "%.3g / %.3g / %.3g", r.sigma[0], r.sigma[1], r.sigma[2]);
    std::snprintf(amax, sizeof amax, "%.4g / %.4g / %.4g", r.amax[0], r.amax[1], r.amax[2]);
    std::snprintf(saved, sizeof saved, "%.5g / %.5g / %.5g", r.saved[0], r.saved[1], r.saved[2]);
    std::printf("%-*s  %8u  %-26s  %-32s  %-32s\n", static_cast<int>(w), r.layer.c_str(),
                r.forwards, sigma, amax, saved);
  }
  std::printf("\nwrote %s: %zu layer(s), scale = max(amax history) / 448 x %g\n", plan.out.c_str(),
              rows.size(), plan.margin);
  return 0;
}

}  // namespace qfuse::cli
