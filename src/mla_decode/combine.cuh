// The split-KV combine of the MLA decode: a producer of the shared row-wise kernels
// (common/rowwise.cuh) that merges a request's variable number of pieces (0 to B + parts) and
// writes through whichever quantizer policy the output spec selects.
//
// Output row t of [T, N * 512] (t = b * s_q + i); the chunk of 8 columns at col lies in head
// h = col / 512. Pieces of request b: slots [first[b], first[b + 1]); each has a normalised fp32
// partial o_part[slot][i][h][0..512) and its natural-log lse_part[slot][i][h] (-inf: every key
// of the piece masked). Per (t, h), as SPEC §2: m = max lse; none or m = -inf -> zeros and lse
// -inf; else w_k = exp(lse_k - m) / sum_j exp(lse_j - m), out = sum_k w_k o_k in fp32, lse =
// m + log(sum). finish() writes lse [T, N] from the chunk that starts a head. Where the decode
// kernel wrote the output itself (DecodeParams::direct and every request one piece), skip().
//
// The producer lives here (not in combine.cu) because the fused up-projection (up_proj.cu) merges
// the same pieces with it before its product.
#pragma once

#include <cmath>

#include "common/rowwise.cuh"
#include "mla_decode/params.h"
#include "mla_decode/sm90.cuh"

namespace qfuse::mla {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct CombineArgs {
  const float* o_part;
  const float* lse_part;
  const int* first;
  int s_q;
  int heads;
  float* lse_out;  // optional [T, N]
  int64_t lse_st;
  const int* header;  // the schedule's
  int direct;         // DecodeParams::direct
};

struct MlaCombine {
  CombineArgs a;
  bool vec = true;
  // NOTE: the streaming kernel (one task per warp); the merge loop keeps two 16-byte loads of
  // one piece in flight per step, more pieces' loads via the 4-way unroll.
  static constexpr int kStreamMinBlocks = 4;
  static constexpr int kStreamMinBlocksGrouped = 4;
  static constexpr int kNvfp4Round = 0;
  static constexpr bool kLatePdlWait = false;
  static constexpr int kNvfp4LaneChunks = 1;
  static constexpr int kGroupLaneChunks = 1;
  static constexpr bool kStream = true;
  static constexpr bool kAsync = false;
  static constexpr bool kBulk = false;
  struct Raw {};

  /// Nothing to merge where the decode kernel wrote the output (every request one piece and a
  /// plain bf16 output: for_each_piece). NOTE: read before the PDL wait (kSkipEarly): the flag
  /// is the scheduler's, two kernels back, and the decode kernel lets this one launch only after
  /// its own wait for the scheduler; so a skipping block exits without waiting for the decode
  /// kernel to finish and flush (bench/NOTES.md M27).
  __device__ bool skip() const { return a.direct != 0 && __ldg(a.header + kHdrOnePiece) != 0; }
  static constexpr bool kSkipEarly = true;

  /// The pieces of output row t (t = b * s_q + i) in head h: piece k (k < n) has its lse at
  /// lse[(s0 + k) * stride] and its 512 values from o + (s0 + k) * stride * 512; m2 is the largest
  /// lse in log2 units (-inf: no piece sees a key). The merge's weight of piece k is weight(k) /
  /// sum_j weight(j). The up-projection (up_proj.cu) merges with these; merge() below spells the
  /// same arithmetic out (NOTE: written with pieces(), its SASS changed and the per-token forms
  /// spilled more: kept as measured).
  struct Pieces {
    const float* lse;
    const float* o;
    int64_t stride;
    int s0, n;
    float m2;
    /// exp(lse_k - m) (0 for a piece with lse -inf).
    __device__ float weight(int k) const {
      return fast_exp2(__ldg(lse + (s0 + k) * stride) * kLog2e - m2);
    }
    /// The merged lse (natural log) from the sum of the weights.
    __device__ float merged_lse(float sum) const { return (m2 + log2f(sum)) * kLn2; }
  };
  __device__ Pieces pieces(int64_t t, int h) const {
    const int b = static_cast<int>(t / a.s_q), i = static_cast<int>(t - int64_t{b} * a.s_q);
    Pieces p;
    p.s0 = __ldg(a.first + b);
    p.n = __ldg(a.first + b + 1) - p.s0;
    // Piece k of (i, h): lse at lse_part[(s0 + k) * s_q * N + i * N + h].
    p.stride = static_cast<int64_t>(a.s_q) * a.heads;
    p.lse = a.lse_part + static_cast<int64_t>(i) * a.heads + h;
    p.o = a.o_part + (static_cast<int64_t>(i) * a.heads + h) * kLatent;
    p.m2 = -INFINITY;
    for (int k = 0; k < p.n; ++k) p.m2 = fmaxf(p.m2, __ldg(p.lse + (p.s0 + k) * p.stride) * kLog2e);
    return p;
  }

  __device__ void merge(int64_t t, int col, float (&v)[quant::kChunk], float* lse_out) const {
#pragma unroll
    for (int e = 0; e < quant::kChunk; ++e) v[e] = 0.0f;
    const int b = static_cast<int>(t / a.s_q), i = static_cast<int>(t - int64_t{b} * a.s_q);
    const int h = col / kLatent, d = col - h * kLatent;
    const int s0 = __ldg(a.first + b);
    const int n = __ldg(a.first + b + 1) - s0;
    // Piece k of (i, h): lse at lse_part[(s0 + k) * s_q * N + i * N + h].
    const int64_t lse_row = static_cast<int64_t>(a.s_q) * a.heads;
    const float* lse0 = a.lse_part + static_cast<int64_t>(i) * a.heads + h;
    const float* o0 = a.o_part + (static_cast<int64_t>(i) * a.heads + h) * kLatent + d;
    float m2 = -INFINITY;
    for (int k = 0; k < n; ++k) m2 = fmaxf(m2, __ldg(lse0 + (s0 + k) * lse_row) * kLog2e);
    if (m2 == -INFINITY) {
      if (lse_out != nullptr) *lse_out = -INFINITY;
      return;
    }
    float sum = 0.0f;
    int k = 0;
#pragma unroll 1
    for (; k + 1 < n; k += 2) {
      const float l0 = __ldg(lse0 + (s0 + k) * lse_row), l1 = __ldg(lse0 + (s0 + k + 1) * lse_row);
      const float4* p0 = reinterpret_cast<const float4*>(o0 + (s0 + k) * lse_row * kLatent);
      const float4* p1 = reinterpret_cast<const float4*>(o0 + (s0 + k + 1) * lse_row * kLatent);
      const float4 x0 = __ldg(p0), x1 = __ldg(p0 + 1), y0 = __ldg(p1), y1 = __ldg(p1 + 1);
      // NOTE: selects: a piece with lse -inf has weight 0 and its values are not used.
      const float w0 = fast_exp2(l0 * kLog2e - m2), w1 = fast_exp2(l1 * kLog2e - m2);
      sum += w0 + w1;
      v[0] = fmaf(w0, x0.x, fmaf(w1, y0.x, v[0]));
      v[1] = fmaf(w0, x0.y, fmaf(w1, y0.y, v[1]));
      v[2] = fmaf(w0, x0.z, fmaf(w1, y0.z, v[2]));
      v[3] = fmaf(w0, x0.w, fmaf(w1, y0.w, v[3]));
      v[4] = fmaf(w0, x1.x, fmaf(w1, y1.x, v[4]));
      v[5] = fmaf(w0, x1.y, fmaf(w1, y1.y, v[5]));
      v[6] = fmaf(w0, x1.z, fmaf(w1, y1.z, v[6]));
      v[7] = fmaf(w0, x1.w, fmaf(w1, y1.w, v[7]));
    }
    if (k < n) {
      const float l0 = __ldg(lse0 + (s0 + k) * lse_row);
      const float4* p0 = reinterpret_cast<const float4*>(o0 + (s0 + k) * lse_row * kLatent);
      const float4 x0 = __ldg(p0), x1 = __ldg(p0 + 1);
      const float w0 = fast_exp2(l0 * kLog2e - m2);
      sum += w0;
      v[0] = fmaf(w0, x0.x, v[0]);
      v[1] = fmaf(w0, x0.y, v[1]);
      v[2] = fmaf(w0, x0.z, v[2]);
      v[3] = fmaf(w0, x0.w, v[3]);
      v[4] = fmaf(w0, x1.x, v[4]);
      v[5] = fmaf(w0, x1.y, v[5]);
      v[6] = fmaf(w0, x1.z, v[6]);
      v[7] = fmaf(w0, x1.w, v[7]);
    }
    const float inv = 1.0f / sum;  // sum >= 1 (the max piece has weight 1)
#pragma unroll
    for (int e = 0; e < quant::kChunk; ++e) v[e] *= inv;
    if (lse_out != nullptr) *lse_out = (m2 + log2f(sum)) * kLn2;
  }

  template <class Ready = NoWait>
  __device__ void fetch(int64_t, int, int, Raw&, Ready ready = {}) const {
    ready();
  }
  __device__ void convert(const Raw&, int64_t t, int col, int nvalid,
                          float (&v)[quant::kChunk]) const {
    if (nvalid > 0) {
      merge(t, col, v, nullptr);
    } else {
#pragma unroll
      for (int e = 0; e < quant::kChunk; ++e) v[e] = 0.0f;
    }
  }
  template <class Ready = NoWait>
  __device__ void load(int64_t t, int col, int nvalid, float (&v)[quant::kChunk],
                       Ready ready = {}) const {
    ready();
    convert(Raw{}, t, col, nvalid, v);
  }
  __device__ void finish(int64_t t, int col, int nvalid) const {
    if (a.lse_out == nullptr || nvalid <= 0 || col % kLatent != 0) return;
    float v[quant::kChunk], lse;
    merge(t, col, v, &lse);
    a.lse_out[t * a.lse_st + col / kLatent] = lse;
  }
};

}  // namespace qfuse::mla
