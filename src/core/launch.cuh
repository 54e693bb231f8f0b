// Kernel launch with the library's launch policy (qfuse/core/launch.h) and the device side of
// programmatic dependent launch.
#pragma once

#include <cuda_runtime.h>

#include "qfuse/core/cuda_check.h"
#include "qfuse/core/launch.h"

namespace qfuse {

/// Programmatic dependent launch, device side. pdl_wait() returns once the previous kernel in
/// the stream has completed and its writes are visible (at once without PDL, and at once when
/// called again); a kernel must not touch global memory before it. pdl_launch_dependents() lets
/// the next kernel be scheduled early (its own pdl_wait() still waits for this one to finish).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/// First thing most qfuse kernels do: wait for the previous kernel, then allow the next one to be
/// scheduled. (The streaming row-wise kernel waits later: rowwise.cuh.)
__device__ __forceinline__ void pdl_begin() {
  pdl_wait();
  pdl_launch_dependents();
}

/// What a producer's fetch / load calls before its first global access when the kernel has
/// already waited (every kernel but the streaming row-wise one): nothing.
struct NoWait {
  __device__ void operator()() const {}
};

/// Launches `kernel` with PDL when enabled and, where cluster_x > 1, in thread block clusters of
/// cluster_x blocks along x (grid.x a multiple of it); returns the launch's own error.
/// NOTE: not cudaGetLastError() afterwards: that would clear an error the caller left pending (and
/// report it as this launch's); cudaLaunchKernelEx returns what went wrong with this launch.
template <class... Params, class... Args>
Status launch_kernel_clustered(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block,
                               size_t smem, cudaStream_t stream, unsigned cluster_x,
                               Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (pdl_enabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_x > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster_x;
    attr[n].val.clusterDim.y = 1;
    attr[n++].val.clusterDim.z = 1;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  return cuda_status(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), name);
}

/// launch_kernel_clustered without clusters: PDL when enabled.
template <class... Params, class... Args>
Status launch_kernel(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block,
                     size_t smem, cudaStream_t stream, Args&&... args) {
  return launch_kernel_clustered(name, kernel, grid, block, smem, stream, 1u,
                                 std::forward<Args>(args)...);
}

}  // namespace qfuse
