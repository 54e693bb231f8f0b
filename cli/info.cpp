// `qfuse info`: the device, the build and which quantization specs each op supports.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "cli/commands.h"
#include "qfuse/core/arch.h"
#include "qfuse/graph/config.h"
#include "qfuse/quant/capabilities.h"
#include "qfuse/quant/kind.h"

namespace qfuse::cli {
namespace {

std::string version_string(int v) {
  return v <= 0 ? "none" : std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

void print_device() {
  int driver = 0, runtime = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = 0;
  cudaGetLastError();
  std::printf(
      "build:   CUDA %s, kernels for %s (arch-specific 'a' variants as configured in "
      "QFUSE_CUDA_ARCHS)\n",
      bench::build_cuda_version().c_str(), bench::build_cuda_archs().c_str());
  std::printf("runtime: CUDA runtime %s, driver %s\n", version_string(runtime).c_str(),
              version_string(driver).c_str());
  if (!gpu_available()) {
    std::printf("device:  no CUDA device\n");
    return;
  }
  DeviceInfo d;
  const Status st = current_device_info(&d);
  if (!st.ok()) {
    std::printf("device:  error: %s\n", st.to_string().c_str());
    return;
  }
  std::printf("device:  %d: %s, sm_%d%d, %d SMs, L2 %.0f MiB, FP8 convert %s\n", d.device,
              d.name.c_str(), d.cc_major, d.cc_minor, d.sm_count, d.l2_bytes / 1048576.0,
              d.has_fp8_convert ? "yes" : "no");
  const Status img = bench::check_kernel_image();
  std::printf("kernels: %s\n", img.ok() ? "this build runs on the device" : img.message().c_str());
}

void print_capabilities() {
  // NOTE: the library's capability table (qfuse/quant/capabilities.h) is the one source: the
  // dispatchers and the fusion pass read the same table.
  const std::vector<OpCapability>& ops = op_capabilities();
  std::printf("\nfamilies (src/<family>/, registered by the build):\n");
  for (const FamilyInfo& f : registered_families())
    std::printf("  %-16s %s\n", f.name.c_str(), f.summary.c_str());
  const std::vector<graph::AttentionBackend>& backends = graph::attention_backends();
  std::printf("\nattention backends (config key attention_backend): %s\n",
              backends.empty() ? "none registered" : "");
  for (const graph::AttentionBackend& b : backends) {
    std::string dtypes;
    for (const std::string& d : b.cache_dtypes) dtypes += (dtypes.empty() ? "" : "|") + d;
    std::printf("  %-16s cache %-24s %s\n", b.name.c_str(), dtypes.c_str(), b.summary.c_str());
  }
  std::printf("\nops:\n");
  for (const OpCapability& op : ops) {
    std::string dtypes;
    for (DType d : op.input_dtypes)
      dtypes += (dtypes.empty() ? "" : "|") + std::string(to_string(d));
    std::printf("  %-16s in %-15s %s\n", std::string(op.op).c_str(), dtypes.c_str(),
                std::string(op.summary).c_str());
  }
  std::printf(
      "\nquantization specs per op (yes: writes the spec; plain: the unquantized output; "
      "-: unsupported)\n");
  const std::vector<QuantSpec> specs = all_quant_specs();
  size_t spec_w = 4;
  for (const QuantSpec& s : specs) spec_w = std::max(spec_w, to_string(s).size());
  std::string line = "  spec" + std::string(spec_w - 4, ' ');
  for (const OpCapability& op : ops) line += "  " + std::string(op.op);
  std::printf("%s\n", line.c_str());
  for (const QuantSpec& s : specs) {
    const std::string name = to_string(s);
    line = "  " + name + std::string(spec_w - name.size(), ' ');
    for (const OpCapability& op : ops) {
      const bool yes = fused_output_quant_supported(op.op, s);
      const std::string mark = !yes ? "-" : s.kind == QuantKind::kNone ? "plain" : "yes";
      line += "  " + mark + std::string(std::max(op.op.size(), mark.size()) - mark.size(), ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

}  // namespace

int run_info() {
  std::printf("qfuse: quantized-output fused kernels for LLM inference (Hopper, sm_90a)\n");
  print_device();
  print_capabilities();
  return 0;
}

}  // namespace qfuse::cli
