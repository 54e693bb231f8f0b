// The tensor-core MLA decode consumer for an FP8 E4M3 cache (traits.cuh: TcFp8Traits): both
// products take their A operand from registers, converted from the raw E4M3 tile in shared memory,
// so the cache goes HBM -> shared memory (TMA, 36 KB a tile, 5 stages in flight) -> registers
// once, with no bf16 copy in shared memory.
//
//   QK: A = K tile [64 tokens x 16 columns] per k-step. The 576 columns are permuted within each
//       64-column box so that a thread's four columns of a k-step (2 qd, 2 qd + 1, 2 qd + 8,
//       2 qd + 9) are 4 consecutive bytes and its four k-steps 16 consecutive bytes: one 16-byte
//       load per (token row, box). Q, the B operand, is permuted the same way in shared memory
//       once per piece (whole 32-bit words move: column pairs stay adjacent).
//   PV: A = V^T [64 latent columns x 16 tokens] per (m-tile, k-step). The latent columns are
//       permuted instead (the output's d, DMapRS in epilogue.cuh): a thread's 2 rows of each of
//       the 8 m-tiles are 16 consecutive bytes of a token's row, so one 16-byte load per token
//       serves all 8 m-tiles; token pairs are joined with byte permutes.
//   Conversion: E4M3 -> fp16 exactly, and both products run on fp16 operands. A code's sign and
//   its 7 exponent/mantissa bits land in an fp16 as the value times 2^-8 (E4M3's exponent bias is
//   7, fp16's 15; an E4M3 subnormal becomes an fp16 subnormal), so the conversion is bit moves
//   only: one byte permute (prmt, the code and its sign replicated above it in each 16-bit
//   lane), a shift by 7 and a mask — 2 ALU instructions and a shift per pair, where bf16 needs
//   an exponent rebias (4.7 ALU + an HMUL2 per pair measured in the SASS of the bf16 form; the
//   ALU pipe was the consumer's bound, bench/NOTES.md M3, M11). NaN codes become finite (480):
//   the rows past seq_len that a tile may hold then cannot poison O through P = 0 (a NaN code
//   inside a sequence is not propagated). Q goes to fp16 once per piece, times a power of two
//   2^k that puts the block's largest finite |q| in [2^14, 2^15) (exact for every value above
//   2^-14 of the scaled range: fp16 holds bf16's 8 significant bits); P is written as fp16
//   (values in [0, 1], 11 significant bits). The 2^-8 of K and 2^k of Q go into the piece's
//   softmax scale, V's 2^-8 into the output normalisation.
//   k_scale is folded into the softmax scale and the output normalisation.
//
// Stage layout: 9 boxes of 64 tokens x 64 bytes, TMA's 64-byte swizzle (16-byte chunk c of row r
// at c ^ ((r >> 1) & 3)): the K loads of a quarter warp hit 8 distinct bank groups, the V loads 4
// (2-way conflicts, on 32 KB of 36).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "mla_decode/fp8_convert.h"
#include "mla_decode/mainloop.cuh"

namespace qfuse::mla {

/// 2^e as fp32 for -126 <= e <= 127.
__device__ __forceinline__ float exp2i(int e) {
  return __uint_as_float(static_cast<uint32_t>(127 + e) << 23);
}

__device__ __forceinline__ uint4 lds128(const uint8_t* p) {
  return *reinterpret_cast<const uint4*>(p);
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w));
}

/// Q to the QK B operand of the fp16 products, in place (every 64-column box of every row; all
/// 128 consumer threads, which it synchronises): the exponent k that puts the block's largest
/// finite |q| in [2^14, 2^15) (k <= 127), then each bf16 times 2^k rounded to fp16, its columns
/// permuted into the QK A fragments' order: logical word 8 s + c2 (columns 16 s + 2 c2, + 1) takes
/// physical word 8 (c2 & 3) + 2 s + (c2 >> 2). One thread per (row, box); 128-byte swizzled rows.
/// Returns k.
template <class Tr>
__device__ __forceinline__ int prepare_q_f16(uint8_t* q, int tid, uint32_t* red) {
  uint32_t amax = 0;  // bits of the largest finite |q| (bf16 magnitudes order as integers)
  for (int item = tid; item < Tr::kRows * Tr::kBoxes; item += 128) {
    const uint8_t* rp = q + (item / Tr::kRows) * Tr::kQBoxBytes + (item % Tr::kRows) * 128;
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const uint4 v = lds128(rp + (c << 4));
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t x = word(v, i);
        const uint32_t lo = x & 0x7FFFu, hi = (x >> 16) & 0x7FFFu;
        amax = max(amax, lo < 0x7F80u ? lo : 0u);
        amax = max(amax, hi < 0x7F80u ? hi : 0u);
      }
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  if ((tid & 31) == 0) red[tid >> 5] = amax;
  named_sync(1, 128);
  amax = max(max(red[0], red[1]), max(red[2], red[3]));
  const int k = q_f16_exponent(amax);
  const float mul = exp2i(k);
  for (int item = tid; item < Tr::kRows * Tr::kBoxes; item += 128) {
    const int row = item % Tr::kRows, kb = item / Tr::kRows;
    uint8_t* rp = q + kb * Tr::kQBoxBytes + row * 128;
    uint32_t in[32], out[32];
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const uint4 v = lds128(rp + ((c ^ (row & 7)) << 4));
      in[4 * c] = v.x;
      in[4 * c + 1] = v.y;
      in[4 * c + 2] = v.z;
      in[4 * c + 3] = v.w;
    }
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const __half2 h = __floats2half2_rn(__uint_as_float(in[i] << 16) * mul,
                                          __uint_as_float(in[i] & 0xFFFF0000u) * mul);
      in[i] = *reinterpret_cast<const uint32_t*>(&h);
    }
#pragma unroll
    for (int s = 0; s < 4; ++s)
#pragma unroll
      for (int c2 = 0; c2 < 8; ++c2) out[8 * s + c2] = in[8 * (c2 & 3) + 2 * s + (c2 >> 2)];
#pragma unroll
    for (int c = 0; c < 8; ++c)
      *reinterpret_cast<uint4*>(rp + ((c ^ (row & 7)) << 4)) =
          make_uint4(out[4 * c], out[4 * c + 1], out[4 * c + 2], out[4 * c + 3]);
  }
  return k;
}

template <class Tr, class Epi>
__device__ void consumer_fp8(const TcParams& tp, const TcSmem<Tr>& sm, int rb, int part) {
  const DecodeParams& p = tp.p;
  constexpr int R = Tr::kRows, NC = R / 4, NS = R / 2;
  const int tid = threadIdx.x - 128;
  const int w = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
  const float k_scale = __ldg(p.k_scale);
  const float scale_log2 = p.scale_log2 * k_scale;  // times 2^(8 - k) per piece (prepare_q_f16)
  const uint32_t q_addr = smem_addr(sm.q());
  const uint32_t p_addr = smem_addr(sm.p());
  uint8_t* p_gen = sm.p();
  float* red_max = sm.red(0);
  float* red_sum = sm.red(1);
  const ColumnMap<R> cm(qd);
  // This thread's K rows (tokens 16 w + g, + 8) and their swizzled 16-byte chunk (qd).
  const int r0 = 16 * w + g, r1 = r0 + 8;
  const int k_off0 = r0 * 64 + ((qd ^ ((r0 >> 1) & 3)) << 4);
  const int k_off1 = r1 * 64 + ((qd ^ ((r1 >> 1) & 3)) << 4);
  // Its V columns: box 2 w + g / 4, chunk g % 4 of tokens 16 kk + 2 qd + {0, 1, 8, 9}.
  const int v_box = (2 * w + (g >> 2)) * Tr::kBoxBytes;
  int n = 0, nq = 0;
  for_each_piece(p, part, [&](const Piece& pc, const Piece&) {
    float o[8][NS], m[NC], l[NC];
    int limit[NC];
    piece_begin<R>(p, pc, rb, cm, o, m, l, limit);
    float piece_scale_log2 = 0.0f;
    for (int t = pc.t_begin; t < pc.t_end; ++t, ++n) {
      const int st = n % Tr::kStages;
      if (t == pc.t_begin) {
        mbar_wait(sm.q_full(), nq & 1);
        const int k = prepare_q_f16<Tr>(sm.q(), tid, reinterpret_cast<uint32_t*>(red_max));
        piece_scale_log2 = scale_log2 * exp2i(8 - k);
        fence_proxy_async_shared();
        named_sync(1, 128);
      }
      mbar_wait(sm.full(st), (n / Tr::kStages) & 1);
      const uint8_t* stage = sm.kv(st);

      // S^T = K Q^T: per box, two 16-byte loads give the A fragments of its 4 k-steps.
      float s[NS];
#pragma unroll
      for (int k = 0; k < NS; ++k) s[k] = 0.0f;
      fence_regs(s);
      uint32_t a[2][16];
#pragma unroll
      for (int kb = 0; kb < Tr::kBoxes; ++kb) {
        const uint8_t* box = stage + kb * Tr::kBoxBytes;
        const uint4 x0 = lds128(box + k_off0), x1 = lds128(box + k_off1);
        uint32_t(&A)[16] = a[kb & 1];
        if (kb >= 2) {
          wgmma_wait<1>();  // box kb - 2's products have read this register set
          fence_regs(A);
        }
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) k_step_fragment(&A[4 * ks], word(x0, ks), word(x1, ks));
        fence_regs(A);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
          const uint64_t db = sw128_desc(q_addr + kb * Tr::kQBoxBytes + ks * 32, 16, 1024);
          wgmma_rs<R, true>(s, &A[4 * ks], db, (kb | ks) != 0 ? 1 : 0);
        }
        wgmma_commit();
        fence_regs(A);
      }
      wgmma_wait<0>();
      fence_regs(s);
      fence_regs(a[0]);
      fence_regs(a[1]);
      if (t == pc.t_end - 1 && lane == 0) mbar_arrive(sm.q_empty());

      tile_max<R>(s, t * kTileTokens + 16 * w + g, limit, cm, red_max, w, g);
      named_sync(1, 128);
      float alpha[NC];
      tile_softmax<R, true>(s, m, l, alpha, cm, red_max, piece_scale_log2, p_gen, w, g);
      rescale<R>(o, alpha);
      fence_proxy_async_shared();
      named_sync(1, 128);
      fence_regs(o);

      // O^T += V^T P^T: per k-step, four 16-byte loads (one per token) give the A fragments of
      // all 8 m-tiles.
      // Two commit groups per k-step (m-tiles 0-3, 4-7), each with its own 16 A registers, so the
      // conversion of one group overlaps the products of the previous one in half the registers
      // of a k-step-wide buffer.
      uint32_t av[2][16];
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint4 y[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int tok = 16 * kk + 2 * qd + (c & 1) + 8 * (c >> 1);
          y[c] = lds128(stage + v_box + tok * 64 + (((g & 3) ^ ((tok >> 1) & 3)) << 4));
        }
        const uint64_t db = sw128_desc(p_addr + kk * 32, 16, 1024);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          uint32_t(&A)[16] = av[h];
          if (kk >= 1) {
            wgmma_wait<1>();  // the previous group that used these registers has completed
            fence_regs(A);
          }
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) {
            // m-tile j: bytes 2 (j & 1), + 1 of word j / 2 (its latent columns 2 j, 2 j + 1).
            const int j = 4 * h + jj;
            v_tile_fragment(&A[4 * jj], word(y[0], j >> 1), word(y[1], j >> 1), word(y[2], j >> 1),
                            word(y[3], j >> 1), 2 * (j & 1));
          }
          fence_regs(A);
          wgmma_fence();
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) wgmma_rs<R, true>(o[4 * h + jj], &A[4 * jj], db, 1);
          wgmma_commit();
          fence_regs(A);
        }
      }
      wgmma_wait<0>();
      fence_regs(o);
      fence_regs(av[0]);
      fence_regs(av[1]);
      if (lane == 0) mbar_arrive(sm.empty(st));  // every load from the stage is done
    }
    if (pc.t_end > pc.t_begin) ++nq;
    float scale[NC], lse[NC];
    piece_stats<R>(l, m, cm, red_sum, w, g, k_scale * 256.0f, scale, lse);  // V is 2^-8 v
    store_fragment<Epi, R, DMapRS>(p, EpiCtx{pc.b, pc.slot}, rb * R, o, scale, lse);
  });
}

}  // namespace qfuse::mla
