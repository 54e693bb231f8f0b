// The pair form of the wide MLA decode kernel (64 query rows per block, bf16 cache; selected by
// mla::set_wide_form(2) / QFUSE_MLA_WIDE_FORM=2 until measured against mainloop_wide.cuh):
// FlashMLA's sm90 dense decode schedule (bench/NOTES.md, "Plan"), written for this family's
// scheduler, pieces and epilogues.
//
// Two warpgroups and no producer: each issues its own TMA loads. The piece's tiles go in pairs
// (tile 2k in stage 0, tile 2k + 1 in stage 1); warpgroup 0 owns O[:, 0:256], warpgroup 1
// O[:, 256:512]. Per pair:
//   wg 0: S0 = Q K0^T was computed in the previous step; its softmax against the running row
//         maximum (shared memory m, scale0), O0 *= scale0, O0 += P0 V0[:, 0:256] (P0 from
//         registers) while warpgroup 1 runs its softmax; then P0 * scale1 into shared memory for
//         warpgroup 1, O0 *= scale1, O0 += P1 V1[:, 0:256] (P1 from shared memory), the next
//         S0 = Q K0'^T box by box (boxes 0-3 first: the loads it issued itself as soon as its PV
//         on V0 was done; boxes 4-8 from warpgroup 1's loads).
//   wg 1: S1 = Q K1^T likewise; its softmax against m after tile 2k (scale1), O1 *= scale0 *
//         scale1, O1 += P1 V1[:, 256:512] (registers), O1 += (P0 scale1) V0[:, 256:512] (shared
//         memory), then the next S1 box by box (boxes 4-7 from its own loads first).
// So the tensor pipe always has one warpgroup's products while the other runs its softmax, and
// each half of a stage is refilled as soon as the products reading it have completed (FlashMLA
// commits one group per box, so a wait between boxes never sits inside a group: NOTES M8).
//
// Shared memory: two 72 KB stages, Q (72 KB), m / scale0 / scale1 / l[2] per row, one mbarrier
// per (stage, box) armed by the warpgroup that waits on it (its thread 0: arrive + expect_tx; the
// TMA may land before), q_full. P0 goes into stage 0's rope box once the QK product is done with
// it (that box is reloaded with the stage's right half, after P0's last product), P1 into a tile
// of its own (the 8 KB left beside Q; FlashMLA keeps Q's rope box in registers to make room for
// P1, which here would cost 16 registers a thread, the tighter budget), so stage 1's rope box is
// reloaded by warpgroup 1 with the right half and lands with it (NOTES M19). Named barriers
// (bar.arrive by the producing warpgroup, barrier.sync by the other): kBarScale0 (m and scale0
// written), kBarScale1 (m and scale1 written), kBarP0 (P0 stored), kBarP1 (P1 stored, warpgroup 1's
// PVs issued), kBarPiece (the previous piece done: Q, P1 and the stages free), kBarEpi (the row
// sums exchanged).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "mla_decode/mainloop_wide.cuh"

namespace qfuse::mla {

/// The wide form's stages and Q (WideLayout), 256 threads, its own row arrays and barriers.
struct PairTraits : WideLayout<false> {
  static constexpr int kThreads = 256;
  static constexpr int kOffP1 = kOffQ + kQBytes;  // P1's own 64 x 64 bf16 tile (1024-aligned)
  static constexpr int kOffRed = kOffP1 + kRows * 128;
  static constexpr int kRedBytes = 5 * kRows * 4;  // m, scale0, scale1, l[2]
  static constexpr int kOffBar = kOffRed + kRedBytes;
  static constexpr int kBars = 2 * kBoxes + 1;  // full[stage][box], q_full
  static constexpr int kSmemBytes = kOffBar + kBars * 8 + 1024;
  static_assert(kSmemBytes <= 232448, "shared memory per block");
};

struct PairSmem {
  using Tr = PairTraits;
  uint8_t* base;
  __device__ uint8_t* kv(int s) const { return base + Tr::kOffKv + s * Tr::kTileBytes; }
  __device__ uint8_t* q() const { return base + Tr::kOffQ; }
  /// P of stage s's tile: P0 in stage 0's rope box, once the QK product (its only reader) is
  /// done; P1 in its own tile, so that stage 1's rope box is reloaded with the stage's right half.
  __device__ uint8_t* p(int s) const {
    return s == 0 ? kv(0) + 8 * Tr::kBoxBytes : base + Tr::kOffP1;
  }
  __device__ float* red(int k) const {
    return reinterpret_cast<float*>(base + Tr::kOffRed) + k * Tr::kRows;
  }
  __device__ float* m() const { return red(0); }
  __device__ float* scale0() const { return red(1); }
  __device__ float* scale1() const { return red(2); }
  __device__ float* l(int wg) const { return red(3 + wg); }
  __device__ uint64_t* full(int s, int box) const {
    return reinterpret_cast<uint64_t*>(base + Tr::kOffBar) + s * Tr::kBoxes + box;
  }
  __device__ uint64_t* q_full() const {
    return reinterpret_cast<uint64_t*>(base + Tr::kOffBar) + 2 * Tr::kBoxes;
  }
};

constexpr int kBarPiece = 3, kBarScale0 = 4, kBarScale1 = 5, kBarP0 = 6, kBarP1 = 7;

/// Byte offset of the thread's 4 bytes of 16-byte chunk j (8 columns) in row 16 w + g + 8 hi of a
/// 64 x 64 bf16 tile in the 128-byte-swizzled K-major layout (8 rows of 128 bytes per 1024).
__device__ __forceinline__ int sw128_frag_offset(int w, int g, int qd, int hi, int j) {
  const int r = 16 * w + g + 8 * hi;
  return (r >> 3) * 1024 + (r & 7) * 128 + ((j ^ (r & 7)) << 4) + 4 * qd;
}

/// A register-A fragment set (4 k-steps of 16 columns: a[kk] as wgmma_rs takes it) of a 64 x 64
/// bf16 tile, stored in the swizzled layout above.
__device__ __forceinline__ void store_frag_tile(uint8_t* tile, const uint32_t (&a)[4][4], int w,
                                                int g, int qd) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi)
#pragma unroll
    for (int j = 0; j < 8; ++j)
      *reinterpret_cast<uint32_t*>(tile + sw128_frag_offset(w, g, qd, hi, j)) =
          a[j >> 1][2 * (j & 1) + hi];
}

/// The scores' fragment (wgmma_ss_m64n64's layout) times `mul` as bf16 A fragments.
__device__ __forceinline__ void pack_frag(const float (&s)[32], const float (&mul)[2],
                                          uint32_t (&a)[4][4]) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    a[kk][0] = pack_bf16x2(s[8 * kk + 0] * mul[0], s[8 * kk + 1] * mul[0]);
    a[kk][1] = pack_bf16x2(s[8 * kk + 2] * mul[1], s[8 * kk + 3] * mul[1]);
    a[kk][2] = pack_bf16x2(s[8 * kk + 4] * mul[0], s[8 * kk + 5] * mul[0]);
    a[kk][3] = pack_bf16x2(s[8 * kk + 6] * mul[1], s[8 * kk + 7] * mul[1]);
  }
}

/// O's rows times the factors, skipped where every factor of the warp is 1 (no row maximum of the
/// warp's 16 rows moved: most tiles after the first few; the product is exact either way).
__device__ __forceinline__ void rescale_rows_unless_one(float (&o)[128], const float (&f)[2]) {
  if (__all_sync(0xffffffffu, f[0] == 1.0f && f[1] == 1.0f)) return;
  rescale_rows(o, f);
}

/// Half `half` (V columns 256 half .. + 255: boxes 4 half .. 4 half + 3) of the request's last
/// tile's rows past seq_len zeroed (as zero_v_tail), by one warpgroup (tid < 128).
__device__ __forceinline__ void zero_v_half(uint8_t* stage, int half, bool last, int valid,
                                            int tid) {
  if (!last || valid >= kTileTokens) return;
  const int units = (kTileTokens - valid) * 4 * 8;
  for (int u = tid; u < units; u += 128) {
    const int r = valid + (u >> 5), box = 4 * half + ((u >> 3) & 3), c = u & 7;
    *reinterpret_cast<uint4*>(stage + box * PairTraits::kBoxBytes + r * 128 + c * 16) =
        make_uint4(0, 0, 0, 0);
  }
  fence_proxy_async_shared();
}

/// The physical block of tile t's first token (physical_block), looked up early: the load that
/// uses it is issued by a consumer thread, whose warpgroup's next wgmma waits for it.
__device__ __forceinline__ int tile_block(const DecodeParams& p, const Piece& pc, int t) {
  return physical_block(p, pc, t * kTileTokens);
}

/// Boxes [b0, b1) of tile t of the piece into stage st, completing on their own barriers; blk0 =
/// tile_block(t) (a block size below 64 looks the tile's other blocks up here). One thread.
__device__ __forceinline__ void pair_load(const TcParams& tp, const PairSmem& sm, const Piece& pc,
                                          int t, int st, int b0, int b1, int blk0) {
  const DecodeParams& p = tp.p;
  for (int r0 = 0; r0 < kTileTokens; r0 += tp.box_rows) {
    const int tok = t * kTileTokens + r0;
    const int blk = r0 == 0 ? blk0 : physical_block(p, pc, tok);
    const int row = tok & (p.block_size - 1);
    for (int kb = b0; kb < b1; ++kb)
      tma_load_3d(sm.kv(st) + kb * PairTraits::kBoxBytes + r0 * PairTraits::kRowBytes, &tp.kv_map,
                  sm.full(st, kb), kb * 64, row, blk);
  }
}

/// S (+)= Q K^T over boxes [kB0, kB1) of stage st, each box waited on its own barrier (armed
/// here by the warpgroup's thread 0) and committed as its own group. kZero: the first k-step
/// overwrites S.
template <int kB0, int kB1, bool kZero>
__device__ __forceinline__ void pair_qk(float (&s)[32], const PairSmem& sm, int st, uint32_t phase,
                                        int tid) {
  using Tr = PairTraits;
  const uint64_t dq = sw128_desc(smem_addr(sm.q()), 16, 1024);
  const uint64_t dk = sw128_desc(smem_addr(sm.kv(st)), 16, 1024);
#pragma unroll
  for (int kb = kB0; kb < kB1; ++kb) {
    if (tid == 0) mbar_arrive_expect_tx(sm.full(st, kb), Tr::kBoxBytes);
    mbar_wait(sm.full(st, kb), phase);
    fence_regs(s);
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int sd = (kZero && kb == kB0 && k == 0) ? 0 : 1;
      wgmma_ss_m64n64(s, desc_add(dq, kb * Tr::kQBoxBytes + k * 32),
                      desc_add(dk, kb * Tr::kBoxBytes + k * 32), sd);
    }
    wgmma_commit();
  }
  fence_regs(s);
}

/// The masked row maxima of the scores' fragment (a row lives in one lane quad): keys of tile t
/// at or past limit[hi] are -inf. `open`: no key of the tile reaches any row's limit (the tiles
/// before the request's last one or two), so no mask.
__device__ __forceinline__ void pair_mask_max(float (&s)[32], int t, const int (&limit)[2], int qd,
                                              bool open, float (&mx)[2]) {
  const int tok0 = t * kTileTokens + 2 * qd;
  mx[0] = mx[1] = -INFINITY;
  if (!open) {
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = tok0 + 8 * j + (e & 1);
        s[4 * j + e] = tok < limit[e >> 1] ? s[4 * j + e] : -INFINITY;
      }
  }
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) mx[e >> 1] = fmaxf(mx[e >> 1], s[4 * j + e]);
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    mx[hi] = fmaxf(mx[hi], __shfl_xor_sync(0xffffffffu, mx[hi], 1));
    mx[hi] = fmaxf(mx[hi], __shfl_xor_sync(0xffffffffu, mx[hi], 2));
  }
}

/// The running maxima of the thread's rows (r_lo, r_lo + 8) after a tile: mx holds the tile's
/// maxima in and the new running maxima out (max(m_prev, mx * scale_log2)); m_use the exponent
/// offset (0 for a row without a key yet), sc the factor for what was accumulated against m_prev.
/// The quad's first lane writes the new maxima to m_sh and the factors to sc_sh, once the warp
/// has read m_sh.
__device__ __forceinline__ void pair_row_max(const float (&m_prev)[2], float scale_log2,
                                             float (&mx)[2], float (&m_use)[2], float (&sc)[2],
                                             float* m_sh, float* sc_sh, int r_lo, int qd) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const float m_new = fmaxf(m_prev[hi], mx[hi] * scale_log2);
    m_use[hi] = m_new == -INFINITY ? 0.0f : m_new;
    sc[hi] = fast_exp2(m_prev[hi] - m_use[hi]);
    mx[hi] = m_new;
  }
  __syncwarp();
  if (qd == 0) {
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      m_sh[r_lo + 8 * hi] = mx[hi];
      sc_sh[r_lo + 8 * hi] = sc[hi];
    }
  }
}

template <class Epi>
__device__ __forceinline__ void pair_mainloop(const TcParams& tp, const PairSmem& sm, int rb,
                                              int part) {
  using Tr = PairTraits;
  const DecodeParams& p = tp.p;
  const int wg = warpgroup_index(), tid = threadIdx.x & 127;
  const int w = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
  const float scale_log2 = p.scale_log2;
  const int row0 = rb * Tr::kRows;
  const int i0 = row0 / p.heads, h0 = row0 - i0 * p.heads;
  const uint32_t kv0 = smem_addr(sm.kv(0)), kv1 = smem_addr(sm.kv(1));
  const uint32_t p0_addr = smem_addr(sm.p(0)), p1_addr = smem_addr(sm.p(1));
  if (threadIdx.x == 0) {
    prefetch_tensormap(&tp.kv_map);
    prefetch_tensormap(&tp.q_map);
  }
  uint32_t phase = 0;  // warpgroup 0: stage 0's uses; warpgroup 1: stage 1's
  int nq = 0;
  // A piece's Q and first two tiles (thread 0): the first piece's at its start, every later
  // piece's as soon as the previous piece's products have completed, before that piece's
  // epilogue (which reads no shared memory but the row arrays), so the loads overlap it.
  const auto load_piece = [&](const Piece& pc) {
    const int n = pc.t_end - pc.t_begin;
    if (pc.b < 0 || n <= 0) return;
    mbar_arrive_expect_tx(sm.q_full(), Tr::kQBytes);
    const int tq = pc.b * p.s_q + i0;
#pragma unroll
    for (int kb = 0; kb < Tr::kBoxes; ++kb)
      tma_load_3d(sm.q() + kb * Tr::kQBoxBytes, &tp.q_map, sm.q_full(), kb * 64, h0, tq);
    pair_load(tp, sm, pc, pc.t_begin, 0, 0, Tr::kBoxes, tile_block(p, pc, pc.t_begin));
    if (n > 1)
      pair_load(tp, sm, pc, pc.t_begin + 1, 1, 0, Tr::kBoxes, tile_block(p, pc, pc.t_begin + 1));
  };
  bool first = true;
  for_each_piece(p, part, [&](const Piece& pc, const Piece& next) {
    const int n = pc.t_end - pc.t_begin;
    const int tiles = tiles_of(pc.len);
    // The previous piece is done: its products have completed (each warpgroup waited before its
    // epilogue) and its row sums were read.
    named_sync_roles(kBarPiece, 256);
    if (threadIdx.x == 0) {
      if (first) load_piece(pc);
      if (next.b >= 0) {
#pragma unroll
        for (int kb = 0; kb < Tr::kBoxes; ++kb)
          tma_prefetch_3d(&tp.q_map, kb * 64, h0, next.b * p.s_q + i0);
      }
    }
    first = false;
    float o[128];
#pragma unroll
    for (int k = 0; k < 128; ++k) o[k] = 0.0f;
    float l[2] = {0.0f, 0.0f};
    int limit[2];
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int i = (row0 + 16 * w + g + 8 * hi) / p.heads;
      limit[hi] = pc.len - p.s_q + i + 1;  // keys [0, limit)
    }
    const int open_end = pc.len - p.s_q + 1;  // the smallest limit of any row
    if (n > 0) {
      mbar_wait(sm.q_full(), nq & 1);
      ++nq;
      float s[32];
      if (wg == 0) {
        pair_qk<0, 9, true>(s, sm, 0, phase, tid);
        phase ^= 1;
        wgmma_wait<0>();
        fence_regs(s);
        // One pair (tiles t0, t0 + 1 of stages 0, 1); kLast0: t0 is the piece's last tile,
        // kLast1: t0 + 1 is.
        const auto step = [&](int u, auto last0, auto last1) __attribute__((always_inline)) {
          constexpr bool kLast0 = decltype(last0)::value, kLast1 = decltype(last1)::value;
          const int t0 = pc.t_begin + u;
          const int r_lo = 16 * w + g;
          int blk2 = 0, blk3 = 0;  // the tiles this step loads (thread 0)
          if constexpr (!kLast0 && !kLast1) {
            if (tid == 0) {
              blk2 = tile_block(p, pc, t0 + 2);
              if (t0 + 3 < pc.t_end) blk3 = tile_block(p, pc, t0 + 3);
            }
          }
          float mx[2], m_use[2], sc[2], rs[2];
          pair_mask_max(s, t0, limit, qd, (t0 + 1) * kTileTokens <= open_end, mx);
          float m_prev[2];
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) m_prev[hi] = u == 0 ? -INFINITY : sm.m()[r_lo + 8 * hi];
          pair_row_max(m_prev, scale_log2, mx, m_use, sc, sm.m(), sm.scale0(), r_lo, qd);
          rescale_rows_unless_one(o, sc);
          exp_rows(s, scale_log2, m_use, rs);
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) l[hi] = fmaf(l[hi], sc[hi], rs[hi]);
          named_arrive(kBarScale0, 256);
          uint32_t a[4][4];
          const float one[2] = {1.0f, 1.0f};
          pack_frag(s, one, a);
          zero_v_half(sm.kv(0), 0, t0 == tiles - 1, pc.len - t0 * kTileTokens, tid);
          fence_regs(o);
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < 4; ++kk)
            wgmma_rs_m64n256_tb(o, a[kk], sw128_desc(kv0 + kk * 2048, Tr::kBoxBytes, 1024), 1);
          wgmma_commit();
          wgmma_wait<0>();
          fence_regs(o);
          named_sync_roles(kBarScale1, 256);
          // Stage 0's left half is free (this PV was its last reader; the QK of t0 is done).
          if constexpr (!kLast0 && !kLast1)
            if (tid == 0) pair_load(tp, sm, pc, t0 + 2, 0, 0, 4, blk2);
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) sc[hi] = sm.scale1()[r_lo + 8 * hi];
          pack_frag(s, sc, a);
          store_frag_tile(sm.p(0), a, w, g, qd);
          fence_proxy_async_shared();
          named_arrive(kBarP0, 256);
          rescale_rows_unless_one(o, sc);
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) l[hi] *= sc[hi];
          if constexpr (!kLast0) {
            zero_v_half(sm.kv(1), 0, t0 + 1 == tiles - 1, pc.len - (t0 + 1) * kTileTokens, tid);
            named_sync_roles(kBarP1, 256);
            fence_regs(o);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 4; ++kk)
              wgmma_ss_m64n256_tb(o, sw128_desc(p1_addr + kk * 32, 16, 1024),
                                  sw128_desc(kv1 + kk * 2048, Tr::kBoxBytes, 1024), 1);
            wgmma_commit();
          }
          if constexpr (!kLast0 && !kLast1) {
            pair_qk<0, 4, true>(s, sm, 0, phase, tid);
            if (t0 + 3 < pc.t_end) {
              // P1 V1[:, 0:256] done: stage 1's left half is free.
              wgmma_wait<4>();
              if (tid == 0) pair_load(tp, sm, pc, t0 + 3, 1, 0, 4, blk3);
            }
            pair_qk<4, 9, false>(s, sm, 0, phase, tid);
            phase ^= 1;
          }
          wgmma_wait<0>();
          fence_regs(s);
          fence_regs(o);
        };
        int u = 0;
        for (; u < n - 2; u += 2) step(u, std::false_type{}, std::false_type{});
        if (u + 1 < n)
          step(u, std::false_type{}, std::true_type{});
        else
          step(u, std::true_type{}, std::false_type{});
      } else {
        if (n > 1) {
          pair_qk<4, 9, true>(s, sm, 1, phase, tid);
          pair_qk<0, 4, false>(s, sm, 1, phase, tid);
          phase ^= 1;
          wgmma_wait<0>();
          fence_regs(s);
        }
        // kLast2: t0 + 2 is the piece's last tile (no t0 + 3 to load or multiply).
        const auto step = [&](int u, auto last0, auto last1, auto last2)
            __attribute__((always_inline)) {
          constexpr bool kLast0 = decltype(last0)::value, kLast1 = decltype(last1)::value;
          constexpr bool kLast2 = decltype(last2)::value;
          const int t1 = pc.t_begin + u + 1;
          const int r_lo = 16 * w + g;
          int blk2 = 0, blk3 = 0;  // tiles t1 + 1, t1 + 2 (thread 0)
          if constexpr (!kLast0 && !kLast1) {
            if (tid == 0) {
              blk2 = tile_block(p, pc, t1 + 1);
              if constexpr (!kLast2) blk3 = tile_block(p, pc, t1 + 2);
            }
          }
          float mx[2] = {-INFINITY, -INFINITY}, m_use[2], sc[2], rs[2] = {0.0f, 0.0f};
          named_sync_roles(kBarScale0, 256);
          if constexpr (!kLast0)
            pair_mask_max(s, t1, limit, qd, (t1 + 1) * kTileTokens <= open_end, mx);
          const float m0[2] = {sm.m()[r_lo], sm.m()[r_lo + 8]};
          pair_row_max(m0, scale_log2, mx, m_use, sc, sm.m(), sm.scale1(), r_lo, qd);
          if constexpr (!kLast0) exp_rows(s, scale_log2, m_use, rs);
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) {
            sc[hi] *= sm.scale0()[r_lo + 8 * hi];
            l[hi] = fmaf(l[hi], sc[hi], rs[hi]);
          }
          rescale_rows_unless_one(o, sc);
          named_arrive(kBarScale1, 256);
          if constexpr (!kLast0) {
            uint32_t a[4][4];
            const float one[2] = {1.0f, 1.0f};
            pack_frag(s, one, a);
            store_frag_tile(sm.p(1), a, w, g, qd);
            zero_v_half(sm.kv(1), 1, t1 == tiles - 1, pc.len - t1 * kTileTokens, tid);
            fence_proxy_async_shared();
            fence_regs(o);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 4; ++kk)
              wgmma_rs_m64n256_tb(
                  o, a[kk], sw128_desc(kv1 + 4 * Tr::kBoxBytes + kk * 2048, Tr::kBoxBytes, 1024),
                  1);
            wgmma_commit();
          }
          named_sync_roles(kBarP0, 256);
          zero_v_half(sm.kv(0), 1, t1 - 1 == tiles - 1, pc.len - (t1 - 1) * kTileTokens, tid);
          fence_regs(o);
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < 4; ++kk)
            wgmma_ss_m64n256_tb(
                o, sw128_desc(p0_addr + kk * 32, 16, 1024),
                sw128_desc(kv0 + 4 * Tr::kBoxBytes + kk * 2048, Tr::kBoxBytes, 1024), 1);
          wgmma_commit();
          if constexpr (!kLast0) named_arrive(kBarP1, 256);
          if constexpr (!kLast0 && !kLast1 && !kLast2) {
            wgmma_wait<1>();  // P1 V1[:, 256:512] done: stage 1's right half is free
            if (tid == 0) pair_load(tp, sm, pc, t1 + 2, 1, 4, Tr::kBoxes, blk3);
          }
          if constexpr (!kLast0 && !kLast1) {
            wgmma_wait<0>();  // P0 V0[:, 256:512] done: stage 0's right half and P0 free
            if (tid == 0) pair_load(tp, sm, pc, t1 + 1, 0, 4, Tr::kBoxes, blk2);
          }
          if constexpr (!kLast0 && !kLast1 && !kLast2) {
            pair_qk<4, 9, true>(s, sm, 1, phase, tid);
            pair_qk<0, 4, false>(s, sm, 1, phase, tid);  // (loaded by warpgroup 0)
            phase ^= 1;
          }
          wgmma_wait<0>();
          fence_regs(s);
          fence_regs(o);
        };
        using F = std::false_type;
        using T = std::true_type;
        int u = 0;
        for (; u < n - 3; u += 2) step(u, F{}, F{}, F{});
        if (u + 2 < n) {
          step(u, F{}, F{}, T{});
          step(u + 2, T{}, F{}, F{});
        } else if (u + 1 < n) {
          step(u, F{}, T{}, F{});
        } else {
          step(u, T{}, F{}, F{});
        }
      }
    }
    // Row sums: the quad's, then the other warpgroup's; 1 / l and lse per row.
    float scale[2];
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      l[hi] += __shfl_xor_sync(0xffffffffu, l[hi], 1);
      l[hi] += __shfl_xor_sync(0xffffffffu, l[hi], 2);
      if (qd == 0) sm.l(wg)[16 * w + g + 8 * hi] = l[hi];
    }
    named_sync_roles(kBarEpi, 256);
    // Both warpgroups' products have completed (each step ends in wgmma_wait<0>): Q, the stages
    // and the P boxes are free for the next piece.
    if (threadIdx.x == 0) load_piece(next);
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int r = 16 * w + g + 8 * hi;
      const float lt = sm.l(0)[r] + sm.l(1)[r];
      const bool any = lt > 0.0f;
      scale[hi] = any ? 1.0f / lt : 0.0f;
      if (wg == 0 && qd == 0) {
        const float lse = any ? (sm.m()[r] + __log2f(lt)) * 0.6931471805599453f : -INFINITY;
        const int gr = row0 + r;
        const int i = gr / p.heads;
        Epi::store_lse(p, EpiCtx{pc.b, pc.slot}, i, gr - i * p.heads, lse);
      }
    }
    store_wide<Epi>(p, EpiCtx{pc.b, pc.slot}, row0, 256 * wg, o, scale, w, g, qd);
  });
}

}  // namespace qfuse::mla
