// The scale-factor layouts cuBLASLt reads in its Hopper block-scaled FP8 GEMM modes, how qfuse's
// scale buffers map onto them, and the repack of 128x128-block weight scales (GemmPath::
// kFp8Block128, docs/graph.md "GEMMs through cuBLASLt").
//
// cuBLAS documentation (12.9+), "128-element 1D and 128x128 2D block scaling for FP8 data types",
// for compute capability 9.0 only, all in terms of op(A) [M, K] and op(B) [K, N]:
// - modes per operand: CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F (one fp32 per row and 128 columns
//   along K) or ..._BLK128x128_32F (one fp32 per 128x128 block); A and B may differ, except that
//   both BLK128x128 is not supported; D is bf16, fp16 or fp32;
// - scale tensors start 16-byte aligned; M and N are multiples of 4;
// - VEC128: A's scales are M-major [M x L], B's N-major [N x L] (the row index contiguous),
//   L = ceil(K / 128);
// - BLK128x128: K-major (the K-block index contiguous), the stride between consecutive row blocks
//   a multiple of 4: [L4 x ceil(rows / 128)], L4 = round_up(L, 4).
// The executor's cuBLASLt A is the weight b [N, K] (BLK128x128), its B the activation a [M, K]
// (VEC128); see executor_device.cpp.
//
// NOTE: the two *_offset functions below are the only statement of those orders in qfuse. The GPU
// test GpuGemmBlock128.ProbeScaleLayouts asks cuBLASLt directly and prints what it reads; should
// it disagree, the fix is the one line of the function concerned (the in-place checks, the plan
// and the repack all follow from it).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "qfuse/core/status.h"
#include "qfuse/quant/scale_addr.h"

namespace qfuse::graph::detail {

/// Where cuBLASLt's BLK128x128_32F mode reads the scale of block (rb, kb) of a matrix of
/// `row_blocks` x `k_blocks` blocks, in fp32 elements from the scale pointer.
QFUSE_HD int64_t cublas_blk128_offset(int64_t rb, int64_t kb, int64_t row_blocks,
                                      int64_t k_blocks) {
  (void)row_blocks;
  return rb * ((k_blocks + 3) / 4 * 4) + kb;
}

/// Where cuBLASLt's VEC128_32F mode reads the scale of (row r, K block kb) of a matrix of `rows`
/// rows and `k_blocks` K blocks.
QFUSE_HD int64_t cublas_vec128_offset(int64_t r, int64_t kb, int64_t rows, int64_t k_blocks) {
  (void)k_blocks;
  return kb * rows + r;
}

/// Where qfuse's weight scales (gemm input 'b_scale', b_scaling block128) hold block (rb, kb):
/// row-major [ceil(N / 128), ceil(K / 128)] fp32 (DeepSeek-V3's `weight_scale_inv`).
QFUSE_HD int64_t qfuse_blk128_offset(int64_t rb, int64_t kb, int64_t row_blocks, int64_t k_blocks) {
  (void)row_blocks;
  return rb * k_blocks + kb;
}

/// Scale pointer set on a block-scaled descriptor while cuBLASLt's heuristic is asked (at
/// create(), before any buffer exists; run() sets the real pointers): measured on H100 with
/// cuBLASLt 13.0, the heuristic finds no algorithm for the VEC128 / BLK128x128 modes while the
/// pointers are unset (CUBLAS_STATUS_INVALID_VALUE) and one when they are set. The heuristic runs
/// on the host and never reads through it; it is non-null and 256-byte aligned.
inline const void* heuristic_scale_placeholder() {
  return reinterpret_cast<const void*>(uintptr_t{256});
}

/// fp32 elements of a BLK128x128 scale buffer as cuBLASLt reads it (padding included: its 16-byte
/// loads may cover the padding of the last row block).
inline int64_t cublas_blk128_elems(int64_t row_blocks, int64_t k_blocks) {
  if (row_blocks == 0 || k_blocks == 0) return 0;
  const int64_t last = cublas_blk128_offset(row_blocks - 1, k_blocks - 1, row_blocks, k_blocks);
  return (last + 1 + 3) / 4 * 4;
}

/// True when qfuse's weight-scale buffer already is cuBLASLt's BLK128x128 layout, so the executor
/// passes it as it is (with the documented order: ceil(K / 128) % 4 == 0); otherwise the executor
/// repacks it into the workspace on every run (repack_blk128_scales).
bool blk128_scales_in_place(int64_t row_blocks, int64_t k_blocks);

/// True when a per-group-128 scale buffer addressed by `addr` (rows x k_blocks scales, fp32) is
/// cuBLASLt's VEC128 layout: with the documented order, fp8_group128:col, and :col_tma where the
/// row count is a multiple of 4.
bool vec128_scales_in_place(const ScaleAddr& addr, int64_t rows, int64_t k_blocks);

/// dst (cublas_blk128_elems(row_blocks, k_blocks) fp32, 16-byte aligned) = src (qfuse's layout) in
/// cuBLASLt's order, padding zero. Two stream operations (memset, one kernel); capture-safe.
Status repack_blk128_scales(const float* src, float* dst, int64_t row_blocks, int64_t k_blocks,
                            cudaStream_t stream);

}  // namespace qfuse::graph::detail
