// The MLA up-projection fused into the split-KV combine (up_proj.cu): its arguments and launch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "mla_decode/params.h"
#include "qfuse/core/status.h"
#include "qfuse/quant/quantize.h"
#include "qfuse/quant/rules.h"  // QFUSE_HD

namespace qfuse::mla {

constexpr int kVHead = 128;  // v_head_dim: W_UV's output columns per head

/// The up-projection kernel's geometry, shared-memory layout and lane maps (host and device: the
/// host test MlaUpProjLayout emulates ldmatrix and mma.sync from the PTX ISA over them).
namespace up {
constexpr int kRows = 16;                    // output rows (tokens) of a block
constexpr int kThreads = 128;                // warp w: the head's columns [32 w, 32 w + 32)
constexpr int kK = 64;                       // W_UV rows of a stage
constexpr int kStages = 4;                   // stages in flight
constexpr int kSteps = kLatent / kK;         // 8
constexpr int kChunksA = kLatent / 8;        // 16-byte chunks of an A row (64)
constexpr int kChunksW = kVHead / 8;         // 16-byte chunks of a W row (16)
constexpr int kTileLd = kVHead + 4;          // fp32 epilogue tile row stride (floats)
constexpr int kSmemA = kRows * kLatent * 2;  // 16 KB
constexpr int kSmemStage = kK * kVHead * 2;  // 16 KB
constexpr int kSmem = kSmemA + kStages * kSmemStage;  // 80 KB: two blocks an SM

/// Where 16-byte chunk ch of A row r (r < 16, ch < 64) lies in A's chunks, and chunk ch of row r
/// of a W stage (r < 64, ch < 16): XOR-swizzled by row, so that the 8 rows an ldmatrix reads at
/// one chunk hit 8 distinct bank groups.
QFUSE_HD int a_slot(int r, int ch) {
  return r * kChunksA + (ch ^ (r & 7));
}
QFUSE_HD int w_slot(int r, int ch) {
  return r * kChunksW + (ch ^ (r & 7));
}
/// The merge: thread tid writes A row merge_row(tid), chunks merge_chunk(tid, i) for i < 8.
QFUSE_HD int merge_row(int tid) {
  return tid >> 3;
}
QFUSE_HD int merge_chunk(int tid, int i) {
  return (tid & 7) + 8 * i;
}
/// The W copy: thread tid's chunk i (i < kK * kChunksW / kThreads) of a stage.
QFUSE_HD int wcopy_row(int tid, int i) {
  return (tid + i * kThreads) / kChunksW;
}
QFUSE_HD int wcopy_chunk(int tid, int i) {
  return (tid + i * kThreads) % kChunksW;
}
/// ldmatrix.x4: lane l gives the address of row ldsm_row(l) of a 16-row operand at its chunk +
/// ldsm_hi(l) (matrices 0-3: rows 0-7 / 8-15 at chunk c, then at chunk c + 1).
QFUSE_HD int ldsm_row(int lane) {
  return (lane & 7) + 8 * ((lane >> 3) & 1);
}
QFUSE_HD int ldsm_hi(int lane) {
  return lane >> 4;
}
/// The A chunk lane addresses for the latent values [16 kstep, 16 kstep + 16) (kstep < 32).
QFUSE_HD int a_ldsm_slot(int lane, int kstep) {
  return a_slot(ldsm_row(lane), 2 * kstep + ldsm_hi(lane));
}
/// The W chunk (within a stage) lane addresses for the stage's rows [16 ks, 16 ks + 16) and the
/// warp's columns [32 warp + 16 p, + 16) (ldmatrix.x4.trans: the B fragments of two n8 tiles).
QFUSE_HD int w_ldsm_slot(int lane, int ks, int warp, int p) {
  const int r = 16 * ks + ldsm_row(lane);
  return w_slot(r, 4 * warp + 2 * p + ldsm_hi(lane));
}
/// Accumulator acc[q][e] of a lane of warp w (the m16n8 C fragment of n8 tile q): tile row, col.
QFUSE_HD int acc_row(int lane, int e) {
  return (lane >> 2) + 8 * (e >> 1);
}
QFUSE_HD int acc_col(int warp, int lane, int q, int e) {
  return 32 * warp + 8 * q + 2 * (lane & 3) + (e & 1);
}
}  // namespace up

/// W_UV and what the launches need besides the decode parameters.
struct UpProjParams {
  const uint16_t* w;   // W_UV bf16 bits [N][512][128]
  int64_t w_sh, w_sk;  // strides of a head and of a latent row (elements)
  float* amax;         // [T, N] workspace region after o_part (per-token output only: each
                       // (row, head)'s amax, the first launch's)
  int64_t T;
  int heads;
};

/// The combine with the up-projection: merges the pieces of every (token, head) and writes
/// o [T, N * 128] = o_latent[t, n] . W_UV[n] through `out`'s quantizer (per-token FP8 in two
/// launches), and lse [T, N] when p.lse is non-null.
Status launch_up_proj(const DecodeParams& p, const UpProjParams& u, const QuantOutput& out,
                      cudaStream_t stream);

}  // namespace qfuse::mla
