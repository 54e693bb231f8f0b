// The quantizer policies: how every qfuse kernel writes its output (STYLE "One quantizer").
//
// A kernel hands a policy fragments of 8 consecutive fp32 values of one output row ("chunks"),
// one chunk per lane, lanes of a warp covering consecutive chunks of the same row. The policy
// quantizes the fragment, reduces a group's amax across the lanes that own the group (warp
// shuffles), and writes values and scales. Protocol of a policy P:
//   P::Params                      trivially copyable kernel argument (pointers, strides, flags)
//   P::kLanesPerGroup              lanes that share one scale (1: none)
//   P::kStream                     the launcher's default kernel form for this policy: the
//                                  streaming row-wise kernel (true) or the persistent pipelines
//                                  (false; see quant/rowwise.cuh)
//   P(const Params&)               device constructor; no global memory access
//   void begin()                   loads per-tensor scalars once (NVFP4's global scale); called
//                                  after the kernel's pdl_wait(), before the first apply
//   void apply(row, col, nvalid, v) all 32 lanes of a warp call it together; nvalid in [0, 8]
//                                  values are real (the rest of v must be 0)
//   void zero_padding(tid, n)      writes zeros to scale-buffer padding (grid-stride over n
//                                  threads; see rowwise.cuh for which threads)
// All arithmetic goes through rules.h, which the host references share.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "qfuse/quant/rules.h"
#include "qfuse/quant/scale_addr.h"

namespace qfuse::quant {

constexpr int kChunk = 8;  // values per lane per fragment

// ---- element conversion -------------------------------------------------------------------

template <class T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_float<__half>(__half v) {
  return __half2float(v);
}

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

/// Values of the chunk starting at column `col` of a row of `cols` columns, in [0, kChunk].
/// NOTE: written with comparisons, not max(0, min(kChunk, .)): nvcc 13.0 turned that clamp into
/// VIMNMX.RELU and derived "nvalid == kChunk" from its predicate output, which took the 8-byte
/// store for a partial chunk (a per-token test caught bytes written past the row).
__device__ __forceinline__ int chunk_valid(int cols, int col) {
  const int left = cols - col;
  return left >= kChunk ? kChunk : (left > 0 ? left : 0);
}

/// Converts 8 elements of T held in 16-byte words to fp32.
template <class T>
__device__ __forceinline__ void convert_chunk(const uint4 (&raw)[kChunk * sizeof(T) / 16],
                                              float (&v)[kChunk]) {
  const T* e = reinterpret_cast<const T*>(raw);
#pragma unroll
  for (int i = 0; i < kChunk; ++i) v[i] = to_float(e[i]);
}
/// NOTE: bf16 is the top half of an fp32, so a word of two converts with one shift and one mask;
/// __bfloat162float on the extracted high half cost a PRMT and an IMAD.
template <>
__device__ __forceinline__ void convert_chunk<__nv_bfloat16>(const uint4 (&raw)[1],
                                                             float (&v)[kChunk]) {
  const uint32_t w[4] = {raw[0].x, raw[0].y, raw[0].z, raw[0].w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = __uint_as_float(w[i] << 16);
    v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

/// Loads 8 elements of T at p as fp32: 16-byte vector loads when `vec` and the chunk is full,
/// guarded scalar loads otherwise (missing values read as 0).
template <class T>
__device__ __forceinline__ void load_chunk(const T* __restrict__ p, bool vec, int nvalid,
                                           float (&v)[kChunk]) {
  if (vec && nvalid == kChunk) {
    constexpr int kVecs = kChunk * sizeof(T) / 16;
    uint4 raw[kVecs];
#pragma unroll
    for (int i = 0; i < kVecs; ++i) raw[i] = __ldg(reinterpret_cast<const uint4*>(p) + i);
    convert_chunk<T>(raw, v);
  } else {
#pragma unroll
    for (int i = 0; i < kChunk; ++i) v[i] = i < nvalid ? to_float(p[i]) : 0.0f;
  }
}

/// load_chunk of two chunks (p and q): in the vector case both 16-byte loads issue before either
/// is converted. NOTE: two load_chunk calls are two branches, and nvcc put the first chunk's
/// conversion (waiting for its load) ahead of the second load, serialising the round trips.
template <class T>
__device__ __forceinline__ void load_chunk2(const T* __restrict__ p, const T* __restrict__ q,
                                            bool vec, int nvalid, float (&a)[kChunk],
                                            float (&b)[kChunk]) {
  if (vec && nvalid == kChunk) {
    constexpr int kVecs = kChunk * sizeof(T) / 16;
    uint4 ra[kVecs], rb[kVecs];
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      ra[i] = __ldg(reinterpret_cast<const uint4*>(p) + i);
      rb[i] = __ldg(reinterpret_cast<const uint4*>(q) + i);
    }
    convert_chunk<T>(ra, a);
    convert_chunk<T>(rb, b);
  } else {
#pragma unroll
    for (int i = 0; i < kChunk; ++i) {
      a[i] = i < nvalid ? to_float(p[i]) : 0.0f;
      b[i] = i < nvalid ? to_float(q[i]) : 0.0f;
    }
  }
}

/// Reads 8 elements of T from a shared-memory slot (filled by cp.async) as fp32.
template <class T>
__device__ __forceinline__ void read_chunk_shared(const uint8_t* slot, float (&v)[kChunk]) {
  constexpr int kVecs = kChunk * sizeof(T) / 16;
  uint4 raw[kVecs];
#pragma unroll
  for (int i = 0; i < kVecs; ++i) raw[i] = reinterpret_cast<const uint4*>(slot)[i];
  convert_chunk<T>(raw, v);
}

/// Bytes of piece i (16 bytes each) of a chunk of which `bytes` are real.
__device__ __forceinline__ int piece_bytes(int bytes, int i) {
  const int left = bytes - 16 * i;
  return left >= 16 ? 16 : (left > 0 ? left : 0);
}

/// Stores 8 fp32 values as T.
template <class T>
__device__ __forceinline__ void store_chunk(T* __restrict__ p, bool vec, int nvalid,
                                            const float (&v)[kChunk]) {
  if (vec && nvalid == kChunk) {
    constexpr int kVecs = kChunk * sizeof(T) / 16;
    uint4 raw[kVecs];
    T* e = reinterpret_cast<T*>(raw);
#pragma unroll
    for (int i = 0; i < kChunk; ++i) e[i] = from_float<T>(v[i]);
#pragma unroll
    for (int i = 0; i < kVecs; ++i) reinterpret_cast<uint4*>(p)[i] = raw[i];
  } else {
#pragma unroll
    for (int i = 0; i < kChunk; ++i)
      if (i < nvalid) p[i] = from_float<T>(v[i]);
  }
}

/// Two fp32 -> two E4M3 codes (low byte = a): hardware cvt.rn.satfinite.e4m3x2.f32 (sm_89+).
__device__ __forceinline__ uint32_t e4m3x2(float a, float b) {
  return __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
}

__device__ __forceinline__ uint8_t e4m3(float a) {
  return e4m3x2(a, 0.0f) & 0xff;
}

/// Quantizes v * inv to 8 E4M3 codes and stores them (8-byte store when vec and full).
__device__ __forceinline__ void store_fp8_chunk(uint8_t* __restrict__ p, bool vec, int nvalid,
                                                const float (&v)[kChunk], float inv) {
  uint32_t w[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint32_t lo = e4m3x2(v[4 * h] * inv, v[4 * h + 1] * inv);
    const uint32_t hi = e4m3x2(v[4 * h + 2] * inv, v[4 * h + 3] * inv);
    w[h] = lo | (hi << 16);
  }
  if (vec && nvalid == kChunk) {
    *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
  } else {
#pragma unroll
    for (int i = 0; i < kChunk; ++i)
      if (i < nvalid) p[i] = static_cast<uint8_t>(w[i / 4] >> (8 * (i % 4)));
  }
}

/// NaN-propagating max of |v|, as a tree (3 dependent steps instead of 8: it sits between a
/// task's load and its group reduction).
__device__ __forceinline__ float chunk_amax(const float (&v)[kChunk]) {
  float m[kChunk / 2];
#pragma unroll
  for (int i = 0; i < kChunk / 2; ++i) m[i] = rules::nan_max(fabsf(v[2 * i]), fabsf(v[2 * i + 1]));
  return rules::nan_max(rules::nan_max(m[0], m[1]), rules::nan_max(m[2], m[3]));
}

/// amax over the kLanes consecutive lanes that own one group (kLanes a power of two <= 32).
template <int kLanes>
__device__ __forceinline__ float group_amax(float m) {
#pragma unroll
  for (int off = 1; off < kLanes; off <<= 1)
    m = rules::nan_max(m, __shfl_xor_sync(0xffffffffu, m, off));
  return m;
}

/// Loads a per-tensor scalar ahead of the task's data loads: the empty asm with a memory clobber
/// keeps nvcc from sinking the load to its first use, where it issued only once the data had
/// arrived (one more memory round trip per task; most of a small batch's latency).
__device__ __forceinline__ float load_scalar_early(const float* p) {
  const float v = *p;
  asm volatile("" ::: "memory");
  return v;
}

/// Writes zeros to the padding of a scale buffer (ScaleAddr::padding_units stores; grid-stride
/// over `nthreads` threads): rows [rows, padded_rows) of every group and groups [groups,
/// padded_groups) of every real row. Consumers (TMA, block-scaled GEMMs) read it.
/// NOTE: 32-bit index arithmetic (both counts are below 2^32: padding rows are fewer than 128,
/// padding groups fewer than 4, rows below 2^30 by the launcher's task bound); the 64-bit
/// divisions this loop had were library calls. The NVFP4 swizzled layout's padding rows (up to
/// 127: at T = 16 more scale bytes than the real output) are written in its 16-byte units,
/// coalesced (a 4-byte store per row and tile at a 16-byte stride cost 0.2 us at T = 16).
/// NOTE: not inlined, and given the geometry by value: inlined, values of its address arithmetic
/// stayed live across the task (nvcc shares them with the scale stores) and, under the streaming
/// kernels' register caps, nvcc spilled the task's freshly loaded data: the spill stores waited
/// for the loads (the 2-way merge with per-group FP8 fell from 92 to 81 % of copy bandwidth).
static __device__ __noinline__ void zero_scale_padding(uint8_t* base, ScaleAddr sa, uint32_t tid,
                                                       uint32_t nthreads) {
  const uint32_t rows = static_cast<uint32_t>(sa.rows);
  const uint32_t pad_rows = static_cast<uint32_t>(sa.padded_rows - sa.rows);
  const uint32_t pad_groups = static_cast<uint32_t>(sa.padded_groups - sa.groups);
  auto zero = [&](uint32_t r, uint32_t g) {
    const int64_t off = sa.offset(r, g);
    if (sa.elem_bytes == 4)
      reinterpret_cast<float*>(base)[off] = 0.0f;
    else
      base[off] = 0;
  };
  if (sa.num_k_tiles > 0) {
    // The padding rows are the end of the last 128-row block. Its 16-byte unit (r32, tile) holds
    // rows r32 + 32 j (j = 0..3) x 4 groups: all padding (one 16-byte store) when r32 is at or
    // past the block's real rows, else padding in its words j with r32 + 32 j past them.
    const uint32_t tiles = static_cast<uint32_t>(sa.num_k_tiles);
    const uint32_t first = rows & ~127u, real = rows - first;
    const bool vec16 = reinterpret_cast<uintptr_t>(base) % 16 == 0;
    for (uint32_t i = tid; pad_rows > 0 && i < 32 * tiles; i += nthreads) {
      const uint32_t tile = i / 32, r32 = i % 32;
      uint8_t* unit = base + sa.offset(first + r32, 4 * tile);
      if (r32 >= real && vec16) {
        *reinterpret_cast<uint4*>(unit) = make_uint4(0, 0, 0, 0);
      } else {
        for (uint32_t j = 0; j < 4; ++j)
          if (r32 + 32 * j >= real) reinterpret_cast<uint32_t*>(unit)[j] = 0;
      }
    }
  } else {
    const uint32_t groups = static_cast<uint32_t>(sa.padded_groups);
    for (uint32_t i = tid; i < pad_rows * groups; i += nthreads) {
      const uint32_t r = i / groups;
      zero(rows + r, i - r * groups);
    }
  }
  if (pad_groups > 0) {
    const uint32_t first = static_cast<uint32_t>(sa.groups);
    for (uint32_t i = tid; i < rows * pad_groups; i += nthreads) {
      const uint32_t r = i / pad_groups;
      zero(r, first + (i - r * pad_groups));
    }
  }
}

// ---- policies -----------------------------------------------------------------------------

/// Output in a float dtype, no scales (the identity policy: bf16 out for plain ops).
template <class TOut>
struct PlainOut {
  static constexpr bool kStream = true;
  static constexpr int kChunksPerLane = 1;
  struct Params {
    TOut* out;
    int64_t ld;  // row stride, elements
    bool vec;
  };
  static constexpr int kLanesPerGroup = 1;
  const Params& p;
  __device__ explicit PlainOut(const Params& params) : p(params) {}
  __device__ void begin() {}
  __device__ void apply(int64_t row, int col, int nvalid, const float (&v)[kChunk]) const {
    if (nvalid > 0) store_chunk(p.out + row * p.ld + col, p.vec, nvalid, v);
  }
  __device__ void zero_padding(uint32_t, uint32_t) const {}
};

/// FP8 static per-tensor: q = e4m3(x * (1 / scale)), scale read from the device.
struct Fp8PerTensor {
  static constexpr bool kStream = true;
  static constexpr int kChunksPerLane = 1;
  struct Params {
    uint8_t* out;
    int64_t ld;
    const float* scale;
    bool vec;
  };
  static constexpr int kLanesPerGroup = 1;
  const Params& p;
  // NOTE: the scale is read and inverted where it is used (an L1 hit after the first task), not
  // in the constructor: there, every warp waited for the scale's load before it issued its data
  // loads, one extra memory round trip per warp (most of a small batch's latency). Loading it
  // ahead of the data (load_scalar_early) and inverting it after the data arrived measured
  // 0.05 us faster at T <= 16 but 0.05 us slower at T = 64-256 (merge, H=16 D=128; same run).
  __device__ explicit Fp8PerTensor(const Params& params) : p(params) {}
  __device__ void begin() {}
  __device__ void apply(int64_t row, int col, int nvalid, const float (&v)[kChunk]) const {
    if (nvalid > 0)
      store_fp8_chunk(p.out + row * p.ld + col, p.vec, nvalid, v, rules::fp8_inv_scale(*p.scale));
  }
  __device__ void zero_padding(uint32_t, uint32_t) const {}
};

/// FP8 dynamic per-group (g = 8 * kLanes consecutive columns), any scale layout and format.
template <int kGroup>
struct Fp8PerGroup {
  static constexpr bool kStream = true;
  static constexpr int kChunksPerLane = 2;  // apply2(): 16 values per lane (wide lanes)
  static constexpr int kLanesPerGroup = kGroup / kChunk;
  struct Params {
    uint8_t* out;
    int64_t ld;
    void* scales;
    ScaleAddr sa;
    const float* scale_ub;  // nullable
    bool pow2;              // UE8M0 scales
    bool packed;            // UE8M0 bytes (else fp32)
    bool vec;
  };
  const Params& p;
  // NOTE: scale_ub is read at use, like Fp8PerTensor's scale: loaded in the constructor, it held
  // a register for the whole kernel, and where the streaming kernel ran out of registers (merge,
  // 2-way) the spill's store waited for that load before any data load issued.
  __device__ explicit Fp8PerGroup(const Params& params) : p(params) {}
  __device__ void begin() {}
  /// The scale of the group holding column `col` from its amax, written by the first of the
  /// group's kLanes lanes.
  template <int kLanes>
  __device__ float group_scale(int64_t row, int col, float amax) const {
    const float ub = p.scale_ub ? *p.scale_ub : INFINITY;
    const float s = rules::fp8_dynamic_scale(amax, ub, p.pow2);
    if ((threadIdx.x & 31) % kLanes == 0) {
      const int64_t off = p.sa.offset(row, col / kGroup);
      if (p.packed)
        static_cast<uint8_t*>(p.scales)[off] = rules::ue8m0_byte(s);
      else
        static_cast<float*>(p.scales)[off] = s;
    }
    return s;
  }
  __device__ void apply(int64_t row, int col, int nvalid, const float (&v)[kChunk]) const {
    const float amax = group_amax<kLanesPerGroup>(chunk_amax(v));
    if (nvalid <= 0) return;
    const float s = group_scale<kLanesPerGroup>(row, col, amax);
    store_fp8_chunk(p.out + row * p.ld + col, p.vec, nvalid, v, rules::fp8_inv_scale(s));
  }
  /// Wide lanes: values [col, col + 16) of `row` (v0, v1 its halves, nvalid1 <= 0 past the row),
  /// a group spanning kGroup / 16 lanes: the group's reduction and scale serve 16 values a lane.
  template <int>
  __device__ void apply2(int64_t row, int col, int nvalid0, int nvalid1, const float (&v0)[kChunk],
                         const float (&v1)[kChunk]) const {
    constexpr int kLanes = kGroup / (2 * kChunk);
    const float amax = group_amax<kLanes>(rules::nan_max(chunk_amax(v0), chunk_amax(v1)));
    if (nvalid0 <= 0) return;
    const float inv = rules::fp8_inv_scale(group_scale<kLanes>(row, col, amax));
    uint8_t* dst = p.out + row * p.ld + col;
    store_fp8_chunk(dst, p.vec, nvalid0, v0, inv);
    if (nvalid1 > 0) store_fp8_chunk(dst + kChunk, p.vec, nvalid1, v1, inv);
  }
  __device__ void zero_padding(uint32_t tid, uint32_t nthreads) const {
    if (p.sa.padding_units() > 0)
      zero_scale_padding(static_cast<uint8_t*>(p.scales), p.sa, tid, nthreads);
  }
};

/// NVFP4: E2M1 values, one E4M3 scale per 16 values (2 lanes), fp32 global scale on the device.
/// Requires full chunks (cols % 16 == 0, checked by validation).
struct Nvfp4 {
  // NOTE: the streaming kernel, like FP8. This policy used to build a 256-entry table of
  // nvfp4_out_scale per block (two IEEE divisions became one shared load), which needed the
  // global scale and a barrier before any warp issued its data loads: in the streaming form every
  // warp waited one memory round trip first, so NVFP4 kept the persistent pipelines. Computing
  // the factor per chunk costs ~16 instructions of the ~150 a chunk takes.
  static constexpr bool kStream = true;
  static constexpr int kLanesPerGroup = 2;  // apply(): 8 values per lane
  static constexpr int kChunksPerLane = 2;  // apply2(): a lane owns a block (streaming form)
  struct Params {
    uint8_t* out;  // packed bytes
    int64_t ld;    // row stride, bytes
    uint8_t* scales;
    ScaleAddr sa;
    const float* global_scale;
    bool vec;   // 4-byte stores
    bool vec8;  // 8-byte stores
  };
  const Params& p;
  float gs = 0.0f;  // begin(): issued ahead of the data loads; every use depends on the data
  __device__ explicit Nvfp4(const Params& params) : p(params) {}
  __device__ void begin() { gs = load_scalar_early(p.global_scale); }
  /// The E4M3 scale of a block with absolute maximum bmax and the factor for its values.
  /// NOTE: for the usual global scales (nvfp4_fma_scales_ok; a warp-uniform branch) both come
  /// from the division-free forms of the rules, bit for bit the same: the two IEEE divisions
  /// with their range checks and slow paths were ~40 of a block's ~230 instructions.
  struct BlockScale {
    uint8_t sf;
    float out_scale;
  };
  __device__ BlockScale block_scale(float bmax) const {
    if (rules::nvfp4_fma_scales_ok(gs)) {
      const uint8_t sf = e4m3(rules::nvfp4_sf_input_fma(gs, bmax));
      return {sf, rules::nvfp4_out_scale_fma(rules::e4m3_value(sf), gs, rules::rcp_rn_normal(gs))};
    }
    const uint8_t sf = e4m3(rules::nvfp4_sf_input(gs, bmax));
    return {sf, rules::nvfp4_out_scale(rules::e4m3_value(sf), gs)};
  }
  __device__ void apply(int64_t row, int col, int nvalid, const float (&v)[kChunk]) const {
    const float bmax = group_amax<2>(chunk_amax(v));
    if (nvalid <= 0) return;
    const auto [sf, out_scale] = block_scale(bmax);
    if ((threadIdx.x & 1) == 0) p.scales[p.sa.offset(row, col / 16)] = sf;
    float t[kChunk];
#pragma unroll
    for (int i = 0; i < kChunk; ++i) t[i] = v[i] * out_scale;
    const uint32_t w = rules::e2m1_encode8(t);
    uint8_t* dst = p.out + row * p.ld + col / 2;
    if (p.vec) {
      *reinterpret_cast<uint32_t*>(dst) = w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) dst[i] = static_cast<uint8_t>(w >> (8 * i));
    }
  }
  /// E2M1 codes of t = v * out_scale for a block with absolute maximum bmax. kRound (the
  /// producer's kNvfp4Round): 0, the general round (any value, NaN to +6); 1, the clamp-free
  /// round where bmax * out_scale < 7 (false for NaN; then every |t| < 7, rounding being
  /// monotonic), else the general one.
  template <int kRound>
  __device__ static uint32_t encode(const float (&t)[kChunk], float out_scale, float bmax) {
    if constexpr (kRound == 1) {
      if (bmax * out_scale < 7.0f) return rules::e2m1_encode8_below7(t);
    }
    return rules::e2m1_encode8(t);
  }
  /// A whole block in one lane: values [col, col + 16) of `row`, v0 and v1 its two halves
  /// (both real or both past the row: cols % 16 == 0). kRound: see encode().
  template <int kRound>
  __device__ void apply2(int64_t row, int col, int nvalid0, int, const float (&v0)[kChunk],
                         const float (&v1)[kChunk]) const {
    // NOTE: ahead of the return, so that it dominates the next block's of the same row and
    // nvcc computes it once per lane.
    const int64_t row_offset = p.sa.row_offset(row);
    if (nvalid0 <= 0) return;
    const float bmax = rules::nan_max(chunk_amax(v0), chunk_amax(v1));
    const auto [sf, out_scale] = block_scale(bmax);
    p.scales[row_offset + p.sa.group_offset(col / 16)] = sf;
    float t[kChunk];
#pragma unroll
    for (int i = 0; i < kChunk; ++i) t[i] = v0[i] * out_scale;
    const uint32_t w0 = encode<kRound>(t, out_scale, bmax);
#pragma unroll
    for (int i = 0; i < kChunk; ++i) t[i] = v1[i] * out_scale;
    const uint32_t w1 = encode<kRound>(t, out_scale, bmax);
    uint8_t* dst = p.out + row * p.ld + col / 2;
    if (p.vec8) {
      *reinterpret_cast<uint2*>(dst) = make_uint2(w0, w1);
    } else if (p.vec) {
      reinterpret_cast<uint32_t*>(dst)[0] = w0;
      reinterpret_cast<uint32_t*>(dst)[1] = w1;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        dst[i] = static_cast<uint8_t>(w0 >> (8 * i));
        dst[4 + i] = static_cast<uint8_t>(w1 >> (8 * i));
      }
    }
  }
  __device__ void zero_padding(uint32_t tid, uint32_t nthreads) const {
    if (p.sa.padding_units() > 0) zero_scale_padding(p.scales, p.sa, tid, nthreads);
  }
};

/// FP8 dynamic per-token: one scale per row. The row's amax spans a whole thread block, so this
/// policy is driven by the row-block kernel (rowwise.cuh) rather than apply().
struct Fp8PerToken {
  struct Params {
    uint8_t* out;
    int64_t ld;
    float* scales;  // [rows]
    const float* scale_ub;
    bool vec;
  };
};

}  // namespace qfuse::quant
