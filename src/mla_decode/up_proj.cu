// The MLA up-projection fused into the split-KV combine (issue 14, SPEC §3): for each token t and
// head n,
//   o[t, n * 128 + j] = sum_d o_latent[t, n, d] * W_UV[n, d, j]        (d < 512, j < 128)
// where o_latent[t, n, :] is the merge of the request's pieces (combine.cuh, fp32), rounded once
// to bf16 as the tensor-core operand (the unfused path's o_latent is bf16 too), W_UV bf16, fp32
// accumulation (mma.sync m16n8k16 through CuTe's SM80 atoms), written through the quantizer:
// o_latent is never written and [T, N * 128] is written once, in its final kind.
//
// A block computes 16 tokens x one head's 128 columns, four warps of 32 columns each:
//   1. W_UV[n] streams through a ring of kStages 64-row stages (cp.async.cg; 16 KB each,
//      16-byte chunks XOR-swizzled by row so that ldmatrix.trans reads 8 rows conflict-free).
//      NOTE: issued before the PDL wait: W_UV is an input of the call, and the kernel before this
//      one is the decode kernel, which lets this one launch only after its own wait (so every
//      earlier kernel has finished); the partials are read only after the wait.
//   2. The 16 rows' o_latent for head n, merged from the pieces (8 threads a row, each 8 chunks of
//      8 values, every piece's 16 loads of a thread in flight together) into shared memory as
//      bf16 [16][512] (chunks swizzled as W's). The merged lse [T, N] is written here.
//   3. Eight k-steps of 64: per 16 latent values one ldmatrix.x4 of A and two ldmatrix.x4.trans
//      of B per warp, four mma.sync.
//   4. The fp32 tile [16][128] staged in shared memory and written with the tile adapter
//      (coalesced; plain, per-tensor, per-group 64 / 128 and NVFP4 16: a head's 128 columns hold
//      whole groups). Per-token FP8 needs the amax of a whole row (N * 128 columns, N blocks):
//      two launches of the same kernel, the first (kAmaxPass) writing each (row, head)'s amax to
//      the workspace, the second (kTokenPass) recomputing the tile and quantizing it with the
//      row's scale from those amaxes (the values are never written unquantized; the second pass
//      reads the partials again, mostly from L2).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>

#include "core/launch.cuh"
#include "mla_decode/combine.cuh"
#include "mla_decode/up_proj.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/quant/adapters/smem_tile.cuh"
#include "qfuse/quant/dispatch.cuh"

namespace qfuse::mla {
namespace {

using namespace up;
static_assert(kRows * kTileLd * 4 <= kSmemA, "the epilogue tile reuses A's space");
static_assert(kThreads == kRows * 8, "8 threads merge a row");
static_assert(kK * kChunksW % kThreads == 0 && kRows * kChunksW % kThreads == 0);

enum UpPass : int {
  kStorePass,  // every kind but per-token: the tile through the tile adapter
  kAmaxPass,   // per-token, first launch: amax of each (row, head) to UpProjParams::amax
  kTokenPass,  // per-token, second launch: the tile with its rows' scales
};

using LdsmA = cute::SM75_U32x4_LDSM_N;
using LdsmB = cute::SM75_U16x8_LDSM_T;
using Mma = cute::SM80_16x8x16_F32BF16BF16F32_TN;
using CpAsync = cute::SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>;

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <class Core, int kPass>
__global__ void __launch_bounds__(kThreads)
    up_proj_kernel(const CombineArgs ca, const UpProjParams u, const typename Core::Params qp,
                   int tiles, int pad_blocks) {
  extern __shared__ __align__(128) uint8_t smem[];
  Core core(qp);
  if (blockIdx.x >= static_cast<unsigned>(tiles)) {  // scale-buffer padding (blocks of head 0)
    if (blockIdx.y == 0) {
      pdl_begin();
      core.zero_padding((blockIdx.x - tiles) * kThreads + threadIdx.x, pad_blocks * kThreads);
    }
    return;
  }
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int n = blockIdx.y;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  cute::uint128_t* sa = reinterpret_cast<cute::uint128_t*>(smem);
  cute::uint128_t* sw = reinterpret_cast<cute::uint128_t*>(smem + kSmemA);

  // 1. W_UV[n]: stage s = rows [64 s, 64 s + 64), chunk ch of row r at r * 16 + (ch ^ (r & 7)).
  const uint16_t* w = u.w + static_cast<int64_t>(n) * u.w_sh;
  auto issue_stage = [&](int s) {
    cute::uint128_t* dst = sw + (s % kStages) * (kK * kChunksW);
#pragma unroll
    for (int i = 0; i < kK * kChunksW / kThreads; ++i) {
      const int r = wcopy_row(tid, i), ch = wcopy_chunk(tid, i);
      const uint16_t* src = w + static_cast<int64_t>(s * kK + r) * u.w_sk + ch * 8;
      CpAsync::copy(*reinterpret_cast<const cute::uint128_t*>(src), dst[w_slot(r, ch)]);
    }
  };
#pragma unroll
  for (int s = 0; s < kStages; ++s) {
    issue_stage(s);
    cute::cp_async_fence();
  }
  pdl_begin();
  core.begin();

  // 2. The merged o_latent rows: thread tid merges row r = tid / 8, chunks j + 8 i (i < 8).
  {
    const MlaCombine comb{ca, true};
    const int r = merge_row(tid), j = merge_chunk(tid, 0);
    const int64_t t = row0 + r;
    float v[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int e = 0; e < 8; ++e) v[i][e] = 0.0f;
    if (t < u.T) {
      const MlaCombine::Pieces pc = comb.pieces(t, n);
      float sum = 0.0f;
      if (pc.m2 != -INFINITY) {
#pragma unroll 1
        for (int k = 0; k < pc.n; ++k) {
          const float4* src =
              reinterpret_cast<const float4*>(pc.o + (pc.s0 + k) * pc.stride * kLatent) + 2 * j;
          float4 x[16];
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            x[2 * i] = __ldg(src + 16 * i);
            x[2 * i + 1] = __ldg(src + 16 * i + 1);
          }
          const float wk = pc.weight(k);
          sum += wk;
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            v[i][0] = fmaf(wk, x[2 * i].x, v[i][0]);
            v[i][1] = fmaf(wk, x[2 * i].y, v[i][1]);
            v[i][2] = fmaf(wk, x[2 * i].z, v[i][2]);
            v[i][3] = fmaf(wk, x[2 * i].w, v[i][3]);
            v[i][4] = fmaf(wk, x[2 * i + 1].x, v[i][4]);
            v[i][5] = fmaf(wk, x[2 * i + 1].y, v[i][5]);
            v[i][6] = fmaf(wk, x[2 * i + 1].z, v[i][6]);
            v[i][7] = fmaf(wk, x[2 * i + 1].w, v[i][7]);
          }
        }
        const float inv = 1.0f / sum;  // sum >= 1 (the max piece has weight 1)
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
          for (int e = 0; e < 8; ++e) v[i][e] *= inv;
      }
      if (kPass != kAmaxPass && j == 0 && ca.lse_out != nullptr)
        ca.lse_out[t * ca.lse_st + n] = pc.m2 == -INFINITY ? -INFINITY : pc.merged_lse(sum);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      cute::uint128_t packed;
      uint32_t* pw = reinterpret_cast<uint32_t*>(&packed);
#pragma unroll
      for (int e = 0; e < 4; ++e) pw[e] = pack_bf16(v[i][2 * e], v[i][2 * e + 1]);
      sa[a_slot(r, merge_chunk(tid, i))] = packed;
    }
  }

  // 3. The product: warp w owns columns [32 w, 32 w + 32) as four n8 tiles.
  float acc[4][4];
#pragma unroll
  for (int q = 0; q < 4; ++q)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[q][e] = 0.0f;
#pragma unroll 1
  for (int s = 0; s < kSteps; ++s) {
    cute::cp_async_wait<kStages - 1>();
    __syncthreads();  // stage s (and, the first time, A) visible to every warp
    const cute::uint128_t* st = sw + (s % kStages) * (kK * kChunksW);
#pragma unroll
    for (int ks = 0; ks < kK / 16; ++ks) {
      uint32_t a[4];
      LdsmA::copy(sa[a_ldsm_slot(lane, s * (kK / 16) + ks)], a[0], a[1], a[2], a[3]);
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        uint32_t b[4];
        LdsmB::copy(st[w_ldsm_slot(lane, ks, warp, p)], b[0], b[1], b[2], b[3]);
        float(&c0)[4] = acc[2 * p];
        float(&c1)[4] = acc[2 * p + 1];
        Mma::fma(c0[0], c0[1], c0[2], c0[3], a[0], a[1], a[2], a[3], b[0], b[1], c0[0], c0[1],
                 c0[2], c0[3]);
        Mma::fma(c1[0], c1[1], c1[2], c1[3], a[0], a[1], a[2], a[3], b[2], b[3], c1[0], c1[1],
                 c1[2], c1[3]);
      }
    }
    __syncthreads();  // every warp done with the stage's slot before it is refilled
    if (s + kStages < kSteps) issue_stage(s + kStages);
    cute::cp_async_fence();
  }

  // 4. The fp32 tile [16][128] (in A's space: every warp is past its last ldmatrix).
  float* tile = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int q = 0; q < 4; ++q)
#pragma unroll
    for (int e = 0; e < 4; e += 2)
      *reinterpret_cast<float2*>(tile + acc_row(lane, e) * kTileLd + acc_col(warp, lane, q, e)) =
          make_float2(acc[q][e], acc[q][e + 1]);
  __syncthreads();
  const int out_cols = u.heads * kVHead;
  if constexpr (kPass == kStorePass) {
    quant::store_tile(
        core, quant::SmemTile<float>{tile, kTileLd, kRows, kVHead, row0, n * kVHead, u.T, out_cols},
        tid, kThreads);
  } else if constexpr (kPass == kAmaxPass) {
    // Row r's 128 values: 8 threads of 16 (lanes 8 r' .. 8 r' + 7 of a warp).
    const int r = tid >> 3, part = tid & 7;
    float amax = 0.0f;
#pragma unroll
    for (int e = 0; e < 16; ++e)
      amax = rules::nan_max(amax, fabsf(tile[r * kTileLd + 16 * part + e]));
#pragma unroll
    for (int m = 1; m < 8; m <<= 1)
      amax = rules::nan_max(amax, __shfl_xor_sync(0xffffffffu, amax, m));
    if (part == 0 && row0 + r < u.T) u.amax[(row0 + r) * u.heads + n] = amax;
  } else {
    // The row's amax over every head (the first launch's), then 8-value chunks of the tile.
    __shared__ float row_amax[kRows];
    if (tid < kRows) {
      float amax = 0.0f;
      if (row0 + tid < u.T) {
        const float* am = u.amax + (row0 + tid) * u.heads;
        for (int h = 0; h < u.heads; ++h) amax = rules::nan_max(amax, __ldg(am + h));
      }
      row_amax[tid] = amax;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRows * kChunksW / kThreads; ++i) {
      const int c = tid + i * kThreads, r = c / kChunksW, ch = c % kChunksW;
      const int64_t row = row0 + r;
      if (row >= u.T) continue;
      float v[quant::kChunk];
      quant::read_tile_chunk(
          quant::SmemTile<float>{tile, kTileLd, kRows, kVHead, row0, n * kVHead, u.T, out_cols}, r,
          8 * ch, v);
      const auto s = core.scale_of(row_amax[r]);
      if (n == 0 && ch == 0) core.write_scale(core.scale_offset(row, 0), s);
      core.store(row, n * kVHead + 8 * ch, quant::kChunk, v, s);
    }
  }
}

template <class Core, int kPass>
Status launch_pass(const CombineArgs& ca, const UpProjParams& u, const typename Core::Params& qp,
                   int64_t padding_units, cudaStream_t stream) {
  const int tiles = static_cast<int>((u.T + kRows - 1) / kRows);
  const int pad_blocks = padding_units > 0
                             ? static_cast<int>(std::clamp<int64_t>(
                                   (padding_units + kThreads - 1) / kThreads, 1, 1024))
                             : 0;
  auto kernel = up_proj_kernel<Core, kPass>;
  QFUSE_CUDA_RETURN(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  return launch_kernel(
      "mla up_proj_kernel", kernel,
      dim3(static_cast<unsigned>(tiles + pad_blocks), static_cast<unsigned>(u.heads)),
      dim3(kThreads), static_cast<size_t>(kSmem), stream, ca, u, qp, tiles, pad_blocks);
}

}  // namespace

Status launch_up_proj(const DecodeParams& p, const UpProjParams& u, const QuantOutput& out,
                      cudaStream_t stream) {
  const CombineArgs ca{p.sched.o_part, p.sched.lse_part, p.sched.first,  p.s_q, p.heads,
                       p.lse,          p.lse_st,         p.sched.header, 0};
  return quant::visit_quantizer<quant::kAllKinds>(
      out, u.T, int64_t{u.heads} * kVHead, [&](auto tag, const auto& qp, int64_t padding_units) {
        using Core = typename decltype(tag)::type;
        if constexpr (Core::kScope == ScaleScope::kRow) {
          QFUSE_RETURN_IF_ERROR((launch_pass<Core, kAmaxPass>(ca, u, qp, 0, stream)));
          return launch_pass<Core, kTokenPass>(ca, u, qp, 0, stream);
        } else {
          return launch_pass<Core, kStorePass>(ca, u, qp, padding_units, stream);
        }
      });
}

}  // namespace qfuse::mla
