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
// (v already normalised: o / l, times k_scale for an FP8 cache); the row-wise forms compute the
// row's address once and store with constant offsets (the kernels' epilogues are straight-line
// code run once per piece, so their length is their cost: instruction fetch, bench/NOTES.md M19):
// store_pairs<n>(p, ctx, i, h, d0, pair) the n value pairs pair(j) = (value d0 + 8 j, value d0 +
// 8 j + 1) of one row (d0 even), one 4- or 8-byte store a pair; store_values<n>(p, ctx, i, h, d0,
// f) the n values f(k) = {offset, value} at columns d0 + offset (offsets constant after
// unrolling); store_run<n>(p, ctx, i, h, d0, f) the n consecutive values f(k) at columns d0 + k
// (d0 a multiple of n, n a multiple of 8: 16-byte stores where the row allows, bench/NOTES.md
// M51); store_lse(p, ctx, i, h, lse). store_fragment() writes the tensor-core consumer's O^T
// accumulator fragment (traits.cuh): the thread's values of every m-tile and column, so an
// epilogue that needs the whole row (a per-token scale) can override it and reduce across the
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

/// A value at a constant column offset from a row's base column (store_values).
struct ColVal {
  int off;
  float v;
};

__device__ __forceinline__ uint16_t bf16_bits(float v) {
  const __nv_bfloat16 x = __float2bfloat16_rn(v);
  return *reinterpret_cast<const uint16_t*>(&x);
}

struct OutputEpilogue {
  static constexpr bool kPartial = false;
  __device__ static uint16_t* row(const DecodeParams& p, const EpiCtx& c, int i, int h) {
    const int64_t t = static_cast<int64_t>(c.b) * p.s_q + i;
    return p.out + t * p.out_st + h * p.out_sh;
  }
  __device__ static void store_value(const DecodeParams& p, const EpiCtx& c, int i, int h, int d,
                                     float v) {
    row(p, c, i, h)[d] = bf16_bits(v);
  }
  template <int kN, class F>
  __device__ static void store_values(const DecodeParams& p, const EpiCtx& c, int i, int h, int d0,
                                      F&& f) {
    uint16_t* dst = row(p, c, i, h) + d0;
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      const ColVal x = f(k);
      dst[x.off] = bf16_bits(x.v);
    }
  }
  template <int kPairs, class F>
  __device__ static void store_pairs(const DecodeParams& p, const EpiCtx& c, int i, int h, int d0,
                                     F&& pair) {
    uint16_t* dst = row(p, c, i, h) + d0;
    // NOTE: the caller's row stride may be odd (validation asks 2-byte alignment only); d0 and
    // the pairs' 8-value steps keep a row's alignment, so it is tested once.
    if ((reinterpret_cast<uintptr_t>(dst) & 3) == 0) {
#pragma unroll
      for (int j = 0; j < kPairs; ++j) {
        const float2 v = pair(j);
        const __nv_bfloat162 x = __floats2bfloat162_rn(v.x, v.y);
        *reinterpret_cast<uint32_t*>(dst + 8 * j) = *reinterpret_cast<const uint32_t*>(&x);
      }
    } else {
#pragma unroll
      for (int j = 0; j < kPairs; ++j) {
        const float2 v = pair(j);
        const __nv_bfloat162 x = __floats2bfloat162_rn(v.x, v.y);
        dst[8 * j] = *reinterpret_cast<const uint16_t*>(&x.x);
        dst[8 * j + 1] = *reinterpret_cast<const uint16_t*>(&x.y);
      }
    }
  }
  template <int kN, class F>
  __device__ static void store_run(const DecodeParams& p, const EpiCtx& c, int i, int h, int d0,
                                   F&& f) {
    static_assert(kN % 8 == 0, "a run is whole 16-byte chunks");
    uint16_t* dst = row(p, c, i, h) + d0;
    // Rounded and packed first: one copy of that work whichever way the row is aligned.
    uint32_t w[kN / 2];
#pragma unroll
    for (int k = 0; k < kN / 2; ++k) {
      const __nv_bfloat162 x = __floats2bfloat162_rn(f(2 * k), f(2 * k + 1));
      w[k] = *reinterpret_cast<const uint32_t*>(&x);
    }
    // NOTE: the row stride may be odd (validation asks 2-byte alignment only); d0 is a multiple
    // of 8 values, so the row's alignment decides, tested once.
    if ((reinterpret_cast<uintptr_t>(dst) & 15) == 0) {
#pragma unroll
      for (int k = 0; k < kN / 8; ++k)
        reinterpret_cast<uint4*>(dst)[k] =
            make_uint4(w[4 * k], w[4 * k + 1], w[4 * k + 2], w[4 * k + 3]);
    } else {
#pragma unroll
      for (int k = 0; k < kN / 2; ++k) {
        dst[2 * k] = static_cast<uint16_t>(w[k] & 0xffffu);
        dst[2 * k + 1] = static_cast<uint16_t>(w[k] >> 16);
      }
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
  template <int kN, class F>
  __device__ static void store_values(const DecodeParams& p, const EpiCtx& c, int i, int h, int d0,
                                      F&& f) {
    if (c.slot < 0) return OutputEpilogue::store_values<kN>(p, c, i, h, d0, f);
    float* dst = row(p, c, i, h) + d0;
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      const ColVal x = f(k);
      dst[x.off] = x.v;
    }
  }
  template <int kPairs, class F>
  __device__ static void store_pairs(const DecodeParams& p, const EpiCtx& c, int i, int h, int d0,
                                     F&& pair) {
    if (c.slot < 0) return OutputEpilogue::store_pairs<kPairs>(p, c, i, h, d0, pair);
    float* dst = row(p, c, i, h) + d0;
#pragma unroll
    for (int j = 0; j < kPairs; ++j) *reinterpret_cast<float2*>(dst + 8 * j) = pair(j);
  }
  template <int kN, class F>
  __device__ static void store_run(const DecodeParams& p, const EpiCtx& c, int i, int h, int d0,
                                   F&& f) {
    if (c.slot < 0) return OutputEpilogue::store_run<kN>(p, c, i, h, d0, f);
    static_assert(kN % 4 == 0, "a run is whole float4s");
    // The workspace's rows are 2 KB apart from a 256-byte aligned base, d0 a multiple of 4.
    float4* dst = reinterpret_cast<float4*>(row(p, c, i, h) + d0);
#pragma unroll
    for (int k = 0; k < kN / 4; ++k)
      dst[k] = make_float4(f(4 * k), f(4 * k + 1), f(4 * k + 2), f(4 * k + 3));
  }
  __device__ static void store_lse(const DecodeParams& p, const EpiCtx& c, int i, int h, float l) {
    if (c.slot < 0) return OutputEpilogue::store_lse(p, c, i, h, l);
    p.sched.lse_part[(static_cast<int64_t>(c.slot) * p.s_q + i) * p.heads + h] = l;
  }
};

/// Where value (m-tile j, row 16 * warp + g + 8 * hi) of the consumer's O^T fragment lives in the
/// 512 latent columns: the bf16 mainloop's natural order, and the FP8 mainloop's (its V^T A
/// fragments give a thread 16 consecutive columns, mainloop_fp8.cuh).
/// d(j, w, g, hi) = base(w, g) + off(j, hi).
/// kRun: a thread's 16 values of a row are consecutive columns (store_run), else 8 apart.
struct DMapSS {
  static constexpr bool kRun = false;
  __device__ static int base(int w, int g) { return 16 * w + g; }
  __device__ static constexpr int off(int j, int hi) { return 64 * j + 8 * hi; }
};
struct DMapRS {
  static constexpr bool kRun = true;
  __device__ static int base(int w, int g) { return 128 * w + 16 * g; }
  __device__ static constexpr int off(int j, int hi) { return 2 * j + hi; }
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
    auto value = [&](int k) {  // k = 2 j + hi: m-tile j, the fragment's row half hi
      const int j = k >> 1, hi = k & 1;
      return o[j][4 * (cc >> 1) + 2 * hi + (cc & 1)] * scale[cc];
    };
    if constexpr (DMap::kRun) {
      static_assert(DMap::off(7, 1) == 15, "DMapRS: off(j, hi) = 2 j + hi");
      E::template store_run<16>(p, c, i, h, DMap::base(w, g), value);
    } else {
      E::template store_values<16>(p, c, i, h, DMap::base(w, g), [&](int k) {
        return ColVal{DMap::off(k >> 1, k & 1), value(k)};
      });
    }
    if (w == 0 && g == 0) E::store_lse(p, c, i, h, lse[cc]);
  }
}

}  // namespace qfuse::mla
