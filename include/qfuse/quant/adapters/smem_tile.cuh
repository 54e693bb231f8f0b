// The quantizer protocol, part 3: the shared-memory-tile adapter.
//
// An epilogue that has copied its output tile from registers to shared memory (fp32 or bf16,
// [rows, cols] with a row stride of `ld` elements) writes it to global memory through any kind's
// core. The block's threads read the tile back as 8-value chunks in row-major chunk order, warp w
// taking chunks [32 w, 32 w + 32) of each round, and hand them to the row-chunk adapter
// (apply_chunk), so stores are coalesced 8-byte (FP8) / 4-byte (NVFP4) / 16-byte (bf16) runs.
//
// Geometry: tile element (r, c) is output element (row0 + r, col0 + c); only rows < out_rows
// and columns < out_cols of the output are written (a tile at the edge of the output). What a
// kind needs (quant_needs(), kind.h):
//   - group scope (g = 16, 64, 128): cols % g == 0 and col0 % g == 0, so that the g / 8 lanes of
//     a group hold one row's group (the chunk order keeps them consecutive and aligned);
//   - row scope (per-token): the tile holds whole output rows (col0 == 0, cols >= out_cols); one
//     warp per row reduces its amax, then stores;
//   - tensor scope / plain: nothing.
// can_store_tile() says whether a geometry qualifies (a host-side check belongs in the family's
// can_implement; the device function assumes it).
// Call store_tile() from every thread of [0, nthreads) (a multiple of 32) after a barrier that
// makes the tile visible; it performs no barrier itself.
#pragma once

#include <cstdint>

#include "qfuse/quant/adapters/row_chunk.cuh"

namespace qfuse::quant {

template <class T>
struct SmemTile {
  const T* data;   // shared memory, 16-byte aligned
  int ld;          // row stride, elements (ld * sizeof(T) % 16 == 0)
  int rows, cols;  // tile extent (cols % 8 == 0)
  int64_t row0;    // output row of tile row 0
  int col0;        // output column of tile column 0
  int64_t out_rows;
  int out_cols;
};

/// True when a tile of `cols` columns at output column `col0` of rows `out_cols` wide can be
/// written in `spec`'s kind by store_tile().
inline bool can_store_tile(const QuantSpec& spec, int cols, int col0, int out_cols) {
  return cols % kChunk == 0 && sees_whole_scale_units(spec, cols, col0, out_cols);
}

/// 8 values of tile row r from column c as fp32.
template <class T>
__device__ __forceinline__ void read_tile_chunk(const SmemTile<T>& t, int r, int c,
                                                float (&v)[kChunk]) {
  const uint4* p = reinterpret_cast<const uint4*>(t.data + static_cast<int64_t>(r) * t.ld + c);
  constexpr int kVecs = kChunk * sizeof(T) / 16;
  uint4 raw[kVecs];
#pragma unroll
  for (int i = 0; i < kVecs; ++i) raw[i] = p[i];
  convert_chunk<T>(raw, v);
}

/// Writes the tile through `core` (see the file comment).
template <class Core, class T>
__device__ void store_tile(const Core& core, const SmemTile<T>& t, int tid, int nthreads) {
  const int lane = tid & 31, warp = tid >> 5, nwarps = nthreads >> 5;
  const int cpr = t.cols / kChunk;  // chunks per tile row
  const int64_t rows_left = t.out_rows - t.row0;
  const int rows = rows_left < t.rows ? static_cast<int>(rows_left < 0 ? 0 : rows_left) : t.rows;
  if constexpr (Core::kScope == ScaleScope::kRow) {
    // One warp per row: amax over the row, then the stores (the row read twice from shared).
    for (int r = warp; r < rows; r += nwarps) {
      const int64_t row = t.row0 + r;
      float amax = 0.0f;
      for (int c = lane; c < cpr; c += 32) {
        if (c * kChunk >= t.out_cols) break;
        float v[kChunk];
        read_tile_chunk(t, r, c * kChunk, v);
        const int nvalid = chunk_valid(t.out_cols, c * kChunk);
#pragma unroll
        for (int i = 0; i < kChunk; ++i) v[i] = i < nvalid ? v[i] : 0.0f;
        amax = rules::nan_max(amax, chunk_amax(v));
      }
      amax = group_amax<32>(amax);
      const auto s = core.scale_of(amax);
      if (lane == 0) core.write_scale(core.scale_offset(row, 0), s);
      for (int c = lane; c < cpr; c += 32) {
        const int nvalid = chunk_valid(t.out_cols, c * kChunk);
        if (nvalid <= 0) break;
        float v[kChunk];
        read_tile_chunk(t, r, c * kChunk, v);
        core.store(row, c * kChunk, nvalid, v, s);
      }
    }
  } else {
    // Rounds of 32 chunks a warp; every lane of a warp takes part in every round it enters
    // (apply_chunk reduces over lanes), lanes past the tile with nvalid 0.
    const int total = rows * cpr;
    for (int base = warp * 32; base < total; base += nwarps * 32) {
      const int c = base + lane;
      const int r = c / cpr, cc = (c - r * cpr) * kChunk;
      float v[kChunk];
      int nvalid = 0;
      if (c < total) {
        nvalid = chunk_valid(t.out_cols - t.col0, cc);
        read_tile_chunk(t, r, cc, v);
#pragma unroll
        for (int i = 0; i < kChunk; ++i) v[i] = i < nvalid ? v[i] : 0.0f;
      } else {
#pragma unroll
        for (int i = 0; i < kChunk; ++i) v[i] = 0.0f;
      }
      apply_chunk(core, t.row0 + r, t.col0 + cc, nvalid, v);
    }
  }
}

}  // namespace qfuse::quant
