#include "core/tma.h"

#include <cudaTypedefs.h>
#include <cuda_runtime_api.h>

#include <string>

namespace qfuse::detail {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

}  // namespace

Status encode_tma_3d(CUtensorMap* map, CUtensorMapDataType type, void* base,
                     const cuuint64_t (&dims)[3], const cuuint64_t (&strides)[2],
                     const cuuint32_t (&box)[3], CUtensorMapSwizzle swizzle, const char* what) {
  const auto fn = encode_fn();
  if (fn == nullptr)
    return Status(StatusCode::kCudaError,
                  "cuTensorMapEncodeTiled is not available from the driver");
  const cuuint32_t elem[3] = {1, 1, 1};
  const CUresult r =
      fn(map, type, 3, base, dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
         CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return Status(StatusCode::kCudaError,
                  std::string("cuTensorMapEncodeTiled(") + what + ") failed: " + std::to_string(r));
  return Status::Ok();
}

}  // namespace qfuse::detail
