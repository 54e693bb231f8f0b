// The MLA KV-cache writer (mla_decode.h): row t = [kv_c[t] (512) | k_pe[t] (64)] (bf16) goes to
// cache slot slot_mapping[t] as bf16 copies or as e4m3(x / k_scale) (fp32 IEEE division, round to
// nearest even, saturating: the hardware cvt.rn.satfinite.e4m3x2.f32).
//
//   grid: one thread per chunk of 8 elements (72 chunks a token), 256 threads a block.
//   16-byte loads / stores when the rows allow them, element-wise otherwise.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "core/launch.cuh"
#include "mla_decode/cache_write.h"

namespace qfuse::mla {
namespace {

constexpr int kChunksPerToken = kDim / 8;  // 72

/// Two fp32 -> two E4M3 codes (low byte = a): cvt.rn.satfinite.e4m3x2.f32 (RNE, saturating; NaN
/// stays NaN), the rule of qfuse/quant/rules.h.
__device__ __forceinline__ uint32_t e4m3x2(float a, float b) {
  return __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
}

template <bool kFp8>
__global__ void __launch_bounds__(256) mla_write_cache_kernel(const CacheWriteParams p) {
  pdl_begin();
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t t = idx / kChunksPerToken;
  if (t >= p.T) return;
  const int chunk = static_cast<int>(idx - t * kChunksPerToken);
  const int64_t slot = p.slot_mapping[t];
  if (slot < 0 || slot >= p.slots) return;
  const int e0 = chunk * 8;
  const uint16_t* src =
      e0 < kLatent ? p.kv_c + t * p.ld_c + e0 : p.k_pe + t * p.ld_pe + (e0 - kLatent);
  const bool src_vec = e0 < kLatent ? p.vec_c : p.vec_pe;
  const int64_t dst = (slot / p.block_size) * p.c_sb + (slot % p.block_size) * p.c_st + e0;
  uint16_t x[8];
  if (src_vec) {
    *reinterpret_cast<uint4*>(x) = __ldg(reinterpret_cast<const uint4*>(src));
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = src[i];
  }
  if constexpr (!kFp8) {
    uint16_t* out = static_cast<uint16_t*>(p.cache) + dst;
    if (p.vec_cache) {
      *reinterpret_cast<uint4*>(out) = *reinterpret_cast<const uint4*>(x);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) out[i] = x[i];
    }
  } else {
    const float s = *p.k_scale;
    uint32_t w[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float f[4];
#pragma unroll
      for (int i = 0; i < 4; ++i)
        f[i] = __fdiv_rn(__uint_as_float(static_cast<uint32_t>(x[4 * h + i]) << 16), s);
      w[h] = e4m3x2(f[0], f[1]) | (e4m3x2(f[2], f[3]) << 16);
    }
    uint8_t* out = static_cast<uint8_t*>(p.cache) + dst;
    if (p.vec_cache) {
      *reinterpret_cast<uint2*>(out) = make_uint2(w[0], w[1]);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(w[i / 4] >> (8 * (i % 4)));
    }
  }
}

}  // namespace

Status launch_write_cache(const CacheWriteParams& p, bool fp8, cudaStream_t stream) {
  const int64_t threads = p.T * kChunksPerToken;
  const dim3 grid(static_cast<unsigned>((threads + 255) / 256));
  if (fp8)
    return launch_kernel("mla_write_cache_kernel", mla_write_cache_kernel<true>, grid, dim3(256), 0,
                         stream, p);
  return launch_kernel("mla_write_cache_kernel", mla_write_cache_kernel<false>, grid, dim3(256), 0,
                       stream, p);
}

}  // namespace qfuse::mla
