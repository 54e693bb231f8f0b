// The bf16 / fp16 wgmma instructions of the MLA decode kernels: CuTe's GMMA atoms
// (common/gmma.cuh; both operands from shared memory through matrix descriptors, or A from
// registers), fp32 accumulate. The primitives they work with (TMA, mbarriers, named barriers,
// fences, descriptors) are src/common/sm90.cuh's, and its file comment describes the
// shared-memory operand layouts.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/gmma.cuh"
#include "common/sm90.cuh"

namespace qfuse::mla {

using namespace ::qfuse::sm90;

/// D[64 x kN] (+)= A[64 x 16] * B[16 x kN] (kN 16 or 32), bf16 operands from shared memory, fp32
/// accumulate. kTransA: 0 = A K-major, 1 = A MN-major. B is K-major. scale_d 0 overwrites D.
template <int kN, int kTransA>
__device__ __forceinline__ void wgmma_bf16(float (&d)[kN / 2], uint64_t da, uint64_t db,
                                           int scale_d) {
  constexpr auto kA = kTransA ? gmma::Major::MN : gmma::Major::K;
  if constexpr (kN == 16)
    gmma_ss<gmma::MMA_64x16x16_F32BF16BF16_SS<kA, gmma::Major::K>>(d, da, db, scale_d);
  else
    gmma_ss<gmma::MMA_64x32x16_F32BF16BF16_SS<kA, gmma::Major::K>>(d, da, db, scale_d);
}

/// D[64 x kN] (+)= A[64 x 16] * B[16 x kN] (kN 16 or 32) with A from registers (16-bit pairs
/// a0..a3: rows g / g + 8, columns 2 qd + {0, 1} / + 8 of the thread's warp slice) and B K-major in
/// shared memory. kF16: both operands fp16 (the FP8 cache's consumer, mainloop_fp8.cuh), else bf16.
template <int kN, bool kF16 = false>
__device__ __forceinline__ void wgmma_rs(float (&d)[kN / 2], const uint32_t* a, uint64_t db,
                                         int scale_d) {
  constexpr auto kK = gmma::Major::K;
  if constexpr (kN == 16 && kF16)
    gmma_rs<gmma::MMA_64x16x16_F32F16F16_RS<kK, kK>>(d, a, db, scale_d);
  else if constexpr (kN == 16)
    gmma_rs<gmma::MMA_64x16x16_F32BF16BF16_RS<kK, kK>>(d, a, db, scale_d);
  else if constexpr (kF16)
    gmma_rs<gmma::MMA_64x32x16_F32F16F16_RS<kK, kK>>(d, a, db, scale_d);
  else
    gmma_rs<gmma::MMA_64x32x16_F32BF16BF16_RS<kK, kK>>(d, a, db, scale_d);
}

/// Matrix descriptor of a 64-byte-swizzled K-major operand at shared address `addr` (rows of 64
/// bytes, 16-byte chunk c of row r at c ^ ((r >> 1) & 3): TMA's CU_TENSOR_MAP_SWIZZLE_64B), 8-row
/// groups `sbo` bytes apart; 512-byte aligned atoms.
__device__ __forceinline__ uint64_t sw64_desc(uint32_t addr, uint32_t sbo) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>(1) << 16;  // LBO: unused for swizzled K-major layouts
  d |= static_cast<uint64_t>((sbo & 0x3FFFF) >> 4) << 32;
  d |= static_cast<uint64_t>(2) << 62;  // swizzle mode 2: 64 bytes
  return d;
}

/// D[64 x 32] (+)= A[64 x 32] * B[32 x 32], E4M3 operands, both K-major in shared memory, fp32
/// accumulate (the FP8 cache's QK with Q split into two E4M3 halves: mainloop_fp8.cuh).
__device__ __forceinline__ void wgmma_e4m3_n32(float (&d)[16], uint64_t da, uint64_t db,
                                               int scale_d) {
  gmma_ss<gmma::MMA_64x32x32_F32E4M3E4M3_SS_TN<>>(d, da, db, scale_d);
}

/// D[64 x 64] (+)= A[64 x 16] * B[16 x 64], both operands K-major in shared memory (descriptors),
/// fp32 accumulate. Fragment: register 4 j + e holds row 16 * warp + g + 8 * (e >> 1), column
/// 8 j + 2 qd + (e & 1) (g = lane / 4, qd = lane % 4).
__device__ __forceinline__ void wgmma_ss_m64n64(float (&d)[32], uint64_t da, uint64_t db,
                                                int scale_d) {
  gmma_ss<gmma::MMA_64x64x16_F32BF16BF16_SS<gmma::Major::K, gmma::Major::K>>(d, da, db, scale_d);
}

/// D[64 x 256] (+)= A[64 x 16] * B[16 x 256]: A from registers (the bf16x2 fragment of
/// wgmma_rs), B MN-major in shared memory (128-byte swizzle, LBO = the stride of 64 columns,
/// SBO = the stride of 8 K rows). Fragment as wgmma_ss_m64n64 with j in [0, 32).
__device__ __forceinline__ void wgmma_rs_m64n256_tb(float (&d)[128], const uint32_t (&a)[4],
                                                    uint64_t db, int scale_d) {
  gmma_rs<gmma::MMA_64x256x16_F32BF16BF16_RS<gmma::Major::K, gmma::Major::MN>>(d, a, db, scale_d);
}

/// The same with A K-major in shared memory.
__device__ __forceinline__ void wgmma_ss_m64n256_tb(float (&d)[128], uint64_t da, uint64_t db,
                                                    int scale_d) {
  gmma_ss<gmma::MMA_64x256x16_F32BF16BF16_SS<gmma::Major::K, gmma::Major::MN>>(d, da, db, scale_d);
}

}  // namespace qfuse::mla
