// Device views of the ViT Q/K/V inputs (vit_attention.h): bf16 [B, S, H, D] with free strides,
// token t = b * S + s, and the dynamic-scaling state layout.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "core/fast_div.h"
#include "qfuse/quant/chunk.cuh"

namespace qfuse::vit {

/// One bf16 input tensor: element (t, h, d) at p + (t / S) * sb + (t % S) * ss + h * sh + d.
struct InView {
  const __nv_bfloat16* p;
  int64_t sb, ss, sh;
  bool vec;  // 16-byte loads: p and every stride 16-byte aligned, D % 8 == 0
};

/// What the Q/K/V kernels share: the three views and their common geometry.
struct QkvGeometry {
  InView in[3];
  int64_t S;        // tokens per leading index (S_total for a 3-D view)
  int64_t S_total;  // packed tokens
  int H, D, Dp;
  int cpr;  // 8-column chunks per output row: Dp / 8
  FastDiv div_cpr, div_h, div_s;
  uint32_t chunks;  // S_total * H * cpr (< 2^30)
  bool vt;          // V written transposed: [H, Dp, Sp] (VitVLayout::kTransposed)
  int64_t Sp;       // keys of a transposed V row (vit_vt_keys(S_total))
};

/// Address of element (t, h, 0) of view v.
__device__ __forceinline__ const __nv_bfloat16* row_ptr(const QkvGeometry& g, const InView& v,
                                                        uint32_t t, uint32_t h) {
  const uint32_t b = g.div_s.div(t);
  const uint32_t s = t - b * static_cast<uint32_t>(g.S);
  return v.p + b * v.sb + s * v.ss + static_cast<int64_t>(h) * v.sh;
}

/// 8 codes of x * inv in two words (byte i = column i); columns >= `real` zero codes (whatever
/// the scale: 0 * inv is NaN for a NaN scale).
__device__ __forceinline__ uint2 encode_chunk(uint4 raw, float inv, int real) {
  const uint32_t in[4] = {raw.x, raw.y, raw.z, raw.w};
  uint32_t w[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&in[2 * h]));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&in[2 * h + 1]));
    w[h] = quant::e4m3x2(a.x * inv, a.y * inv) | (quant::e4m3x2(b.x * inv, b.y * inv) << 16);
  }
  if (real < 8) {
#pragma unroll
    for (int i = 0; i < 8; ++i)
      if (i >= real) w[i / 4] &= ~(0xffu << (8 * (i % 4)));
  }
  return make_uint2(w[0], w[1]);
}

/// Layout of one layer's dynamic-scaling state: 64 32-bit words.
namespace state {
constexpr int kWords = 64;
constexpr int kHistory = 0;   // float [3][16]
constexpr int kCurrent = 48;  // uint32 [3]: amax bits of the forward in progress
constexpr int kScales = 51;   // float [3]
constexpr int kCount = 54;    // uint32: forwards so far
constexpr int kTicket = 55;   // uint32: blocks of the quantizing pass done
constexpr int kRedo = 56;     // uint32 [3]: this forward's fix-up pass requantizes the tensor
}  // namespace state

}  // namespace qfuse::vit
