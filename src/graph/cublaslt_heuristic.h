// The one cuBLASLt heuristic query qfuse makes (the executor's GEMM setup, and the GPU test that
// probes the block-scaled modes through cuBLASLt directly).
#pragma once

#include <cublasLt.h>

#include <cstdint>

namespace qfuse::graph::detail {

/// cuBLASLt's first algorithm for `desc` with layouts a, b and c (c also D) within `workspace`
/// bytes; *found = 0 when there is none.
inline cublasStatus_t first_algo(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                 cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                 cublasLtMatrixLayout_t c, uint64_t workspace,
                                 cublasLtMatmulAlgo_t* algo, int* found) {
  *found = 0;
  cublasLtMatmulPreference_t pref = nullptr;
  cublasStatus_t s = cublasLtMatmulPreferenceCreate(&pref);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                           &workspace, sizeof workspace);
  cublasLtMatmulHeuristicResult_t result{};
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulAlgoGetHeuristic(handle, desc, a, b, c, c, pref, 1, &result, found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (s == CUBLAS_STATUS_SUCCESS && *found > 0) *algo = result.algo;
  return s;
}

}  // namespace qfuse::graph::detail
