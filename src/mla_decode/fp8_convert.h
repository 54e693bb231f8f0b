// The FP8-cache consumer's bit-level conversions (mainloop_fp8.cuh), host- and device-callable so
// that a host test checks them for every code (tests/mla_decode/test_mla_host.cpp).
//
// E4M3 -> fp16, exactly, as the value times 2^-8: E4M3's exponent bias is 7, fp16's 15, so a
// code's exponent and mantissa bits placed at fp16's bits 7..13 (with the sign at bit 15) are the
// fp16 of the value times 2^-8 — an E4M3 subnormal becomes an fp16 subnormal. NaN codes (0x7F,
// 0xFF) become the finite +-480 * 2^-8.
//
// E4M3 -> bf16 (the wide form's converter), exactly, as the value times 2^-120 by bit moves, then
// times 2^112 by a bf16 multiply (subnormal inputs are exact there): the value times 2^-8.
#pragma once

#include <cstdint>

#include "qfuse/quant/rules.h"

namespace qfuse::mla {

/// prmt.b32 in its default mode: selector nibble i picks byte (nibble & 7) of {b, a} (a: bytes
/// 0..3, b: bytes 4..7) for byte i of the result, or, with bit 3 set, replicates that byte's sign
/// bit over the whole byte (__byte_perm ignores bit 3, hence the asm).
QFUSE_HD uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
#if defined(__CUDA_ARCH__)
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
#else
  const uint64_t src = (static_cast<uint64_t>(b) << 32) | a;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t nib = (sel >> (4 * i)) & 0xFu;
    uint32_t byte = static_cast<uint32_t>(src >> (8 * (nib & 7))) & 0xFFu;
    if (nib & 8) byte = (byte & 0x80u) ? 0xFFu : 0u;
    r |= byte << (8 * i);
  }
  return r;
#endif
}

/// prmt selector for the pair (byte x, byte y) of {b, a}: each in the low byte of a 16-bit lane
/// (x in the low lane), its sign replicated in the high byte — the input of e4m3_lanes_f16x2.
QFUSE_HD constexpr uint32_t pair_sel(uint32_t x, uint32_t y) {
  return ((8 | y) << 12) | (y << 8) | ((8 | x) << 4) | x;
}

/// Two E4M3 codes laid out by prmt with pair_sel -> the fp16 pair of their values times 2^-8: the
/// shift puts the exponent and mantissa bits at bits 7..13 of each lane and a sign copy at bit 15;
/// the mask clears bit 14 (the code's sign, at fp16's top exponent bit) and the sign copies that
/// crossed into the upper lane (its bits 0..6).
QFUSE_HD uint32_t e4m3_lanes_f16x2(uint32_t lanes) {
  return (lanes << 7) & 0xBF80BF80u;
}

/// Two E4M3 codes laid out by prmt with pair_sel -> the bf16 pair of their values times 2^-120:
/// the shift puts the exponent and mantissa bits at bits 4..10 of each lane (bf16's exponent
/// starts at bit 7, its bias is 127: 120 above E4M3's) and a sign copy at bit 15; the mask keeps
/// those. Small codes give bf16 subnormals; the wide form's converter (mainloop_wide.cuh) then
/// multiplies by 2^112 in bf16, which is exact (value times 2^-8, always a normal bf16).
QFUSE_HD uint32_t e4m3_lanes_bf16x2(uint32_t lanes) {
  return (lanes << 4) & 0x87F087F0u;
}

/// 8 E4M3 codes (two words, bytes in column order) -> the 4 words of their bf16 pairs times
/// 2^-120 (e4m3_lanes_bf16x2), in column order: word k holds columns 2 k, 2 k + 1.
QFUSE_HD void e4m3_half_chunk_bf16x2(uint32_t* out, uint32_t w0, uint32_t w1) {
  out[0] = e4m3_lanes_bf16x2(prmt(w0, 0, pair_sel(0, 1)));
  out[1] = e4m3_lanes_bf16x2(prmt(w0, 0, pair_sel(2, 3)));
  out[2] = e4m3_lanes_bf16x2(prmt(w1, 0, pair_sel(0, 1)));
  out[3] = e4m3_lanes_bf16x2(prmt(w1, 0, pair_sel(2, 3)));
}

/// 16 E4M3 codes (a 16-byte chunk of a cache row) -> 8 words, two e4m3_half_chunk_bf16x2.
QFUSE_HD void e4m3_chunk_bf16x2(uint32_t* out, const uint32_t* in) {
  e4m3_half_chunk_bf16x2(out, in[0], in[1]);
  e4m3_half_chunk_bf16x2(out + 4, in[2], in[3]);
}

/// The wide form's FP8 converter (producer_fp8_wide): thread tid (of 128) converts, of each
/// 64-token tile, tokens wide_fp8_token(tid, i) (i = 0, 1) and, of each 64-column box kb (0..8),
/// the 16 columns from wide_fp8_col(tid, kb, 0): 8 at a time (e = 0, 1), each 8 a 16-byte bf16
/// chunk at byte wide_fp8_dst(tid, i, kb, e) of the stage. The stage is what a TMA load of the
/// bf16 tile with a 128-byte swizzle gives: box kb at 8192 kb, token r at 128 r, the 16-byte chunk
/// c of the row (columns 8 c .. 8 c + 7 of the box) at (c ^ (r & 7)) * 16.
QFUSE_HD int wide_fp8_token(int tid, int i) {
  return (tid >> 2) + 32 * i;
}
QFUSE_HD int wide_fp8_col(int tid, int kb, int e) {
  return 64 * kb + 16 * (tid & 3) + 8 * e;
}
QFUSE_HD uint32_t wide_fp8_dst(int tid, int i, int kb, int e) {
  const uint32_t r = static_cast<uint32_t>(tid) >> 2, q4 = static_cast<uint32_t>(tid) & 3;
  return 8192u * kb + 4096u * i + 128u * r +
         ((((2u * q4) ^ (r & 7u)) ^ static_cast<uint32_t>(e)) << 4);
}

/// The A registers of one QK k-step from the words of the thread's two K rows (after Q's column
/// permutation a word holds the 4 codes of the thread's columns of the k-step: pairs (bytes 0, 1)
/// and (bytes 2, 3)): rows g / g + 8, columns 2 qd + {0, 1} / + 8.
QFUSE_HD void k_step_fragment(uint32_t* a, uint32_t row0, uint32_t row1) {
  a[0] = e4m3_lanes_f16x2(prmt(row0, 0, pair_sel(0, 1)));
  a[1] = e4m3_lanes_f16x2(prmt(row1, 0, pair_sel(0, 1)));
  a[2] = e4m3_lanes_f16x2(prmt(row0, 0, pair_sel(2, 3)));
  a[3] = e4m3_lanes_f16x2(prmt(row1, 0, pair_sel(2, 3)));
}

/// The A registers of one PV m-tile (V^T: rows = latent columns, k = tokens) from the words of
/// the thread's four tokens (2 qd, + 1, + 8, + 9 of the k-step) holding its two latent columns at
/// bytes b and b + 1: each pair joins two tokens.
QFUSE_HD void v_tile_fragment(uint32_t* a, uint32_t t0, uint32_t t1, uint32_t t8, uint32_t t9,
                              uint32_t b) {
  const uint32_t sel0 = pair_sel(b, 4 + b), sel1 = pair_sel(b + 1, 5 + b);
  a[0] = e4m3_lanes_f16x2(prmt(t0, t1, sel0));
  a[1] = e4m3_lanes_f16x2(prmt(t0, t1, sel1));
  a[2] = e4m3_lanes_f16x2(prmt(t8, t9, sel0));
  a[3] = e4m3_lanes_f16x2(prmt(t8, t9, sel1));
}

/// The exponent k by which the FP8 consumer scales a block's q before rounding it to fp16, from
/// the bits of its largest finite |q| as a bf16 magnitude (0..0x7F7F): 2^k |q| < 2^15 for every
/// q of the block (fp16's largest finite is 65504), and 2^k amax >= 2^14 unless k is capped at 127
/// (amax below 2^-113). With E the biased exponent (at least 1): |q| < 2^(E - 126), k = 141 - E.
QFUSE_HD int q_f16_exponent(uint32_t amax_bits) {
  const int e = static_cast<int>(amax_bits >> 7);
  const int k = 141 - (e > 1 ? e : 1);
  return k < 127 ? k : 127;
}

/// Form 3's query split (mainloop_fp8.cuh: prepare_q_hilo; bench/NOTES.md M29): the exponent e of
/// a query row's factor s_hi = 2^e from the bits of its largest finite |q| (a bf16 magnitude,
/// 0..0x7F7F): the smallest e with amax <= 448 * 2^e (amax = 1.f * 2^E with E = (bits >> 7) - 127
/// and 448 = 1.75 * 2^8: E - 8, plus 1 where 1.f > 1.75), at least -122 so that s_lo = 2^(e - 4)
/// is a normal fp32 (a row of zeros or of values below 2^-118 scales by 2^122 at most).
QFUSE_HD int q_hilo_exponent(uint32_t amax_bits) {
  const int e = static_cast<int>(amax_bits >> 7) - 135 + ((amax_bits & 0x7Fu) > 0x60u ? 1 : 0);
  return e > -122 ? e : -122;
}

}  // namespace qfuse::mla
