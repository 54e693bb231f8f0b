// Compile-time sizes and the shared-memory layouts of the tensor-core MLA decode kernels.
//
// One thread block = a producer warpgroup (one thread issues TMA) and a consumer warpgroup
// (wgmma, online softmax). It serves kRows query rows (heads x query tokens) of one request at a
// time, in the swapped form:
//   S^T [64 tokens x kRows] = K [64 x 576] . Q^T      (A = KV tile; B = Q, K-major, smem)
//   O^T [512 x kRows]      += V^T [512 x 64] . P^T    (A = KV tile as V^T; B = P, K-major, smem)
// so the wgmma N is the row count (16 or 32) and no row is padded to 64.
//
// TcTraits (bf16 cache): both products read A from the stage in shared memory (descriptors):
//   kv[2]   9 boxes (64 columns each) x 64 tokens x 128 B = 72 KB, 128-byte swizzle
//   q       9 boxes x kRows rows x 128 B, 128-byte swizzle
//   p       kRows rows x 64 tokens (128 B), 128-byte swizzle
//   red     float[2][4][kRows]: per-warp column maxima / sums; barriers
// TcFp8Traits (E4M3 cache): A comes from registers, converted from the E4M3 bytes
// (mainloop_fp8.cuh), so a stage is the raw tile and many fit:
//   kv[5]   9 boxes x 64 tokens x 64 B = 36 KB, 64-byte swizzle
//   q, p, red, barriers as above (q's columns permuted in place to match the A fragments)
#pragma once

#include <cstdint>

#include "mla_decode/params.h"

namespace qfuse::mla {

template <int kRows_, int kStages_, int kRowBytes_, int kQStages_ = 1>
struct TcLayout {
  static constexpr int kRows = kRows_;
  static_assert(kRows == 16 || kRows == 32, "rows per block: 16 or 32");
  static constexpr int kThreads = 256;
  static constexpr int kBoxes = kDim / 64;      // 9 column boxes of a 576-wide row
  static constexpr int kVBoxes = kLatent / 64;  // 8: V = the latent columns
  static constexpr int kStages = kStages_;
  static constexpr int kRowBytes = kRowBytes_;  // bytes of 64 cache elements
  static constexpr int kBoxBytes = kTileTokens * kRowBytes;
  static constexpr int kTileBytes = kBoxes * kBoxBytes;
  static constexpr int kQBoxBytes = kRows * 128;
  static constexpr int kQBytes = kBoxes * kQBoxBytes;
  static constexpr int kQStages = kQStages_;  // Q buffers: a piece's Q loads during the last's
  static constexpr int kPBytes = kRows * 128;

  static constexpr int kOffKv = 0;
  static constexpr int kOffQ = kOffKv + kStages * kTileBytes;
  static constexpr int kOffP = kOffQ + kQStages * kQBytes;
  static constexpr int kOffRed = kOffP + kPBytes;
  static constexpr int kRedFloats = 4 * kRows;  // one of the two reduction arrays
  static constexpr int kRedBytes = 2 * kRedFloats * 4;
  static constexpr int kOffBar = kOffRed + kRedBytes;
  static constexpr bool kPFull = false;
  static constexpr int kBars = 2 * kStages + 2 * kQStages;  // full[], empty[], q_full/q_empty[]
  static constexpr int kSmemBytes = kOffBar + kBars * 8 + 1024;  // + alignment slack
  static_assert(kSmemBytes <= 232448, "shared memory per block");
};

// NOTE: two Q buffers (18 / 36 KB each): the next piece's Q loads while this one's tiles run
// (bench/NOTES.md M24).
template <int kRows>
struct TcTraits : TcLayout<kRows, 2, 128, 2> {
  static constexpr bool kFp8 = false;
};

// NOTE: as many raw E4M3 tiles in flight as fit beside Q and P (227 KB per block).
template <int kRows>
struct TcFp8Traits : TcLayout<kRows, 5, 64> {
  static constexpr bool kFp8 = true;
};

/// The FP8 cache with two consumer warpgroups taking alternate tiles (mainloop_fp8.cuh:
/// consumer_fp8_alt), 16 query rows: TcFp8Traits' buffers with a P buffer and two column
/// reduction arrays per consumer, and the merge buffer (consumer 1's O, m, l at a piece's end:
/// 128 threads x (8 x 8 + 2 x 4) floats); 4 stages fit beside them.
template <int kRows_>
struct TcFp8AltTraits : TcLayout<kRows_, 4, 64> {
  using Base = TcLayout<kRows_, 4, 64>;
  static_assert(kRows_ == 16, "the alternate-tile form is built for 16 rows per block");
  static constexpr bool kFp8 = true;
  static constexpr int kThreads = 384;
  static constexpr int kOffP = Base::kOffQ + Base::kQBytes;  // two P buffers
  static constexpr int kOffRed = kOffP + 2 * Base::kPBytes;  // red(0..3): consumer c's 2c, 2c + 1
  static constexpr int kOffCombine = kOffRed + 4 * Base::kRedFloats * 4;
  static constexpr int kCombineFloats = 128 * (8 * (kRows_ / 2) + 2 * (kRows_ / 4));
  static constexpr int kOffBar = kOffCombine + kCombineFloats * 4;
  static constexpr int kSmemBytes = kOffBar + Base::kBars * 8 + 1024;
  static_assert(kOffP % 1024 == 0 && Base::kPBytes % 1024 == 0, "P: 1024-byte aligned");
  static_assert(kSmemBytes <= 232448, "shared memory per block");
};

/// The wide form (mainloop_wide.cuh), for 64 query rows per block: three warpgroups (producer,
/// QK + softmax + PV of latent columns 0..255, PV of columns 256..511).
///   kv[2]  2 x 72 KB bf16 tiles as TcTraits; a tile's P (bf16 64 x 64, the second consumer's A
///          operand) goes into its stage's rope box once QK has read it, so P is double-buffered
///          with the stages
///   q      64 rows x 9 boxes (72 KB)
///   red    alpha[2][64] (each stage's tile's rescale factors), scale[64] (1 / l at a piece's end)
///   bars   full[2], empty[2], q_full, q_empty, p_full[2] (P and alpha of the stage's tile
///          written), a_empty[2] (that alpha read)
/// kFp8: the cache is E4M3 and the producer warpgroup converts each tile into the same bf16 stage
/// (values times 2^-8; no room for raw tiles beside two bf16 stages and Q: the converter holds the
/// next tile in registers), so the consumers are the bf16 form's.
template <bool kFp8_>
struct WideLayout {
  static constexpr int kRows = 64;
  static constexpr int kThreads = 384;
  static constexpr int kBoxes = kDim / 64;
  static constexpr int kVBoxes = kLatent / 64;
  static constexpr int kStages = 2;
  static constexpr int kRowBytes = 128;
  static constexpr int kBoxBytes = kTileTokens * kRowBytes;
  static constexpr int kTileBytes = kBoxes * kBoxBytes;
  static constexpr int kQBoxBytes = kRows * 128;
  static constexpr int kQBytes = kBoxes * kQBoxBytes;
  static constexpr int kQStages = 1;
  static constexpr int kOffKv = 0;
  static constexpr int kOffQ = kOffKv + kStages * kTileBytes;
  static constexpr int kOffP = kOffQ + kQBytes;  // (no P buffer of its own)
  static constexpr int kOffRed = kOffP;
  static constexpr int kRedFloats = kRows;
  static constexpr int kRedBytes = 3 * kRedFloats * 4;
  static constexpr int kOffBar = kOffRed + kRedBytes;
  static constexpr bool kPFull = true;
  static constexpr int kBars = 2 * kStages + 2 + 2 * kStages;  // ..., p_full[], a_empty[]
  static constexpr int kSmemBytes = kOffBar + kBars * 8 + 1024;
  static_assert(kSmemBytes <= 232448, "shared memory per block");
  static constexpr bool kFp8 = kFp8_;
};

using WideTraits = WideLayout<false>;
using WideFp8Traits = WideLayout<true>;

}  // namespace qfuse::mla
