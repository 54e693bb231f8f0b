// The merge of attention states as a producer of the shared row-wise kernels (common/rowwise.cuh):
// output row t of [T, H * D] is sum_i w_i(t, h) * o_i[t, h, :] over the heads h, computed in fp32
// and written through whichever quantizer policy the output spec selects (SPEC §2).
//
// LoadMerge<TIn, kN> handles up to kN partials (the launcher instantiates kN = 2, 4, 8 and passes
// the real n). Per chunk of 8 columns it reads the n lse values of its (t, h), forms the weights
// in fp32, loads the 8 values of every partial (16-byte loads when the chunk lies in one head and
// every partial is aligned) and accumulates. The merged lse (out_lse) comes from the row-wise
// kernel's side pass: blocks of their own at the start of the grid, a (t, h) per thread and unit,
// coalesced along t; the row tasks do not compute it (bench/NOTES.md 45).
#pragma once

#include <cmath>

#include "common/rowwise.cuh"
#include "merge_states/launch.h"

namespace qfuse::merge {

/// 2^x by the SFU (ex2.approx: 2 ulp relative error). NOTE: the weights are the only
/// transcendental work per chunk; the accurate exp2f/expf cost ~10 instructions each, and the
/// kernel is close to issue-bound once the quantizer adds its reduction.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
constexpr float kLog2e = 1.4426950408889634f;

template <class TIn, int kN>
struct LoadMerge {
  MergeArgs a;
  bool vec;  // read by the launcher (row-wise kernels): 16-byte chunk loads

  // NOTE: the streaming row-wise kernel (one task per warp, a grid covering every task): with
  // N independent 16-byte loads per lane and few registers, the block scheduler keeps enough
  // loads in flight; a persistent register kernel measured far slower (bench/NOTES.md 41d).
  // NOTE: a register cap for the streaming kernel: without it nvcc gave the 2-way kernels more
  // registers, fewer blocks per SM and less bandwidth (NOTES 41d).
  // 8-way: two blocks (128 registers) for 16-bit inputs, where the side pass's removal of the
  // per-task lse work let nvcc take 124-130 and so one block per SM (bench/NOTES.md 45).
  static constexpr int kStreamMinBlocks = kN <= 2 ? 6 : (kN <= 4 ? 4 : (sizeof(TIn) == 2 ? 2 : 1));
  static constexpr int kStreamMinBlocksGrouped = kStreamMinBlocks;
  // NOTE: the clamp-free E2M1 round where a block allows it (NOTES 36, 41d). It measured slower
  // before load_slow lost its local array: that array's stack slot took the quantizer's scaled
  // values, and the branch doubled those local stores (NOTES 37).
  static constexpr int kNvfp4Round = 1;
  // Waits late: its address arithmetic overlaps the previous kernel (rowwise_kernel, NOTES 39).
  static constexpr bool kLatePdlWait = true;
  // One block per lane for the 2-way merge, 8 values per lane for wider ones (their block-wide
  // kernels spilled at 64 registers); two blocks per lane measured slower (NOTES 36, 41d).
  static constexpr int kNvfp4LaneChunks = kN <= 2 ? 2 : 1;
  // Per-group FP8 with wide lanes for the 2-way merge (NOTES 32, 41d); wider merges keep 8 values
  // per lane (their wide kernels spilled at the 64-register cap).
  static constexpr int kGroupLaneChunks = kN <= 2 ? 2 : 1;

  /// The head of column `col`: a shift when D is a power of two.
  __device__ int head_of(int col) const { return a.d_shift >= 0 ? col >> a.d_shift : col / a.D; }

  __device__ const TIn* row_ptr(int i, int64_t t, int h) const {
    return static_cast<const TIn*>(a.o[i]) + t * a.st[i] + h * a.sh[i];
  }

  /// Where slot i's raw lse for (t, h) lives. NOTE: slots past n read partial 0's lse (a cache
  /// hit), so the n loads issue back to back without branches. kDense: every slot its own (see
  /// dense()).
  template <bool kDense = false>
  __device__ const float* lse_ptr(int i, int64_t t, int h) const {
    const int src = kDense || i < a.n ? i : 0;
    return a.lse[src] + h * a.ld_lse[src] + t;
  }

  /// The raw lse of the partials for (t, h).
  __device__ void load_lse(int64_t t, int h, float (&l)[kN]) const {
#pragma unroll
    for (int i = 0; i < kN; ++i) l[i] = __ldg(lse_ptr(i, t, h));
  }

  /// Whether every slot is a real partial and no row copies: the partials' pointers and strides
  /// are then kernel parameters at fixed offsets. NOTE: with a run-time slot index they are
  /// indexed constant loads, a dependent chain ahead of the first data load (latency-bound
  /// merges).
  __device__ bool dense() const {
    return a.n == kN && a.no_copy;
  }

  /// raw[a.n - 1] by selects. NOTE: written as `if (i == n - 1) last = raw[i]`, nvcc made it an
  /// indexed read, which put the whole array (with a chunk's Raw, the partials' loaded data) in
  /// local memory wherever the merged lse is live (bench/NOTES.md 44).
  __device__ __forceinline__ float last_of(const float (&raw)[kN]) const {
    float last = raw[0];
#pragma unroll
    for (int i = 1; i < kN; ++i)
      asm("{\n\t.reg .pred p;\n\tsetp.eq.s32 p, %3, %4;\n\tselp.f32 %0, %1, %2, p;\n\t}"
          : "=f"(last)
          : "f"(raw[i]), "f"(last), "r"(i), "r"(a.n - 1));
    return last;
  }

  /// Weights of the partials and the merged lse from their raw lse `l` (SPEC §2). Empty
  /// partials (lse +-inf) get weight 0; a row whose partials are all empty gets all-zero weights
  /// and lse -inf; rows t >= copy_from take the last partial with weight 1 and its raw lse.
  __device__ void weights_from(int64_t t, const float (&raw)[kN], float (&w)[kN],
                               float& lse_out) const {
    if (t >= a.copy_from) {
#pragma unroll
      for (int i = 0; i < kN; ++i) w[i] = i == a.n - 1 ? 1.0f : 0.0f;
      lse_out = last_of(raw);
      return;
    }
    float l[kN];
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      l[i] = (i < a.n && !isinf(raw[i])) ? raw[i] : -INFINITY;
      m = rules::nan_max(m, l[i]);
    }
    if (m == -INFINITY) {
#pragma unroll
      for (int i = 0; i < kN; ++i) w[i] = 0.0f;
      lse_out = -INFINITY;
      return;
    }
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      w[i] = l[i] == -INFINITY ? 0.0f : fast_exp2((l[i] - m) * (a.base2 ? 1.0f : kLog2e));
      sum += w[i];
    }
    const float inv = __fdividef(1.0f, sum);  // sum in [1, n]: no range issues
#pragma unroll
    for (int i = 0; i < kN; ++i) w[i] *= inv;
    lse_out = (a.base2 ? log2f(sum) : logf(sum)) + m;
  }

  __device__ void weights(int64_t t, int h, float (&w)[kN], float& lse_out) const {
    float l[kN];
    load_lse(t, h, l);
    weights_from(t, l, w, lse_out);
  }

  static constexpr int kVecs = quant::kChunk * sizeof(TIn) / 16;
  struct Raw {
    uint4 r[kN][kVecs];
    float lse[kN];
  };

  /// The loads of a full, aligned chunk (within one head). NOTE: every 16-byte load is issued
  /// before any is used, without branches: a slot past n, or a partial a copied row does not
  /// use, re-reads the last partial (a cache hit) and gets weight 0. Conditional loads (one
  /// branch per partial) were serialised by the compiler, each conversion waiting for its load
  /// before the next load issued.
  template <class Ready = NoWait>
  __device__ void fetch(int64_t t, int col, int nvalid, Raw& raw, Ready ready = {}) const {
    if (!(vec && nvalid == quant::kChunk)) {
      ready();
      return;
    }
    const int h0 = head_of(col);
    load_partials<false>(t, h0, col - h0 * a.D, raw, raw, ready);
  }

  /// The 16-byte loads of the chunk at (t, h0, d0) of every partial into raw0 (kPair: and of the
  /// next chunk into raw1), and the partials' lse into raw0.
  template <bool kPair, class Ready>
  __device__ void load_partials(int64_t t, int h0, int d0, Raw& raw0, Raw& raw1,
                                Ready ready) const {
    if (dense()) {
      load_partials_from<kPair, true>(t, h0, d0, raw0, raw1, ready);
    } else {
      load_partials_from<kPair, false>(t, h0, d0, raw0, raw1, ready);
    }
  }
  template <bool kPair, bool kDense, class Ready>
  __device__ void load_partials_from(int64_t t, int h0, int d0, Raw& raw0, Raw& raw1,
                                     Ready ready) const {
    const bool copy = t >= a.copy_from;
    const uint4* p[kN];
    const float* lse[kN];
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      const int src = kDense || (i < a.n && !copy) ? i : a.n - 1;
      p[i] = reinterpret_cast<const uint4*>(row_ptr(src, t, h0) + d0);
      lse[i] = lse_ptr<kDense>(i, t, h0);
    }
    ready();
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      raw0.lse[i] = __ldg(lse[i]);
#pragma unroll
      for (int k = 0; k < kVecs; ++k) {
        raw0.r[i][k] = __ldg(p[i] + k);
        if constexpr (kPair) raw1.r[i][k] = __ldg(p[i] + kVecs + k);
      }
    }
  }

  __device__ void convert(const Raw& raw, int64_t t, int col, int nvalid,
                          float (&v)[quant::kChunk]) const {
    if (vec && nvalid == quant::kChunk) {
      float w[kN], lse_unused;
      weights_from(t, raw.lse, w, lse_unused);
#pragma unroll
      for (int e = 0; e < quant::kChunk; ++e) v[e] = 0.0f;
#pragma unroll
      for (int i = 0; i < kN; ++i) {
        if (w[i] != 0.0f) {  // NOTE: a select: garbage in empty partials never leaks
          float x[quant::kChunk];
          quant::convert_chunk<TIn>(raw.r[i], x);
#pragma unroll
          for (int e = 0; e < quant::kChunk; ++e) v[e] = fmaf(w[i], x[e], v[e]);
        }
      }
      return;
    }
    load_slow(t, col, nvalid, v);
  }

  /// fetch() of two consecutive chunks (a wide lane, rowwise_kernel): when both are full and in
  /// one head, one address computation and one set of lse loads serve both (the merge's address
  /// arithmetic, 64-bit products per partial, was most of a lane's instructions).
  template <class Ready = NoWait>
  __device__ void fetch_pair(int64_t t, int col, int nvalid0, int nvalid1, Raw& raw0, Raw& raw1,
                             Ready ready = {}) const {
    const int h0 = head_of(col);
    const int d0 = col - h0 * a.D;
    if (!(vec && nvalid0 == quant::kChunk && nvalid1 == quant::kChunk &&
          d0 + 2 * quant::kChunk <= a.D)) {
      ready();
      if (nvalid0 > 0) fetch(t, col, nvalid0, raw0);
      if (nvalid1 > 0) fetch(t, col + quant::kChunk, nvalid1, raw1);
      return;
    }
    load_partials<true>(t, h0, d0, raw0, raw1, ready);
  }

  /// convert() of the chunks fetch_pair() loaded: one set of weights for both when they share a
  /// head (v0, v1 are left alone for a chunk with nvalid <= 0).
  __device__ void convert_pair(const Raw& raw0, const Raw& raw1, int64_t t, int col, int nvalid0,
                               int nvalid1, float (&v0)[quant::kChunk],
                               float (&v1)[quant::kChunk]) const {
    const int d0 = col - head_of(col) * a.D;
    if (!(vec && nvalid0 == quant::kChunk && nvalid1 == quant::kChunk &&
          d0 + 2 * quant::kChunk <= a.D)) {
      if (nvalid0 > 0) convert(raw0, t, col, nvalid0, v0);
      if (nvalid1 > 0) convert(raw1, t, col + quant::kChunk, nvalid1, v1);
      return;
    }
    float w[kN], lse_unused;
    weights_from(t, raw0.lse, w, lse_unused);
    // NOTE: one loop over the partials for both chunks: convert()'s loop twice took two
    // branches per partial (more BSSY/BRA in the wide kernels).
#pragma unroll
    for (int e = 0; e < quant::kChunk; ++e) v0[e] = v1[e] = 0.0f;
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      if (w[i] != 0.0f) {  // NOTE: a select: garbage in empty partials never leaks
        float x0[quant::kChunk], x1[quant::kChunk];
        quant::convert_chunk<TIn>(raw0.r[i], x0);
        quant::convert_chunk<TIn>(raw1.r[i], x1);
#pragma unroll
        for (int e = 0; e < quant::kChunk; ++e) {
          v0[e] = fmaf(w[i], x0[e], v0[e]);
          v1[e] = fmaf(w[i], x1[e], v1[e]);
        }
      }
    }
  }

  template <class Ready = NoWait>
  __device__ void load(int64_t t, int col, int nvalid, float (&v)[quant::kChunk],
                       Ready ready = {}) const {
    Raw raw;
    fetch(t, col, nvalid, raw, ready);
    convert(raw, t, col, nvalid, v);
  }

  __device__ void load_slow(int64_t t, int col, int nvalid, float (&v)[quant::kChunk]) const {
    float w[kN], lse_unused;
    // Element by element: a chunk may cross a head boundary (D % 8 != 0) or be unaligned.
    // NOTE: a rolled loop keeps this rare path small (it is instantiated for every policy and
    // unrolled into every task slot of the row-wise kernel). Element e goes into v by a select
    // per slot, not through a local array: with one, NVVM kept the NVFP4 quantizer's scaled
    // values in the same stack slot, 32 bytes of local stores per 8 values on the hot path
    // (NOTES 37, 41d).
    int h = -1;
#pragma unroll
    for (int e = 0; e < quant::kChunk; ++e) v[e] = 0.0f;
#pragma unroll 1
    for (int e = 0; e < nvalid; ++e) {
      const int c = col + e;
      const int hc = c / a.D;
      if (hc != h) {
        h = hc;
        weights(t, h, w, lse_unused);
      }
      float acc = 0.0f;
#pragma unroll
      for (int i = 0; i < kN; ++i)
        if (i < a.n && w[i] != 0.0f)
          acc = fmaf(w[i], quant::to_float(row_ptr(i, t, h)[c - h * a.D]), acc);
#pragma unroll
      for (int k = 0; k < quant::kChunk; ++k) v[k] = k == e ? acc : v[k];
    }
  }

  __device__ void finish(int64_t, int, int) const {}

  /// The side pass (rowwise.cuh): unit u is out_lse's (h, t) = (u / T, u % T).
  __host__ __device__ int64_t side_units() const {
    return a.out_lse != nullptr ? a.lse_units : 0;
  }
  __device__ void side_pass(int64_t u, int64_t units) const {
    // NOTE: the loads unconditional (from unit 0 past the end), the store guarded.
    const uint32_t uu = u < units ? static_cast<uint32_t>(u) : 0;  // H * T < 2^30 (host)
    const int h = static_cast<int>(a.lse_rows.div(uu));
    const int64_t t = uu - static_cast<uint32_t>(h) * a.lse_rows.d;
    float raw[kN];
    load_lse(t, h, raw);
    if (u < units) {
      float w[kN], lse;
      weights_from(t, raw, w, lse);
      a.out_lse[h * a.ld_out_lse + t] = lse;
    }
  }
};

// The wide-lane kernel finds the pair hooks by a call expression; a signature change must not
// silently drop the merge to per-chunk fetches.
static_assert(quant::has_pair_hooks<LoadMerge<float, 2>>::value);
static_assert(quant::has_side_pass<LoadMerge<float, 2>>::value);

/// Picks kN for a.n and launches the row-wise kernel with the output's policy.
template <class TIn>
Status launch_merge(const MergeArgs& a, const QuantOutput& q, int64_t T, int64_t H,
                    cudaStream_t stream) {
  const int64_t cols = H * a.D;
  if (a.n <= 2) return quant::launch_rowwise(LoadMerge<TIn, 2>{a, a.vec}, q, T, cols, stream);
  if (a.n <= 4) return quant::launch_rowwise(LoadMerge<TIn, 4>{a, a.vec}, q, T, cols, stream);
  return quant::launch_rowwise(LoadMerge<TIn, 8>{a, a.vec}, q, T, cols, stream);
}

}  // namespace qfuse::merge
