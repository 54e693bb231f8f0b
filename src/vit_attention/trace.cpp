// The opt-in timeline's host side (trace.h): empty unless built with QFUSE_VIT_TRACE.
#include "vit_attention/trace.h"

#ifdef QFUSE_VIT_TRACE
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace qfuse::vit::trace {
namespace {

constexpr size_t kWords = size_t{kBlocks} * kStride;
uint64_t* g_buffer = nullptr;

/// At exit: the last call's words into $QFUSE_VIT_TRACE_OUT (the runtime is still up: its own
/// exit handler was registered before this one, at the process's first CUDA call).
void dump() {
  const char* env = std::getenv("QFUSE_VIT_TRACE_OUT");
  const char* path = env != nullptr && *env != '\0' ? env : "/tmp/qfuse_vit_trace.bin";
  std::vector<uint64_t> host(kWords);
  if (cudaDeviceSynchronize() != cudaSuccess ||
      cudaMemcpy(host.data(), g_buffer, kWords * 8, cudaMemcpyDeviceToHost) != cudaSuccess) {
    std::fprintf(stderr, "qfuse vit trace: could not read the device buffer\n");
    return;
  }
  FILE* f = std::fopen(path, "wb");
  if (f == nullptr || std::fwrite(host.data(), 8, kWords, f) != kWords)
    std::fprintf(stderr, "qfuse vit trace: could not write %s\n", path);
  if (f != nullptr) std::fclose(f);
}

}  // namespace

uint64_t* buffer() {
  static uint64_t* const buf = [] {
    if (cudaMalloc(reinterpret_cast<void**>(&g_buffer), kWords * 8) != cudaSuccess ||
        cudaMemset(g_buffer, 0, kWords * 8) != cudaSuccess) {
      std::fprintf(stderr, "qfuse vit trace: no device buffer\n");
      g_buffer = nullptr;
      return g_buffer;
    }
    std::atexit(dump);
    return g_buffer;
  }();
  return buf;
}

}  // namespace qfuse::vit::trace
#endif
