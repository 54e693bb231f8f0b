// The wide tensor-core MLA decode form, for 64 query rows per block and a bf16 cache
// (traits.cuh: WideTraits). Where a request has 64 or more query rows (heads x s_q), the query
// rows are the wgmma M and the KV tile is read once per 64 rows, not once per 16 / 32:
//
//   S [64 rows x 64 tokens]  = Q [64 x 576] . K^T     (A = Q, B = K tile: both K-major in smem)
//   O [64 rows x 512]       += P [64 x 64] . V        (B = V, MN-major: the tile's latent boxes)
//
// Warpgroup 0: the TMA producer (producer_tma, mainloop.cuh). Warpgroup 1 ("qk"): per tile the
// QK product (36 m64n64k16), the causal / length mask and the online softmax with each row inside
// one quad of lanes (no cross-warp reduction); P as register A fragments for its own PV over latent
// columns 0..255 (4 m64n256k16) and, for warpgroup 2, into the stage's rope box (QK, its only
// reader, is done with it: P is double-buffered with the stages). Warpgroup 2 ("pv"): the PV
// product over columns 256..511 from P in shared memory, rescaled by the tile's factors alpha that
// warpgroup 1 leaves beside it. Warpgroup 1 issues its PV and the next tile's QK back to back, so
// the tensor pipe has warpgroup 2's PV to run while warpgroup 1 computes the softmax.
// (Measured and not kept, bench/NOTES.md M7-M9: the two consumers sharing the tiles, each running
// QK and softmax for every other tile, FlashMLA's arrangement; one full barrier per box; an L2
// prefetch of the next tile.)
//
// Synchronisation: full / empty stage barriers as the swapped form (empty: 8 warps, 4 of each
// consumer), q_full / q_empty (q_empty: warpgroup 1's 4 warps), p_full[stage] (warpgroup 1's 128
// threads: P and alpha written; the stage's release covers P's reuse), a_empty[stage] (warpgroup
// 2's 128 threads: alpha read), and the named barrier kBarEpi between the consumers (twice per
// piece: 1 / l is in shared memory; it has been read; the unaligned barrier.sync, as the two
// consumers reach it from different code).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "mla_decode/fp8_convert.h"
#include "mla_decode/mainloop.cuh"

namespace qfuse::mla {

constexpr int kBarEpi = 2;

/// Writes a consumer's O fragment (m64n256, latent columns col0 .. col0 + 255) through E: rows
/// 16 * warp + g + 8 * hi of the block's 64 query rows, scale[hi] = 1 / l of those rows. A row's
/// 32 pairs go through one store_pairs (one address, no per-store branch): this straight-line code
/// runs once per piece, so its length is its cost (instruction fetch: bench/NOTES.md M19).
template <class E>
__device__ __forceinline__ void store_wide(const DecodeParams& p, const EpiCtx& c, int row0,
                                           int col0, const float (&o)[128], const float (&scale)[2],
                                           int w, int g, int qd) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int gr = row0 + 16 * w + g + 8 * hi;
    const int i = gr / p.heads, h = gr - i * p.heads;
    E::template store_pairs<32>(p, c, i, h, col0 + 2 * qd, [&](int j) {
      return make_float2(o[4 * j + 2 * hi] * scale[hi], o[4 * j + 2 * hi + 1] * scale[hi]);
    });
  }
}

/// O's rows (the thread's rows r and r + 8: registers 4 j + {0, 1} and 4 j + {2, 3}) times the
/// tile's factors.
__device__ __forceinline__ void rescale_rows(float (&o)[128], const float (&alpha)[2]) {
#pragma unroll
  for (int j = 0; j < 32; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[4 * j + e] *= alpha[e >> 1];
}

/// s = 2^(s * scale_log2 - m_use[row]) in place over the scores' fragment (wgmma_ss_m64n64's
/// layout: registers 4 j + e, row hi = e >> 1), and the thread's sums of each row.
__device__ __forceinline__ void exp_rows(float (&s)[32], float scale_log2, const float (&m_use)[2],
                                         float (&rs)[2]) {
  rs[0] = rs[1] = 0.0f;
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int hi = e >> 1;
      s[4 * j + e] = fast_exp2(fmaf(s[4 * j + e], scale_log2, -m_use[hi]));
      rs[hi] += s[4 * j + e];
    }
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 x = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&x);
}

/// Thread tid's two token rows of tile t of piece pc in an E4M3 cache (wide_fp8_token(tid, i)),
/// at its first column (wide_fp8_col(tid, 0, 0); box kb's columns are 64 kb bytes on), or null
/// where the row reads as zeros (past seq_len, a bad block id (flagged by physical_block), or no
/// tile: pc.b < 0).
struct Fp8Rows {
  const uint8_t* row[2];
};

__device__ __forceinline__ Fp8Rows fp8_rows(const DecodeParams& p, const Piece& pc, int t,
                                            int tid) {
  Fp8Rows rows{{nullptr, nullptr}};
  if (pc.b < 0) return rows;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int tok = t * kTileTokens + wide_fp8_token(tid, i);
    const int blk = physical_block(p, pc, tok);
    if (blk < p.num_blocks)
      rows.row[i] = static_cast<const uint8_t*>(p.cache) + blk * p.c_sb +
                    static_cast<int64_t>(tok & (p.block_size - 1)) * p.c_st +
                    wide_fp8_col(tid, 0, 0);
  }
  return rows;
}

__device__ __forceinline__ uint4 ldg_or_zero(const uint8_t* row, int offset) {
  return row != nullptr ? __ldg(reinterpret_cast<const uint4*>(row + offset))
                        : make_uint4(0, 0, 0, 0);
}

/// Two bf16 words (values times 2^-120, e4m3_lanes_bf16x2) times 2^112: exact (bf16 multiplies
/// keep subnormal inputs), the values times 2^-8.
__device__ __forceinline__ uint32_t bf16x2_times_2p112(uint32_t x) {
  uint32_t y;
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(y) : "r"(x), "r"(0x77807780u));
  return y;
}

__device__ __forceinline__ void sts128(uint32_t addr, uint32_t a, uint32_t b, uint32_t c,
                                       uint32_t d) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(a), "r"(b), "r"(c),
               "r"(d)
               : "memory");
}

/// The wide form's producer for an E4M3 cache (WideFp8Traits): the whole warpgroup converts each
/// 64-token tile into the bf16 stage the consumers read (the layout a 128-byte-swizzled TMA load
/// of a bf16 tile gives, values times 2^-8), and thread 0 loads each piece's Q by TMA as
/// producer_tma does. Thread tid handles tokens r = tid / 4 and r + 32 of a tile, 16 columns
/// (16 * (tid % 4) ..) of each of the 9 boxes: per tile 18 16-byte loads (a warp reads 64
/// contiguous bytes of 8 rows) and 36 16-byte stores (8 lanes of a store phase hit 8 distinct
/// 16-byte bank groups). NOTE: the loads of tile n + 1 are issued as tile n's chunks are converted,
/// into the registers just freed, so a load has about a tile's time to land and only the tile in
/// registers (72 registers) is ever in flight; there is no shared memory for raw tiles beside two
/// bf16 stages and Q. The stage is written only after its empty barrier (both consumers done with
/// it), then fenced for the async proxy; full[] counts the 128 threads.
template <class Tr>
__device__ void producer_fp8_wide(const TcParams& tp, const TcSmem<Tr>& sm, int rb, int part) {
  static_assert(Tr::kFp8 && Tr::kRows == 64, "the wide form's FP8 producer");
  const DecodeParams& p = tp.p;
  const int tid = threadIdx.x;
  if (tid == 0) prefetch_tensormap(&tp.q_map);
  const uint32_t kv0 = smem_addr(sm.kv(0));
  uint4 buf[2][Tr::kBoxes];
  int n = 0, nq = 0;
  for_each_piece(p, part, [&](const Piece& pc, const Piece& next) {
    if (pc.t_begin == pc.t_end) return;
    if (n == 0) {
      const Fp8Rows rows = fp8_rows(p, pc, pc.t_begin, tid);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int kb = 0; kb < Tr::kBoxes; ++kb) buf[i][kb] = ldg_or_zero(rows.row[i], 64 * kb);
    }
    for (int t = pc.t_begin; t < pc.t_end; ++t, ++n) {
      // (field by field: a conditional between the two Piece lvalues put them in local memory)
      const bool last = t + 1 == pc.t_end;
      const Piece np{last ? next.b : pc.b, last ? next.len : pc.len, 0, 0, 0};
      const Fp8Rows nrows = fp8_rows(p, np, last ? next.t_begin : t + 1, tid);
      const int st = n & 1;
      const uint32_t stage = kv0 + st * Tr::kTileBytes;
      mbar_wait(sm.empty(st), ((n >> 1) & 1) ^ 1);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int kb = 0; kb < Tr::kBoxes; ++kb) {
          uint32_t o[4];
          e4m3_half_chunk_bf16x2(o, buf[i][kb].x, buf[i][kb].y);
          sts128(stage + wide_fp8_dst(tid, i, kb, 0), bf16x2_times_2p112(o[0]),
                 bf16x2_times_2p112(o[1]), bf16x2_times_2p112(o[2]), bf16x2_times_2p112(o[3]));
          e4m3_half_chunk_bf16x2(o, buf[i][kb].z, buf[i][kb].w);
          sts128(stage + wide_fp8_dst(tid, i, kb, 1), bf16x2_times_2p112(o[0]),
                 bf16x2_times_2p112(o[1]), bf16x2_times_2p112(o[2]), bf16x2_times_2p112(o[3]));
          buf[i][kb] = ldg_or_zero(nrows.row[i], 64 * kb);
        }
      fence_proxy_async_shared();
      mbar_arrive(sm.full(st));
      if (tid == 0 && t == pc.t_begin) {
        const int row0 = rb * Tr::kRows;
        const int i0 = row0 / p.heads;
        load_q<Tr>(tp, sm, pc, next, i0, row0 - i0 * p.heads, nq);
      }
      if (t == pc.t_begin) ++nq;
    }
  });
}

template <class Tr, class Epi>
__device__ void wide_consumer_qk(const TcParams& tp, const TcSmem<Tr>& sm, int rb, int part) {
  const DecodeParams& p = tp.p;
  const int tid = threadIdx.x - 128;
  const int w = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
  // NOTE: an FP8 cache's stage holds its values times 2^-8 (producer_fp8_wide): k_scale * 2^8
  // goes into the softmax scale and the output normalisation.
  float scale_log2 = p.scale_log2, out_mul = 1.0f;
  if constexpr (Tr::kFp8) {
    out_mul = __ldg(p.k_scale) * 256.0f;
    scale_log2 *= out_mul;
  }
  const uint32_t kv0 = smem_addr(sm.kv(0));
  const uint32_t q_addr = smem_addr(sm.q());
  float* alpha_s = sm.red(0);  // [2][64]
  float* scale_s = sm.red(2);
  const int row0 = rb * Tr::kRows;
  int n = 0, nq = 0;
  for_each_piece(p, part, [&](const Piece& pc, const Piece&) {
    float o[128];
#pragma unroll
    for (int k = 0; k < 128; ++k) o[k] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    int limit[2];
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int i = (row0 + 16 * w + g + 8 * hi) / p.heads;
      limit[hi] = pc.len - p.s_q + i + 1;  // keys [0, limit)
    }
    const int tiles = tiles_of(pc.len);
    for (int t = pc.t_begin; t < pc.t_end; ++t, ++n) {
      const int st = n & 1;
      const uint32_t kv = kv0 + st * Tr::kTileBytes;
      if (t == pc.t_begin) mbar_wait(sm.q_full(), nq & 1);
      mbar_wait(sm.full(st), (n >> 1) & 1);
      float s[32];
#pragma unroll
      for (int k = 0; k < 32; ++k) s[k] = 0.0f;
      fence_regs(s);
      wgmma_fence();
      const uint64_t dq = sw128_desc(q_addr, 16, 1024), dk = sw128_desc(kv, 16, 1024);
#pragma unroll
      for (int k = 0; k < 4 * Tr::kBoxes; ++k) {
        const uint64_t da = desc_add(dq, (k >> 2) * Tr::kQBoxBytes + (k & 3) * 32);
        const uint64_t db = desc_add(dk, (k >> 2) * Tr::kBoxBytes + (k & 3) * 32);
        wgmma_ss_m64n64(s, da, db, k > 0 ? 1 : 0);
      }
      wgmma_commit();
      // NOTE: the previous tile's PV was committed before this QK: once it has completed, its
      // stage goes back to the producer while the QK runs (the next tile's load has the QK's
      // time more to land).
      if (t > pc.t_begin) {
        wgmma_wait<1>();
        fence_regs(o);
        if (lane == 0) mbar_arrive(sm.empty(st ^ 1));
      }
      wgmma_wait<0>();
      fence_regs(s);
      fence_regs(o);
      if (lane == 0 && t == pc.t_end - 1) mbar_arrive(sm.q_empty());
      // Mask, row maxima (a row lives in one quad), P = 2^(s - m).
      const int tok0 = t * kTileTokens + 2 * qd;
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int hi = e >> 1;
          const int tok = tok0 + 8 * j + (e & 1);
          s[4 * j + e] = tok < limit[hi] ? s[4 * j + e] : -INFINITY;
          mx[hi] = fmaxf(mx[hi], s[4 * j + e]);
        }
      float alpha[2], m_use[2];
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        mx[hi] = fmaxf(mx[hi], __shfl_xor_sync(0xffffffffu, mx[hi], 1));
        mx[hi] = fmaxf(mx[hi], __shfl_xor_sync(0xffffffffu, mx[hi], 2));
        const float m_new = fmaxf(m[hi], mx[hi] * scale_log2);
        m_use[hi] = m_new == -INFINITY ? 0.0f : m_new;
        alpha[hi] = fast_exp2(m[hi] - m_use[hi]);
        m[hi] = m_new;
      }
      float rs[2];
      exp_rows(s, scale_log2, m_use, rs);
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) l[hi] = fmaf(l[hi], alpha[hi], rs[hi]);
      zero_v_tail<Tr>(sm.kv(st), t == tiles - 1, pc.len - t * kTileTokens, tid);
      uint32_t a[4][4];
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        a[kk][0] = pack_bf16x2(s[8 * kk + 0], s[8 * kk + 1]);
        a[kk][1] = pack_bf16x2(s[8 * kk + 2], s[8 * kk + 3]);
        a[kk][2] = pack_bf16x2(s[8 * kk + 4], s[8 * kk + 5]);
        a[kk][3] = pack_bf16x2(s[8 * kk + 6], s[8 * kk + 7]);
      }
      // P into the stage's rope box (QK, its only reader, is done) and alpha, for warpgroup 2,
      // once warpgroup 2 has read the alpha of this stage's previous tile (the stage's refill
      // orders it too, but through TMA, which the race checker does not follow).
      mbar_wait(sm.a_empty(st), ((n >> 1) & 1) ^ 1);
      uint8_t* p_gen = sm.kv(st) + 8 * Tr::kBoxBytes;
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int r = 16 * w + g + 8 * hi;
        uint8_t* prow = p_gen + (r >> 3) * 1024 + (r & 7) * 128 + 4 * qd;
#pragma unroll
        for (int j = 0; j < 8; ++j)
          *reinterpret_cast<uint32_t*>(prow + ((j ^ (r & 7)) << 4)) = a[j >> 1][2 * (j & 1) + hi];
        if (qd == 0) alpha_s[64 * st + r] = alpha[hi];
      }
      fence_proxy_async_shared();
      mbar_arrive(sm.p_full(st));
      rescale_rows(o, alpha);
      fence_regs(o);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const uint64_t db = sw128_desc(kv + kk * 2048, Tr::kBoxBytes, 1024);
        wgmma_rs_m64n256_tb(o, a[kk], db, 1);
      }
      wgmma_commit();
    }
    wgmma_wait<0>();
    fence_regs(o);
    if (pc.t_end > pc.t_begin) {
      if (lane == 0) mbar_arrive(sm.empty((n - 1) & 1));
      ++nq;
    }
    float scale[2];
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      l[hi] += __shfl_xor_sync(0xffffffffu, l[hi], 1);
      l[hi] += __shfl_xor_sync(0xffffffffu, l[hi], 2);
      const bool any = l[hi] > 0.0f;
      scale[hi] = any ? out_mul / l[hi] : 0.0f;
      const int r = 16 * w + g + 8 * hi;
      if (qd == 0) {
        scale_s[r] = scale[hi];
        const float lse = any ? (m[hi] + __log2f(l[hi])) * 0.6931471805599453f : -INFINITY;
        const int gr = row0 + r;
        const int i = gr / p.heads;
        Epi::store_lse(p, EpiCtx{pc.b, pc.slot}, i, gr - i * p.heads, lse);
      }
    }
    named_sync_roles(kBarEpi, 256);
    store_wide<Epi>(p, EpiCtx{pc.b, pc.slot}, row0, 0, o, scale, w, g, qd);
    named_sync_roles(kBarEpi, 256);
  });
}

template <class Tr, class Epi>
__device__ void wide_consumer_pv(const TcParams& tp, const TcSmem<Tr>& sm, int rb, int part) {
  const DecodeParams& p = tp.p;
  const int tid = threadIdx.x - 256;
  const int w = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
  const uint32_t kv0 = smem_addr(sm.kv(0));
  const float* alpha_s = sm.red(0);
  const float* scale_s = sm.red(2);
  const int row0 = rb * Tr::kRows;
  int n = 0;
  for_each_piece(p, part, [&](const Piece& pc, const Piece&) {
    float o[128];
#pragma unroll
    for (int k = 0; k < 128; ++k) o[k] = 0.0f;
    for (int t = pc.t_begin; t < pc.t_end; ++t, ++n) {
      const int st = n & 1;
      const uint32_t kv = kv0 + st * Tr::kTileBytes;
      mbar_wait(sm.full(st), (n >> 1) & 1);
      mbar_wait(sm.p_full(st), (n >> 1) & 1);
      float alpha[2];
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) alpha[hi] = alpha_s[64 * st + 16 * w + g + 8 * hi];
      mbar_arrive(sm.a_empty(st));
      rescale_rows(o, alpha);
      fence_regs(o);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const uint64_t da = sw128_desc(kv + 8 * Tr::kBoxBytes + kk * 32, 16, 1024);
        const uint64_t db = sw128_desc(kv + 4 * Tr::kBoxBytes + kk * 2048, Tr::kBoxBytes, 1024);
        wgmma_ss_m64n256_tb(o, da, db, 1);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(o);
      if (lane == 0) mbar_arrive(sm.empty(st));
    }
    named_sync_roles(kBarEpi, 256);
    float scale[2];
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) scale[hi] = scale_s[16 * w + g + 8 * hi];
    store_wide<Epi>(p, EpiCtx{pc.b, pc.slot}, row0, 256, o, scale, w, g, qd);
    named_sync_roles(kBarEpi, 256);
  });
}

}  // namespace qfuse::mla
