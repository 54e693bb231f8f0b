// What the tensor-core ViT attention kernels share (attention_tc.cuh: FP8, attention_tc_bf16.cuh:
// BF16): the query-tile enumeration over packed sequences, the online softmax of one 64 x 128
// score tile in the wgmma accumulator layout, the epilogue and the output kinds they instantiate.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/sm90.cuh"
#include "qfuse/quant/adapters/smem_tile.cuh"
#include "qfuse/quant/chunk.cuh"
#include "qfuse/quant/dispatch.cuh"
#include "vit_attention/launch.h"

namespace qfuse::vit {

/// Where the block's query tile is: rows [q0, q0 + kM) of the sequence [beg, end).
struct TileSpan {
  int64_t beg, end, q0;
};

/// Sequence b's tokens [beg, end) (cu_seqlens clamped into [0, S_total], non-decreasing; without
/// it, S each).
__device__ __forceinline__ void seq_bounds(const TcParams& p, int64_t b, int64_t* beg,
                                           int64_t* end) {
  if (p.cu_seqlens == nullptr) {
    *beg = b * p.S;
    *end = *beg + p.S;
    return;
  }
  *beg = min(max(int64_t{p.cu_seqlens[b]}, int64_t{0}), p.S_total);
  *end = min(max(int64_t{p.cu_seqlens[b + 1]}, *beg), p.S_total);
}

/// Finds the sequence of query tile `tile` (tiles of kM rows counted sequence by sequence):
/// warp 0 scans cu_seqlens 32 sequences at a time; the result goes through shared memory.
template <int kM>
__device__ __forceinline__ void find_tile(const TcParams& p, int tile, TileSpan* out) {
  const int lane = threadIdx.x & 31;
  if (p.cu_seqlens == nullptr) {
    if (threadIdx.x == 0) {
      const int64_t per = (p.S + kM - 1) / kM;
      const int64_t b = tile / per;
      out->beg = b * p.S;
      out->end = out->beg + p.S;
      out->q0 = out->beg + (tile - b * per) * kM;
    }
    return;
  }
  if (threadIdx.x >= 32) return;
  int64_t before = 0;  // tiles of the sequences already passed
  for (int b0 = 0; b0 < p.num_seqs; b0 += 32) {
    const int b = b0 + lane;
    int64_t beg = 0, end = 0, tiles = 0;
    if (b < p.num_seqs) {
      seq_bounds(p, b, &beg, &end);
      tiles = (end - beg + kM - 1) / kM;
    }
    int64_t incl = tiles;  // inclusive scan over the lanes
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
      const int64_t v = __shfl_up_sync(0xffffffffu, incl, off);
      if (lane >= off) incl += v;
    }
    const bool here = tile < before + incl && tile >= before + incl - tiles && tiles > 0;
    const unsigned mask = __ballot_sync(0xffffffffu, here);
    if (mask != 0) {
      if (here) {
        out->beg = beg;
        out->end = end;
        out->q0 = beg + (tile - (before + incl - tiles)) * kM;
      }
      return;
    }
    before += __shfl_sync(0xffffffffu, incl, 31);
  }
  if (lane == 0) {  // past the last tile (cannot happen with the host's count): an empty span
    out->beg = out->end = out->q0 = 0;
  }
}

/// One stretch of a stream-K block's work: key tiles [t0, t1) of the query tile at rows [q0, q0 +
/// kM) of head h in the sequence [beg, end), whose key-tile steps start in block `first` and end in
/// block `last` (first == last: the block runs the whole query tile).
struct Segment {
  int h, q0, beg, end, t0, t1, first, last;
};

/// Warp 0 (all lanes) lists block `blk`'s segments into segs (at most kStreamKMaxSegments: the
/// host counts them, plan_stream_k) and their count into *count (span: shared scratch): its
/// whole query tiles (TcParams: sk_waves), then its share of the steps after sk_base. Steps run
/// head by head; within a head, sequence by sequence, query tile by query tile, key tile by key
/// tile. The share's first step is found by a scan over the sequences (32 a round), the rest by
/// walking on.
template <int kM>
__device__ __forceinline__ void build_segments(const TcParams& p, int blk, Segment* segs,
                                               int* count, TileSpan* span) {
  const int lane = threadIdx.x & 31;
  // The whole query tiles first (find_tile: warp 0; its span through shared memory).
  int n = 0;
  for (int k = 0; k < p.sk_waves; ++k) {
    const int u = blk + k * p.sk_blocks, uh = u / p.tiles;
    find_tile<kM>(p, u - uh * p.tiles, span);
    __syncwarp();
    if (lane == 0)
      segs[n] = Segment{uh,
                        static_cast<int>(span->q0),
                        static_cast<int>(span->beg),
                        static_cast<int>(span->end),
                        0,
                        static_cast<int>(tc_key_tiles(span->beg, span->end)),
                        0,
                        0};
    ++n;
    __syncwarp();
  }
  const int64_t total = p.steps_per_head * p.H;
  int64_t s = p.sk_base + (p.sk_table ? int64_t{p.sk_start[blk]} : blk * p.sk_per);
  const int64_t e = p.sk_table ? p.sk_base + p.sk_start[blk + 1] : min(s + p.sk_per, total);
  // The block whose share holds step x (counted from sk_base): with the table, the last block
  // whose share starts at or before x (only trailing shares are empty).
  auto owner = [&](int64_t x) -> int {
    if (!p.sk_table) return static_cast<int>(x / p.sk_per);
    int lo = 0, hi = p.sk_blocks - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (p.sk_start[mid] <= x)
        lo = mid;
      else
        hi = mid - 1;
    }
    return lo;
  };
  const int64_t num = p.cu_seqlens != nullptr ? p.num_seqs : (p.S > 0 ? p.S_total / p.S : 0);
  if (s >= e) {
    if (lane == 0) *count = n;
    return;
  }
  int64_t h = s / p.steps_per_head;
  const int64_t r = s - h * p.steps_per_head;
  // The sequence holding step r of head h: a scan of its tiles x key tiles.
  int64_t before = 0, b = -1, off = 0;
  for (int64_t b0 = 0; b0 < num && b < 0; b0 += 32) {
    const int64_t bl = b0 + lane;
    int64_t w = 0;
    if (bl < num) {
      int64_t bb, be;
      seq_bounds(p, bl, &bb, &be);
      w = (be - bb + kM - 1) / kM * tc_key_tiles(bb, be);
    }
    int64_t incl = w;
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      const int64_t v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    const unsigned mask = __ballot_sync(0xffffffffu, w > 0 && r < before + incl);
    if (mask != 0) {
      const int src = __ffs(mask) - 1;
      b = b0 + src;
      off = r - (before + __shfl_sync(0xffffffffu, incl - w, src));
    }
    before += __shfl_sync(0xffffffffu, incl, 31);
  }
  if (lane != 0) return;
  if (b >= 0) {
    int64_t beg, end;
    seq_bounds(p, b, &beg, &end);
    int64_t nk = tc_key_tiles(beg, end);
    int64_t qi = off / nk, t = off - qi * nk;
    while (n < kStreamKMaxSegments) {
      const int64_t t1 = min(nk, t + (e - s));
      const int64_t start = s - t;  // the query tile's first step
      segs[n++] = Segment{static_cast<int>(h),      static_cast<int>(beg + qi * kM),
                          static_cast<int>(beg),    static_cast<int>(end),
                          static_cast<int>(t),      static_cast<int>(t1),
                          owner(start - p.sk_base), owner(start - p.sk_base + nk - 1)};
      s += t1 - t;
      if (s >= e) break;
      // The next query tile: of this sequence, of the next one with tokens, or of the next head.
      t = 0;
      if (beg + ++qi * kM >= end) {
        qi = 0;
        do {
          if (++b == num) b = 0, ++h;
          seq_bounds(p, b, &beg, &end);
        } while (end <= beg);
        nk = tc_key_tiles(beg, end);
      }
    }
  }
  *count = n;
}

/// The stream-K epilogue of a consumer thread (tid of kThreads) whose block ran only part of a
/// query tile (segment sg, block blk): its O (kD / 2 floats), m and thread-partial l go to the
/// block's slot (2 blk + 1 where the query tile starts in this block, else 2 blk; a slot is
/// [kD / 2 + 4][kThreads] floats), the block takes the query tile's ticket, and the last of its
/// blocks to arrive merges every slot in block order (the same sums whichever block is last:
/// bit-identical results from run to run) into o and l and returns true; the others return
/// false. `handed` (thread 0's, or -1: read here): the ticket as read with acquire semantics
/// before this point -- where every other part had been handed over by then, this block is the
/// last and merges without writing its own slot or taking the ticket (its part, the values its
/// slot would hold, from its registers). Named barrier 1 among the kThreads consumer threads;
/// *flag a shared word.
template <int kD, int kThreads>
__device__ __forceinline__ bool stream_k_merge(const TcParams& p, const Segment& sg, int blk,
                                               int tid, float (&o)[kD / 2], float (&m)[2],
                                               float (&l)[2], int handed, int* flag) {
  constexpr int kSlot = (kD / 2 + 4) * kThreads;
  auto slot_of = [&](int b) { return 2 * b + (b == sg.first ? 1 : 0); };
  if (tid == 0) {
    if (handed < 0) handed = sm90::ld_acquire_gpu(p.sk_tickets + sg.first);
    const bool last = handed == sg.last - sg.first;  // every other part is in its slot
    if (last) p.sk_tickets[sg.first] = 0;            // ready for the next call
    *flag = last ? 2 : 0;
  }
  sm90::named_sync(1, kThreads);
  if (*flag == 0) {
    float* mine = p.sk_ws + int64_t{slot_of(blk)} * kSlot + tid;
#pragma unroll
    for (int i = 0; i < kD / 2; ++i) __stcg(mine + i * kThreads, o[i]);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      __stcg(mine + (kD / 2 + r) * kThreads, m[r]);
      __stcg(mine + (kD / 2 + 2 + r) * kThreads, l[r]);
    }
    sm90::named_sync(1, kThreads);
    if (tid == 0) {
      __threadfence();  // the slot before the ticket (the barrier orders the others' stores)
      const int old = atomicAdd(p.sk_tickets + sg.first, 1);
      const bool last = old == sg.last - sg.first;
      if (last) {
        __threadfence();             // the other blocks' slots after their tickets
        p.sk_tickets[sg.first] = 0;  // ready for the next call
      }
      *flag = last ? 1 : 0;
    }
    sm90::named_sync(1, kThreads);
    if (*flag == 0) return false;
  }
  float mx[2] = {-INFINITY, -INFINITY};
  for (int b = sg.first; b <= sg.last; ++b) {
    const float* src = p.sk_ws + int64_t{slot_of(b)} * kSlot + tid;
#pragma unroll
    for (int r = 0; r < 2; ++r)
      mx[r] = fmaxf(mx[r], b == blk ? m[r] : __ldcg(src + (kD / 2 + r) * kThreads));
  }
  float acc[kD / 2], la[2] = {0.0f, 0.0f};
#pragma unroll
  for (int i = 0; i < kD / 2; ++i) acc[i] = 0.0f;
  for (int b = sg.first; b <= sg.last; ++b) {
    const float* src = p.sk_ws + int64_t{slot_of(b)} * kSlot + tid;
    float f[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float mb = b == blk ? m[r] : __ldcg(src + (kD / 2 + r) * kThreads);
      f[r] = mx[r] == -INFINITY ? 0.0f : sm90::fast_exp2(mb - mx[r]);
      la[r] = fmaf(b == blk ? l[r] : __ldcg(src + (kD / 2 + 2 + r) * kThreads), f[r], la[r]);
    }
#pragma unroll
    for (int i = 0; i < kD / 2; ++i)
      acc[i] = fmaf(b == blk ? o[i] : __ldcg(src + i * kThreads), f[(i >> 1) & 1], acc[i]);
  }
#pragma unroll
  for (int i = 0; i < kD / 2; ++i) o[i] = acc[i];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    m[r] = mx[r];
    l[r] = la[r];
  }
  return true;
}

/// Online softmax of one 64 x 128 tile of raw scores whose first key is j0 (base 2, scaled by
/// scale2 > 0; keys outside [beg, end) do not count): s becomes P * 256, m (scaled) and l (the
/// thread's part of the row sums) are updated, corr is what O must be multiplied by.
/// NOTE: the max is taken over the raw scores (scale2 > 0 keeps the order) and each P is one FFMA
/// and one ex2; only a tile that straddles the sequence's ends is masked.
__device__ __forceinline__ void softmax_tile(float (&s)[64], int64_t j0, int64_t beg, int64_t end,
                                             int qd, float scale2, float (&m)[2], float (&l)[2],
                                             float (&corr)[2]) {
  using namespace ::qfuse::sm90;
  if (j0 < beg || j0 + 128 > end) {
    const int lo = static_cast<int>(max(beg - j0, int64_t{0}));
    const int hi = static_cast<int>(min(end - j0, int64_t{128}));
#pragma unroll
    for (int j = 0; j < 16; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = 8 * j + 2 * qd + (e & 1);
        if (col < lo || col >= hi) s[4 * j + e] = -INFINITY;
      }
  }
  // NOTE: four independent max (and sum) chains per row half, joined at the end: one chain of 32
  // dependent FMNMX (FADD) is ~130 cycles of latency on the consumer's critical path.
  float m4[2][4];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int k = 0; k < 4; ++k) m4[r][k] = -INFINITY;
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float& t = m4[e >> 1][2 * (j & 1) + (e & 1)];
      t = fmaxf(t, s[4 * j + e]);
    }
  float mx[2], bias[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(fmaxf(m4[r][0], m4[r][1]), fmaxf(m4[r][2], m4[r][3]));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    const float m_new = fmaxf(m[r], mx[r] * scale2);
    corr[r] = fast_exp2(m[r] - m_new);  // 2^-inf = 0 on the first tile
    m[r] = m_new;
    l[r] *= corr[r];
    bias[r] = 8.0f - m_new;  // P * 256 = 2^(s * scale2 - m + 8)
  }
  float l4[2][4] = {};
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float x = fmaf(s[4 * j + e], scale2, bias[e >> 1]);
      const float pv = fast_exp2(x);
      s[4 * j + e] = pv;
      l4[e >> 1][2 * (j & 1) + (e & 1)] += pv;
    }
#pragma unroll
  for (int r = 0; r < 2; ++r) l[r] += (l4[r][0] + l4[r][1]) + (l4[r][2] + l4[r][3]);
}

/// The epilogue of a consumer warpgroup (c: rows [64 c, 64 c + 64) of the block's kM): the row
/// sums reduced over the quad, O * scale / l (0 for an empty row) into the fp32 shared tile `ot`
/// [kM][kD], then rows [q0, min(q0 + kM, end)) of head h through the quantizer (row stride
/// `ld_out` elements). The block's kM / 64 consumer warpgroups (2 kM threads) meet at named
/// barrier 1; kSyncFirst: they meet first too, for a tile over buffers another consumer may
/// still be reading.
template <int kD, int kM, bool kSyncFirst, class Core>
__device__ __forceinline__ void store_output(Core& core, const float (&o)[kD / 2], float (&l)[2],
                                             float scale, float* ot, int c, int warp, int g, int qd,
                                             int64_t q0, int h, int64_t end, int ld_out, int tid) {
  using namespace ::qfuse::sm90;
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    inv[r] = l[r] > 0.0f ? scale / l[r] : 0.0f;
  }
  constexpr int kThreads = 2 * kM;  // kM / 64 warpgroups
  if constexpr (kSyncFirst) named_sync(1, kThreads);
  const int row = 64 * c + 16 * warp + g;
#pragma unroll
  for (int i = 0; i < kD / 8; ++i)
#pragma unroll
    for (int r = 0; r < 2; ++r)
      *reinterpret_cast<float2*>(ot + (row + 8 * r) * kD + 8 * i + 2 * qd) =
          make_float2(o[4 * i + 2 * r] * inv[r], o[4 * i + 2 * r + 1] * inv[r]);
  named_sync(1, kThreads);
  core.begin();
  quant::store_tile(core, quant::SmemTile<float>{ot, kD, kM, kD, q0, h * kD, end, ld_out}, tid,
                    kThreads);
}

/// A core type for with_tc_output's callback.
template <class C>
struct CoreTag {
  using type = C;
};

/// Calls launch(CoreTag<C>{}, params) with the quantizer core and params that write `out`
/// ([S_total, H * D], validated): bf16 unquantized or fp8_per_tensor, the kinds the tensor-core
/// kernels instantiate; an internal error naming `kernel` for any other.
template <class Fn>
Status with_tc_output(const QuantOutput& out, const char* kernel, Fn&& launch) {
  const int64_t ld = out.out.strides[0];
  if (out.spec.kind == QuantKind::kNone && out.out.dtype == DType::kBF16) {
    using C = quant::PlainCore<__nv_bfloat16>;
    return launch(CoreTag<C>{}, C::Params{static_cast<__nv_bfloat16*>(out.out.data), ld,
                                          quant::aligned_rows(out.out.data, ld, 2, 16)});
  }
  if (out.spec.kind == QuantKind::kFp8PerTensor) {
    using C = quant::Fp8PerTensorCore;
    return launch(CoreTag<C>{}, C::Params{static_cast<uint8_t*>(out.out.data), ld, out.scale,
                                          quant::aligned_rows(out.out.data, ld, 1, 8)});
  }
  return Status(
      StatusCode::kInternal,
      std::string(kernel) + ": no tensor-core instantiation writes " + to_string(out.spec));
}

}  // namespace qfuse::vit
