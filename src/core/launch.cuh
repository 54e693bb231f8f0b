// Kernel launch with the library's launch policy (qfuse/core/launch.h) and the device side of
// programmatic dependent launch.
#pragma once

#include <cuda_runtime.h>

#include "qfuse/core/cuda_check.h"
#include "qfuse/core/launch.h"

namespace qfuse {

/// First thing every qfuse kernel does: wait for the previous kernel in the stream (a no-op
/// without PDL), then allow the next one to be scheduled.
__device__ __forceinline__ void pdl_begin() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/// Launches `kernel` with PDL when enabled; checks the launch.
template <class... Params, class... Args>
Status launch_kernel(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block,
                     size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  QFUSE_RETURN_IF_ERROR(
      cuda_status(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), name));
  return cuda_status(cudaGetLastError(), name);
}

}  // namespace qfuse
