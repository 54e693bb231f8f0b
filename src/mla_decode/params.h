// The validated, trivially copyable arguments of the MLA decode kernels (built by dispatch.cpp),
// and the workspace layout they share with the scheduler and the combine.
//
// Workspace (MlaWorkspace.data, 256-byte aligned pieces):
//   header   int[64]      [0] device error flags (MlaDeviceError), [1] cost per part
//                         ("target"), [2] total cost W, [3] total pieces, [4] every request is
//                         one piece (kHdrOnePiece: with DecodeParams::direct, the decode kernel
//                         writes the output and the combine does nothing)
//   len      int[B]       sanitized seq_len (0 for a request the device flagged)
//   cost_pre int[B + 1]   exclusive prefix sum of cost_b = tiles_b + overhead
//   first    int[B + 1]   first partial slot of request b (exclusive prefix of its piece count)
//   lse_part float[slots, s_q, N]         natural-log lse of each piece
//   o_part   float[slots, s_q, N, 512]    normalised partial output of each piece
// slots = B + kMaxParts(device): each part boundary splits at most one request.
#pragma once

#include <cuda.h>

#include <cstddef>
#include <cstdint>

namespace qfuse::mla {

constexpr int kLatent = 512;
constexpr int kRope = 64;
constexpr int kDim = 576;
constexpr int kTileTokens = 64;  // tokens per KV tile (the wgmma M of the swapped QK product)
/// Cache element types of the kernels.
enum class CacheKind { kBf16, kFp8 };
constexpr int kOverheadTiles = 2;  // scheduler cost of a piece beyond its tiles at 16 rows a block
constexpr int kMaxOverheadTiles = 16;  // the largest (schedule_rules.h, dispatch.cpp)
constexpr int kHeaderInts = 64;
constexpr int kHdrOnePiece = 4;

/// The schedule's view of the workspace.
struct Schedule {
  int* header;
  int* len;
  int* cost_pre;
  int* first;
  float* lse_part;
  float* o_part;
  int num_parts;  // parts of the split-KV grid (blockIdx.y); 0 in MlaSplitMode::kNone
  int overhead;   // cost of a piece beyond its tiles (piece_overhead of the rows per block)
};

/// Everything a decode kernel reads. Strides in elements.
struct DecodeParams {
  const uint16_t* q;  // bf16 bits
  int64_t q_st, q_sh;
  const void* cache;  // bf16 bits or e4m3 bytes
  int64_t c_sb, c_st;
  int num_blocks;
  int block_size;
  const float* k_scale;  // null for bf16
  const int* block_table;
  int64_t bt_st;
  int max_blocks;
  int batch;
  int s_q;
  int heads;
  int rows;          // heads * s_q
  float scale_log2;  // softmax_scale * log2(e)
  // Direct epilogue (MlaSplitMode::kNone): bf16 o_latent and the optional lse.
  uint16_t* out;
  int64_t out_st, out_sh;
  float* lse;
  int64_t lse_st;
  // Split mode with a plain bf16 output: where the schedule leaves every request in one piece
  // (header[kHdrOnePiece]), the pieces are written as the direct epilogue's (slot -1) and the
  // combine has nothing to merge.
  int direct;
  Schedule sched;
};

/// The tensor-core kernel's arguments: the decode parameters and the TMA descriptors of q and the
/// cache (kernel parameters: __grid_constant__).
struct TcParams {
  CUtensorMap q_map;   // q as [T][N][576] bf16, box (64, rows_h, rows_t), 128-byte swizzle
  CUtensorMap kv_map;  // cache as [num_blocks][block_size][576], box (64, box_rows, 1)
  DecodeParams p;
  int box_rows;  // min(block_size, rows per TMA box of the cache)
  int q_box_h;   // heads per Q box
  int release;   // the bf16 16 / 32-row consumer's stage release (mla::bf16_release())
};

}  // namespace qfuse::mla
