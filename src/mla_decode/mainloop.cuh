// The tensor-core MLA decode mainloop (traits.cuh has the form and the shared-memory layout):
//
//   producer_tma      one thread: per piece the first KV tile, then the piece's Q (TMA, 9 boxes
//                     of 64 columns), then the remaining tiles. KV boxes come from the paged
//                     cache with the block table resolved here: one box per (block slice, 64
//                     columns); a block id outside [0, num_blocks) or a slice past seq_len loads
//                     zeros (an out-of-range TMA coordinate) and, for a bad id, sets the device
//                     error flag. bf16 cache: straight into the consumer's stage (128-byte
//                     swizzle); FP8 cache: into half-tile staging buffers (no swizzle).
//   producer_dequant  FP8 cache only, 96 threads: E4M3 staging -> bf16 stage, exact (the byte's
//                     bits moved into a bf16 2^-120 below the value, then one bf16 FMA by 2^120,
//                     subnormals included), rows past seq_len zeroed.
//   consumer          one warpgroup: per 64-token tile S^T = K Q^T (36 wgmma k-steps), causal /
//                     length mask, online softmax in fp32 (column maxima across the 4 warps
//                     through shared memory), P^T to shared memory as bf16, O^T += V^T P^T
//                     (8 m-tiles x 4 k-steps). The stage is released when the PV product that
//                     reads it has completed (it overlaps the next tile's QK product).
//
// Barrier protocol (counts): full[s] (bf16: 1 + TMA bytes; FP8: 96 dequant arrivals), empty[s]
// (4 consumer warps), q_full (1 + TMA bytes), q_empty (4), f8_full[s] (1 + TMA bytes), f8_empty[s]
// (96). The k-th use of a barrier waits for parity k & 1 (the producer side for (k & 1) ^ 1).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "mla_decode/epilogue.cuh"
#include "mla_decode/schedule.cuh"
#include "mla_decode/sm90.cuh"
#include "mla_decode/traits.cuh"
#include "qfuse/mla_decode/mla_decode.h"

namespace qfuse::mla {

template <class Tr>
struct TcSmem {
  uint8_t* base;
  __device__ uint8_t* kv(int s) const { return base + Tr::kOffKv + s * Tr::kTileBytes; }
  __device__ uint8_t* q() const { return base + Tr::kOffQ; }
  __device__ uint8_t* p() const { return base + Tr::kOffP; }
  __device__ uint8_t* f8(int s) const { return base + Tr::kOffF8 + s * Tr::kF8Bytes; }
  __device__ float* red(int k) const {
    return reinterpret_cast<float*>(base + Tr::kOffRed) + k * 4 * Tr::kRows;
  }
  __device__ uint64_t* bar() const { return reinterpret_cast<uint64_t*>(base + Tr::kOffBar); }
  __device__ uint64_t* full(int s) const { return bar() + s; }
  __device__ uint64_t* empty(int s) const { return bar() + Tr::kStages + s; }
  __device__ uint64_t* q_full() const { return bar() + 2 * Tr::kStages; }
  __device__ uint64_t* q_empty() const { return bar() + 2 * Tr::kStages + 1; }
  __device__ uint64_t* f8_full(int s) const { return bar() + 2 * Tr::kStages + 2 + s; }
  __device__ uint64_t* f8_empty(int s) const { return bar() + 2 * Tr::kStages + 5 + s; }
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

template <class Tr>
__device__ void producer_tma(const TcParams& tp, const TcSmem<Tr>& sm, int rb, int part) {
  const DecodeParams& p = tp.p;
  constexpr int R = Tr::kRows;
  prefetch_tensormap(&tp.kv_map);
  prefetch_tensormap(&tp.q_map);
  const int row0 = rb * R;
  const int i0 = row0 / p.heads, h0 = row0 - i0 * p.heads;
  int n = 0, nq = 0, nf = 0;
  // NOTE: L2 prefetch of the tile kPrefetch ahead of the one loaded into shared memory (and of
  // the next piece's Q): the two shared-memory stages alone keep too few bytes in flight per SM
  // for the HBM latency, as the stage of tile t + 2 frees only when PV(t) has completed.
  const auto prefetch_tile = [&](const Piece& pc, int t) {
    constexpr int kHalf = Tr::kFp8 ? Tr::kF8Tokens : kTileTokens;
    for (int r0 = 0; r0 < kTileTokens; r0 += min(tp.box_rows, kHalf)) {
      const int tok = t * kTileTokens + r0;
      if (tok >= pc.len) break;
      const int blk = physical_block(p, pc, tok);
      const int row = tok & (p.block_size - 1);
#pragma unroll
      for (int kb = 0; kb < Tr::kBoxes; ++kb) tma_prefetch_3d(&tp.kv_map, kb * 64, row, blk);
    }
  };
  const auto load_tile = [&](const Piece& pc, int t) {
    if (t + Tr::kPrefetch < pc.t_end) prefetch_tile(pc, t + Tr::kPrefetch);
    if constexpr (!Tr::kFp8) {
      const int st = n & 1;
      mbar_wait(sm.empty(st), ((n >> 1) & 1) ^ 1);
      mbar_arrive_expect_tx(sm.full(st), Tr::kTileBytes);
      for (int r0 = 0; r0 < kTileTokens; r0 += tp.box_rows) {
        const int tok = t * kTileTokens + r0;
        const int blk = physical_block(p, pc, tok);
        const int row = tok & (p.block_size - 1);
#pragma unroll
        for (int kb = 0; kb < Tr::kBoxes; ++kb)
          tma_load_3d(sm.kv(st) + kb * Tr::kBoxBytes + r0 * 128, &tp.kv_map, sm.full(st), kb * 64,
                      row, blk);
      }
      ++n;
    } else {
#pragma unroll 1
      for (int hh = 0; hh < 2; ++hh) {
        const int fs = nf % Tr::kF8Stages;
        mbar_wait(sm.f8_empty(fs), ((nf / Tr::kF8Stages) & 1) ^ 1);
        mbar_arrive_expect_tx(sm.f8_full(fs), Tr::kF8Bytes);
        for (int r0 = 0; r0 < Tr::kF8Tokens; r0 += tp.box_rows) {
          const int tok = t * kTileTokens + hh * Tr::kF8Tokens + r0;
          const int blk = physical_block(p, pc, tok);
          const int row = tok & (p.block_size - 1);
#pragma unroll
          for (int kb = 0; kb < Tr::kBoxes; ++kb)
            tma_load_3d(sm.f8(fs) + kb * Tr::kF8BoxBytes + r0 * 64, &tp.kv_map, sm.f8_full(fs),
                        kb * 64, row, blk);
        }
        ++nf;
      }
    }
  };
  for_each_piece(p, part, [&](const Piece& pc, const Piece& next) {
    if (pc.t_begin == pc.t_end) return;
    for (int t = pc.t_begin + 1; t < min(pc.t_begin + Tr::kPrefetch, pc.t_end); ++t)
      prefetch_tile(pc, t);
    load_tile(pc, pc.t_begin);
    mbar_wait(sm.q_empty(), (nq & 1) ^ 1);
    mbar_arrive_expect_tx(sm.q_full(), Tr::kQBytes);
    const int t0 = pc.b * p.s_q + i0;
#pragma unroll
    for (int kb = 0; kb < Tr::kBoxes; ++kb)
      tma_load_3d(sm.q() + kb * Tr::kQBoxBytes, &tp.q_map, sm.q_full(), kb * 64, h0, t0);
    ++nq;
    if (next.b >= 0) {
#pragma unroll
      for (int kb = 0; kb < Tr::kBoxes; ++kb)
        tma_prefetch_3d(&tp.q_map, kb * 64, h0, next.b * p.s_q + i0);
    }
    for (int t = pc.t_begin + 1; t < pc.t_end; ++t) load_tile(pc, t);
  });
}

/// Two E4M3 codes (bytes 1 and 3 of t, the other bytes zero) -> their exact bf16 values.
__device__ __forceinline__ uint32_t e4m3x2_bf16x2(uint32_t t) {
  // NOTE: sign to bit 15, exponent and mantissa to bits 10..4: a bf16 equal to the value times
  // 2^-120 (a bf16 subnormal for an E4M3 subnormal); bf16 FMA supports subnormals, and the
  // product by 2^120 (0x7B80) is exact. -0 as the addend keeps the sign of zeros.
  const uint32_t v = (t & 0x80008000u) | ((t >> 4) & 0x07F007F0u);
  uint32_t r;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(v), "r"(0x7B807B80u), "r"(0x80008000u));
  return r;
}

/// 16 E4M3 codes -> 16 bf16 values (y0: codes 0..7, y1: 8..15).
__device__ __forceinline__ void dequant16(const uint4& x, uint4& y0, uint4& y1) {
  y0.x = e4m3x2_bf16x2(__byte_perm(x.x, 0, 0x1404));
  y0.y = e4m3x2_bf16x2(__byte_perm(x.x, 0, 0x3424));
  y0.z = e4m3x2_bf16x2(__byte_perm(x.y, 0, 0x1404));
  y0.w = e4m3x2_bf16x2(__byte_perm(x.y, 0, 0x3424));
  y1.x = e4m3x2_bf16x2(__byte_perm(x.z, 0, 0x1404));
  y1.y = e4m3x2_bf16x2(__byte_perm(x.z, 0, 0x3424));
  y1.z = e4m3x2_bf16x2(__byte_perm(x.w, 0, 0x1404));
  y1.w = e4m3x2_bf16x2(__byte_perm(x.w, 0, 0x3424));
}

template <class Tr>
__device__ void producer_dequant(const TcParams& tp, const TcSmem<Tr>& sm, int part, int dtid) {
  const DecodeParams& p = tp.p;
  constexpr int kUnits = Tr::kBoxes * Tr::kF8Tokens * 4;  // 16-byte pieces of a half tile
  int n = 0, nf = 0;
  for_each_piece(p, part, [&](const Piece& pc, const Piece&) {
    for (int t = pc.t_begin; t < pc.t_end; ++t) {
      const int st = n & 1;
      mbar_wait(sm.empty(st), ((n >> 1) & 1) ^ 1);
      const int valid = pc.len - t * kTileTokens;
      uint8_t* dst = sm.kv(st);
#pragma unroll 1
      for (int hh = 0; hh < 2; ++hh) {
        const int fs = nf % Tr::kF8Stages;
        mbar_wait(sm.f8_full(fs), (nf / Tr::kF8Stages) & 1);
        const uint8_t* src = sm.f8(fs);
#pragma unroll 4
        for (int u = dtid; u < kUnits; u += Tr::kDequantThreads) {
          const int kb = u >> 7, rem = u & 127, row = rem >> 2, piece = rem & 3;
          const uint4 x =
              *reinterpret_cast<const uint4*>(src + kb * Tr::kF8BoxBytes + row * 64 + piece * 16);
          const int r = hh * Tr::kF8Tokens + row;
          uint4 y0 = make_uint4(0, 0, 0, 0), y1 = y0;
          if (r < valid) dequant16(x, y0, y1);
          uint8_t* drow = dst + kb * Tr::kBoxBytes + r * 128;
          *reinterpret_cast<uint4*>(drow + (((2 * piece) ^ (r & 7)) << 4)) = y0;
          *reinterpret_cast<uint4*>(drow + (((2 * piece + 1) ^ (r & 7)) << 4)) = y1;
        }
        mbar_arrive(sm.f8_empty(fs));
        ++nf;
      }
      fence_proxy_async_shared();  // the generic stores above, before wgmma reads them
      mbar_arrive(sm.full(st));
      ++n;
    }
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
  const float k_scale = Tr::kFp8 ? __ldg(p.k_scale) : 1.0f;
  const float scale_log2 = p.scale_log2 * k_scale;
  const uint32_t kv0 = smem_addr(sm.kv(0));
  const uint32_t q_addr = smem_addr(sm.q());
  const uint32_t p_addr = smem_addr(sm.p());
  uint8_t* p_gen = sm.p();
  float* red_max = sm.red(0);
  float* red_sum = sm.red(1);
  int cols[NC];
#pragma unroll
  for (int cc = 0; cc < NC; ++cc) cols[cc] = 8 * (cc >> 1) + 2 * qd + (cc & 1);
  int n = 0, nq = 0;
  for_each_piece(p, part, [&](const Piece& pc, const Piece&) {
    float o[8][NS];
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int k = 0; k < NS; ++k) o[j][k] = 0.0f;
    float m[NC], l[NC];
    int limit[NC];
#pragma unroll
    for (int cc = 0; cc < NC; ++cc) {
      m[cc] = -INFINITY;
      l[cc] = 0.0f;
      const int i = (rb * R + cols[cc]) / p.heads;
      limit[cc] = pc.len - p.s_q + i + 1;  // keys [0, limit)
    }
    const int tiles = tiles_of(pc.len);
    for (int t = pc.t_begin; t < pc.t_end; ++t, ++n) {
      const int st = n & 1;
      const uint32_t kv = kv0 + st * Tr::kTileBytes;
      if (t == pc.t_begin) mbar_wait(sm.q_full(), nq & 1);
      mbar_wait(sm.full(st), (n >> 1) & 1);
      float s[NS];
#pragma unroll
      for (int k = 0; k < NS; ++k) s[k] = 0.0f;
      fence_regs(s);
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < 4 * Tr::kBoxes; ++k) {
        const uint64_t da = sw128_desc(kv + (k >> 2) * Tr::kBoxBytes + (k & 3) * 32, 16, 1024);
        const uint64_t db = sw128_desc(q_addr + (k >> 2) * Tr::kQBoxBytes + (k & 3) * 32, 16, 1024);
        wgmma_bf16<R, 0>(s, da, db, k > 0 ? 1 : 0);
      }
      wgmma_commit();
      if (t > pc.t_begin) {
        wgmma_wait<1>();  // the previous tile's PV product: its stage is free
        fence_regs(o);
        if (lane == 0) mbar_arrive(sm.empty(st ^ 1));
      }
      wgmma_wait<0>();
      fence_regs(s);
      fence_regs(o);
      if (t == pc.t_end - 1 && lane == 0) mbar_arrive(sm.q_empty());

      // Mask (keys past the query token's causal limit) and the column maxima of this tile.
      const int tok = t * kTileTokens + 16 * w + g;
      float mx[NC];
#pragma unroll
      for (int cc = 0; cc < NC; ++cc) {
        const int k0 = 4 * (cc >> 1) + (cc & 1);
        s[k0] = tok < limit[cc] ? s[k0] : -INFINITY;
        s[k0 + 2] = tok + 8 < limit[cc] ? s[k0 + 2] : -INFINITY;
        mx[cc] = fmaxf(s[k0], s[k0 + 2]);
      }
#pragma unroll
      for (int cc = 0; cc < NC; ++cc) {
        mx[cc] = fmaxf(mx[cc], __shfl_xor_sync(0xffffffffu, mx[cc], 4));
        mx[cc] = fmaxf(mx[cc], __shfl_xor_sync(0xffffffffu, mx[cc], 8));
        mx[cc] = fmaxf(mx[cc], __shfl_xor_sync(0xffffffffu, mx[cc], 16));
      }
      if (g == 0) {
#pragma unroll
        for (int cc = 0; cc < NC; ++cc) red_max[w * R + cols[cc]] = mx[cc];
      }
      named_sync(1, 128);
      // NOTE: bf16 cache, the request's last tile: rows past seq_len hold whatever the cache has
      // there (possibly NaN); P is 0 for them but 0 * NaN is NaN, so V's rows are zeroed.
      if constexpr (!Tr::kFp8) {
        const int valid = pc.len - t * kTileTokens;
        if (t == tiles - 1 && valid < kTileTokens) {
          uint8_t* stage = sm.kv(st);
          const int units = (kTileTokens - valid) * Tr::kVBoxes * 8;
          for (int u = tid; u < units; u += 128) {
            const int r = valid + (u >> 6), box = (u >> 3) & 7, c = u & 7;
            *reinterpret_cast<uint4*>(stage + box * Tr::kBoxBytes + r * 128 + c * 16) =
                make_uint4(0, 0, 0, 0);
          }
        }
      }
      float alpha[NC];
#pragma unroll
      for (int cc = 0; cc < NC; ++cc) {
        float tmax = red_max[cols[cc]];
#pragma unroll
        for (int ww = 1; ww < 4; ++ww) tmax = fmaxf(tmax, red_max[ww * R + cols[cc]]);
        const float m_new = fmaxf(m[cc], tmax * scale_log2);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        alpha[cc] = fast_exp2(m[cc] - m_use);
        m[cc] = m_new;
        const int k0 = 4 * (cc >> 1) + (cc & 1);
        const float p0 = fast_exp2(fmaf(s[k0], scale_log2, -m_use));
        const float p1 = fast_exp2(fmaf(s[k0 + 2], scale_log2, -m_use));
        l[cc] = fmaf(l[cc], alpha[cc], p0 + p1);
        // P^T as the K-major B operand: row = column cc of S^T, 64 tokens per 128-byte row.
        const int c = cols[cc];
        uint8_t* prow = p_gen + (c >> 3) * 1024 + (c & 7) * 128 + (g << 1);
        const __nv_bfloat16 b0 = __float2bfloat16_rn(p0), b1 = __float2bfloat16_rn(p1);
        *reinterpret_cast<__nv_bfloat16*>(prow + (((2 * w) ^ (c & 7)) << 4)) = b0;
        *reinterpret_cast<__nv_bfloat16*>(prow + (((2 * w + 1) ^ (c & 7)) << 4)) = b1;
      }
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int k = 0; k < NS; ++k) o[j][k] *= alpha[((k >> 2) << 1) | (k & 1)];
      fence_proxy_async_shared();
      named_sync(1, 128);
      fence_regs(o);
      wgmma_fence();
#pragma unroll
      for (int j = 0; j < Tr::kVBoxes; ++j) {
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const uint64_t da = sw128_desc(kv + j * Tr::kBoxBytes + kk * 2048, Tr::kBoxBytes, 1024);
          const uint64_t db = sw128_desc(p_addr + kk * 32, 16, 1024);
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
    // Row sums across the lanes and warps that share a column, then the epilogue.
    float scale[NC], lse[NC];
#pragma unroll
    for (int cc = 0; cc < NC; ++cc) {
      l[cc] += __shfl_xor_sync(0xffffffffu, l[cc], 4);
      l[cc] += __shfl_xor_sync(0xffffffffu, l[cc], 8);
      l[cc] += __shfl_xor_sync(0xffffffffu, l[cc], 16);
    }
    if (g == 0) {
#pragma unroll
      for (int cc = 0; cc < NC; ++cc) red_sum[w * R + cols[cc]] = l[cc];
    }
    named_sync(1, 128);
#pragma unroll
    for (int cc = 0; cc < NC; ++cc) {
      float tot = 0.0f;
#pragma unroll
      for (int ww = 0; ww < 4; ++ww) tot += red_sum[ww * R + cols[cc]];
      const bool any = tot > 0.0f;
      scale[cc] = any ? k_scale / tot : 0.0f;
      lse[cc] = any ? (m[cc] + __log2f(tot)) * 0.6931471805599453f : -INFINITY;
    }
    named_sync(1, 128);  // red_sum is rewritten by the next piece
    store_fragment<Epi, R>(p, EpiCtx{pc.b, pc.slot}, rb * R, o, scale, lse);
  });
}

}  // namespace qfuse::mla
