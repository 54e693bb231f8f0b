#include "qfuse/core/arch.h"

#include <cuda_runtime_api.h>

#include <array>
#include <mutex>

#include "qfuse/core/cuda_check.h"

namespace qfuse {

bool gpu_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return n > 0;
}

Status current_device_info(DeviceInfo* info) {
  static std::mutex mu;
  static std::array<DeviceInfo, 64> cache;
  int dev = 0;
  QFUSE_CUDA_RETURN(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if (dev < 0 || dev >= static_cast<int>(cache.size()))
    return Status(StatusCode::kInternal, "device index out of range");
  if (cache[dev].device != dev) {
    cudaDeviceProp p{};
    QFUSE_CUDA_RETURN(cudaGetDeviceProperties(&p, dev));
    DeviceInfo d;
    d.device = dev;
    d.name = p.name;
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.sm_count = p.multiProcessorCount;
    d.l2_bytes = p.l2CacheSize;
    d.max_threads_per_sm = p.maxThreadsPerMultiProcessor;
    d.has_fp8_convert = p.major * 10 + p.minor >= 89;
    cache[dev] = d;
  }
  *info = cache[dev];
  return Status::Ok();
}

}  // namespace qfuse
