// The CUDA-core ViT attention (vit_attention.h): the slow, obviously correct rung every faster
// kernel is tested against on the device. One block per query token: warp w takes heads w, w + 4,
// ...; its lanes hold dims lane + 32 k of the query and the output accumulator, walk the token's
// sequence key by key (a warp-reduced dot product, online softmax in fp32), and leave the head's
// output in a shared-memory row [H * D] that the block then writes through the quantizer
// (store_tile: whole output rows, so every kind). Blocks past the last token zero the scale
// buffer's padding.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdint>

#include "core/launch.cuh"
#include "qfuse/quant/adapters/smem_tile.cuh"
#include "qfuse/quant/dispatch.cuh"
#include "qfuse/vit_attention/vit_attention.h"
#include "vit_attention/launch.h"

namespace qfuse::vit {

constexpr int kSimpleThreads = 128;

__device__ __forceinline__ float in_value(const uint8_t* p) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(*p, __NV_E4M3)));
}
__device__ __forceinline__ float in_value(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}

template <class In>
__device__ __forceinline__ const In* elem(const AttnParams& p, int which, int64_t t, int h) {
  if (which == 2 && p.v_perm)  // [H, Dp, S_pad]: no leading index
    return static_cast<const In*>(p.in[2]) + vit_vt_position(t) + h * p.sh[2];
  const int64_t b = t / p.S, s = t - b * p.S;
  return static_cast<const In*>(p.in[which]) + b * p.sb[which] + s * p.ss[which] + h * p.sh[which];
}

/// [begin, end) of the sequence holding token i (clamped to [0, S_total]).
__device__ __forceinline__ void sequence_of(const AttnParams& p, int64_t i, int64_t* beg,
                                            int64_t* end) {
  if (p.cu_seqlens == nullptr) {
    *beg = i / p.S * p.S;
    *end = *beg + p.S;
    return;
  }
  int lo = 0, hi = p.num_seqs;  // largest b with cu[b] <= i
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (p.cu_seqlens[mid] <= i)
      lo = mid;
    else
      hi = mid;
  }
  *beg = std::min<int64_t>(std::max(p.cu_seqlens[lo], 0), p.S_total);
  *end = std::min<int64_t>(std::max<int64_t>(p.cu_seqlens[lo + 1], *beg), p.S_total);
}

template <class In, class Core>
__global__ void __launch_bounds__(kSimpleThreads)
    simple_attention_kernel(AttnParams p, typename Core::Params qp, int pad_blocks) {
  extern __shared__ float4 smem_raw[];
  float* row = reinterpret_cast<float*>(smem_raw);
  pdl_begin();
  Core core(qp);
  core.begin();
  const int64_t i = blockIdx.x;
  if (i >= p.S_total) {
    core.zero_padding(static_cast<uint32_t>((i - p.S_total) * blockDim.x + threadIdx.x),
                      static_cast<uint32_t>(pad_blocks * blockDim.x));
    return;
  }
  int64_t beg, end;
  sequence_of(p, i, &beg, &end);
  const float qk_scale =
      p.softmax_scale * (p.q_scale ? *p.q_scale : 1.0f) * (p.k_scale ? *p.k_scale : 1.0f);
  const float v_scale = p.v_scale ? *p.v_scale : 1.0f;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int h = warp; h < p.H; h += kSimpleThreads / 32) {
    float q[4], acc[4];
    const In* qrow = elem<In>(p, 0, i, h);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int d = lane + 32 * k;
      q[k] = d < p.D ? in_value(qrow + d * p.sd[0]) : 0.0f;
      acc[k] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int64_t j = beg; j < end; ++j) {
      const In* krow = elem<In>(p, 1, j, h);
      const In* vrow = elem<In>(p, 2, j, h);
      float part = 0.0f;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int d = lane + 32 * k;
        if (d < p.D) part = fmaf(q[k], in_value(krow + d * p.sd[1]), part);
      }
#pragma unroll
      for (int off = 16; off > 0; off /= 2) part += __shfl_xor_sync(0xffffffffu, part, off);
      const float s = part * qk_scale;
      const float m_new = fmaxf(m, s);
      const float corr = expf(m - m_new);
      const float e = expf(s - m_new);
      l = l * corr + e;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int d = lane + 32 * k;
        if (d < p.D) acc[k] = fmaf(acc[k], corr, e * in_value(vrow + d * p.sd[2]));
      }
      m = m_new;
    }
    const float norm = end > beg ? v_scale / l : 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int d = lane + 32 * k;
      if (d < p.D) row[h * p.D + d] = acc[k] * norm;
    }
  }
  __syncthreads();
  const int cols = p.H * p.D;
  quant::store_tile(core, quant::SmemTile<float>{row, cols, 1, cols, i, 0, p.S_total, cols},
                    threadIdx.x, kSimpleThreads);
}

/// Launches the simple kernel for inputs of type In with the quantizer of `out` ([S_total, H * D]).
template <class In>
Status launch_simple_impl(const AttnParams& p, const QuantOutput& out, cudaStream_t stream) {
  const int64_t cols = int64_t{p.H} * p.D;
  return quant::visit_quantizer(
      out, p.S_total, cols, [&](auto tag, const auto& qp, int64_t padding_units) {
        using Core = typename decltype(tag)::type;
        const int pad_blocks =
            padding_units > 0 ? static_cast<int>(std::clamp<int64_t>(
                                    (padding_units + kSimpleThreads - 1) / kSimpleThreads, 1, 1024))
                              : 0;
        const size_t smem = static_cast<size_t>(cols) * sizeof(float);
        auto kernel = simple_attention_kernel<In, Core>;
        if (smem > 48 * 1024)
          QFUSE_CUDA_RETURN(cudaFuncSetAttribute(
              kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
        return launch_kernel("vit simple_attention_kernel", kernel,
                             dim3(static_cast<unsigned>(p.S_total + pad_blocks)),
                             dim3(kSimpleThreads), smem, stream, p, qp, pad_blocks);
      });
}

}  // namespace qfuse::vit
