// Scale layouts of cuBLASLt's block-scaled FP8 GEMM modes (gemm_block128.h): the in-place checks
// and the repack of 128x128-block weight scales into cuBLASLt's order (a few hundred to a few
// thousand floats per GEMM: one thread per block scale).
#include <algorithm>

#include "graph/gemm_block128.h"
#include "qfuse/core/arch.h"
#include "qfuse/core/cuda_check.h"

namespace qfuse::graph::detail {

bool blk128_scales_in_place(int64_t row_blocks, int64_t k_blocks) {
  if (cublas_blk128_elems(row_blocks, k_blocks) != row_blocks * k_blocks) return false;
  for (int64_t rb = 0; rb < row_blocks; ++rb)
    for (int64_t kb = 0; kb < k_blocks; ++kb)
      if (cublas_blk128_offset(rb, kb, row_blocks, k_blocks) !=
          qfuse_blk128_offset(rb, kb, row_blocks, k_blocks))
        return false;
  return true;
}

bool vec128_scales_in_place(const ScaleAddr& addr, int64_t rows, int64_t k_blocks) {
  if (addr.elem_bytes != 4 || addr.num_k_tiles > 0 || addr.groups != k_blocks) return false;
  // NOTE: cuBLASLt reads rows * k_blocks scales; the buffer holds padded_rows * padded_groups.
  if (addr.padded_rows * addr.padded_groups < rows * k_blocks) return false;
  for (int64_t kb = 0; kb < k_blocks; ++kb)
    for (int64_t r = 0; r < rows; ++r)
      if (addr.offset(r, kb) != cublas_vec128_offset(r, kb, rows, k_blocks)) return false;
  return true;
}

namespace {

__global__ void repack_blk128_kernel(const float* src, float* dst, int64_t row_blocks,
                                     int64_t k_blocks) {
  const int64_t n = row_blocks * k_blocks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t rb = i / k_blocks, kb = i % k_blocks;
    dst[cublas_blk128_offset(rb, kb, row_blocks, k_blocks)] =
        src[qfuse_blk128_offset(rb, kb, row_blocks, k_blocks)];
  }
}

}  // namespace

Status repack_blk128_scales(const float* src, float* dst, int64_t row_blocks, int64_t k_blocks,
                            cudaStream_t stream) {
  const int64_t elems = cublas_blk128_elems(row_blocks, k_blocks);
  if (elems == 0) return Status::Ok();
  QFUSE_CUDA_RETURN(cudaMemsetAsync(dst, 0, static_cast<size_t>(elems) * sizeof(float), stream));
  const int threads = 256;
  DeviceInfo dev;
  QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  // A grid-stride loop over a few hundred scales: at most one block per SM.
  const int blocks = static_cast<int>(
      std::min<int64_t>((row_blocks * k_blocks + threads - 1) / threads, dev.sm_count));
  repack_blk128_kernel<<<blocks, threads, 0, stream>>>(src, dst, row_blocks, k_blocks);
  QFUSE_CHECK_LAUNCH("repack_blk128_scales");
  return Status::Ok();
}

}  // namespace qfuse::graph::detail
