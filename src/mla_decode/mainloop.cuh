// The tensor-core MLA decode mainloop for a bf16 cache (traits.cuh has the form and the
// shared-memory layout; mainloop_fp8.cuh is the FP8 cache's):
//
//   producer_tma      one thread: per piece the first KV tile, then the piece's Q (TMA, 9 boxes
//                     of 64 columns), then the remaining tiles. KV boxes come from the paged
//                     cache with the block table resolved here: one box per (block slice, 64
//                     columns); a block id outside [0, num_blocks) or a slice past seq_len loads
//                     zeros (an out-of-range TMA coordinate) and, for a bad id, sets the device
//                     error flag. Tiles land in the consumer's stage with a 128-byte swizzle.
//   consumer          one warpgroup: per 64-token tile S^T = K Q^T (36 wgmma k-steps, both
//                     operands from shared memory), causal / length mask, online softmax in fp32
//                     (column maxima across the 4 warps through shared memory), P^T to shared
//                     memory as bf16, O^T += V^T P^T (8 m-tiles x 4 k-steps). The stage is
//                     released when the PV product that reads it has completed (it overlaps the
//                     next tile's QK product; where that tile has not landed, before the wait
//                     for it: tp.release, launch.h set_bf16_release).
//
// Barrier protocol (counts): full[s] (1 + TMA bytes), empty[s] (4 consumer warps), q_full[i]
// (1 + TMA bytes), q_empty[i] (4), i the Q buffer (Tr::kQStages: piece k uses buffer k % kQStages).
// The k-th use of a barrier waits for parity k & 1 (the producer side for (k & 1) ^ 1).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "mla_decode/epilogue.cuh"
#include "mla_decode/schedule.cuh"
#include "mla_decode/sm90.cuh"
#include "mla_decode/softmax.cuh"
#include "mla_decode/traits.cuh"
#include "qfuse/mla_decode/mla_decode.h"

namespace qfuse::mla {

template <class Tr>
struct TcSmem {
  uint8_t* base;
  __device__ uint8_t* kv(int s) const { return base + Tr::kOffKv + s * Tr::kTileBytes; }
  __device__ uint8_t* q(int i = 0) const { return base + Tr::kOffQ + i * Tr::kQBytes; }
  __device__ uint8_t* p() const { return base + Tr::kOffP; }
  __device__ float* red(int k) const {
    return reinterpret_cast<float*>(base + Tr::kOffRed) + k * Tr::kRedFloats;
  }
  __device__ float* combine() const {  // traits with a merge buffer (TcFp8AltTraits)
    return reinterpret_cast<float*>(base + Tr::kOffCombine);
  }
  __device__ uint64_t* bar() const { return reinterpret_cast<uint64_t*>(base + Tr::kOffBar); }
  __device__ uint64_t* full(int s) const { return bar() + s; }
  __device__ uint64_t* empty(int s) const { return bar() + Tr::kStages + s; }
  __device__ uint64_t* q_full(int i = 0) const { return bar() + 2 * Tr::kStages + 2 * i; }
  __device__ uint64_t* q_empty(int i = 0) const { return bar() + 2 * Tr::kStages + 2 * i + 1; }
  __device__ uint64_t* p_full(int s) const {
    return bar() + 2 * Tr::kStages + 2 * Tr::kQStages + s;
  }
  __device__ uint64_t* a_empty(int s) const {
    return bar() + 3 * Tr::kStages + 2 * Tr::kQStages + s;
  }
};

/// The physical block holding token `tok` of the piece's request, or num_blocks (an out-of-range
/// TMA coordinate: the box reads as zeros) for a token past seq_len or a bad block id (flagged).
__device__ __forceinline__ int physical_block(const DecodeParams& p, const Piece& pc, int tok) {
  if (tok >= pc.len) return p.num_blocks;
  const int id = __ldg(p.block_table + static_cast<int64_t>(pc.b) * p.bt_st + tok / p.block_size);
  if (static_cast<unsigned>(id) >= static_cast<unsigned>(p.num_blocks)) {
    atomicOr(p.sched.header, kMlaErrBlockId);
    return p.num_blocks;
  }
  return id;
}

/// The request's last tile (`last`; `valid` < 64 tokens of it real): rows past seq_len hold
/// whatever the cache has there (possibly NaN); P is 0 for them but 0 * NaN is NaN, so the bf16
/// stage's V rows are zeroed (by the warpgroup's 128 threads, tid its thread index) before a PV
/// product reads them. The caller fences the writes for the async proxy before that product.
template <class Tr>
__device__ __forceinline__ void zero_v_tail(uint8_t* stage, bool last, int valid, int tid) {
  if (!last || valid >= kTileTokens) return;
  const int units = (kTileTokens - valid) * Tr::kVBoxes * 8;
  for (int u = tid; u < units; u += 128) {
    const int r = valid + (u >> 6), box = (u >> 3) & 7, c = u & 7;
    *reinterpret_cast<uint4*>(stage + box * Tr::kBoxBytes + r * 128 + c * 16) =
        make_uint4(0, 0, 0, 0);
  }
}

/// The piece's Q (9 boxes of 64 columns: query rows from (token i0, head h0) of request pc.b) by
/// TMA into q once the previous piece's last QK product is done (q_empty, its nq-th use), then
/// the next piece's Q into L2. One thread.
template <class Tr>
__device__ __forceinline__ void load_q(const TcParams& tp, const TcSmem<Tr>& sm, const Piece& pc,
                                       const Piece& next, int i0, int h0, int nq) {
  const DecodeParams& p = tp.p;
  const int qs = nq % Tr::kQStages;
  mbar_wait(sm.q_empty(qs), ((nq / Tr::kQStages) & 1) ^ 1);
  mbar_arrive_expect_tx(sm.q_full(qs), Tr::kQBytes);
  const int t0 = pc.b * p.s_q + i0;
#pragma unroll
  for (int kb = 0; kb < Tr::kBoxes; ++kb)
    tma_load_3d(sm.q(qs) + kb * Tr::kQBoxBytes, &tp.q_map, sm.q_full(qs), kb * 64, h0, t0);
  // NOTE: the next piece's Q into L2 now: it is loaded only once this piece's last QK product
  // is done, and its latency would stall the consumer at the piece boundary. (Prefetching
  // KV tiles into L2 measured slower: bench/NOTES.md, MLA decode M2.)
  if (next.b >= 0) {
#pragma unroll
    for (int kb = 0; kb < Tr::kBoxes; ++kb)
      tma_prefetch_3d(&tp.q_map, kb * 64, h0, next.b * p.s_q + i0);
  }
}

template <class Tr>
__device__ void producer_tma(const TcParams& tp, const TcSmem<Tr>& sm, int rb, int part) {
  const DecodeParams& p = tp.p;
  constexpr int R = Tr::kRows;
  prefetch_tensormap(&tp.kv_map);
  prefetch_tensormap(&tp.q_map);
  const int row0 = rb * R;
  const int i0 = row0 / p.heads, h0 = row0 - i0 * p.heads;
  int n = 0, nq = 0;
  const auto load_tile = [&](const Piece& pc, int t) {
    const int st = n % Tr::kStages;
    mbar_wait(sm.empty(st), ((n / Tr::kStages) & 1) ^ 1);
    mbar_arrive_expect_tx(sm.full(st), Tr::kTileBytes);
    for (int r0 = 0; r0 < kTileTokens; r0 += tp.box_rows) {
      const int tok = t * kTileTokens + r0;
      const int blk = physical_block(p, pc, tok);
      const int row = tok & (p.block_size - 1);
#pragma unroll
      for (int kb = 0; kb < Tr::kBoxes; ++kb)
        tma_load_3d(sm.kv(st) + kb * Tr::kBoxBytes + r0 * Tr::kRowBytes, &tp.kv_map, sm.full(st),
                    kb * 64, row, blk);
    }
    ++n;
  };
  for_each_piece(p, part, [&](const Piece& pc, const Piece& next) {
    if (pc.t_begin == pc.t_end) return;
    load_tile(pc, pc.t_begin);
    load_q<Tr>(tp, sm, pc, next, i0, h0, nq);
    ++nq;
    for (int t = pc.t_begin + 1; t < pc.t_end; ++t) load_tile(pc, t);
  });
}

/// The consumer warpgroup (threads 128..255). Column map of the accumulators: register k of an
/// m64nR fragment holds row 16 * warp + g + 8 * ((k >> 1) & 1) and column 8 * (k >> 2) + 2 * qd +
/// (k & 1) (g = lane / 4, qd = lane % 4); a thread owns the R / 4 columns cc -> 8 * (cc >> 1) +
/// 2 * qd + (cc & 1) of every fragment.
template <class Tr, class Epi>
__device__ void consumer(const TcParams& tp, const TcSmem<Tr>& sm, int rb, int part) {
  const DecodeParams& p = tp.p;
  constexpr int R = Tr::kRows, NC = R / 4, NS = R / 2;
  const int tid = threadIdx.x - 128;
  const int w = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
  const float scale_log2 = p.scale_log2;
  const uint32_t kv0 = smem_addr(sm.kv(0));
  const uint32_t p_addr = smem_addr(sm.p());
  uint8_t* p_gen = sm.p();
  float* red_max = sm.red(0);
  float* red_sum = sm.red(1);
  const ColumnMap<R> cm(qd);
  int n = 0, nq = 0;
  for_each_piece(p, part, [&](const Piece& pc, const Piece&) {
    const int qs = nq % Tr::kQStages;
    const uint32_t q_addr = smem_addr(sm.q(qs));
    float o[8][NS], m[NC], l[NC];
    int limit[NC];
    piece_begin<R>(p, pc, rb, cm, o, m, l, limit);
    const int tiles = tiles_of(pc.len);
    for (int t = pc.t_begin; t < pc.t_end; ++t, ++n) {
      const int st = n & 1;
      const uint32_t kv = kv0 + st * Tr::kTileBytes;
      if (t == pc.t_begin) mbar_wait(sm.q_full(qs), (nq / Tr::kQStages) & 1);
      // Adaptive release (tp.release == 1, bench/NOTES.md M32): where this tile has not landed,
      // the previous tile's PV is waited for and its stage released now, so that the producer
      // refills it while this warp waits (two tiles in flight); where it has landed, the release
      // stays after this tile's QK issue below (the PV overlaps the QK). Decided per warp, from
      // lane 0's test: each warp arrives on the empty barrier once a tile either way. 2: always
      // now (M23's order; the tests' way to run this path on every tile).
      bool released = false;
      if (tp.release != 0 && t > pc.t_begin) {
        const bool landed =
            tp.release == 1 && __shfl_sync(0xffffffffu, mbar_test(sm.full(st), (n >> 1) & 1), 0);
        if (!landed) {
          wgmma_wait<0>();  // the previous tile's PV product: its stage is free
          fence_regs(o);
          if (lane == 0) mbar_arrive(sm.empty(st ^ 1));
          released = true;
        }
      }
      mbar_wait(sm.full(st), (n >> 1) & 1);
      float s[NS];
#pragma unroll
      for (int k = 0; k < NS; ++k) s[k] = 0.0f;
      fence_regs(s);
      wgmma_fence();
      const uint64_t dk = sw128_desc(kv, 16, 1024), dq = sw128_desc(q_addr, 16, 1024);
#pragma unroll
      for (int k = 0; k < 4 * Tr::kBoxes; ++k) {
        const uint64_t da = desc_add(dk, (k >> 2) * Tr::kBoxBytes + (k & 3) * 32);
        const uint64_t db = desc_add(dq, (k >> 2) * Tr::kQBoxBytes + (k & 3) * 32);
        wgmma_bf16<R, 0>(s, da, db, k > 0 ? 1 : 0);
      }
      wgmma_commit();
      // NOTE: the previous tile's stage goes back once its PV product has completed, waited for
      // here so that the PV overlaps this tile's QK (unless the adaptive release above already
      // did it). Releasing it before this tile's full-barrier wait on every tile (two tiles in
      // flight from DRAM, PV latency exposed) measured 2.6-4.3 % slower on the memory-bound N 16
      // rows (bench/NOTES.md M23); only where the tile has not landed, 2-5 % faster at 16k (M32).
      if (t > pc.t_begin && !released) {
        wgmma_wait<1>();  // the previous tile's PV product: its stage is free
        fence_regs(o);
        if (lane == 0) mbar_arrive(sm.empty(st ^ 1));
      }
      wgmma_wait<0>();
      fence_regs(s);
      fence_regs(o);
      if (t == pc.t_end - 1 && lane == 0) mbar_arrive(sm.q_empty(qs));

      tile_max<R>(s, t * kTileTokens + 16 * w + g, limit, cm, red_max, w, g);
      named_sync(1, 128);
      zero_v_tail<Tr>(sm.kv(st), t == tiles - 1, pc.len - t * kTileTokens, tid);
      float alpha[NC];
      tile_softmax<R>(s, m, l, alpha, cm, red_max, scale_log2, p_gen, w, g);
      rescale<R>(o, alpha);
      fence_proxy_async_shared();
      named_sync(1, 128);
      fence_regs(o);
      wgmma_fence();
      const uint64_t dv = sw128_desc(kv, Tr::kBoxBytes, 1024), dp = sw128_desc(p_addr, 16, 1024);
#pragma unroll
      for (int j = 0; j < Tr::kVBoxes; ++j) {
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const uint64_t da = desc_add(dv, j * Tr::kBoxBytes + kk * 2048);
          const uint64_t db = desc_add(dp, kk * 32);
          wgmma_bf16<R, 1>(o[j], da, db, 1);
        }
      }
      wgmma_commit();
    }
    wgmma_wait<0>();  // (nothing in flight when the piece had no tile)
    fence_regs(o);
    if (pc.t_end > pc.t_begin) {
      if (lane == 0) mbar_arrive(sm.empty((n - 1) & 1));
      ++nq;
    }
    float scale[NC], lse[NC];
    piece_stats<R>(l, m, cm, red_sum, w, g, 1.0f, scale, lse);
    store_fragment<Epi, R, DMapSS>(p, EpiCtx{pc.b, pc.slot}, rb * R, o, scale, lse);
  });
}

}  // namespace qfuse::mla
