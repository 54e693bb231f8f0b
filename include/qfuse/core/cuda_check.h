// CUDA error checking that turns a failed call or launch into a Status.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "qfuse/core/status.h"

namespace qfuse {

inline Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return Status(StatusCode::kCudaError, std::string(what) + ": " + cudaGetErrorName(err) + " (" +
                                            cudaGetErrorString(err) + ")");
}

}  // namespace qfuse

/// Returns a kCudaError Status from the enclosing function if the call fails.
#define QFUSE_CUDA_RETURN(call) QFUSE_RETURN_IF_ERROR(::qfuse::cuda_status((call), #call))
/// Checks the last error after a kernel launch.
#define QFUSE_CHECK_LAUNCH(name) \
  QFUSE_RETURN_IF_ERROR(::qfuse::cuda_status(cudaGetLastError(), name))
