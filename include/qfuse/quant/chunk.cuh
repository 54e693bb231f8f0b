// Chunks of 8 consecutive values: the unit in which qfuse kernels move a row's values between
// memory, registers and the quantizer (loads and stores of 16/8 bytes, conversions to and from
// fp32, E4M3 encodes, NaN-propagating amax over a chunk and over the lanes of a group).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "qfuse/quant/rules.h"

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

/// rcp.approx.ftz.f32 (MUFU.RCP).
__device__ __forceinline__ float rcp_approx_ftz(float x) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

/// 1 / x correctly rounded (__frcp_rn) by the fast path nvcc emits for it: MUFU.RCP and one
/// correction, valid where x's biased exponent is not 0 or 253-255 (nvcc's own test, which sets
/// `slow`; the result is then not to be used). A GPU test compares it with __frcp_rn on every
/// float.
__device__ __forceinline__ float rcp_rn_fast(float x, bool& slow) {
  const float r = rcp_approx_ftz(x);
  const float e = __fmaf_rn(x, r, -1.0f);
  slow |= ((__float_as_uint(x) + 0x1800000u) & 0x7f800000u) <= 0x1ffffffu;
  return __fmaf_rn(r, -e, r);
}

/// rules::engine_silu_mul of a chunk, the same bits value by value. NOTE: nvcc made each
/// __frcp_rn a branch region of its own (its slow path a call), so a chunk's eight sigmoids ran
/// one after another, ~70 cycles each, at the latency-bound small batches (bench/NOTES.md 46).
/// Here one test for the chunk: every gate >= -87 (so 1 + e^-g < 2^126, where rcp_rn_fast
/// holds) takes the branch-free form, anything else (NaN included) the per-value expression.
__device__ __forceinline__ void engine_silu_mul_chunk(const float (&g)[kChunk],
                                                      const float (&u)[kChunk],
                                                      float (&v)[kChunk]) {
  bool slow = false;
#pragma unroll
  for (int i = 0; i < kChunk; ++i) slow |= !(g[i] >= -87.0f);
  if (slow) {
#pragma unroll
    for (int i = 0; i < kChunk; ++i)
      v[i] = rules::engine_silu_mul(g[i], u[i], rules::Ex2ApproxFtz{});
    return;
  }
#pragma unroll
  for (int i = 0; i < kChunk; ++i) {
    bool unused = false;
    const float sig = rcp_rn_fast(rules::engine_sigmoid_den(g[i], rules::Ex2ApproxFtz{}), unused);
    v[i] = __fmul_rn(__fmul_rn(g[i], sig), u[i]);
  }
}

/// Whether div_rn_chunk's fast path serves v / s: s in [2^-63, 2^64), every v zero or there.
__device__ __forceinline__ bool div_rn_fast_ok(const float (&v)[kChunk], float s) {
  const auto mid = [](float x) { return ((__float_as_uint(x) >> 23) & 0xffu) - 64u <= 126u; };
  bool ok = mid(s);
#pragma unroll
  for (int i = 0; i < kChunk; ++i) ok &= (__float_as_uint(v[i]) << 1) == 0u || mid(v[i]);
  return ok;
}

/// v / s correctly rounded (__fdiv_rn) for a chunk. Where div_rn_fast_ok: div.rn's fast path as
/// nvcc emits it (the refined reciprocal of s, then one correction a value: the five fma of its
/// SASS before the FCHK test; operands within [2^-63, 2^64) are well inside what FCHK lets
/// through), a zero dividing to itself; otherwise __fdiv_rn value by value. NOTE: one branch a
/// chunk instead of a branch region a value (see engine_silu_mul_chunk). A GPU test compares it
/// with __fdiv_rn on every float for a set of divisors and on random pairs.
__device__ __forceinline__ void div_rn_chunk(const float (&v)[kChunk], float s,
                                             float (&q)[kChunk]) {
  if (!div_rn_fast_ok(v, s)) {
#pragma unroll
    for (int i = 0; i < kChunk; ++i) q[i] = __fdiv_rn(v[i], s);
    return;
  }
  const float r0 = rcp_approx_ftz(s);
  const float r1 = __fmaf_rn(__fmaf_rn(r0, -s, 1.0f), r0, r0);
#pragma unroll
  for (int i = 0; i < kChunk; ++i) {
    const float q0 = __fmaf_rn(v[i], r1, 0.0f);
    const float q1 = __fmaf_rn(__fmaf_rn(q0, -s, v[i]), r1, q0);
    q[i] = (__float_as_uint(v[i]) << 1) == 0u ? v[i] : q1;
  }
}

/// store_fp8_chunk for the engine rule: codes e4m3(RN(v / s)), each value divided by the scale
/// (rules::engine_fp8_quotient, by div_rn_chunk) instead of multiplied by its reciprocal.
__device__ __forceinline__ void store_fp8_chunk_div(uint8_t* __restrict__ p, bool vec, int nvalid,
                                                    const float (&v)[kChunk], float s) {
  float q[kChunk];
  div_rn_chunk(v, s, q);
  store_fp8_chunk(p, vec, nvalid, q, 1.0f);
}

/// Quantized a, b (already scaled) to two E4M3 codes at p (a 2-byte store when `vec`: p even).
__device__ __forceinline__ void store_fp8_pair(uint8_t* __restrict__ p, bool vec, int nvalid,
                                               float a, float b) {
  const uint32_t w = e4m3x2(a, b);
  if (vec && nvalid == 2) {
    *reinterpret_cast<uint16_t*>(p) = static_cast<uint16_t>(w);
  } else {
    p[0] = static_cast<uint8_t>(w);
    if (nvalid > 1) p[1] = static_cast<uint8_t>(w >> 8);
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

}  // namespace qfuse::quant
