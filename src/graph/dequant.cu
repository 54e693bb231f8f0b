// Dequantization of FP8 GEMM operands to bf16 (dequant.h). Each thread converts 16 consecutive
// codes of one row (one 16-byte load, two 16-byte stores) when the row length allows it; every
// scaling of this file is constant over 16 aligned columns (groups of 64/128, blocks of 128).
#include <cuda_bf16.h>

#include <algorithm>

#include "graph/dequant.h"
#include "graph/gemm_block128.h"
#include "qfuse/core/arch.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/quant/rules.h"
#include "qfuse/quant/scale_addr.h"

namespace qfuse::graph::detail {
namespace {

struct Params {
  const uint8_t* codes;
  int64_t rows, cols;
  DequantMode mode;
  const float* scale;
  const void* scales;
  ScaleAddr addr;
  int64_t group;                   // columns per scale (kScaleBuffer)
  int64_t row_blocks, col_blocks;  // kBlock128
  __nv_bfloat16* out;
};

__device__ __forceinline__ float scale_of(const Params& p, int64_t r, int64_t c) {
  switch (p.mode) {
    case DequantMode::kPerTensor:
      return *p.scale;
    case DequantMode::kBlock128:
      return static_cast<const float*>(
          p.scales)[qfuse_blk128_offset(r / 128, c / 128, p.row_blocks, p.col_blocks)];
    default: {
      const int64_t off = p.addr.offset(r, c / p.group);
      return p.addr.elem_bytes == 4
                 ? static_cast<const float*>(p.scales)[off]
                 : rules::ue8m0_value(static_cast<const uint8_t*>(p.scales)[off]);
    }
  }
}

__global__ void dequant_vec16(Params p) {
  const int64_t chunks_per_row = p.cols / 16;
  const int64_t total = p.rows * chunks_per_row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / chunks_per_row, c = (i % chunks_per_row) * 16;
    const float s = scale_of(p, r, c);
    const uint4 v = *reinterpret_cast<const uint4*>(p.codes + r * p.cols + c);
    const uint8_t* b = reinterpret_cast<const uint8_t*>(&v);
    __align__(16) __nv_bfloat16 o[16];
#pragma unroll
    for (int k = 0; k < 16; ++k) o[k] = __float2bfloat16_rn(rules::e4m3_value(b[k]) * s);
    uint4* dst = reinterpret_cast<uint4*>(p.out + r * p.cols + c);
    dst[0] = reinterpret_cast<const uint4*>(o)[0];
    dst[1] = reinterpret_cast<const uint4*>(o)[1];
  }
}

__global__ void dequant_scalar(Params p) {
  const int64_t total = p.rows * p.cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / p.cols, c = i % p.cols;
    p.out[i] = __float2bfloat16_rn(rules::e4m3_value(p.codes[i]) * scale_of(p, r, c));
  }
}

}  // namespace

Status dequant_fp8_to_bf16(const DequantArgs& a, cudaStream_t stream) {
  if (a.rows == 0 || a.cols == 0) return Status::Ok();
  Params p{};
  p.codes = a.codes;
  p.rows = a.rows;
  p.cols = a.cols;
  p.mode = a.mode;
  p.scale = a.scale;
  p.scales = a.scales;
  p.row_blocks = ceil_div(a.rows, 128);
  p.col_blocks = ceil_div(a.cols, 128);
  p.out = static_cast<__nv_bfloat16*>(a.out);
  if (a.mode == DequantMode::kScaleBuffer) {
    ScaleShape shape;
    QFUSE_RETURN_IF_ERROR(scale_shape(a.spec, a.rows, a.cols, &shape));
    p.addr = ScaleAddr::make(a.spec, shape, a.rows);
    p.group = a.spec.kind == QuantKind::kFp8PerGroup ? a.spec.group_size : a.cols;
  }
  const bool vec = a.cols % 16 == 0 && reinterpret_cast<uintptr_t>(a.codes) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(a.out) % 16 == 0;
  const int64_t work = vec ? a.rows * (a.cols / 16) : a.rows * a.cols;
  const int threads = 256;
  DeviceInfo dev;
  QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  // A grid-stride loop: at most 16 blocks per SM of the current device.
  const int blocks =
      static_cast<int>(std::min<int64_t>(ceil_div(work, threads), int64_t{16} * dev.sm_count));
  if (vec)
    dequant_vec16<<<blocks, threads, 0, stream>>>(p);
  else
    dequant_scalar<<<blocks, threads, 0, stream>>>(p);
  QFUSE_CHECK_LAUNCH("dequant_fp8_to_bf16");
  return Status::Ok();
}

}  // namespace qfuse::graph::detail
