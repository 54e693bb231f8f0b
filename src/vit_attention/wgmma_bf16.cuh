// BF16 (bf16 x bf16 -> fp32) wgmma instructions of the ViT attention's BF16 tensor-core kernel
// (attention_tc_bf16.cuh): CuTe's GMMA atoms (common/gmma.cuh) for the shapes it uses:
//   - ss_k: D[64 x 128] (+)= A[64 x 16] * B[16 x 128], both operands K-major in shared memory
//     (S = Q K^T: Q rows and K rows with the head dimension contiguous);
//   - rs_mn: D[64 x N] (+)= A[64 x 16] * B[16 x N], A from registers, B MN-major in shared memory
//     (transpose-b = 1: O += P V with V rows [keys][head dim], the head dimension contiguous), N
//     the head size.
// A register fragment (k16, 16-bit): a0 = row g, columns 2 qd + {0, 1}; a1 = row g + 8, the same
// columns; a2 / a3 = the same rows, columns 8 + 2 qd + {0, 1} (low half the lower column; g = lane
// / 4, qd = lane % 4, rows of the thread's warp slice). Accumulator fragment (fp32, N / 2 per
// thread): register 4 j + e holds row 16 * warp + g + 8 * (e >> 1), column 8 j + 2 qd + (e & 1).
// So two adjacent n8 blocks of an fp32 accumulator, converted to bf16 pairs, are a k16 A fragment.
#pragma once

#include <cstdint>

#include "common/gmma.cuh"

namespace qfuse::vit {

template <int N>
struct WgmmaBf16 {
  static constexpr int kRegs = N / 2;
  /// D[64 x N] (+)= A[64 x 16] * B[16 x N], both K-major in shared memory; scale_d 0 overwrites D.
  __device__ static __forceinline__ void ss_k(float (&d)[kRegs], uint64_t da, uint64_t db,
                                              int scale_d);
  /// D[64 x N] (+)= A[64 x 16] (registers) * B[16 x N] (MN-major in shared memory).
  __device__ static __forceinline__ void rs_mn(float (&d)[kRegs], const uint32_t (&a)[4],
                                               uint64_t db, int scale_d);
};

#define QFUSE_VIT_WGMMA_BF16_RS(N)                                                                \
  template <>                                                                                     \
  __device__ __forceinline__ void WgmmaBf16<N>::rs_mn(float(&d)[N / 2], const uint32_t(&a)[4],    \
                                                      uint64_t db, int scale_d) {                 \
    sm90::gmma_rs<                                                                                \
        sm90::gmma::MMA_64x##N##x16_F32BF16BF16_RS<sm90::gmma::Major::K, sm90::gmma::Major::MN>>( \
        d, a, db, scale_d);                                                                       \
  }
template <>
__device__ __forceinline__ void WgmmaBf16<128>::ss_k(float (&d)[64], uint64_t da, uint64_t db,
                                                     int scale_d) {
  sm90::gmma_ss<
      sm90::gmma::MMA_64x128x16_F32BF16BF16_SS<sm90::gmma::Major::K, sm90::gmma::Major::K>>(
      d, da, db, scale_d);
}

QFUSE_VIT_WGMMA_BF16_RS(64)
QFUSE_VIT_WGMMA_BF16_RS(72)
QFUSE_VIT_WGMMA_BF16_RS(80)
QFUSE_VIT_WGMMA_BF16_RS(96)
QFUSE_VIT_WGMMA_BF16_RS(128)
#undef QFUSE_VIT_WGMMA_BF16_RS

}  // namespace qfuse::vit
