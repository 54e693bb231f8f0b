// Epilogues of the MLA decode kernels: how a finished piece (a request's tiles handled by one
// thread block) is written. The epilogue is a type parameter of the kernels, so an output format
// plugs in without touching the mainloop (a quantizing epilogue: issue 14).
//
//   PartialEpilogue  split mode: the normalised fp32 partial o_part[slot][i][h][0..512) and its
//                    natural-log lse_part[slot][i][h], for the combine (combine.cu); slot -1:
//                    as OutputEpilogue (every request one piece, plain bf16 output)
//   OutputEpilogue   MlaSplitMode::kNone: o_latent bf16 [T, N, 512] and the optional lse [T, N]
//
// Protocol: store_value(p, ctx, i, h, d, v) writes value d of query token i of the request, head h
// (v already normalised: o / l, times k_scale for an FP8 cache); store_pair(..., d, v0, v1) values
// d and d + 1 (d even); store_lse(p, ctx, i, h, lse). store_fragment() writes the tensor-core
// consumer's O^T accumulator fragment (traits.cuh): the thread's values of every m-tile and column,
// so an epilogue that needs the whole row (a per-token scale) can override it and reduce across the
// warpgroup.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "mla_decode/params.h"

namespace qfuse::mla {

/// Where a piece goes: its request and (split mode) its partial slot.
struct EpiCtx {
  int b;
  int slot;
};

struct OutputEpilogue {
  static constexpr bool kPartial = false;
  __device__ static void store_value(const DecodeParams& p, const EpiCtx& c, int i, int h, int d,
                                     float v) {
    const int64_t t = static_cast<int64_t>(c.b) * p.s_q + i;
    const __nv_bfloat16 x = __float2bfloat16_rn(v);
    p.out[t * p.out_st + h * p.out_sh + d] = *reinterpret_cast<const uint16_t*>(&x);
  }
  __device__ static void store_pair(const DecodeParams& p, const EpiCtx& c, int i, int h, int d,
                                    float v0, float v1) {
    const int64_t t = static_cast<int64_t>(c.b) * p.s_q + i;
    const __nv_bfloat162 x = __floats2bfloat162_rn(v0, v1);
    uint16_t* dst = p.out + t * p.out_st + h * p.out_sh + d;
    // NOTE: the caller's row stride may be odd (validation asks 2-byte alignment only).
    if ((reinterpret_cast<uintptr_t>(dst) & 3) == 0) {
      *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(&x);
    } else {
      dst[0] = *reinterpret_cast<const uint16_t*>(&x.x);
      dst[1] = *reinterpret_cast<const uint16_t*>(&x.y);
    }
  }
  __device__ static void store_lse(const DecodeParams& p, const EpiCtx& c, int i, int h, float l) {
    if (p.lse != nullptr) p.lse[(static_cast<int64_t>(c.b) * p.s_q + i) * p.lse_st + h] = l;
  }
};

/// A piece with slot -1 (split mode with a plain bf16 output where every request is one piece:
/// for_each_piece) goes to the output as OutputEpilogue's.
struct PartialEpilogue {
  static constexpr bool kPartial = true;
  __device__ static float* row(const DecodeParams& p, const EpiCtx& c, int i, int h) {
    return p.sched.o_part + ((static_cast<int64_t>(c.slot) * p.s_q + i) * p.heads + h) * kLatent;
  }
  __device__ static void store_value(const DecodeParams& p, const EpiCtx& c, int i, int h, int d,
                                     float v) {
    if (c.slot < 0) return OutputEpilogue::store_value(p, c, i, h, d, v);
    row(p, c, i, h)[d] = v;
  }
  /// Values d and d + 1 (d even).
  __device__ static void store_pair(const DecodeParams& p, const EpiCtx& c, int i, int h, int d,
                                    float v0, float v1) {
    if (c.slot < 0) return OutputEpilogue::store_pair(p, c, i, h, d, v0, v1);
    *reinterpret_cast<float2*>(row(p, c, i, h) + d) = make_float2(v0, v1);
  }
  __device__ static void store_lse(const DecodeParams& p, const EpiCtx& c, int i, int h, float l) {
    if (c.slot < 0) return OutputEpilogue::store_lse(p, c, i, h, l);
    p.sched.lse_part[(static_cast<int64_t>(c.slot) * p.s_q + i) * p.heads + h] = l;
  }
};

/// Where value (m-tile j, row 16 * warp + g + 8 * hi) of the consumer's O^T fragment lives in the
/// 512 latent columns: the bf16 mainloop's natural order, and the FP8 mainloop's (its V^T A
/// fragments give a thread 16 consecutive columns, mainloop_fp8.cuh).
struct DMapSS {
  __device__ static int d(int j, int w, int g, int hi) { return 64 * j + 16 * w + g + 8 * hi; }
};
struct DMapRS {
  __device__ static int d(int j, int w, int g, int hi) { return 128 * w + 16 * g + 2 * j + hi; }
};

/// Writes the consumer warpgroup's O^T fragment (kRows columns = query rows row0 ..
/// row0 + kRows - 1 of the request) through epilogue E. o[j][k]: m-tile j, register k (column
/// map: mainloop.cuh); scale[cc], lse[cc]: the thread's column cc.
template <class E, int kRows, class DMap>
__device__ __forceinline__ void store_fragment(const DecodeParams& p, const EpiCtx& c, int row0,
                                               const float (&o)[8][kRows / 2],
                                               const float (&scale)[kRows / 4],
                                               const float (&lse)[kRows / 4]) {
  const int tid = threadIdx.x & 127;
  const int w = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
#pragma unroll
  for (int cc = 0; cc < kRows / 4; ++cc) {
    const int col = 8 * (cc >> 1) + 2 * qd + (cc & 1);
    const int gr = row0 + col;
    const int i = gr / p.heads, h = gr - i * p.heads;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int k = 4 * (cc >> 1) + 2 * hi + (cc & 1);
        E::store_value(p, c, i, h, DMap::d(j, w, g, hi), o[j][k] * scale[cc]);
      }
    }
    if (w == 0 && g == 0) E::store_lse(p, c, i, h, lse[cc]);
  }
}

}  // namespace qfuse::mla
