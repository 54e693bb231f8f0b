// The quantizer protocol, part 2: the row-chunk adapter (qfuse/quant/quantizer.cuh has part 1).
//
// Values arrive as chunks of 8 consecutive fp32 values of one output row, one chunk per lane
// (apply), or two consecutive chunks per lane (apply2, "wide lanes"), the lanes of a warp on
// consecutive chunks of the same row, the row's first chunk on a group boundary. A group of g
// columns is then owned by g / 8 (or g / 16) consecutive lanes: the adapter reduces the group's
// amax across them with xor shuffles and the first of them writes the scale. The row-wise kernels
// (src/common/rowwise.cuh) and anything that reads a tile back in that arrangement (the
// shared-memory-tile adapter) use it. Row-scope kinds (per-token) need the whole row's amax before
// the first store: the per-token kernel drives their core directly.
#pragma once

#include <cstdint>

#include "qfuse/quant/quantizer.cuh"

namespace qfuse::quant {

/// Values [col, col + 8) of `row`, nvalid in [0, 8] real (the rest of v 0), written through
/// `core`. All 32 lanes of the warp call it together (the group reduction is a warp shuffle over
/// the kGroupCols / 8 consecutive lanes that hold a group).
template <class Core>
__device__ __forceinline__ void apply_chunk(const Core& core, int64_t row, int col, int nvalid,
                                            const float (&v)[kChunk]) {
  static_assert(Core::kScope != ScaleScope::kRow, "row-scope kinds need the whole row");
  if constexpr (Core::kScope == ScaleScope::kGroup) {
    constexpr int kLanes = Core::kGroupCols / kChunk;
    static_assert(kLanes >= 2 && kLanes <= 32);
    const float amax = group_amax<kLanes>(chunk_amax(v));
    if (nvalid <= 0) return;
    const auto s = core.scale_of(amax);
    // NOTE: the whole offset in one expression: nvcc then branches once on the scale layout
    // (two branches and a non-uniform parameter load otherwise: bench/NOTES.md 42).
    if ((threadIdx.x & 31) % kLanes == 0)
      core.write_scale(core.scale_offset(row, col / Core::kGroupCols), s);
    core.store(row, col, nvalid, v, s);
  } else {
    if (nvalid > 0) core.store(row, col, nvalid, v, core.tensor_scale());
  }
}

/// Wide lanes: values [col, col + 16) of `row`, v0 and v1 its halves (nvalid1 <= 0 past the
/// row), a group spanning kGroupCols / 16 lanes, so the reduction and the scale serve 16 values
/// a lane (an NVFP4 block is one lane's: no shuffle). Group kinds only.
template <class Core>
__device__ __forceinline__ void apply_chunk2(const Core& core, int64_t row, int col, int nvalid0,
                                             int nvalid1, const float (&v0)[kChunk],
                                             const float (&v1)[kChunk]) {
  static_assert(Core::kScope == ScaleScope::kGroup);
  constexpr int kLanes = Core::kGroupCols / (2 * kChunk);
  // NOTE: ahead of the return, so that it dominates the next run's of the same row and nvcc
  // computes it once per lane.
  const int64_t srow = core.scale_row(row);
  const float amax = group_amax<kLanes>(rules::nan_max(chunk_amax(v0), chunk_amax(v1)));
  if (nvalid0 <= 0) return;
  const auto s = core.scale_of(amax);
  if ((threadIdx.x & 31) % kLanes == 0)
    core.write_scale(srow + core.scale_group(col / Core::kGroupCols), s);
  core.store2(row, col, nvalid0, nvalid1, v0, v1, s);
}

/// The row-chunk adapter as the policy object the row-wise kernels take.
template <class CoreT>
struct RowChunk {
  using Core = CoreT;
  using Params = typename Core::Params;
  static constexpr bool kGrouped = Core::kScope == ScaleScope::kGroup;
  /// Lanes that share one scale at 8 values a lane (1: none).
  static constexpr int kLanesPerGroup = kGrouped ? Core::kGroupCols / kChunk : 1;
  /// 2 when the kind offers wide lanes (apply2), else 1.
  static constexpr int kChunksPerLane = kGrouped ? 2 : 1;

  Core core;
  __device__ explicit RowChunk(const Params& params) : core(params) {}
  __device__ void begin() { core.begin(); }
  __device__ void apply(int64_t row, int col, int nvalid, const float (&v)[kChunk]) const {
    apply_chunk(core, row, col, nvalid, v);
  }
  __device__ void apply2(int64_t row, int col, int nvalid0, int nvalid1, const float (&v0)[kChunk],
                         const float (&v1)[kChunk]) const {
    apply_chunk2(core, row, col, nvalid0, nvalid1, v0, v1);
  }
  __device__ void zero_padding(uint32_t tid, uint32_t nthreads) const {
    core.zero_padding(tid, nthreads);
  }
};

}  // namespace qfuse::quant
