// FP8 (e4m3 x e4m3 -> fp32) wgmma instructions of the ViT attention's tensor-core kernel: CuTe's
// GMMA atoms (common/gmma.cuh) for the N this family uses (the QK^T tile width, every head size).
// Both operands K-major (8-bit wgmma has no transposed form): A from shared memory through a
// matrix descriptor (ss) or from registers (rs: four .b32 of 4 codes each, the k32 8-bit A
// fragment: a0 row g, columns 4 qd + [0, 4); a1 row g + 8, the same columns; a2 / a3 the same
// rows, columns 16 + 4 qd + [0, 4); g = lane / 4, qd = lane % 4, rows of the thread's warp
// slice), B from shared memory. Accumulator fragment (fp32, N / 2 per thread): register 4 j + e
// holds row 16 * warp + g + 8 * (e >> 1), column 8 j + 2 qd + (e & 1).
#pragma once

#include <cstdint>

#include "common/gmma.cuh"

namespace qfuse::vit {

/// D[64 x N] (+)= A[64 x 32] * B[32 x N]: ss with A from shared memory, rs with A from registers;
/// scale_d 0 overwrites D.
template <int N>
struct WgmmaFp8 {
  static constexpr int kRegs = N / 2;
  __device__ static __forceinline__ void ss(float (&d)[kRegs], uint64_t da, uint64_t db,
                                            int scale_d);
  __device__ static __forceinline__ void rs(float (&d)[kRegs], const uint32_t (&a)[4], uint64_t db,
                                            int scale_d);
};

#define QFUSE_VIT_WGMMA_FP8(N)                                                                \
  template <>                                                                                 \
  __device__ __forceinline__ void WgmmaFp8<N>::ss(float(&d)[N / 2], uint64_t da, uint64_t db, \
                                                  int scale_d) {                              \
    sm90::gmma_ss<sm90::gmma::MMA_64x##N##x32_F32E4M3E4M3_SS_TN<>>(d, da, db, scale_d);       \
  }                                                                                           \
  template <>                                                                                 \
  __device__ __forceinline__ void WgmmaFp8<N>::rs(float(&d)[N / 2], const uint32_t(&a)[4],    \
                                                  uint64_t db, int scale_d) {                 \
    sm90::gmma_rs<sm90::gmma::MMA_64x##N##x32_F32E4M3E4M3_RS_TN<>>(d, a, db, scale_d);        \
  }
QFUSE_VIT_WGMMA_FP8(64)
QFUSE_VIT_WGMMA_FP8(72)
QFUSE_VIT_WGMMA_FP8(80)
QFUSE_VIT_WGMMA_FP8(96)
QFUSE_VIT_WGMMA_FP8(128)
#undef QFUSE_VIT_WGMMA_FP8

}  // namespace qfuse::vit
