// The quantizer protocol, part 4: the wgmma accumulator-fragment adapter.
//
// A warpgroup's fp32 accumulator of `wgmma.m64nN` (N % 8 == 0) is N / 2 registers a thread: with
// t = thread in the warpgroup (0..127), w = t / 32, l = t % 32, register 4 j + 2 h + e (j < N / 8,
// h, e in {0, 1}) holds element (16 w + l / 4 + 8 h, 8 j + 2 (l % 4) + e). A row's values are thus
// spread over the four lanes of a quad (l / 4 equal), two consecutive columns per 8-column run.
// The adapter writes the fragment straight from registers, without staging it in shared memory:
//   - plain / tensor scope: each pair as it is;
//   - group scope (g = 16, 64, 128): a group of one row is g / 8 runs of each lane of a quad: the
//     amax is a reduction over the thread's runs and an xor shuffle over the quad (lanes ^1, ^2),
//     the quad's first lane writes the scale; needs N % g == 0 and col0 % g == 0;
//   - row scope (per-token): only when the fragment holds whole output rows (col0 == 0,
//     N >= out_cols).
// Stores are 2-byte (FP8) or 1-byte (NVFP4) per pair, so this path suits small epilogues; a wide
// output tile is better staged in shared memory and written with the tile adapter (coalesced).
// can_store_wgmma_fragment() says whether a geometry qualifies. All 128 threads of the warpgroup
// call store_wgmma_fragment() together.
#pragma once

#include <cstdint>

#include "qfuse/quant/quantizer.cuh"

namespace qfuse::quant {

inline bool can_store_wgmma_fragment(const QuantSpec& spec, int n, int col0, int out_cols) {
  return n % 8 == 0 && sees_whole_scale_units(spec, n, col0, out_cols);
}

/// Writes the accumulator `acc` of wgmma m64nN as output rows [row0, row0 + 64) and columns
/// [col0, col0 + N), clipped to out_rows x out_cols, through `core`; values are multiplied by
/// `mul` first (e.g. an attention epilogue's 1 / row sum is applied by the caller per row: pass
/// 1 here).
template <int N, class Core>
__device__ void store_wgmma_fragment(const Core& core, const float (&acc)[N / 2], int64_t row0,
                                     int col0, int64_t out_rows, int out_cols) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256);
  constexpr int kRuns = N / 8;
  const int t = threadIdx.x & 127, w = t >> 5, l = t & 31;
  const int q = l & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = row0 + 16 * w + (l >> 2) + 8 * h;
    const bool row_ok = row < out_rows;
    // Value e of run j, zero when outside the output.
    auto val = [&](int j, int e) {
      const int col = col0 + 8 * j + 2 * q + e;
      return row_ok && col < out_cols ? acc[4 * j + 2 * h + e] : 0.0f;
    };
    auto store_run = [&](int j, const auto& s) {
      const int col = col0 + 8 * j + 2 * q;
      if (row_ok && col < out_cols) {
        const int nvalid = out_cols - col >= 2 ? 2 : 1;
        core.store_pair(row, col, nvalid, val(j, 0), val(j, 1), s);
      }
    };
    if constexpr (Core::kScope == ScaleScope::kGroup) {
      constexpr int kRunsPerGroup = Core::kGroupCols / 8;
      static_assert(kRuns % kRunsPerGroup == 0, "N must be a multiple of the group size");
#pragma unroll
      for (int g = 0; g < kRuns / kRunsPerGroup; ++g) {
        float amax = 0.0f;
#pragma unroll
        for (int j = g * kRunsPerGroup; j < (g + 1) * kRunsPerGroup; ++j)
          amax = rules::nan_max(amax, rules::nan_max(fabsf(val(j, 0)), fabsf(val(j, 1))));
        amax = rules::nan_max(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
        amax = rules::nan_max(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
        const int gcol = col0 + g * Core::kGroupCols;
        if (!row_ok || gcol >= out_cols) continue;
        const auto s = core.scale_of(amax);
        if (q == 0) core.write_scale(core.scale_offset(row, gcol / Core::kGroupCols), s);
#pragma unroll
        for (int j = g * kRunsPerGroup; j < (g + 1) * kRunsPerGroup; ++j) store_run(j, s);
      }
    } else if constexpr (Core::kScope == ScaleScope::kRow) {
      float amax = 0.0f;
#pragma unroll
      for (int j = 0; j < kRuns; ++j)
        amax = rules::nan_max(amax, rules::nan_max(fabsf(val(j, 0)), fabsf(val(j, 1))));
      amax = rules::nan_max(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
      amax = rules::nan_max(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
      if (!row_ok) continue;
      const auto s = core.scale_of(amax);
      if (q == 0) core.write_scale(core.scale_offset(row, 0), s);
#pragma unroll
      for (int j = 0; j < kRuns; ++j) store_run(j, s);
    } else {
      const auto s = core.tensor_scale();
#pragma unroll
      for (int j = 0; j < kRuns; ++j) store_run(j, s);
    }
  }
}

}  // namespace qfuse::quant
