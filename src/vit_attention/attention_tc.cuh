// The Hopper tensor-core ViT attention (vit_attention.h, VitKernel::kTensorCore): FP8 Q/K/V on
// FP8 wgmma, fp32 accumulation, warp-specialized with TMA.
//
// Work: a block takes kM = 64 kC query rows of one sequence and one head (blockIdx.x: the query
// tile, counted over the sequences' ceil(len / kM) tiles; blockIdx.y: the head); kC = 2 or 3
// consumer warpgroups (TcTraits). kC + 1 warpgroups:
//   - warpgroup 0, the producer (one thread): Q once, then per key tile K [128 keys x 128 bytes]
//     and V^T [D rows x 128 keys] by TMA into a 3-stage ring (full / empty mbarriers);
//   - warpgroups 1 .. kC, the consumers: 64 query rows each. Per key tile:
//       S = Q K^T            wgmma m64n128k32 e4m3, both operands from shared memory,
//                            ceil(Dp / 32) k steps (columns past Dp are TMA zero fill);
//       online softmax       in base 2 with the dequantization scales folded into the
//                            scale (softmax_scale * q_scale * k_scale * log2 e), keys outside
//                            the sequence -inf, P = 2^(s - m + 8) (256x: P's small values stay
//                            normal E4M3 numbers; the row sum carries the same factor);
//       O += P V             wgmma m64nDk32, P from registers: the accumulator fragment of S
//                            converted to E4M3 in place is the k32 A fragment of keys in the
//                            order vit_vt_position() gives, which is how the quantizer wrote V^T.
//   Key tiles start at the sequence's first key rounded down to 32 (so the permutation lines up)
//   and run to its end; the epilogue scales O by v_scale / l, stages it in shared memory and
//   writes rows [q0, min(q0 + kM, end)) of the head's D columns through the quantizer protocol
//   (shared-memory-tile adapter).
// Each consumer overlaps its softmax of tile n with its PV GEMM of tile n - 1 (the steps are in
// the consumer loop); two consumers take turns issuing their GEMMs (ping-pong, named barriers 2
// and 3), so one's softmax overlaps the other's GEMMs; three run free (kPingPong).
#pragma once

#include <cuda.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <string>

#include "common/sm90.cuh"
#include "core/launch.cuh"
#include "qfuse/quant/adapters/smem_tile.cuh"
#include "qfuse/quant/chunk.cuh"
#include "qfuse/quant/dispatch.cuh"
#include "qfuse/quant/rules.h"
#include "vit_attention/fragment.h"
#include "vit_attention/launch.h"
#include "vit_attention/qkv.cuh"
#include "vit_attention/tc_common.cuh"
#include "vit_attention/trace.h"
#include "vit_attention/wgmma_fp8.cuh"

namespace qfuse::vit {

// The opt-in timeline (trace.h): VIT_TRACE(word, value) writes one word of the block's record
// (nothing without QFUSE_VIT_TRACE); VIT_TRACE_SEG(i, word, value) one of segment i's.
#ifdef QFUSE_VIT_TRACE
__device__ __forceinline__ uint64_t trace_gtime() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ uint64_t trace_smid() {
  uint32_t id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  return id;
}
#define VIT_TRACE(word, value)                                                             \
  do {                                                                                     \
    const unsigned vt_blk_ = blockIdx.x + blockIdx.y * gridDim.x;                          \
    if (p.trace != nullptr && vt_blk_ < trace::kBlocks)                                    \
      p.trace[uint64_t{vt_blk_} * trace::kStride + (word)] = static_cast<uint64_t>(value); \
  } while (0)
#define VIT_TRACE_SEG(i, word, value)                                        \
  do {                                                                       \
    if ((i) < trace::kMaxSegments)                                           \
      VIT_TRACE(trace::kHeadWords + (i)*trace::kSegWords + (word), (value)); \
  } while (0)
#else
#define VIT_TRACE(word, value) \
  do {                         \
  } while (0)
#define VIT_TRACE_SEG(i, word, value) \
  do {                                \
  } while (0)
#endif

/// kC consumer warpgroups of 64 query rows each (2 or 3; bench/NOTES.md V12); kFusedQ: Q comes
/// in bf16 (TcParams::fused_q) through a staging tile of its own.
template <int kD, int kC, bool kFusedQ = false>
struct TcTraits {
  static constexpr int kM = 64 * kC;  // query rows per block
  static constexpr int kN = 128;      // keys per tile
  static constexpr int kStages = 3;
  static constexpr int kThreads = 128 * (kC + 1);  // producer + kC consumer warpgroups
  // setmaxnreg budgets: 128 * (producer + kC * consumer) <= 65536.
  static constexpr int kProducerRegs = kC == 2 ? 40 : 24;
  static constexpr int kConsumerRegs = kC == 2 ? 232 : 160;
  // FlashAttention-3's choice for FP8 at these head sizes: the consumers take turns issuing their
  // GEMMs with two of them (measured 1.7 % faster, NOTES V6), not with three.
  static constexpr bool kPingPong = kC == 2;
  static constexpr int kQBoxRows = kC == 2 ? 128 : 64;  // Q's TMA box (the host's q_map)
  static constexpr int kDp = (kD + 15) / 16 * 16;
  static constexpr int kKSteps = (kDp + 31) / 32;  // QK^T k32 steps over 128-byte rows
  static constexpr int kQBytes = kM * 128;
  static constexpr int kKBytes = kN * 128;
  static constexpr int kVBytes = kD * 128;  // V^T: D rows of 128 keys
  static constexpr int kOBytes = kM * kD * 4;
  // Offsets from the 1024-byte aligned base.
  static constexpr int kQOff = 0;
  static constexpr int kKOff = kQOff + kQBytes;
  static constexpr int kVOff = kKOff + kStages * kKBytes;
  static constexpr int kOOff = kVOff + kStages * kVBytes;
  static constexpr int kQsBytes = kFusedQ ? kM * kD * 2 : 0;  // bf16 Q rows of kD columns
  static constexpr int kQsOff = kOOff + kOBytes;
  static constexpr int kBarOff = kQsOff + (kQsBytes + 1023) / 1024 * 1024;
  static constexpr int kBars = 2 + 2 * kStages;                  // q_full, full[], empty[], q_empty
  static constexpr int kSmemBytes = kBarOff + kBars * 8 + 1024;  // + alignment slack
  static_assert(kD % 8 == 0 && kD <= 128, "head sizes 64..128, multiples of 8");
  static_assert(kC == 2 || kC == 3, "2 or 3 consumer warpgroups");
  static_assert(128 * (kProducerRegs + kC * kConsumerRegs) <= 65536, "register file");
  static_assert(kVBytes % 1024 == 0 && kOOff % 1024 == 0, "1024-byte atoms");
  static_assert(kSmemBytes <= 227 * 1024, "shared memory");
};

/// The fused-Q form's turn of bf16 Q into the e4m3 tile (kFusedQ): consumer warpgroup c (thread
/// ct of 128) converts its 64 rows of the staging tile (row r: kD bf16 at qs + r * kD * 2) into
/// the 128-byte-swizzled rows the Q K^T descriptors read (chunk j of 16 codes of row r at byte
/// 16 (j ^ (r & 7))), with the codes vit_quantize_qkv writes (encode_chunk, 1 / q_scale; columns
/// from kD to 128 zero), then makes them visible to the tensor cores (the async proxy) and meets
/// its warpgroup at named barrier 8 + c. Thread ct takes chunk column ct % 8 of rows ct / 8 + 16 k.
template <int kD>
__device__ __forceinline__ void convert_q(const uint8_t* qs, uint8_t* q, int c, int ct, float inv) {
  const int j = ct & 7;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int r = 64 * c + (ct >> 3) + 16 * k;
    const uint8_t* src = qs + r * (kD * 2) + 32 * j;
    uint2 lo = make_uint2(0, 0), hi = make_uint2(0, 0);
    if (16 * j < kD) lo = encode_chunk(*reinterpret_cast<const uint4*>(src), inv, 8);
    if (16 * j + 8 < kD) hi = encode_chunk(*reinterpret_cast<const uint4*>(src + 16), inv, 8);
    *reinterpret_cast<uint4*>(q + r * 128 + ((j ^ (r & 7)) << 4)) =
        make_uint4(lo.x, lo.y, hi.x, hi.y);
  }
  sm90::fence_proxy_async_shared();
  sm90::named_sync(8 + c, 128);
}

/// Packs P values (fp32, already scaled) of the k32 step `ks` of a 64 x 128 score fragment into
/// the e4m3 A fragment (fragment.h: p_source_index; the host tests check that the keys land where
/// vit_vt_position put their V rows).
__device__ __forceinline__ void pack_p(const float (&s)[64], int ks, uint32_t (&a)[4]) {
#pragma unroll
  for (int slot = 0; slot < 4; ++slot) {
    const uint32_t lo =
        quant::e4m3x2(s[p_source_index(ks, slot, 0)], s[p_source_index(ks, slot, 1)]);
    const uint32_t hi =
        quant::e4m3x2(s[p_source_index(ks, slot, 2)], s[p_source_index(ks, slot, 3)]);
    a[slot] = lo | (hi << 16);
  }
}

/// Issues S = Q K^T (kKSteps k32 steps; S overwritten) for one consumer's 64 rows.
template <int kKSteps>
__device__ __forceinline__ void issue_qk(float (&s)[64], uint32_t q_addr, uint32_t k_addr) {
  using namespace ::qfuse::sm90;
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < kKSteps; ++ks)
    WgmmaFp8<128>::ss(s, sw128_desc(q_addr + 32 * ks, 16, 1024),
                      sw128_desc(k_addr + 32 * ks, 16, 1024), ks > 0 ? 1 : 0);
}

/// Issues O += P V over the 128 keys of a tile (4 k32 steps, P from registers).
template <int kD>
__device__ __forceinline__ void issue_pv(float (&o)[kD / 2], const uint32_t (&a)[4][4],
                                         uint32_t v_addr) {
  using namespace ::qfuse::sm90;
  fence_regs(o);
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < 4; ++ks)
    WgmmaFp8<kD>::rs(o, a[ks], sw128_desc(v_addr + 32 * ks, 16, 1024), 1);
}

template <int kD, int kC, class Core, bool kStreamK, bool kFusedQ>
__global__ void __launch_bounds__(TcTraits<kD, kC>::kThreads, 1)
    vit_tc_kernel(const __grid_constant__ TcParams p, const typename Core::Params qp,
                  int pad_blocks) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Tr = TcTraits<kD, kC, kFusedQ>;
  using namespace ::qfuse::sm90;
  extern __shared__ uint8_t smem_raw[];
  const uintptr_t raw = reinterpret_cast<uintptr_t>(smem_raw);
  uint8_t* sm = smem_raw + ((1024 - (raw & 1023)) & 1023);
  uint64_t* bars = reinterpret_cast<uint64_t*>(sm + Tr::kBarOff);
  uint64_t* q_full = bars;
  uint64_t* full = bars + 1;
  uint64_t* empty = bars + 1 + Tr::kStages;
  uint64_t* q_empty = bars + 1 + 2 * Tr::kStages;  // (stream-K: Q's buffer free for the next)
  // The block's work: one query tile whole (span), or stream-K segments (build_segments).
  __shared__ TileSpan span;
  __shared__ Segment segs[kStreamK ? kStreamKMaxSegments : 1];
  // merge_flag: stream_k_merge's shared word, two used in turn (the next merge's first write, made
  // before any barrier of its own, must not meet a slow thread's read of the last one's).
  __shared__ int nseg, merge_flag[2];
  int merges = 0;  // stream_k_merge calls so far (uniform over the consumers)

  Core core(qp);
  const bool tracer = threadIdx.x == 128;  // consumer 0's first thread writes the timeline
  if (tracer) {
    VIT_TRACE(trace::kGtStart, trace_gtime());
    VIT_TRACE(trace::kClkStart, clock64());
  }
  if (!kStreamK && blockIdx.x >= p.tiles) {  // scale-buffer padding (the blocks of head 0)
    if (blockIdx.y == 0 && threadIdx.x < 128) {
      pdl_begin();
      core.zero_padding((blockIdx.x - p.tiles) * 128 + threadIdx.x, pad_blocks * 128);
    }
    return;
  }
  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    mbar_init(q_empty, 4 * kC);  // the consumers' warps
#pragma unroll
    for (int s = 0; s < Tr::kStages; ++s) {
      mbar_init(full + s, 1);
      mbar_init(empty + s, 4 * kC);  // the consumers' warps
    }
    mbar_fence_init();
  }
  // The fused-Q form (the layer's, after the K / V quantizer) reads nothing that kernel writes
  // before its K / V loads, its consumers' first Q K^T and its epilogue, which wait for it
  // (pdl_wait below): its segments and first Q (the layer's bf16 input, loaded and converted;
  // static scales) overlap the quantizer's tail
  // (bench/NOTES.md V32). Every kernel before the quantizer is done by then: the quantizer
  // lets this one launch only after its own wait.
  if constexpr (kFusedQ) {
    pdl_launch_dependents();
  } else {
    pdl_begin();
  }
  if constexpr (kStreamK) {
    if (threadIdx.x < 32) build_segments<Tr::kM>(p, blockIdx.x, segs, &nseg, &span);
  } else {
    find_tile<Tr::kM>(p, blockIdx.x, &span);
  }
  __syncthreads();
  const int segments = kStreamK ? nseg : 1;
  if (tracer) {
    VIT_TRACE(trace::kClkSetup, clock64());
    VIT_TRACE(trace::kSegCount, segments);
    VIT_TRACE(trace::kSmId, trace_smid());
  }
  // Segment i: key tiles [t0, t1) of the query tile at q0 of head h in the sequence [beg, end).
  auto segment = [&](int i) {
    if constexpr (kStreamK) {
      return segs[i];
    } else {
      const int tiles = static_cast<int>(tc_key_tiles(span.beg, span.end));
      return Segment{static_cast<int>(blockIdx.y),
                     static_cast<int>(span.q0),
                     static_cast<int>(span.beg),
                     static_cast<int>(span.end),
                     0,
                     tiles,
                     0,
                     0};
    }
  };
  const int wg = warpgroup_index();

  if (wg == 0) {
    regs_dec<Tr::kProducerRegs>();
    if (threadIdx.x == 0) {
      prefetch_tensormap(&p.q_map);
      prefetch_tensormap(&p.k_map);
      prefetch_tensormap(&p.vt_map);
      int g = 0, nq = 0;  // the ring's tile count and the Q loads over the segments
      for (int i = 0; i < segments; ++i) {
        const Segment sg = segment(i);
        if (sg.t1 <= sg.t0) continue;
        // NOTE: the q_full / q_empty phases count the segments with tiles (every role skips
        // the others alike).
        if (kStreamK && nq > 0) mbar_wait(q_empty, (nq - 1) & 1);
        VIT_TRACE_SEG(i, trace::kProdQ, clock64());
        ++nq;
        // Q: e4m3 straight into its 128-byte-swizzled tile, or (kFusedQ) bf16 rows of kD
        // columns into the staging tile, which the consumers convert (convert_q).
        mbar_arrive_expect_tx(q_full, kFusedQ ? Tr::kQsBytes : Tr::kQBytes);
#pragma unroll
        for (int r = 0; r < Tr::kM / Tr::kQBoxRows; ++r)
          tma_load_3d(sm + (kFusedQ ? Tr::kQsOff + r * Tr::kQBoxRows * kD * 2
                                    : Tr::kQOff + r * Tr::kQBoxRows * 128),
                      &p.q_map, q_full, 0, sg.h, sg.q0 + Tr::kQBoxRows * r);
        const int64_t kv0 = sg.beg & ~31;
        if constexpr (kFusedQ) pdl_wait();  // K and V: the quantizer's (at once after the first)
        for (int t = sg.t0; t < sg.t1; ++t, ++g) {
          const int st = g % Tr::kStages;
          if (g >= Tr::kStages) mbar_wait(empty + st, ((g / Tr::kStages) - 1) & 1);
          const int j0 = static_cast<int>(kv0 + int64_t{t} * Tr::kN);
          mbar_arrive_expect_tx(full + st, Tr::kKBytes + Tr::kVBytes);
          tma_load_3d(sm + Tr::kKOff + st * Tr::kKBytes, &p.k_map, full + st, 0, sg.h, j0);
          tma_load_3d(sm + Tr::kVOff + st * Tr::kVBytes, &p.vt_map, full + st, j0, 0, sg.h);
          if (t == sg.t0) VIT_TRACE_SEG(i, trace::kProdKv, clock64());
        }
      }
    }
    return;
  }
  regs_inc<Tr::kConsumerRegs>();
  const int c = wg - 1;                     // consumer: rows [64 c, 64 c + 64) of the tile
  const int tid = threadIdx.x - 128;        // [0, 128 kC)
  const int warp = (threadIdx.x >> 5) & 3;  // warp of the warpgroup
  const int lane = threadIdx.x & 31, g = lane >> 2, qd = lane & 3;
  constexpr float kLog2e = 1.4426950408889634f;
  const float scale2 = p.softmax_scale * *p.q_scale * *p.k_scale * kLog2e;
  const float q_inv = kFusedQ ? rules::fp8_inv_scale(*p.q_scale) : 0.0f;
  const uint32_t q_addr = smem_addr(sm + Tr::kQOff + c * 64 * 128);
  auto k_addr = [&](int st) { return smem_addr(sm + Tr::kKOff + st * Tr::kKBytes); };
  auto v_addr = [&](int st) { return smem_addr(sm + Tr::kVOff + st * Tr::kVBytes); };
  int g0 = 0, nq = 0;  // the ring's tile count and the Q loads before this segment
  // Stream-K: Q's buffer goes back to the producer (q_empty) as soon as this consumer's warps
  // are done with it -- after the segment's last Q K^T, or the fused form's conversion -- so
  // that the next segment's Q and first K / V load under this one's last steps and epilogue
  // (bench/NOTES.md V24: S 4096 0.988x against the release after the last P V, H100). Three
  // consumers only (measured there); with ping-pong, after the last P V as before.
  constexpr bool kEarly = kStreamK && !Tr::kPingPong;
  auto q_read = [&]() {
    if (kEarly && lane == 0) mbar_arrive(q_empty);
  };

  for (int i = 0; i < segments; ++i) {
    const Segment sg = segment(i);
    const int tiles = sg.t1 - sg.t0;
    const int64_t beg = sg.beg, end = sg.end;
    const int64_t kv0 = (beg & ~int64_t{31}) + int64_t{sg.t0} * Tr::kN;  // the segment's first key
    float o[kD / 2];
#pragma unroll
    for (int k = 0; k < kD / 2; ++k) o[k] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    int handed = -1;  // (stream-K, split tile; thread 0) the ticket as read early
    if (tracer) {
      VIT_TRACE_SEG(i, trace::kInfo, tiles | (sg.first != sg.last ? 1 << 16 : 0));
      VIT_TRACE_SEG(i, trace::kBegin, clock64());
    }

    // Intra-warpgroup overlap: step n waits for PV(n - 2), rescales O, issues QK^T(n) and
    // PV(n - 1) (with P(n - 1)), waits for QK^T(n) alone and runs the softmax of tile n while
    // PV(n - 1) is in flight, then packs P(n). P is double-buffered (pa[n & 1], the loop unrolled
    // by two) and O is touched only while no wgmma is in flight: a non-wgmma access to an
    // accumulator inside a wgmma's pipeline stage makes ptxas serialise every wgmma (C7514).
    // Ring stage of the segment's tile n: (g0 + n) % kStages.
    float s[64];
    uint32_t pa[2][4][4];
    float corr[2];
    auto rescale_o = [&]() {
#pragma unroll
      for (int k = 0; k < kD / 8; ++k)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[4 * k + e] *= corr[e >> 1];
    };
    // Ping-pong (FlashAttention-3's warpgroup scheduling): the consumers issue their GEMMs in
    // turns, round robin, consumer c waiting at named barrier 2 + c for the previous one's arrival
    // after its issues, so that one's softmax runs while another's GEMMs do instead of all
    // contending for the MUFU and then for the tensor cores. A consumer has tiles + 1 turns a
    // segment (QK(0), the steps, the last PV); the last consumer opens consumer 0's first turn
    // and skips the arrival after its own last.
    auto turn_begin = [&]() {
      if constexpr (Tr::kPingPong) named_sync_roles(2 + c, 256);
    };
    auto turn_end = [&](bool last) {
      if constexpr (Tr::kPingPong)
        if (!last || (kC == 2 ? c == 0 : c != kC - 1))
          named_arrive(kC == 2 ? 3 - c : 2 + (c + 1 == kC ? 0 : c + 1), 256);
    };
    auto stage = [&](int n) { return (g0 + n) % Tr::kStages; };
    auto step = [&](int n, auto buf) {  // buf: n & 1, as a constant
      constexpr int b = decltype(buf)::value;
      const int st = stage(n);
      wgmma_wait<0>();  // PV(n - 2) done
      fence_regs(o);
      if (n >= 2 && lane == 0) mbar_arrive(empty + stage(n - 2));
      rescale_o();
      mbar_wait(full + st, ((g0 + n) / Tr::kStages) & 1);
      turn_begin();
      issue_qk<Tr::kKSteps>(s, q_addr, k_addr(st));
      wgmma_commit();
      issue_pv<kD>(o, pa[b ^ 1], v_addr(stage(n - 1)));
      wgmma_commit();
      turn_end(false);
      wgmma_wait<1>();  // QK^T(n) done; PV(n - 1) in flight
      fence_regs(s);
      if (!kFusedQ && n == tiles - 1) q_read();  // the segment's last Q K^T
      softmax_tile(s, kv0 + int64_t{n} * Tr::kN, beg, end, qd, scale2, m, l, corr);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) pack_p(s, ks, pa[b][ks]);
    };
    using B0 = std::integral_constant<int, 0>;
    using B1 = std::integral_constant<int, 1>;
    // A consumer whose 64 rows all lie past the sequence's end (the last query tile of a
    // sequence whose length is not a multiple of kM) only keeps the barriers' phases: it waits
    // for each stage and hands it back (Q's buffer too: q_read), and ends with O = 0, l = 0
    // (rows never stored). Without ping-pong only (there every consumer takes its turns; and
    // so q_read is the early release). plan_stream_k counts such steps as cheaper (bench/NOTES.md
    // V30).
    const bool idle = !Tr::kPingPong && p.skip_idle && sg.q0 + 64 * c >= end;
    if (tiles > 0 && idle) {
      mbar_wait(q_full, nq & 1);
      // The fused form's conversion barrier too (its warpgroup's own): every consumer then runs
      // the same sequence of named barriers (V30's racecheck report came with idle consumers
      // skipping it in the fused-Q forms only; bench/NOTES.md V31).
      if constexpr (kFusedQ) sm90::named_sync(8 + c, 128);
      q_read();
      for (int n = 0; n < tiles; ++n) {
        mbar_wait(full + stage(n), ((g0 + n) / Tr::kStages) & 1);
        __syncwarp();
        if (lane == 0) mbar_arrive(empty + stage(n));
      }
      g0 += tiles;
      ++nq;
    } else if (tiles > 0) {
      if (Tr::kPingPong && c == kC - 1) named_arrive(2, 256);  // consumer 0 takes the first turn
      mbar_wait(q_full, nq & 1);
      if (tracer) VIT_TRACE_SEG(i, trace::kQReady, clock64());
      if constexpr (kFusedQ) {
        convert_q<kD>(sm + Tr::kQsOff, sm + Tr::kQOff, c, tid & 127, q_inv);
        q_read();  // the staging tile is read; the e4m3 tile is this consumer's own
        // Before the ticket's early read under the last P V (the quantizer zeroes the tickets);
        // costs nothing: stage 0's K / V come only after the producer's wait.
        pdl_wait();
      }
      mbar_wait(full + stage(0), (g0 / Tr::kStages) & 1);
      turn_begin();
      issue_qk<Tr::kKSteps>(s, q_addr, k_addr(stage(0)));
      wgmma_commit();
      turn_end(false);
      wgmma_wait<0>();
      fence_regs(s);
      if (!kFusedQ && tiles == 1) q_read();
      softmax_tile(s, kv0, beg, end, qd, scale2, m, l, corr);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) pack_p(s, ks, pa[0][ks]);
      if (tracer) VIT_TRACE_SEG(i, trace::kFirst, clock64());
      for (int n = 1; n < tiles; n += 2) {
        step(n, B1{});
        if (n + 1 < tiles) step(n + 1, B0{});
      }
      // The last PV: P(tiles - 1) is in pa[(tiles - 1) & 1].
      wgmma_wait<0>();
      fence_regs(o);
      if (tiles >= 2 && lane == 0) mbar_arrive(empty + stage(tiles - 2));
      rescale_o();
      const int last = stage(tiles - 1);
      // NOTE: a select, not a branch between two issues (ptxas then injected a warpgroup.arrive).
      const bool odd = ((tiles - 1) & 1) != 0;
      uint32_t fin[4][4];
#pragma unroll
      for (int ks = 0; ks < 4; ++ks)
#pragma unroll
        for (int r = 0; r < 4; ++r) fin[ks][r] = odd ? pa[1][ks][r] : pa[0][ks][r];
      turn_begin();
      issue_pv<kD>(o, fin, v_addr(last));
      wgmma_commit();
      turn_end(true);
      // A split query tile: the ticket read now, under the last P V (stream_k_merge).
      if (kStreamK && sg.first != sg.last && tid == 0)
        handed = ld_acquire_gpu(p.sk_tickets + sg.first);
      wgmma_wait<0>();
      fence_regs(o);
      if (tracer) VIT_TRACE_SEG(i, trace::kLoopEnd, clock64());
      if (lane == 0) {
        mbar_arrive(empty + last);
        if (kStreamK && !kEarly) mbar_arrive(q_empty);  // every Q K^T of the segment is done
      }
      g0 += tiles;
      ++nq;
    }

    // Epilogue: O * v_scale / l into the shared tile, then through the quantizer; a query tile
    // split between blocks first through stream_k_merge (the last of its blocks writes).
    if constexpr (kFusedQ) pdl_wait();  // the tickets and slots (the quantizer zeroes tickets)
    if constexpr (kStreamK) {
      if (sg.first != sg.last && !stream_k_merge<kD, 128 * kC>(p, sg, blockIdx.x, tid, o, m, l,
                                                               handed, &merge_flag[merges++ & 1])) {
        if (tracer) {
          VIT_TRACE_SEG(i, trace::kMergeEnd, clock64());
          VIT_TRACE_SEG(i, trace::kStoreEnd, 0);  // handed over
        }
        continue;
      }
      if (tracer) VIT_TRACE_SEG(i, trace::kMergeEnd, clock64());
    }
    store_output<kD, Tr::kM, kStreamK>(core, o, l, *p.v_scale,
                                       reinterpret_cast<float*>(sm + Tr::kOOff), c, warp, g, qd,
                                       sg.q0, sg.h, end, static_cast<int>(p.H * kD), tid);
    if (tracer) VIT_TRACE_SEG(i, trace::kStoreEnd, clock64());
  }
  if (tracer) {
    VIT_TRACE(trace::kClkEnd, clock64());
    VIT_TRACE(trace::kGtEnd, trace_gtime());
  }
#endif
}

/// Launches the kernel for head size kD with core Core (params qp, `padding_units` of scale
/// padding to zero): the stream-K grid where p.sk_blocks > 0 (no padding then), else a block a
/// query tile and head.
template <int kD, int kC, class Core, bool kStreamK, bool kFusedQ = false>
Status launch_tc_grid(const TcParams& p, const typename Core::Params& qp, int64_t padding_units,
                      cudaStream_t stream) {
  using Tr = TcTraits<kD, kC, kFusedQ>;
  const auto kernel = vit_tc_kernel<kD, kC, Core, kStreamK, kFusedQ>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes);
  QFUSE_RETURN_IF_ERROR(cuda_status(attr, "cudaFuncSetAttribute(vit_tc_kernel)"));
  const int pad_blocks =
      padding_units > 0 ? static_cast<int>(std::min<int64_t>((padding_units + 127) / 128, 1024))
                        : 0;
  const dim3 grid = kStreamK ? dim3(p.sk_blocks) : dim3(p.tiles + pad_blocks, p.H);
  return launch_kernel("vit_tc_kernel", kernel, grid, dim3(Tr::kThreads), Tr::kSmemBytes, stream, p,
                       qp, pad_blocks);
}

template <int kD, int kC, class Core>
Status launch_tc_core(const TcParams& p, const typename Core::Params& qp, int64_t padding_units,
                      cudaStream_t stream) {
  // NOTE: the fused-Q form only with the stream-K grid (attention_fused_q refuses the others).
  if (p.sk_blocks > 0 && p.fused_q)
    return launch_tc_grid<kD, kC, Core, true, true>(p, qp, 0, stream);
  if (p.sk_blocks > 0) return launch_tc_grid<kD, kC, Core, true>(p, qp, 0, stream);
  return launch_tc_grid<kD, kC, Core, false>(p, qp, padding_units, stream);
}

/// The TC kernel for head size kD writing `out` ([S_total, H * kD], validated; spec none bf16 or
/// fp8_per_tensor: the kinds the tensor-core path instantiates), with p.q_rows / 64 consumer
/// warpgroups (tc_query_rows: 192 only where tc_three_consumers(kD)).
template <int kD>
Status launch_tc_for(const TcParams& p, const QuantOutput& out, cudaStream_t stream) {
  return with_tc_output(out, "vit_tc", [&](auto tag, const auto& cp) -> Status {
    using C = typename decltype(tag)::type;
    if constexpr (tc_three_consumers(kD))
      if (p.q_rows == 192) return launch_tc_core<kD, 3, C>(p, cp, 0, stream);
    if (p.q_rows == 128) return launch_tc_core<kD, 2, C>(p, cp, 0, stream);
    return Status(StatusCode::kInternal, "vit_tc: no kernel for " + std::to_string(p.q_rows) +
                                             " query rows at D " + std::to_string(kD));
  });
}

}  // namespace qfuse::vit
