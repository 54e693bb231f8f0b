// `qfuse demo`: every registered family's demo section (bench/<family>/demo.cpp): its fused and
// unfused paths on realistic shapes, each checked against the fp64 host reference, with a simple
// timing. Without a GPU each family runs its host reference on a small shape and shows what it
// writes. Accuracy rules: bench/demo_kit.h.
#include <cstdio>
#include <exception>

#include "bench/demo_kit.h"
#include "bench/family.h"
#include "cli/commands.h"
#include "qfuse/core/arch.h"

namespace qfuse::cli {
namespace {

int run_gpu(const DemoOptions& opt) {
  DeviceInfo d;
  DEMO_CHECK(current_device_info(&d));
  DEMO_CHECK(bench::check_kernel_image());
  std::printf("qfuse demo on %s (sm_%d%d, %d SMs)\n", d.name.c_str(), d.cc_major, d.cc_minor,
              d.sm_count);
  std::printf(
      "accuracy: first and last 16 rows vs the fp64 host reference; max err in steps of "
      "the output format (<= 1 passes); timing: mean of %d calls after a warm-up "
      "(`qfuse bench` for real numbers)\n",
      opt.reps);
  bool ok = true;
  for (const bench::DemoSection& s : bench::demo_sections())
    if (s.gpu) ok = s.gpu(opt.reps) && ok;
  std::printf("\n%s\n", ok ? "all accuracy checks passed" : "ACCURACY CHECK FAILED");
  return ok ? 0 : 1;
}

int run_host() {
  std::printf("no CUDA device: running the host reference path on small shapes\n");
  bool ok = true;
  for (const bench::DemoSection& s : bench::demo_sections())
    if (s.host) ok = s.host() && ok;
  return ok ? 0 : 1;
}

}  // namespace

int run_demo(const DemoOptions& opt) {
  try {
    return gpu_available() ? run_gpu(opt) : run_host();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qfuse demo: %s\n", e.what());
    return 1;
  }
}

}  // namespace qfuse::cli
