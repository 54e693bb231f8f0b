// The quantizer protocol, part 1: one lane-free core per quantization kind (SPEC §0.2).
//
// A core knows how one kind turns fp32 values into codes and scales and where both go; it knows
// nothing of which thread holds which value. Adapters (qfuse/quant/adapters/) feed it: the
// row-chunk adapter for the row-wise kernels (lanes of a warp on consecutive 8-value chunks of a
// row), the shared-memory-tile adapter for epilogues that stage their output tile in shared
// memory, the wgmma-fragment adapter for accumulator registers. docs/quant.md has the protocol and
// a worked example of each adapter.
//
// Core protocol (K is one of the structs below):
//   K::kKind        the QuantKind
//   K::kRule        the QuantRule: qfuse's rules, or the reference engine's arithmetic (the
//                   engine-rule cores: per-token, per-group and NVFP4 with kRule = kEngine)
//   K::kScope       what one scale covers (ScaleScope): nothing (plain output), the whole tensor
//                   (a given scale), a group of kGroupCols consecutive columns of one row, or a
//                   whole row. An adapter supports a kind only when it can see what the scope
//                   covers; quant_needs() (kind.h) says the same on the host, from which each
//                   family's capability rows are derived.
//   K::kGroupCols   columns one scale covers (kGroup scope: 16, 64 or 128), else 0
//   K::Params       trivially copyable kernel argument (pointers, strides, flags)
//   K::Scale        what encoding needs of a scale (FP8: the scale and its reciprocal; NVFP4 the
//                   E4M3 block scale, its factor and the block's amax)
//   K(const Params&)                       device constructor; no global memory access
//   void begin()                           loads per-tensor scalars; called once, after the
//                                          kernel's pdl wait, before the first use
//   Scale tensor_scale() const             kNone / kTensor: the one scale
//   Scale scale_of(float amax) const       kGroup / kRow: the scale of a group / row from its
//                                          NaN-propagating absolute maximum
//   int64_t scale_offset(int64_t row, int64_t group) const
//                                          kGroup / kRow: where the scale of `group` (0 for
//                                          kRow) of `row` goes
//   int64_t scale_row(int64_t row), scale_group(int64_t group) const
//                                          the two parts of scale_offset (their sum), for a lane
//                                          that writes several groups of one row
//   void write_scale(int64_t off, const Scale&) const
//                                          stores a scale at offset `off`
//   void store(row, col, nvalid, const float (&v)[8], const Scale&) const
//                                          encodes values [col, col + 8) of `row` (nvalid in
//                                          [1, 8] real, the rest 0) and stores them
//   void zero_padding(uint32_t tid, uint32_t nthreads) const
//                                          zeroes the scale buffer's padding (grid-stride)
//   void store_pair(row, col, nvalid, float a, float b, const Scale&) const
//                                          the same for values col, col + 1 (col even, nvalid 1
//                                          or 2): accumulator fragments hold pairs
// Group kinds also offer store2(row, col, nvalid0, nvalid1, v0, v1, scale): 16 consecutive values
// of one group at once (wide lanes). All arithmetic goes through rules.h, which the host
// references share, so device and host cannot round differently.
#pragma once

#include <cstdint>
#include <type_traits>

#include "qfuse/quant/chunk.cuh"
#include "qfuse/quant/kind.h"
#include "qfuse/quant/rules.h"
#include "qfuse/quant/scale_addr.h"

namespace qfuse::quant {

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
/// coalesced (4-byte stores per row and tile were slow at small T: bench/NOTES.md 41f).
/// NOTE: not inlined, and given the geometry by value: inlined, values of its address arithmetic
/// stayed live across the task (nvcc shares them with the scale stores) and, under the streaming
/// kernels' register caps, nvcc spilled the task's freshly loaded data: the spill stores waited
/// for the loads (NOTES 28, 41f).
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

// ---- kind cores ---------------------------------------------------------------------------

/// Output in a float dtype, no scales (the identity: bf16 out for plain ops).
template <class TOut>
struct PlainCore {
  static constexpr QuantKind kKind = QuantKind::kNone;
  static constexpr QuantRule kRule = QuantRule::kNative;
  static constexpr ScaleScope kScope = ScaleScope::kNone;
  static constexpr int kGroupCols = 0;
  struct Params {
    TOut* out;
    int64_t ld;  // row stride, elements
    bool vec;
  };
  struct Scale {};
  const Params& p;
  __device__ explicit PlainCore(const Params& params) : p(params) {}
  __device__ void begin() {}
  __device__ Scale tensor_scale() const { return {}; }
  __device__ void store(int64_t row, int col, int nvalid, const float (&v)[kChunk], Scale) const {
    store_chunk(p.out + row * p.ld + col, p.vec, nvalid, v);
  }
  __device__ void store_pair(int64_t row, int col, int nvalid, float a, float b, Scale) const {
    TOut* dst = p.out + row * p.ld + col;
    dst[0] = from_float<TOut>(a);
    if (nvalid > 1) dst[1] = from_float<TOut>(b);
  }
  __device__ void zero_padding(uint32_t, uint32_t) const {}
};

/// FP8 static per-tensor: q = e4m3(x * (1 / scale)), scale read from the device.
struct Fp8PerTensorCore {
  static constexpr QuantKind kKind = QuantKind::kFp8PerTensor;
  static constexpr QuantRule kRule = QuantRule::kNative;
  static constexpr ScaleScope kScope = ScaleScope::kTensor;
  static constexpr int kGroupCols = 0;
  struct Params {
    uint8_t* out;
    int64_t ld;
    const float* scale;
    bool vec;
  };
  /// The scale is read (and inverted) by the store, after the store's address arithmetic.
  struct Scale {
    const float* scale;
  };
  const Params& p;
  // NOTE: the scale is read and inverted where it is used (an L1 hit after the first task), not
  // in begin(): there, every warp waited for the scale's load before it issued its data loads,
  // one extra memory round trip per warp; loaded ahead and inverted after the data it measured
  // faster at the smallest batches only (bench/NOTES.md 22). Read after the output address is
  // formed, as the measured kernels did (NOTES 42).
  __device__ explicit Fp8PerTensorCore(const Params& params) : p(params) {}
  __device__ void begin() {}
  __device__ Scale tensor_scale() const { return {p.scale}; }
  __device__ void store(int64_t row, int col, int nvalid, const float (&v)[kChunk],
                        const Scale& s) const {
    uint8_t* dst = p.out + row * p.ld + col;
    store_fp8_chunk(dst, p.vec, nvalid, v, rules::fp8_inv_scale(*s.scale));
  }
  __device__ void store_pair(int64_t row, int col, int nvalid, float a, float b,
                             const Scale& s) const {
    const float inv = rules::fp8_inv_scale(*s.scale);
    store_fp8_pair(p.out + row * p.ld + col, p.vec, nvalid, a * inv, b * inv);
  }
  __device__ void zero_padding(uint32_t, uint32_t) const {}
};

/// What an FP8 dynamic kind needs of a scale: s (stored) and 1 / s (multiplied by).
struct Fp8Scale {
  float s;
  float inv;
};

/// FP8 dynamic per-token: one fp32 scale per row, max(min(amax, ub) / 448, min_scale). kRule:
/// codes e4m3(x * (1 / s)) (native) or e4m3(x / s) (engine; the same scale).
template <QuantRule kRuleT = QuantRule::kNative>
struct Fp8PerTokenCore {
  static constexpr QuantKind kKind = QuantKind::kFp8PerToken;
  static constexpr QuantRule kRule = kRuleT;
  static constexpr bool kEngine = kRuleT == QuantRule::kEngine;
  static constexpr ScaleScope kScope = ScaleScope::kRow;
  static constexpr int kGroupCols = 0;
  struct Params {
    uint8_t* out;
    int64_t ld;
    float* scales;  // [rows]
    const float* scale_ub;
    bool vec;
  };
  using Scale = Fp8Scale;
  const Params& p;
  __device__ explicit Fp8PerTokenCore(const Params& params) : p(params) {}
  __device__ void begin() {}
  __device__ Scale scale_of(float amax) const {
    const float ub = p.scale_ub ? *p.scale_ub : INFINITY;
    const float s = rules::fp8_dynamic_scale(amax, ub, false);
    if constexpr (kEngine) return {s, 0.0f};  // divides: no reciprocal
    return {s, rules::fp8_inv_scale(s)};
  }
  __device__ int64_t scale_offset(int64_t row, int64_t) const { return row; }
  __device__ int64_t scale_row(int64_t row) const { return row; }
  __device__ int64_t scale_group(int64_t) const { return 0; }
  __device__ void write_scale(int64_t off, const Scale& s) const { p.scales[off] = s.s; }
  __device__ void store(int64_t row, int col, int nvalid, const float (&v)[kChunk],
                        const Scale& s) const {
    if constexpr (kEngine)
      store_fp8_chunk_div(p.out + row * p.ld + col, p.vec, nvalid, v, s.s);
    else
      store_fp8_chunk(p.out + row * p.ld + col, p.vec, nvalid, v, s.inv);
  }
  __device__ void store_pair(int64_t row, int col, int nvalid, float a, float b,
                             const Scale& s) const {
    if constexpr (kEngine)
      store_fp8_pair(p.out + row * p.ld + col, p.vec, nvalid, rules::engine_fp8_quotient(a, s.s),
                     rules::engine_fp8_quotient(b, s.s));
    else
      store_fp8_pair(p.out + row * p.ld + col, p.vec, nvalid, a * s.inv, b * s.inv);
  }
  __device__ void zero_padding(uint32_t, uint32_t) const {}
};

/// FP8 dynamic per-group (g = kGroup consecutive columns), any scale layout and format. kRule:
/// native (fp8_group_scale, codes e4m3(x * (1 / s))) or engine (engine_group_scale with its amax
/// floor eps and UE8M0 rounding, codes e4m3(x / s)).
struct Fp8PerGroupParams {
  uint8_t* out;
  int64_t ld;
  void* scales;
  ScaleAddr sa;
  const float* scale_ub;  // nullable
  bool pow2;              // UE8M0 scales
  bool packed;            // UE8M0 bytes (else fp32)
  bool vec;
};
/// The engine rule's: and the amax floor (QuantOutput::eps).
/// NOTE: a struct of its own: with eps in the native kernels' parameters, nvcc loaded `vec` per
/// use instead of once (different SASS for the fp32-input wide-lane kernels).
struct Fp8PerGroupEngineParams : Fp8PerGroupParams {
  float eps;
};

template <int kGroup, QuantRule kRuleT = QuantRule::kNative>
struct Fp8PerGroupCore {
  static constexpr QuantKind kKind = QuantKind::kFp8PerGroup;
  static constexpr QuantRule kRule = kRuleT;
  static constexpr bool kEngine = kRuleT == QuantRule::kEngine;
  static constexpr ScaleScope kScope = ScaleScope::kGroup;
  static constexpr int kGroupCols = kGroup;
  using Params = std::conditional_t<kEngine, Fp8PerGroupEngineParams, Fp8PerGroupParams>;
  /// NOTE: the reciprocal is taken at the store, after the scale's write, as the tuned policy
  /// did: taken in scale_of, nvcc scheduled the narrow kernels differently (bench/NOTES.md 42).
  struct Scale {
    float s;
  };
  const Params& p;
  // NOTE: scale_ub is read at use, like the per-tensor scale: loaded up front it held a register
  // for the whole kernel, and where the streaming kernel ran out of registers the spill's store
  // waited for that load before any data load issued (bench/NOTES.md 24).
  __device__ explicit Fp8PerGroupCore(const Params& params) : p(params) {}
  __device__ void begin() {}
  __device__ Scale scale_of(float amax) const {
    const float ub = p.scale_ub ? *p.scale_ub : INFINITY;
    if constexpr (kEngine) return {rules::engine_group_scale(amax, p.eps, ub, p.pow2)};
    return {rules::fp8_group_scale(amax, ub, p.pow2)};
  }
  __device__ int64_t scale_offset(int64_t row, int64_t group) const {
    return p.sa.offset(row, group);
  }
  __device__ int64_t scale_row(int64_t row) const { return p.sa.row_offset(row); }
  __device__ int64_t scale_group(int64_t group) const { return p.sa.group_offset(group); }
  __device__ void write_scale(int64_t off, const Scale& s) const {
    if (p.packed)
      static_cast<uint8_t*>(p.scales)[off] = rules::ue8m0_byte(s.s);
    else
      static_cast<float*>(p.scales)[off] = s.s;
  }
  __device__ void store(int64_t row, int col, int nvalid, const float (&v)[kChunk],
                        const Scale& s) const {
    if constexpr (kEngine)
      store_fp8_chunk_div(p.out + row * p.ld + col, p.vec, nvalid, v, s.s);
    else
      store_fp8_chunk(p.out + row * p.ld + col, p.vec, nvalid, v, rules::fp8_inv_scale(s.s));
  }
  __device__ void store_pair(int64_t row, int col, int nvalid, float a, float b,
                             const Scale& s) const {
    if constexpr (kEngine) {
      store_fp8_pair(p.out + row * p.ld + col, p.vec, nvalid, rules::engine_fp8_quotient(a, s.s),
                     rules::engine_fp8_quotient(b, s.s));
    } else {
      const float inv = rules::fp8_inv_scale(s.s);
      store_fp8_pair(p.out + row * p.ld + col, p.vec, nvalid, a * inv, b * inv);
    }
  }
  __device__ void store2(int64_t row, int col, int nvalid0, int nvalid1, const float (&v0)[kChunk],
                         const float (&v1)[kChunk], const Scale& s) const {
    uint8_t* dst = p.out + row * p.ld + col;
    if constexpr (kEngine) {
      store_fp8_chunk_div(dst, p.vec, nvalid0, v0, s.s);
      if (nvalid1 > 0) store_fp8_chunk_div(dst + kChunk, p.vec, nvalid1, v1, s.s);
    } else {
      const float inv = rules::fp8_inv_scale(s.s);
      store_fp8_chunk(dst, p.vec, nvalid0, v0, inv);
      if (nvalid1 > 0) store_fp8_chunk(dst + kChunk, p.vec, nvalid1, v1, inv);
    }
  }
  __device__ void zero_padding(uint32_t tid, uint32_t nthreads) const {
    if (p.sa.padding_units() > 0)
      zero_scale_padding(static_cast<uint8_t*>(p.scales), p.sa, tid, nthreads);
  }
};

/// NVFP4: E2M1 values, one E4M3 scale per 16 values, fp32 global scale on the device. Requires
/// whole blocks (cols % 16 == 0, checked by validation). kRound picks the E2M1 round of store2
/// (the producer's choice, measured per producer: bench/NOTES.md 29-34): 0, the general round
/// (any value, NaN to +6); 1, the clamp-free round where the block's largest scaled value is
/// below 7 (false for NaN; then every |t| < 7, rounding being monotonic), else the general one.
/// kRule: the block scale and factor by the native rules (IEEE divisions) or the engine's
/// (approximate reciprocals, engine_nvfp4_*); the E2M1 round is the same.
template <int kRound = 0, QuantRule kRuleT = QuantRule::kNative>
struct Nvfp4Core {
  static constexpr QuantKind kKind = QuantKind::kNvfp4;
  static constexpr QuantRule kRule = kRuleT;
  static constexpr ScaleScope kScope = ScaleScope::kGroup;
  static constexpr int kGroupCols = 16;
  struct Params {
    uint8_t* out;  // packed bytes
    int64_t ld;    // row stride, bytes
    uint8_t* scales;
    ScaleAddr sa;
    const float* global_scale;
    bool vec;   // 4-byte stores
    bool vec8;  // 8-byte stores
  };
  struct Scale {
    uint8_t sf;       // E4M3 block scale
    float out_scale;  // what the block's values are multiplied by before the E2M1 round
    float bmax;       // the block's amax (picks the round)
  };
  const Params& p;
  float gs = 0.0f;  // begin(): issued ahead of the data loads; every use depends on the data
  __device__ explicit Nvfp4Core(const Params& params) : p(params) {}
  __device__ void begin() { gs = load_scalar_early(p.global_scale); }
  /// NOTE: for the usual global scales (nvfp4_fma_scales_ok; a warp-uniform branch) both come
  /// from the division-free forms of the rules, bit for bit the same as the IEEE divisions with
  /// their range checks and slow paths (bench/NOTES.md 36).
  __device__ Scale scale_of(float bmax) const {
    if constexpr (kRuleT == QuantRule::kEngine) {
      const rules::RcpApproxFtz rcp;
      const uint8_t sf = e4m3(rules::engine_nvfp4_sf_input(gs, bmax, rcp));
      return {sf, rules::engine_nvfp4_out_scale(rules::e4m3_value(sf), gs, rcp), bmax};
    }
    if (rules::nvfp4_fma_scales_ok(gs)) {
      const uint8_t sf = e4m3(rules::nvfp4_sf_input_fma(gs, bmax));
      return {sf, rules::nvfp4_out_scale_fma(rules::e4m3_value(sf), gs, rules::rcp_rn_normal(gs)),
              bmax};
    }
    const uint8_t sf = e4m3(rules::nvfp4_sf_input(gs, bmax));
    return {sf, rules::nvfp4_out_scale(rules::e4m3_value(sf), gs), bmax};
  }
  __device__ int64_t scale_offset(int64_t row, int64_t group) const {
    return p.sa.offset(row, group);
  }
  __device__ int64_t scale_row(int64_t row) const { return p.sa.row_offset(row); }
  __device__ int64_t scale_group(int64_t group) const { return p.sa.group_offset(group); }
  __device__ void write_scale(int64_t off, const Scale& s) const { p.scales[off] = s.sf; }
  /// E2M1 codes of t = v * out_scale (kR: the round, see the struct comment).
  template <int kR>
  __device__ static uint32_t encode(const float (&t)[kChunk], const Scale& s) {
    if constexpr (kR == 1) {
      if (s.bmax * s.out_scale < 7.0f) return rules::e2m1_encode8_below7(t);
    }
    return rules::e2m1_encode8(t);
  }
  /// Half a block (8 values, 4 bytes); the general round.
  __device__ void store(int64_t row, int col, int, const float (&v)[kChunk], const Scale& s) const {
    float t[kChunk];
#pragma unroll
    for (int i = 0; i < kChunk; ++i) t[i] = v[i] * s.out_scale;
    const uint32_t w = encode<0>(t, s);
    uint8_t* dst = p.out + row * p.ld + col / 2;
    if (p.vec) {
      *reinterpret_cast<uint32_t*>(dst) = w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) dst[i] = static_cast<uint8_t>(w >> (8 * i));
    }
  }
  /// Values col, col + 1 (col even): one byte; the general round.
  __device__ void store_pair(int64_t row, int col, int nvalid, float a, float b,
                             const Scale& s) const {
    const uint32_t lo = rules::e2m1_encode(a * s.out_scale);
    const uint32_t hi = nvalid > 1 ? rules::e2m1_encode(b * s.out_scale) : 0u;
    p.out[row * p.ld + col / 2] = static_cast<uint8_t>(lo | (hi << 4));
  }
  /// A whole block (v0, v1 its halves; both real: cols % 16 == 0); the round kRound.
  __device__ void store2(int64_t row, int col, int, int, const float (&v0)[kChunk],
                         const float (&v1)[kChunk], const Scale& s) const {
    float t[kChunk];
#pragma unroll
    for (int i = 0; i < kChunk; ++i) t[i] = v0[i] * s.out_scale;
    const uint32_t w0 = encode<kRound>(t, s);
#pragma unroll
    for (int i = 0; i < kChunk; ++i) t[i] = v1[i] * s.out_scale;
    const uint32_t w1 = encode<kRound>(t, s);
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

}  // namespace qfuse::quant
