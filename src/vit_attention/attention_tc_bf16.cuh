// The Hopper tensor-core ViT attention over BF16 inputs (vit_attention.h, VitKernel::kTensorCore
// and kAuto for bf16 q, k, v): bf16 wgmma, fp32 accumulation, warp-specialized with TMA; the
// sibling of the FP8 kernel (attention_tc.cuh), with the same work split, pipeline and epilogue.
//
// Inputs: q, k, v [S_total, H, D] bf16 views (token stride free, e.g. slices of one interleaved
// QKV [S, 3, H, D] buffer; a 4-D [B, S, H, D] view whose batches are evenly spaced flattens to
// one). The TMA maps declare dimension 0 as D and load boxes of 64 columns (128 bytes: one
// 128-byte swizzle atom row), so a head's columns past D are zero fill, never the neighbouring
// head's or tensor's. kAtoms = ceil(D / 64) boxes per row block.
//
// Work: a block takes 128 query rows of one sequence and one head (blockIdx.x: the query tile,
// counted over the sequences' ceil(len / 128) tiles; blockIdx.y: the head). Three warpgroups:
//   - warpgroup 0, the producer (one thread): Q once, then per key tile K and V [128 keys x
//     kAtoms boxes] by TMA into a stage ring (full / empty mbarriers);
//   - warpgroups 1 and 2, the consumers: 64 query rows each. Per key tile:
//       S = Q K^T            wgmma m64n128k16 bf16, both operands K-major from shared memory,
//                            ceil(D / 16) k steps (the columns past D are zero);
//       online softmax       in base 2 (tc_common.cuh: softmax_tile; P carries a factor 256,
//                            harmless in bf16 and cancelled by the row sum);
//       O += P V             wgmma m64nDk16, P from registers: two adjacent n8 blocks of the
//                            fp32 accumulator converted to bf16 pairs are the k16 A fragment (no
//                            key permutation); V is the B operand MN-major (transpose-b): the
//                            token rows as loaded, 16 keys a k step (2048 bytes), the head
//                            dimension's second 64 columns one box (LBO) on.
//   Key tiles start at the sequence's first key and run to its end (the last one masked); the
//   epilogue scales O by 1 / l, stages it in shared memory (over the drained K / V ring) and
//   writes rows [q0, min(q0 + 128, end)) of the head's D columns through the quantizer protocol
//   (shared-memory-tile adapter).
// Each consumer issues QK^T(n) and PV(n - 1) back to back and runs the softmax of tile n while
// PV(n - 1) is in flight (FlashAttention-3's intra-warpgroup overlap; P single-buffered: it is
// repacked after PV(n - 1) completes), and the two consumers take turns issuing their GEMMs
// (ping-pong, named barriers 2 and 3). Blocks run in clusters of two that share each K / V tile
// where their query tiles are of one sequence (one 64-token half each, multicast; the kernel's
// first lines and docs/vit_attention.md).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cutlass/arch/barrier.h>
#include <cstdint>
#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>

#include "common/sm90.cuh"
#include "core/launch.cuh"
#include "qfuse/quant/adapters/smem_tile.cuh"
#include "qfuse/quant/chunk.cuh"
#include "qfuse/quant/dispatch.cuh"
#include "vit_attention/launch.h"
#include "vit_attention/tc_common.cuh"
#include "vit_attention/wgmma_bf16.cuh"

namespace qfuse::vit {

template <int kD>
struct TcBf16Traits {
  static constexpr int kM = 128;                  // query rows per block
  static constexpr int kN = 128;                  // keys per tile
  static constexpr int kThreads = 384;            // producer + 2 consumer warpgroups
  static constexpr int kAtoms = (kD + 63) / 64;   // 64-column boxes per token row
  static constexpr int kKSteps = (kD + 15) / 16;  // QK^T k16 steps
  static constexpr int kStages = kAtoms == 1 ? 4 : 3;
  // The P V GEMM's N: the head size. NOTE: for D 72 / 80 / 96 the MN-major B operand's N ends
  // inside the second 64-column box (a partial swizzle atom along N: CUTLASS's layouts never make
  // one, the descriptor arithmetic allows it); 64 * kAtoms (the zero columns included) is the
  // whole-atom alternative, at up to 1.8x the P V tensor work and 64 - D / 2 more registers.
  static constexpr int kPvN = kD;
  static constexpr int kBoxBytes = 128 * 128;  // 128 tokens x 64 bf16
  // K and V come in boxes of 64 tokens (the host's k_map / vt_map): a pair of blocks sharing a
  // sequence loads one half each, multicast to both.
  static constexpr int kHalfRows = 64;
  static constexpr int kHalfBytes = kHalfRows * 128;
  static constexpr int kQBytes = kAtoms * kBoxBytes;
  static constexpr int kKBytes = kAtoms * kBoxBytes;
  static constexpr int kVBytes = kAtoms * kBoxBytes;
  static constexpr int kOBytes = kM * kD * 4;
  // Offsets from the 1024-byte aligned base. The epilogue's fp32 O tile reuses the K / V ring.
  static constexpr int kQOff = 0;
  static constexpr int kKOff = kQOff + kQBytes;
  static constexpr int kVOff = kKOff + kStages * kKBytes;
  static constexpr int kOOff = kKOff;
  static constexpr int kBarOff = kVOff + kStages * kVBytes;
  static constexpr int kBars = 1 + 2 * kStages;                  // q_full, full[], empty[]
  static constexpr int kSmemBytes = kBarOff + kBars * 8 + 1024;  // + alignment slack
  static_assert(kD % 8 == 0 && kD >= 64 && kD <= 128, "head sizes 64..128, multiples of 8");
  static_assert(kPvN >= kD && kPvN <= 64 * kAtoms && kPvN % 8 == 0, "P V covers the head");
  static_assert(kOBytes <= kBarOff - kOOff, "the O tile fits in the K / V ring");
  static_assert(kSmemBytes <= 227 * 1024, "shared memory");
};

/// P (fp32, 64 x 128 in the accumulator layout) as the eight k16 bf16 A fragments of P V.
__device__ __forceinline__ void pack_p_bf16(const float (&s)[64], uint32_t (&a)[8][4]) {
#pragma unroll
  for (int kk = 0; kk < 8; ++kk)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      // r: 2 * (n8 block within the step) + row half; the block's registers 4 j + 2 half + {0, 1}.
      const int i = 4 * (2 * kk + (r >> 1)) + 2 * (r & 1);
      const __nv_bfloat162 v = __floats2bfloat162_rn(s[i], s[i + 1]);  // .x (low) = lower column
      a[kk][r] = *reinterpret_cast<const uint32_t*>(&v);
    }
}

/// Issues S = Q K^T (kKSteps k16 steps; S overwritten) for one consumer's 64 rows: q_addr / k_addr
/// are the first boxes (the consumer's rows within Q's), the next box kBoxBytes on.
template <int kKSteps, int kBoxBytes>
__device__ __forceinline__ void issue_qk_bf16(float (&s)[64], uint32_t q_addr, uint32_t k_addr) {
  using namespace ::qfuse::sm90;
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < kKSteps; ++ks) {
    const uint32_t off = (ks >> 2) * kBoxBytes + 32 * (ks & 3);
    WgmmaBf16<128>::ss_k(s, sw128_desc(q_addr + off, 16, 1024), sw128_desc(k_addr + off, 16, 1024),
                         ks > 0 ? 1 : 0);
  }
}

/// Issues O += P V over the 128 keys of a tile (8 k16 steps, P from registers, V MN-major).
template <int kN, int kBoxBytes>
__device__ __forceinline__ void issue_pv_bf16(float (&o)[kN / 2], const uint32_t (&a)[8][4],
                                              uint32_t v_addr) {
  using namespace ::qfuse::sm90;
  fence_regs(o);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 8; ++kk)
    WgmmaBf16<kN>::rs_mn(o, a[kk], sw128_desc(v_addr + kk * 2048, kBoxBytes, 1024), 1);
}

template <int kD, class Core>
__global__ void __launch_bounds__(384, 1)
    vit_tc_bf16_kernel(const __grid_constant__ TcParams p, const typename Core::Params qp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Tr = TcBf16Traits<kD>;
  using namespace ::qfuse::sm90;
  extern __shared__ uint8_t smem_raw[];
  const uintptr_t raw = reinterpret_cast<uintptr_t>(smem_raw);
  uint8_t* sm = smem_raw + ((1024 - (raw & 1023)) & 1023);
  uint64_t* bars = reinterpret_cast<uint64_t*>(sm + Tr::kBarOff);
  uint64_t* q_full = bars;
  uint64_t* full = bars + 1;
  uint64_t* empty = bars + 1 + Tr::kStages;
  __shared__ TileSpan span, peer_span;

  Core core(qp);
  pdl_begin();
  // Launched in clusters of two (launch_tc_bf16_core): blocks 2 i and 2 i + 1 are a pair. Where
  // both hold a query tile of the same sequence (and, by the grid's y, head), they read the same
  // K / V tiles: each block's producer loads one 64-token half of every box and multicasts it to
  // both, so a pair reads its keys from L2 once (bench/NOTES.md V35). Otherwise (a pair across
  // two sequences, the grid's padding block, a launch without clusters) each block loads both
  // halves alone. A block past the last tile (grid.x rounded up to the pair) has no work.
  const bool clustered = cute::cluster_shape().x == 2;
  const int rank = clustered ? static_cast<int>(cute::block_rank_in_cluster()) : 0;
  const int peer = static_cast<int>(blockIdx.x) ^ 1;
  if (threadIdx.x == 0) span = peer_span = TileSpan{0, 0, 0};
  __syncwarp();
  if (static_cast<int>(blockIdx.x) < p.tiles) find_tile<Tr::kM>(p, blockIdx.x, &span);
  __syncwarp();
  if (clustered && peer < p.tiles) find_tile<Tr::kM>(p, peer, &peer_span);
  __syncthreads();
  const bool pair =
      clustered && span.end > span.beg && peer_span.beg == span.beg && peer_span.end == span.end;
  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
#pragma unroll
    for (int s = 0; s < Tr::kStages; ++s) {
      mbar_init(full + s, 1);
      mbar_init(empty + s, pair ? 16 : 8);  // the consumers' 8 warps (of both blocks: pair)
    }
    mbar_fence_init();
  }
  __syncthreads();
  // The peer's multicasts and arrivals reach this block's barriers only once they are set up
  // (the init fence releases them at cluster scope; CUTLASS's order).
  if (pair) {
    cute::cluster_arrive_relaxed();
    cute::cluster_wait();
  }
  const int h = blockIdx.y;
  const int64_t beg = span.beg, end = span.end, q0 = span.q0;
  const int tiles = end > beg ? static_cast<int>((end - beg + Tr::kN - 1) / Tr::kN) : 0;
  const int wg = warpgroup_index();

  if (wg == 0) {
    regs_dec<40>();
    if (threadIdx.x == 0 && tiles > 0) {
      prefetch_tensormap(&p.q_map);
      prefetch_tensormap(&p.k_map);
      prefetch_tensormap(&p.vt_map);
      mbar_arrive_expect_tx(q_full, Tr::kQBytes);
#pragma unroll
      for (int a = 0; a < Tr::kAtoms; ++a)
        tma_load_3d(sm + Tr::kQOff + a * Tr::kBoxBytes, &p.q_map, q_full, 64 * a, h,
                    static_cast<int>(q0));
      for (int n = 0; n < tiles; ++n) {
        const int st = n % Tr::kStages;
        if (n >= Tr::kStages) mbar_wait(empty + st, ((n / Tr::kStages) - 1) & 1);
        const int j0 = static_cast<int>(beg + int64_t{n} * Tr::kN);
        // The whole tile lands in this block's stage either way (half of it from the peer).
        mbar_arrive_expect_tx(full + st, Tr::kKBytes + Tr::kVBytes);
#pragma unroll
        for (int a = 0; a < Tr::kAtoms; ++a) {
          uint8_t* kb = sm + Tr::kKOff + st * Tr::kKBytes + a * Tr::kBoxBytes;
          uint8_t* vb = sm + Tr::kVOff + st * Tr::kVBytes + a * Tr::kBoxBytes;
          if (pair) {
            const int r0 = j0 + Tr::kHalfRows * rank;
            constexpr uint64_t kHint =
                static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);
            cute::SM90_TMA_LOAD_MULTICAST_3D::copy(&p.k_map, full + st, uint16_t{3}, kHint,
                                                   kb + Tr::kHalfBytes * rank, 64 * a, h, r0);
            cute::SM90_TMA_LOAD_MULTICAST_3D::copy(&p.vt_map, full + st, uint16_t{3}, kHint,
                                                   vb + Tr::kHalfBytes * rank, 64 * a, h, r0);
          } else {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              const int r0 = j0 + Tr::kHalfRows * half;
              tma_load_3d(kb + Tr::kHalfBytes * half, &p.k_map, full + st, 64 * a, h, r0);
              tma_load_3d(vb + Tr::kHalfBytes * half, &p.vt_map, full + st, 64 * a, h, r0);
            }
          }
        }
      }
      // A block of a pair exits only after the peer's last arrivals on its barriers (and so
      // after the peer has its last tiles, multicasts included): the producer waits for the
      // final release of every stage it used (CUTLASS's producer tail).
      if (pair)
        for (int n = tiles > Tr::kStages ? tiles - Tr::kStages : 0; n < tiles; ++n)
          mbar_wait(empty + n % Tr::kStages, (n / Tr::kStages) & 1);
    }
    return;
  }
  regs_inc<232>();
  const int c = wg - 1;                     // consumer: rows [64 c, 64 c + 64) of the tile
  const int tid = threadIdx.x - 128;        // [0, 256)
  const int warp = (threadIdx.x >> 5) & 3;  // warp of the warpgroup
  const int lane = threadIdx.x & 31, g = lane >> 2, qd = lane & 3;
  constexpr float kLog2e = 1.4426950408889634f;
  const float scale2 = p.softmax_scale * kLog2e;

  float o[Tr::kPvN / 2];  // columns past kD (if any) stay zero and are not stored
#pragma unroll
  for (int i = 0; i < Tr::kPvN / 2; ++i) o[i] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  const uint32_t q_addr = smem_addr(sm + Tr::kQOff + c * 64 * 128);
  auto k_addr = [&](int st) { return smem_addr(sm + Tr::kKOff + st * Tr::kKBytes); };
  auto v_addr = [&](int st) { return smem_addr(sm + Tr::kVOff + st * Tr::kVBytes); };
  float s[64];
  uint32_t pa[8][4];
  float corr[2];
  // Stage st read (its last wgmma done): one arrival a warp on the empty barrier of every block
  // whose producer writes the stage (this one's, and the peer's in a pair).
  auto release = [&](int st) {
    if (lane != 0) return;
    if (pair) {
      cutlass::arch::ClusterBarrier::arrive(empty + st, 0u, 1u);
      cutlass::arch::ClusterBarrier::arrive(empty + st, 1u, 1u);
    } else {
      mbar_arrive(empty + st);
    }
  };
  auto fence_p = [&]() {
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) fence_regs(pa[kk]);
  };
  auto rescale_o = [&]() {
#pragma unroll
    for (int i = 0; i < Tr::kPvN / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[4 * i + e] *= corr[e >> 1];
  };
  // Ping-pong as the FP8 kernel: consumer c waits at named barrier 2 + c for its turn and hands
  // the next to the other after its issues; tiles + 1 turns (QK(0), the steps, the last PV);
  // consumer 1 opens consumer 0's first turn and skips the arrival after its last.
  auto turn_begin = [&]() { named_sync_roles(2 + c, 256); };
  auto turn_end = [&](bool last) {
    if (!last || c == 0) named_arrive(3 - c, 256);
  };
  if (tiles > 0) {
    if (c == 1) named_arrive(2, 256);  // consumer 0 takes the first turn
    mbar_wait(q_full, 0);
    mbar_wait(full, 0);
    turn_begin();
    issue_qk_bf16<Tr::kKSteps, Tr::kBoxBytes>(s, q_addr, k_addr(0));
    wgmma_commit();
    turn_end(false);
    wgmma_wait<0>();
    fence_regs(s);
    softmax_tile(s, beg, beg, end, qd, scale2, m, l, corr);
    pack_p_bf16(s, pa);
    // Step n: QK^T(n) and PV(n - 1) issued together; the softmax of tile n while PV(n - 1) runs;
    // then (PV(n - 1) done) stage n - 1 released, O rescaled and P(n) packed. O and P are touched
    // only while no wgmma is in flight.
    for (int n = 1; n < tiles; ++n) {
      const int st = n % Tr::kStages, prev = (n - 1) % Tr::kStages;
      mbar_wait(full + st, (n / Tr::kStages) & 1);
      turn_begin();
      issue_qk_bf16<Tr::kKSteps, Tr::kBoxBytes>(s, q_addr, k_addr(st));
      wgmma_commit();
      issue_pv_bf16<Tr::kPvN, Tr::kBoxBytes>(o, pa, v_addr(prev));
      wgmma_commit();
      turn_end(false);
      wgmma_wait<1>();  // QK^T(n) done; PV(n - 1) in flight
      fence_regs(s);
      softmax_tile(s, beg + int64_t{n} * Tr::kN, beg, end, qd, scale2, m, l, corr);
      wgmma_wait<0>();
      fence_regs(o);
      fence_p();
      release(prev);
      rescale_o();
      pack_p_bf16(s, pa);
    }
    const int last = (tiles - 1) % Tr::kStages;
    turn_begin();
    issue_pv_bf16<Tr::kPvN, Tr::kBoxBytes>(o, pa, v_addr(last));
    wgmma_commit();
    turn_end(true);
    wgmma_wait<0>();
    fence_regs(o);
    fence_p();
    release(last);
  }

  // Epilogue: O / l into the shared tile (over the K / V ring, once both consumers are done with
  // it: every load has landed and every wgmma has completed), then through the quantizer.
  store_output<kD, Tr::kM, true>(core, o, l, 1.0f, reinterpret_cast<float*>(sm + Tr::kOOff), c,
                                 warp, g, qd, q0, h, end, static_cast<int>(p.H * kD), tid);
#endif
}

/// Launches the kernel for head size kD with core Core (params qp).
template <int kD, class Core>
Status launch_tc_bf16_core(const TcParams& p, const typename Core::Params& qp,
                           cudaStream_t stream) {
  using Tr = TcBf16Traits<kD>;
  const auto kernel = vit_tc_bf16_kernel<kD, Core>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes);
  QFUSE_RETURN_IF_ERROR(cuda_status(attr, "cudaFuncSetAttribute(vit_tc_bf16_kernel)"));
  // Clusters of two along x: the grid rounded up to whole pairs (a padding block has no work);
  // single blocks where the device cannot hold such a cluster (asked once per kernel: e.g. a
  // partition without two SMs of one GPC).
  static const bool pairs_fit = [&] {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(2, 1);
    cfg.blockDim = dim3(Tr::kThreads);
    cfg.dynamicSmemBytes = Tr::kSmemBytes;
    cudaLaunchAttribute a{};
    a.id = cudaLaunchAttributeClusterDimension;
    a.val.clusterDim.x = 2;
    a.val.clusterDim.y = a.val.clusterDim.z = 1;
    cfg.attrs = &a;
    cfg.numAttrs = 1;
    int clusters = 0;
    const cudaError_t pending = cudaPeekAtLastError();
    const bool ok = cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess;
    // The query's own error is not the caller's: cleared, unless one was pending before it.
    if (!ok && pending == cudaSuccess) (void)cudaGetLastError();
    return ok && clusters > 0;
  }();
  const unsigned cluster = bf16_cluster_on() && pairs_fit ? 2u : 1u;
  const unsigned x = (static_cast<unsigned>(p.tiles) + cluster - 1) / cluster * cluster;
  return launch_kernel_clustered("vit_tc_bf16_kernel", kernel, dim3(x, p.H), dim3(Tr::kThreads),
                                 Tr::kSmemBytes, stream, cluster, p, qp);
}

/// The BF16 TC kernel for head size kD writing `out` ([S_total, H * kD], validated; spec none
/// bf16 or fp8_per_tensor, as the FP8 kernel).
template <int kD>
Status launch_tc_bf16_for(const TcParams& p, const QuantOutput& out, cudaStream_t stream) {
  return with_tc_output(out, "vit_tc_bf16", [&](auto tag, const auto& cp) -> Status {
    return launch_tc_bf16_core<kD, typename decltype(tag)::type>(p, cp, stream);
  });
}

}  // namespace qfuse::vit
