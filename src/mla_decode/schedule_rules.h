// The split-KV schedule's arithmetic (schedule.cuh has the rest), host- and device-callable so
// that a host test checks what the scheduler kernel decides for a batch
// (tests/mla_decode/test_mla_host.cpp).
#pragma once

#include "mla_decode/params.h"
#include "qfuse/quant/rules.h"

namespace qfuse::mla {

QFUSE_HD int tiles_of(int len) {
  return (len + kTileTokens - 1) / kTileTokens;
}

/// The cost of a piece beyond its tiles, in tiles, for a kernel of `rows` query rows a block: its
/// Q load and first tile's latency, its epilogue and partial (fp32, 2 KB a row), which grow with
/// the rows. NOTE: measured (bench/NOTES.md M18): a one-tile piece of the 64-row wide form costs
/// about 6 tiles (a batch of 64 log-spread lengths, where one part held 33 such pieces, took 2x
/// its equal-length twin with 2 here; FlashMLA's scheduler counts 5 for its 64-row blocks). An
/// FP8 cache at 16 rows: a tile reads half the bytes, and a piece also converts its query
/// (prepare_q_f16) and merges two consumers' states: the mixed batch of 128 log-spread lengths
/// took 2.16x / 1.54x / 1.19x its equal-length twin with 2 / 4 / 6 here (M19). Form 3 (the QK on
/// E4M3 products, the default) makes a tile cheaper still and splits the query per piece: the
/// same batch took 142.8 / 129.3 / 122.0 µs with 6 / 8 / 10 on the H100, its twin 105 throughout
/// (M30), so it counts 10; form 2 keeps 6 (dispatch.cpp).
QFUSE_HD int piece_overhead(int rows, CacheKind cache = CacheKind::kBf16) {
  if (rows >= 64) return 6;
  if (rows >= 32) return 3;
  return cache == CacheKind::kFp8 ? 10 : kOverheadTiles;
}

/// The cost of request b: its tiles and the overhead of a piece.
QFUSE_HD int request_cost(int len, int overhead) {
  return tiles_of(len) + overhead;
}

/// The cost per part of a batch of total cost W over num_parts parts: the even cut
/// ceil(W / num_parts) + overhead. NOTE: equal requests (cost_min == cost_max) stay whole when
/// whole requests per part cost at most 1/16 more than the even cut (which would split many of
/// them: a Q load, an epilogue and a partial each; bench/NOTES.md M10).
QFUSE_HD int part_target(int W, int num_parts, int batch, int cost_min, int cost_max,
                         int overhead) {
  int target = (W + num_parts - 1) / num_parts + overhead;
  if (cost_min == cost_max) {
    const int whole = (batch + num_parts - 1) / num_parts * cost_max;
    if (whole <= target + target / 16) target = whole;
  }
  return target;
}

/// Pieces of a request of `tiles` tiles whose cost range starts at c0 (the prefix of the costs):
/// one per multiple of target it crosses, 0 for a request without a tile.
QFUSE_HD int pieces_of(int c0, int tiles, int target) {
  return tiles == 0 ? 0 : 1 + (c0 + tiles - 1) / target - c0 / target;
}

}  // namespace qfuse::mla
