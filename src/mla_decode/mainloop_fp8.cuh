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
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "mla_decode/fp8_convert.h"
#include "mla_decode/mainloop.cuh"
#include "qfuse/quant/chunk.cuh"

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
/// Returns k. kThreads consumer threads (tid 0 .. kThreads - 1) share the work and meet at named
/// barrier kBar; red: kThreads / 32 words of scratch.
template <class Tr, int kThreads = 128, int kBar = 1>
__device__ __forceinline__ int prepare_q_f16(uint8_t* q, int tid, uint32_t* red) {
  uint32_t amax = 0;  // bits of the largest finite |q| (bf16 magnitudes order as integers)
  for (int item = tid; item < Tr::kRows * Tr::kBoxes; item += kThreads) {
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
  named_sync(kBar, kThreads);
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) amax = max(amax, red[i]);
  const int k = q_f16_exponent(amax);
  const float mul = exp2i(k);
  for (int item = tid; item < Tr::kRows * Tr::kBoxes; item += kThreads) {
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

/// Two E4M3 codes (the low 16 bits of `pair`, low byte first) as fp32.
__device__ __forceinline__ float2 e4m3x2_to_float2(uint32_t pair) {
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair & 0xFFFFu), __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}

/// Q for the E4M3 products of the kQ8 form's QK (bench/NOTES.md M26, M29), in place over the bf16
/// Q (Tr::kBoxes boxes of R rows x 128 bytes, 128-byte swizzle): per query row r, s_hi = 2^e, the
/// smallest power of two with the row's largest finite |q| <= 448 s_hi, hi = e4m3(q / s_hi)
/// (round to nearest), s_lo = s_hi / 16 and lo = e4m3((q - hi s_hi) / s_lo). Both factors being
/// powers of two, q / s_hi is exact; where it is a normal E4M3 value (>= 2^-6) hi keeps its 4
/// leading significant bits and the rest, a multiple of q's last bit of at most half hi's step
/// (<= 16 at the top of the range, <= 256 in lo's units), needs at most 4 significant bits: lo
/// holds it exactly, so hi s_hi + lo s_lo == q for every bf16 q above 2^-6 s_hi (~2^-14.8 of the
/// row's largest value); below, the error is at most 2^-14 s_hi. The query is kept exactly, as
/// the fp16 forms keep it.
/// Written as the QK's B operand, 2R rows of 576 codes (rows 0..R-1 hi, R..2R-1 lo) in boxes of
/// 64 columns x 64 bytes with the cache tile's 64-byte swizzle (2R * 64 bytes a box: the bf16
/// Q's bytes exactly). The factors go to qs: qs[r] = s_hi, qs[R + r] = s_lo. Threads tid < 8R
/// work (8 per row: 8 columns of each box); all kThreads meet at named barrier kBar twice (every
/// read of the bf16 Q before the first write; the writes before the products).
template <class Tr, int kThreads, int kBar>
__device__ __forceinline__ void prepare_q_hilo(uint8_t* q, int tid, float* qs) {
  constexpr int R = Tr::kRows;
  static_assert(8 * R <= kThreads && kThreads % 32 == 0, "8 threads a row");
  const int r = tid >> 3, part = tid & 7;
  const bool worker = tid < 8 * R;  // warp-uniform: 8R is a multiple of 32
  uint4 x[Tr::kBoxes];
  uint32_t amax = 0;  // bits of the largest finite |q| (bf16 magnitudes order as integers)
  if (worker) {
#pragma unroll
    for (int kb = 0; kb < Tr::kBoxes; ++kb) {
      x[kb] = lds128(q + kb * Tr::kQBoxBytes + r * 128 + ((part ^ (r & 7)) << 4));
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t w = word(x[kb], i);
        const uint32_t lo = w & 0x7FFFu, hi = (w >> 16) & 0x7FFFu;
        amax = max(amax, lo < 0x7F80u ? lo : 0u);
        amax = max(amax, hi < 0x7F80u ? hi : 0u);
      }
    }
  }
#pragma unroll
  for (int off = 1; off < 8; off <<= 1) amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  named_sync(kBar, kThreads);  // every read of the bf16 Q is done: the buffer may be rewritten
  const int e = q_hilo_exponent(amax);
  const float s_hi = exp2i(e), inv_hi = exp2i(-e), s_lo = exp2i(e - 4), inv_lo = exp2i(4 - e);
  uint32_t hw[Tr::kBoxes][2];
  if (worker) {
#pragma unroll
    for (int kb = 0; kb < Tr::kBoxes; ++kb) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t w = word(x[kb], i);
        const uint32_t c = quant::e4m3x2(__uint_as_float(w << 16) * inv_hi,
                                         __uint_as_float(w & 0xFFFF0000u) * inv_hi);
        if (i & 1)
          hw[kb][i >> 1] |= c << 16;
        else
          hw[kb][i >> 1] = c;
      }
    }
    const int rl = R + r;
    const int off_hi = r * 64 + (((part >> 1) ^ ((r >> 1) & 3)) << 4) + (part & 1) * 8;
    const int off_lo = rl * 64 + (((part >> 1) ^ ((rl >> 1) & 3)) << 4) + (part & 1) * 8;
#pragma unroll
    for (int kb = 0; kb < Tr::kBoxes; ++kb) {
      uint32_t lw[2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t w = word(x[kb], i);
        const float v0 = __uint_as_float(w << 16), v1 = __uint_as_float(w & 0xFFFF0000u);
        const float2 b = e4m3x2_to_float2(hw[kb][i >> 1] >> (16 * (i & 1)));
        const uint32_t c = quant::e4m3x2((v0 - b.x * s_hi) * inv_lo, (v1 - b.y * s_hi) * inv_lo);
        if (i & 1)
          lw[i >> 1] |= c << 16;
        else
          lw[i >> 1] = c;
      }
      uint8_t* box = q + kb * (2 * R * 64);
      *reinterpret_cast<uint2*>(box + off_hi) = make_uint2(hw[kb][0], hw[kb][1]);
      *reinterpret_cast<uint2*>(box + off_lo) = make_uint2(lw[0], lw[1]);
    }
    if (part == 0) {
      qs[r] = s_hi;
      qs[R + r] = s_lo;
    }
  }
  fence_proxy_async_shared();  // the codes are read by wgmma (the async proxy)
  named_sync(kBar, kThreads);
}

/// What one FP8 consumer warpgroup keeps while it walks a piece's tiles: this thread's cache
/// offsets (K rows 16 w + g, + 8 and their swizzled chunk qd; V columns of box 2 w + g / 4, chunk
/// g % 4), the shared buffers it uses (Q, its P, its column-max scratch) and its named barrier.
struct Fp8Lane {
  int w, lane, g, qd;
  int k_off0, k_off1, v_box;
  uint32_t q_addr, p_addr;
  uint8_t* p_gen;
  float* red_max;
  int* flags;  // the one-barrier softmax's [2][4] (parity, warp); nullptr where unused
  int bar;     // named barrier of the warpgroup's 128 threads
};

template <class Tr>
__device__ __forceinline__ Fp8Lane fp8_lane(int tid, uint8_t* q, uint8_t* p, float* red_max,
                                            int bar) {
  Fp8Lane f;
  f.w = tid >> 5, f.lane = tid & 31, f.g = f.lane >> 2, f.qd = f.lane & 3;
  const int r0 = 16 * f.w + f.g, r1 = r0 + 8;
  f.k_off0 = r0 * 64 + ((f.qd ^ ((r0 >> 1) & 3)) << 4);
  f.k_off1 = r1 * 64 + ((f.qd ^ ((r1 >> 1) & 3)) << 4);
  f.v_box = (2 * f.w + (f.g >> 2)) * Tr::kBoxBytes;
  f.q_addr = smem_addr(q);
  f.p_addr = smem_addr(p);
  f.p_gen = p;
  f.red_max = red_max;
  f.flags = nullptr;
  f.bar = bar;
  return f;
}

/// One 64-token tile t of the FP8 consumer: S^T = K Q^T from the stage, the mask and online
/// softmax (column maxima across the 4 warps through red_max, the warpgroup's barrier), P to
/// shared memory as fp16, O^T += V^T P^T. `release_q`: arrive on q_empty once the QK products
/// (the last reads of Q in this piece) are done.
/// kQ8 (16 rows): S^T = K Q^T on E4M3 products instead, K straight from the stage and Q as the
/// two E4M3 halves of prepare_q_hilo (2R columns: hi, then lo), the halves joined with the
/// columns' factors qf (s_hi, s_lo times the softmax scale; scale_log2 is then 1), and the
/// softmax tries the one-barrier form first (tile_softmax_fast, flags f.flags of the tile's
/// parity, `n` the tile's count over the block's pieces).
template <class Tr, bool kQ8 = false>
__device__ __forceinline__ void fp8_tile(const Fp8Lane& f, const uint8_t* stage, int t,
                                         const ColumnMap<Tr::kRows>& cm,
                                         const int (&limit)[Tr::kRows / 4], float scale_log2,
                                         float (&o)[8][Tr::kRows / 2], float (&m)[Tr::kRows / 4],
                                         float (&l)[Tr::kRows / 4], bool release_q,
                                         uint64_t* q_empty, const float (&qf)[2][Tr::kRows / 4],
                                         int n) {
  constexpr int R = Tr::kRows, NC = R / 4, NS = R / 2;
  const int w = f.w, lane = f.lane, g = f.g, qd = f.qd;

  float s[NS];
  if constexpr (kQ8) {
    static_assert(R == 16, "the E4M3 QK is built for 16 rows (m64n32: hi and lo columns)");
    float acc[2 * NS];
#pragma unroll
    for (int k = 0; k < 2 * NS; ++k) acc[k] = 0.0f;
    fence_regs(acc);
    wgmma_fence();
    const uint64_t dk = sw64_desc(smem_addr(stage), 512), dq = sw64_desc(f.q_addr, 512);
#pragma unroll
    for (int kb = 0; kb < Tr::kBoxes; ++kb)
#pragma unroll
      for (int ks = 0; ks < 2; ++ks)
        wgmma_e4m3_n32(acc, desc_add(dk, kb * Tr::kBoxBytes + ks * 32),
                       desc_add(dq, kb * (2 * R * 64) + ks * 32), (kb | ks) != 0 ? 1 : 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(acc);
    if (release_q && lane == 0) mbar_arrive(q_empty);
#pragma unroll
    for (int k = 0; k < NS; ++k) {
      // Register k (< NS) holds column cc's hi product, k + NS the same column's lo product.
      const int cc = ((k >> 2) << 1) | (k & 1);
      s[k] = fmaf(acc[k], qf[0][cc], acc[k + NS] * qf[1][cc]);
    }
  } else {
    // S^T = K Q^T: per box, two 16-byte loads give the A fragments of its 4 k-steps.
#pragma unroll
    for (int k = 0; k < NS; ++k) s[k] = 0.0f;
    fence_regs(s);
    uint32_t a[2][16];
#pragma unroll
    for (int kb = 0; kb < Tr::kBoxes; ++kb) {
      const uint8_t* box = stage + kb * Tr::kBoxBytes;
      const uint4 x0 = lds128(box + f.k_off0), x1 = lds128(box + f.k_off1);
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
        const uint64_t db = sw128_desc(f.q_addr + kb * Tr::kQBoxBytes + ks * 32, 16, 1024);
        wgmma_rs<R, true>(s, &A[4 * ks], db, (kb | ks) != 0 ? 1 : 0);
      }
      wgmma_commit();
      fence_regs(A);
    }
    wgmma_wait<0>();
    fence_regs(s);
    fence_regs(a[0]);
    fence_regs(a[1]);
    if (release_q && lane == 0) mbar_arrive(q_empty);
  }

  // kQ8: the one-barrier softmax first (its sums restored where it hands the tile to the
  // two-barrier path below: a column's first tile, or a score 2^8 above its running maximum).
  bool slow = true;
  if constexpr (kQ8) {
    float l_old[NC];
#pragma unroll
    for (int cc = 0; cc < NC; ++cc) l_old[cc] = l[cc];
    slow = tile_softmax_fast<R>(s, t * kTileTokens + 16 * w + g, limit, cm, m, l, scale_log2,
                                f.p_gen, f.flags + 4 * ((n >> 1) & 1), n, f.bar, w, g, lane);
    if (slow) {
#pragma unroll
      for (int cc = 0; cc < NC; ++cc) l[cc] = l_old[cc];
    }
  }
  if (slow) {
    tile_max<R>(s, t * kTileTokens + 16 * w + g, limit, cm, f.red_max, w, g);
    named_sync(f.bar, 128);
    float alpha[NC];
    tile_softmax<R, true>(s, m, l, alpha, cm, f.red_max, scale_log2, f.p_gen, w, g);
    rescale<R>(o, alpha);
    fence_proxy_async_shared();
    named_sync(f.bar, 128);
  }
  fence_regs(o);

  // O^T += V^T P^T: per k-step, four 16-byte loads (one per token) give the A fragments of all 8
  // m-tiles. Two commit groups per k-step (m-tiles 0-3, 4-7), each with its own 16 A registers,
  // so the conversion of one group overlaps the products of the previous one in half the
  // registers of a k-step-wide buffer.
  uint32_t av[2][16];
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    uint4 y[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int tok = 16 * kk + 2 * qd + (c & 1) + 8 * (c >> 1);
      y[c] = lds128(stage + f.v_box + tok * 64 + (((g & 3) ^ ((tok >> 1) & 3)) << 4));
    }
    const uint64_t db = sw128_desc(f.p_addr + kk * 32, 16, 1024);
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
}

template <class Tr, class Epi>
__device__ void consumer_fp8(const TcParams& tp, const TcSmem<Tr>& sm, int rb, int part) {
  const DecodeParams& p = tp.p;
  constexpr int R = Tr::kRows, NC = R / 4, NS = R / 2;
  const int tid = threadIdx.x - 128;
  const float k_scale = __ldg(p.k_scale);
  const float scale_log2 = p.scale_log2 * k_scale;  // times 2^(8 - k) per piece (prepare_q_f16)
  float* red_sum = sm.red(1);
  const Fp8Lane f = fp8_lane<Tr>(tid, sm.q(), sm.p(), sm.red(0), 1);
  const ColumnMap<R> cm(f.qd);
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
        const int k = prepare_q_f16<Tr>(sm.q(), tid, reinterpret_cast<uint32_t*>(f.red_max));
        piece_scale_log2 = scale_log2 * exp2i(8 - k);
        fence_proxy_async_shared();
        named_sync(1, 128);
      }
      mbar_wait(sm.full(st), (n / Tr::kStages) & 1);
      const float no_qf[2][NC] = {};  // (the column factors of the kQ8 form)
      fp8_tile<Tr>(f, sm.kv(st), t, cm, limit, piece_scale_log2, o, m, l, t == pc.t_end - 1,
                   sm.q_empty(), no_qf, n);
      if (f.lane == 0) mbar_arrive(sm.empty(st));  // every load from the stage is done
    }
    if (pc.t_end > pc.t_begin) ++nq;
    float scale[NC], lse[NC];
    piece_stats<R>(l, m, cm, red_sum, f.w, f.g, k_scale * 256.0f, scale, lse);  // V is 2^-8 v
    store_fragment<Epi, R, DMapRS>(p, EpiCtx{pc.b, pc.slot}, rb * R, o, scale, lse);
  });
}

/// The FP8 consumer as two warpgroups taking alternate tiles (traits.cuh: TcFp8AltTraits;
/// kernel.cuh: mla_tc_fp8alt_kernel): consumer c runs fp8_tile on the tiles n (counted over the
/// block's pieces) with n % 2 == c, with its own O, m, l, P buffer, column-max scratch and
/// barrier (1 + c), so the two walk their tiles independently and each scheduler has two
/// consumer warps whose latencies overlap (the one-consumer form is bound by the latency of
/// its own chain: bench/NOTES.md M13). At a piece's end consumer 1 leaves its O, m, l in shared
/// memory, consumer 0 merges them into its own (two barriers of both, kBarBoth) and writes the
/// output. Q is prepared by both (prepare_q_f16 over 256 threads); q_empty takes both
/// warpgroups' 8 warps once each has finished the piece's tiles; empty[s] one warpgroup's 4.
constexpr int kBarBoth = 3;

/// kQ8: the QK on E4M3 products (fp8_tile), Q split by prepare_q_hilo at a piece's start, its
/// row factors through consumer 0's red(1) (read by both before either can reach the piece's
/// merge barrier; consumer 0 writes its column sums there only after it).
template <class Tr, class Epi, bool kQ8 = false>
__device__ void consumer_fp8_alt(const TcParams& tp, const TcSmem<Tr>& sm, int rb, int part,
                                 int c) {
  const DecodeParams& p = tp.p;
  constexpr int R = Tr::kRows, NC = R / 4, NS = R / 2;
  const int tid2 = threadIdx.x - 128;  // 0 .. 255 over both consumers
  const int tid = tid2 & 127;
  const float k_scale = __ldg(p.k_scale);
  const float scale_log2 = p.scale_log2 * k_scale;
  Fp8Lane f = fp8_lane<Tr>(tid, sm.q(), sm.p() + c * Tr::kPBytes, sm.red(2 * c), 1 + c);
  if constexpr (kQ8) {
    // consumer c's flags in red(3) (unused by this form otherwise); no tile count is negative, and
    // the first piece's barriers order these writes before any read.
    f.flags = reinterpret_cast<int*>(sm.red(3)) + 8 * c;
    if (tid < 8) f.flags[tid] = -1;
  }
  float* red_sum = sm.red(1);  // consumer 0's, at the piece end
  float* xo = sm.combine();    // consumer 1's O, m, l: [value][tid]
  const ColumnMap<R> cm(f.qd);
  int n = 0, nq = 0;
  for_each_piece(p, part, [&](const Piece& pc, const Piece&) {
    float o[8][NS], m[NC], l[NC];
    int limit[NC];
    piece_begin<R>(p, pc, rb, cm, o, m, l, limit);
    // NOTE: an empty piece still merges and writes (zeros, lse -inf), as consumer_fp8 does; the
    // producer loads no Q for it.
    const bool any = pc.t_end > pc.t_begin;
    float piece_scale_log2 = 0.0f;
    float qf[2][NC] = {};
    if (any) {
      mbar_wait(sm.q_full(), nq & 1);
      if constexpr (kQ8) {
        prepare_q_hilo<Tr, 256, kBarBoth>(sm.q(), tid2, red_sum);
#pragma unroll
        for (int cc = 0; cc < NC; ++cc) {
          qf[0][cc] = red_sum[cm.cols[cc]] * scale_log2;
          qf[1][cc] = red_sum[R + cm.cols[cc]] * scale_log2;
        }
        piece_scale_log2 = 1.0f;
      } else {
        // NOTE: scratch in consumer 0's red(0): both warpgroups' last reads of it (the previous
        // piece's softmax) precede the previous piece's merge barriers.
        const int k =
            prepare_q_f16<Tr, 256, kBarBoth>(sm.q(), tid2, reinterpret_cast<uint32_t*>(sm.red(0)));
        piece_scale_log2 = scale_log2 * exp2i(8 - k);
        fence_proxy_async_shared();
        named_sync(kBarBoth, 256);
      }
    }
    for (int t = pc.t_begin; t < pc.t_end; ++t, ++n) {
      if ((n & 1) != c) continue;
      const int st = n % Tr::kStages;
      mbar_wait(sm.full(st), (n / Tr::kStages) & 1);
      fp8_tile<Tr, kQ8>(f, sm.kv(st), t, cm, limit, piece_scale_log2, o, m, l, false, sm.q_empty(),
                        qf, n);
      if (f.lane == 0) mbar_arrive(sm.empty(st));
    }
    if (any) {
      if (f.lane == 0) mbar_arrive(sm.q_empty());  // this warpgroup's QK products are done
      ++nq;
    }
    // Merge: consumer 1's state through shared memory into consumer 0's (the same thread holds
    // the same columns in both).
    if (c == 1) {
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int k = 0; k < NS; ++k) xo[(j * NS + k) * 128 + tid] = o[j][k];
#pragma unroll
      for (int cc = 0; cc < NC; ++cc) {
        xo[(8 * NS + cc) * 128 + tid] = m[cc];
        xo[(8 * NS + NC + cc) * 128 + tid] = l[cc];
      }
    }
    named_sync(kBarBoth, 256);
    if (c == 0) {
      float f0[NC], f1[NC];
#pragma unroll
      for (int cc = 0; cc < NC; ++cc) {
        const float m1 = xo[(8 * NS + cc) * 128 + tid], l1 = xo[(8 * NS + NC + cc) * 128 + tid];
        const float mm = fmaxf(m[cc], m1);
        const bool none = mm == -INFINITY;
        f0[cc] = none ? 0.0f : fast_exp2(m[cc] - mm);
        f1[cc] = none ? 0.0f : fast_exp2(m1 - mm);
        l[cc] = l[cc] * f0[cc] + l1 * f1[cc];
        m[cc] = mm;
      }
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int k = 0; k < NS; ++k) {
          const int cc = ((k >> 2) << 1) | (k & 1);
          o[j][k] = o[j][k] * f0[cc] + xo[(j * NS + k) * 128 + tid] * f1[cc];
        }
    }
    named_sync(kBarBoth, 256);  // xo is rewritten at the next piece's end
    if (c == 0) {
      float scale[NC], lse[NC];
      piece_stats<R>(l, m, cm, red_sum, f.w, f.g, k_scale * 256.0f, scale, lse);
      store_fragment<Epi, R, DMapRS>(p, EpiCtx{pc.b, pc.slot}, rb * R, o, scale, lse);
    }
  });
}

}  // namespace qfuse::mla
