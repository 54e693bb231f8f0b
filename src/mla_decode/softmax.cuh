// The online softmax of the tensor-core MLA decode consumers (mainloop.cuh, mainloop_fp8.cuh), on
// the S^T accumulator of one 64-token tile: rows = tokens, columns = the block's query rows.
// A thread holds 2 tokens (16 * warp + g and + 8) of R / 4 columns cc -> 8 * (cc >> 1) + 2 * qd +
// (cc & 1); register k of the fragment: column 8 * (k >> 2) + 2 * qd + (k & 1), token + 8 *
// ((k >> 1) & 1). Scores are in log2 units after scale_log2 (softmax scale * log2 e, times
// k_scale for an FP8 cache); m is the running maximum in those units, l the thread's share of the
// running sum (reduced across the warpgroup at the end of a piece).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "mla_decode/params.h"
#include "mla_decode/schedule.cuh"
#include "mla_decode/sm90.cuh"

namespace qfuse::mla {

template <int R>
struct ColumnMap {
  int cols[R / 4];
  __device__ explicit ColumnMap(int qd) {
#pragma unroll
    for (int cc = 0; cc < R / 4; ++cc) cols[cc] = 8 * (cc >> 1) + 2 * qd + (cc & 1);
  }
};

/// A piece's softmax state: running maxima -inf, sums 0, and each column's key limit (query
/// token i of the request sees keys [0, len - s_q + i + 1)); O (kMTiles m-tiles) zeroed.
template <int R, int kMTiles>
__device__ __forceinline__ void piece_begin(const DecodeParams& p, const Piece& pc, int rb,
                                            const ColumnMap<R>& cm, float (&o)[kMTiles][R / 2],
                                            float (&m)[R / 4], float (&l)[R / 4],
                                            int (&limit)[R / 4]) {
#pragma unroll
  for (int j = 0; j < kMTiles; ++j)
#pragma unroll
    for (int k = 0; k < R / 2; ++k) o[j][k] = 0.0f;
#pragma unroll
  for (int cc = 0; cc < R / 4; ++cc) {
    m[cc] = -INFINITY;
    l[cc] = 0.0f;
    const int i = (rb * R + cm.cols[cc]) / p.heads;
    limit[cc] = pc.len - p.s_q + i + 1;
  }
}

/// Column cc's two scores of this thread (tokens tok, tok + 8) at or past its key limit to -inf;
/// returns the index of the first (the second is 2 above).
template <int R>
__device__ __forceinline__ int mask_column(float (&s)[R / 2], int cc, int tok,
                                           const int (&limit)[R / 4]) {
  const int k0 = 4 * (cc >> 1) + (cc & 1);
  s[k0] = tok < limit[cc] ? s[k0] : -INFINITY;
  s[k0 + 2] = tok + 8 < limit[cc] ? s[k0 + 2] : -INFINITY;
  return k0;
}

/// This thread's two probabilities of column c (warp w's tokens 16 w + g, + 8) into the K-major
/// P^T operand (bf16, or fp16 with kF16P; 128-byte swizzle: row = column, 64 tokens per 128-byte
/// row).
template <bool kF16P>
__device__ __forceinline__ void store_p_pair(uint8_t* p_gen, int c, int w, int g, float p0,
                                             float p1) {
  uint8_t* prow = p_gen + (c >> 3) * 1024 + (c & 7) * 128 + (g << 1);
  uint8_t* p0_at = prow + (((2 * w) ^ (c & 7)) << 4);
  uint8_t* p1_at = prow + (((2 * w + 1) ^ (c & 7)) << 4);
  if constexpr (kF16P) {
    *reinterpret_cast<__half*>(p0_at) = __float2half_rn(p0);
    *reinterpret_cast<__half*>(p1_at) = __float2half_rn(p1);
  } else {
    *reinterpret_cast<__nv_bfloat16*>(p0_at) = __float2bfloat16_rn(p0);
    *reinterpret_cast<__nv_bfloat16*>(p1_at) = __float2bfloat16_rn(p1);
  }
}

/// Masks keys at or past each column's limit to -inf and writes the warp's column maxima to
/// red_max[warp][column] (lanes with g == 0). The caller synchronises the warpgroup next.
template <int R>
__device__ __forceinline__ void tile_max(float (&s)[R / 2], int tok, const int (&limit)[R / 4],
                                         const ColumnMap<R>& cm, float* red_max, int w, int g) {
  float mx[R / 4];
#pragma unroll
  for (int cc = 0; cc < R / 4; ++cc) {
    const int k0 = mask_column<R>(s, cc, tok, limit);
    mx[cc] = fmaxf(s[k0], s[k0 + 2]);
  }
#pragma unroll
  for (int cc = 0; cc < R / 4; ++cc) {
    mx[cc] = fmaxf(mx[cc], __shfl_xor_sync(0xffffffffu, mx[cc], 4));
    mx[cc] = fmaxf(mx[cc], __shfl_xor_sync(0xffffffffu, mx[cc], 8));
    mx[cc] = fmaxf(mx[cc], __shfl_xor_sync(0xffffffffu, mx[cc], 16));
  }
  if (g == 0) {
#pragma unroll
    for (int cc = 0; cc < R / 4; ++cc) red_max[w * R + cm.cols[cc]] = mx[cc];
  }
}

/// After tile_max and a warpgroup barrier: the new running maxima, P = 2^(s - m) into the K-major
/// P^T operand (bf16, or fp16 with kF16P; 128-byte swizzle: row = column, 64 tokens per 128-byte
/// row), the running sums, and the factors alpha by which O must be rescaled.
template <int R, bool kF16P = false>
__device__ __forceinline__ void tile_softmax(const float (&s)[R / 2], float (&m)[R / 4],
                                             float (&l)[R / 4], float (&alpha)[R / 4],
                                             const ColumnMap<R>& cm, const float* red_max,
                                             float scale_log2, uint8_t* p_gen, int w, int g) {
#pragma unroll
  for (int cc = 0; cc < R / 4; ++cc) {
    float tmax = red_max[cm.cols[cc]];
#pragma unroll
    for (int ww = 1; ww < 4; ++ww) tmax = fmaxf(tmax, red_max[ww * R + cm.cols[cc]]);
    const float m_new = fmaxf(m[cc], tmax * scale_log2);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    alpha[cc] = fast_exp2(m[cc] - m_use);
    m[cc] = m_new;
    const int k0 = 4 * (cc >> 1) + (cc & 1);
    const float p0 = fast_exp2(fmaf(s[k0], scale_log2, -m_use));
    const float p1 = fast_exp2(fmaf(s[k0 + 2], scale_log2, -m_use));
    l[cc] = fmaf(l[cc], alpha[cc], p0 + p1);
    store_p_pair<kF16P>(p_gen, cm.cols[cc], w, g, p0, p1);
  }
}

/// The one-barrier softmax's fast path (bench/NOTES.md M46): P = 2^(s - m) against the running
/// maxima as they stand, written to P^T (fp16) with the sums, no exchange of the tile's maxima.
/// A thread that sees a score above its column's maximum plus 8 (P > 2^8), or a column with no
/// maximum yet, has its warp write `n` (the tile's count) to flags[w]; then the warpgroup's
/// barrier (bar). Returns whether any warp flagged the tile: the caller then restores the sums
/// and runs tile_max / tile_softmax instead (the same decision in every thread: all read flags
/// after the barrier). flags: 4 ints of this tile's parity (a warp's next write to them follows
/// a barrier that every warp passes only after this tile's reads).
template <int R>
__device__ __forceinline__ bool tile_softmax_fast(float (&s)[R / 2], int tok,
                                                  const int (&limit)[R / 4], const ColumnMap<R>& cm,
                                                  const float (&m)[R / 4], float (&l)[R / 4],
                                                  float scale_log2, uint8_t* p_gen, int* flags,
                                                  int n, int bar, int w, int g, int lane) {
  bool over = false;
#pragma unroll
  for (int cc = 0; cc < R / 4; ++cc) {
    const int k0 = mask_column<R>(s, cc, tok, limit);
    const float x0 = fmaf(s[k0], scale_log2, -m[cc]), x1 = fmaf(s[k0 + 2], scale_log2, -m[cc]);
    over |= m[cc] == -INFINITY || fmaxf(x0, x1) > 8.0f;
    const float p0 = fast_exp2(x0), p1 = fast_exp2(x1);
    l[cc] += p0 + p1;
    store_p_pair<true>(p_gen, cm.cols[cc], w, g, p0, p1);
  }
  if (__any_sync(0xffffffffu, over) && lane == 0) flags[w] = n;
  fence_proxy_async_shared();
  named_sync(bar, 128);
  const int4 fl = *reinterpret_cast<const int4*>(flags);
  return fl.x == n || fl.y == n || fl.z == n || fl.w == n;
}

template <int R>
__device__ __forceinline__ void rescale(float (&o)[8][R / 2], const float (&alpha)[R / 4]) {
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int k = 0; k < R / 2; ++k) o[j][k] *= alpha[((k >> 2) << 1) | (k & 1)];
}

/// End of a piece: the columns' sums across lanes and warps (red_sum, two warpgroup barriers),
/// the output factors out_scale / l (0 for an empty column) and the natural-log lse.
template <int R>
__device__ __forceinline__ void piece_stats(float (&l)[R / 4], const float (&m)[R / 4],
                                            const ColumnMap<R>& cm, float* red_sum, int w, int g,
                                            float out_scale, float (&scale)[R / 4],
                                            float (&lse)[R / 4]) {
#pragma unroll
  for (int cc = 0; cc < R / 4; ++cc) {
    l[cc] += __shfl_xor_sync(0xffffffffu, l[cc], 4);
    l[cc] += __shfl_xor_sync(0xffffffffu, l[cc], 8);
    l[cc] += __shfl_xor_sync(0xffffffffu, l[cc], 16);
  }
  if (g == 0) {
#pragma unroll
    for (int cc = 0; cc < R / 4; ++cc) red_sum[w * R + cm.cols[cc]] = l[cc];
  }
  named_sync(1, 128);
#pragma unroll
  for (int cc = 0; cc < R / 4; ++cc) {
    float tot = 0.0f;
#pragma unroll
    for (int ww = 0; ww < 4; ++ww) tot += red_sum[ww * R + cm.cols[cc]];
    const bool any = tot > 0.0f;
    scale[cc] = any ? out_scale / tot : 0.0f;
    lse[cc] = any ? (m[cc] + __log2f(tot)) * 0.6931471805599453f : -INFINITY;
  }
  named_sync(1, 128);  // red_sum is rewritten by the next piece
}

}  // namespace qfuse::mla
