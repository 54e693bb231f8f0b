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

/// The cost of request b: its tiles and the overhead of a piece (Q load, epilogue).
QFUSE_HD int request_cost(int len) {
  return tiles_of(len) + kOverheadTiles;
}

/// The cost per part of a batch of total cost W over num_parts parts: the even cut
/// ceil(W / num_parts) + kOverheadTiles. NOTE: equal requests (cost_min == cost_max) stay whole
/// when whole requests per part cost at most 1/16 more than the even cut (which would split many
/// of them: a Q load, an epilogue and a partial each; bench/NOTES.md M10).
QFUSE_HD int part_target(int W, int num_parts, int batch, int cost_min, int cost_max) {
  int target = (W + num_parts - 1) / num_parts + kOverheadTiles;
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
