// Compile-time sizes and the shared-memory layout of the tensor-core MLA decode kernel.
//
// One thread block = a producer warpgroup (TMA; for an FP8 cache also the dequantizing warps) and
// a consumer warpgroup (wgmma, online softmax). It serves kRows query rows (heads x query tokens)
// of one request at a time, in the swapped form:
//   S^T [64 tokens x kRows] = K [64 x 576] . Q^T      (A = KV tile, K-major; B = Q, K-major)
//   O^T [512 x kRows]      += V^T [512 x 64] . P^T    (A = KV tile read MN-major; B = P, K-major)
// so the wgmma N is the row count (16 or 32) and no row is padded to 64.
//
// Shared memory (every tile 1024-byte aligned, 128-byte swizzled, sm90.cuh):
//   kv[kStages]   bf16 KV tile: 9 boxes (64 columns each) x 64 tokens x 128 B = 72 KB
//   q             9 boxes x kRows rows x 128 B
//   p             kRows rows x 64 tokens (128 B)
//   f8[kF8Stages] FP8 cache only: half tiles of 32 tokens as 9 boxes x 32 rows x 64 B (no swizzle)
//   red           float[2][4][kRows]: per-warp column maxima / sums
//   barriers
#pragma once

#include <cstdint>

#include "mla_decode/params.h"

namespace qfuse::mla {

template <int kRows_, bool kFp8_>
struct TcTraits {
  static constexpr int kRows = kRows_;
  static constexpr bool kFp8 = kFp8_;
  static_assert(kRows == 16 || kRows == 32, "rows per block: 16 or 32");
  static constexpr int kThreads = 256;
  static constexpr int kBoxes = kDim / 64;      // 9 column boxes of a 576-wide row
  static constexpr int kVBoxes = kLatent / 64;  // 8: V = the latent columns
  static constexpr int kStages = 2;
  static constexpr int kBoxBytes = kTileTokens * 128;  // 8 KB
  static constexpr int kTileBytes = kBoxes * kBoxBytes;
  static constexpr int kQBoxBytes = kRows * 128;
  static constexpr int kQBytes = kBoxes * kQBoxBytes;
  static constexpr int kPBytes = kRows * 128;
  static constexpr int kF8Tokens = 32;
  static constexpr int kF8BoxBytes = kF8Tokens * 64;
  static constexpr int kF8Bytes = kBoxes * kF8BoxBytes;  // 18 KB
  // NOTE: as many FP8 half tiles in flight as fit beside two bf16 tiles (227 KB per block).
  static constexpr int kF8Stages = kFp8 ? (kRows == 16 ? 3 : 2) : 0;
  static constexpr int kDequantThreads = 96;  // producer warps 1-3
  // Tiles between the one loaded into shared memory and the one prefetched into L2 (mainloop.cuh).
  static constexpr int kPrefetch = kFp8 ? 4 : 3;

  static constexpr int kOffKv = 0;
  static constexpr int kOffQ = kOffKv + kStages * kTileBytes;
  static constexpr int kOffP = kOffQ + kQBytes;
  static constexpr int kOffF8 = kOffP + kPBytes;
  static constexpr int kOffRed = kOffF8 + kF8Stages * kF8Bytes;
  static constexpr int kRedBytes = 2 * 4 * kRows * 4;
  static constexpr int kOffBar = kOffRed + kRedBytes;
  // full[2], empty[2], q_full, q_empty, f8_full[3], f8_empty[3]
  static constexpr int kBars = 2 * kStages + 2 + 2 * 3;
  static constexpr int kSmemBytes = kOffBar + kBars * 8 + 1024;  // + alignment slack
  static_assert(kSmemBytes <= 232448, "shared memory per block");
};

}  // namespace qfuse::mla
