// The CUDA-core MLA decode kernel: the slow, obviously correct rung beside the tensor-core
// kernel (same schedule, same epilogues, any sm_80+ device).
//
//   grid  (ceil(heads * s_q / 8), parts of the split schedule or B requests), 256 threads
//   warp w of block x owns query row x * 8 + w (token i = row / N, head h = row % N): q in
//   registers (18 values a lane), a 32-token tile of the dequantized cache in shared memory
//   (fp32 [32][576], shared by the block's 8 rows), one key at a time: a warp-reduced dot product,
//   online softmax in fp32, 16 output values a lane.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/launch.cuh"
#include "mla_decode/epilogue.cuh"
#include "mla_decode/launch.h"
#include "mla_decode/schedule.cuh"
#include "qfuse/mla_decode/mla_decode.h"
#include "qfuse/quant/rules.h"

namespace qfuse::mla {

constexpr int kSimpleTile = 32;
constexpr int kSimpleSmem = kSimpleTile * kDim * 4;

template <CacheKind kCache>
__device__ __forceinline__ float cache_value(const DecodeParams& p, int64_t idx, float k_scale) {
  if constexpr (kCache == CacheKind::kBf16) {
    const uint16_t bits = static_cast<const uint16_t*>(p.cache)[idx];
    return __uint_as_float(static_cast<uint32_t>(bits) << 16);
  } else {
    return rules::e4m3_value(static_cast<const uint8_t*>(p.cache)[idx]) * k_scale;
  }
}

template <CacheKind kCache>
__global__ void __launch_bounds__(256) mla_simple_kernel(const DecodeParams p, bool partial) {
  pdl_begin();
  extern __shared__ float tile[];  // [kSimpleTile][576]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gr = blockIdx.x * kSimpleRowsPerBlock + warp;
  const bool active = gr < p.rows;
  const int i = active ? gr / p.heads : 0, h = active ? gr - i * p.heads : 0;
  const float k_scale = kCache == CacheKind::kFp8 ? *p.k_scale : 1.0f;
  for_each_piece(p, blockIdx.y, [&](const Piece& pc, const Piece&) {
    float q[kDim / 32];
    const uint16_t* qrow = p.q + (static_cast<int64_t>(pc.b) * p.s_q + i) * p.q_st + h * p.q_sh;
#pragma unroll
    for (int k = 0; k < kDim / 32; ++k)
      q[k] = __uint_as_float(static_cast<uint32_t>(qrow[lane + 32 * k]) << 16);
    float acc[kLatent / 32];
#pragma unroll
    for (int k = 0; k < kLatent / 32; ++k) acc[k] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const int limit = pc.len - p.s_q + i + 1;  // keys [0, limit)
    const int end = min(pc.t_end * kTileTokens, pc.len);
    for (int t0 = pc.t_begin * kTileTokens; t0 < end; t0 += kSimpleTile) {
      __syncthreads();  // the previous tile is consumed
      for (int e = threadIdx.x; e < kSimpleTile * kDim; e += blockDim.x) {
        const int tok = t0 + e / kDim, col = e % kDim;
        float v = 0.0f;
        if (tok < pc.len) {
          const int blk = p.block_table[static_cast<int64_t>(pc.b) * p.bt_st + tok / p.block_size];
          if (static_cast<unsigned>(blk) < static_cast<unsigned>(p.num_blocks)) {
            v = cache_value<kCache>(
                p, static_cast<int64_t>(blk) * p.c_sb + (tok % p.block_size) * p.c_st + col,
                k_scale);
          } else if (col == 0) {
            atomicOr(p.sched.header, kMlaErrBlockId);
          }
        }
        tile[e] = v;
      }
      __syncthreads();
      if (!active) continue;
      for (int j = 0; j < kSimpleTile && t0 + j < limit; ++j) {
        const float* krow = tile + j * kDim;
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < kDim / 32; ++k) dot = fmaf(q[k], krow[lane + 32 * k], dot);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        const float s = dot * p.scale_log2;
        const float m_new = fmaxf(m, s);
        const float alpha = exp2f(m - m_new);
        const float pj = exp2f(s - m_new);
        l = l * alpha + pj;
#pragma unroll
        for (int k = 0; k < kLatent / 32; ++k)
          acc[k] = fmaf(pj, krow[lane + 32 * k], acc[k] * alpha);
        m = m_new;
      }
    }
    if (!active) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const float lse = l > 0.0f ? (m + log2f(l)) * 0.6931471805599453f : -INFINITY;
    const EpiCtx ctx{pc.b, pc.slot};
#pragma unroll
    for (int k = 0; k < kLatent / 32; ++k) {
      if (partial)
        PartialEpilogue::store_value(p, ctx, i, h, lane + 32 * k, acc[k] * inv);
      else
        OutputEpilogue::store_value(p, ctx, i, h, lane + 32 * k, acc[k] * inv);
    }
    if (lane == 0) {
      if (partial)
        PartialEpilogue::store_lse(p, ctx, i, h, lse);
      else
        OutputEpilogue::store_lse(p, ctx, i, h, lse);
    }
  });
}

template <CacheKind kCache>
Status launch_simple(const DecodeParams& p, EpilogueKind epi, dim3 grid, cudaStream_t stream) {
  const auto kernel = mla_simple_kernel<kCache>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSimpleSmem);
  QFUSE_RETURN_IF_ERROR(cuda_status(attr, "cudaFuncSetAttribute(mla_simple_kernel)"));
  return launch_kernel("mla_simple_kernel", kernel, grid, dim3(256), kSimpleSmem, stream, p,
                       epi == EpilogueKind::kPartial);
}

}  // namespace qfuse::mla
