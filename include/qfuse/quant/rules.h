// The quantization rules of SPEC §0, written once for the device kernels and the host references.
//
// Every kernel's quantizer policy and every host reference computes scales and codes through these
// functions, so the two cannot drift apart. The only rule with two implementations is the fp32 ->
// E4M3 conversion: the device uses the hardware `cvt.rn.satfinite.e4m3x2.f32`, the host the
// software encoder in reference.h; a GPU test checks that they agree.
//
// Conventions: q = fp8(x * (1 / scale)) with the reciprocal computed once in fp32 (IEEE division);
// dequantized x ~= float(q) * scale. NaN propagates through every max/min below.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#endif

#if defined(__CUDACC__)
#define QFUSE_HD __host__ __device__ __forceinline__
#else
#define QFUSE_HD inline
#endif

namespace qfuse::rules {

constexpr float kFp8Max = 448.0f;
/// Floor of every dynamic FP8 scale: an all-zero group gets zeros and this finite scale.
constexpr float kMinScale = 1.0f / (448.0f * 512.0f);
constexpr float kE2M1Max = 6.0f;
constexpr int kNvfp4Block = 16;

QFUSE_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

QFUSE_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

QFUSE_HD bool is_nan(float x) {
  return x != x;
}

/// max that returns NaN if either argument is NaN (fmaxf would drop it).
QFUSE_HD float nan_max(float a, float b) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  if (is_nan(a) || is_nan(b)) return NAN;
  return a > b ? a : b;
#endif
}

QFUSE_HD float nan_min(float a, float b) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("min.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  if (is_nan(a) || is_nan(b)) return NAN;
  return a < b ? a : b;
#endif
}

/// Smallest power of two >= s, as fp32: 2^ceil(log2 s). Clamped to the UE8M0 range
/// [2^-127, 2^127]; NaN stays NaN.
QFUSE_HD float ue8m0_round_up(float s) {
  if (is_nan(s)) return s;
  const uint32_t bits = float_bits(s) & 0x7fffffffu;
  uint32_t e = bits >> 23;
  const uint32_t m = bits & 0x7fffffu;
  if (e == 0) return m <= 0x400000u ? bits_float(0x400000u) : bits_float(0x800000u);
  if (m != 0) e += 1;
  if (e > 254) e = 254;
  return bits_float(e << 23);
}

/// ue8m0_round_up without branches for what fp8_dynamic_scale rounds: s >= 2^-126 (normal,
/// positive) or NaN. Adding 2^23 - 1 to the bits carries into the exponent exactly when the
/// mantissa is not zero; the exponent is then capped at 254 (2^127).
QFUSE_HD float ue8m0_round_up_normal(float s) {
  const uint32_t up = (float_bits(s) + 0x7fffffu) & 0xff800000u;
  const uint32_t capped = up < 0x7f000000u ? up : 0x7f000000u;
  return is_nan(s) ? s : bits_float(capped);
}

/// The UE8M0 byte of a power of two produced by ue8m0_round_up (NaN -> 0xFF).
QFUSE_HD uint8_t ue8m0_byte(float pow2) {
  if (is_nan(pow2)) return 0xFF;
  const uint32_t bits = float_bits(pow2);
  const uint32_t e = (bits >> 23) & 0xffu;
  return e == 0 ? 0 : static_cast<uint8_t>(e);
}

/// Value of a UE8M0 byte: 2^(b - 127); 0xFF is NaN.
QFUSE_HD float ue8m0_value(uint8_t b) {
  if (b == 0xFF) return NAN;
  return b == 0 ? bits_float(0x400000u) : bits_float(static_cast<uint32_t>(b) << 23);
}

/// Dynamic FP8 scale of a row (per-token) with absolute maximum `amax` (SPEC §0.2): the upper
/// bound applies to the amax (the reference engine's per-token op); per-group kinds bound the
/// scale instead (fp8_group_scale):
///   s = max(min(amax, scale_ub) / 448, kMinScale), clamped to FLT_MAX, optionally rounded up to
///   a power of two. Pass scale_ub = +inf when there is none. NaN amax gives a NaN scale.
/// NOTE: an infinite amax gives FLT_MAX (not inf) so that the group's infinities saturate to
/// +-448 and its finite values flush to 0, instead of every value becoming NaN through inf * 0.
QFUSE_HD float fp8_dynamic_scale(float amax, float scale_ub, bool pow2) {
  float s = nan_min(amax, scale_ub) / kFp8Max;
  s = nan_max(s, kMinScale);
  if (s > FLT_MAX) s = FLT_MAX;
  return pow2 ? ue8m0_round_up_normal(s) : s;  // s >= kMinScale here
}

/// Dynamic FP8 scale of a group of a per-group kind (SPEC §0.2, seed 004's fused SiLU per-block
/// op): the upper bound applies to the scale, not to the amax:
///   s = max(min(amax / 448, scale_ub), kMinScale), clamped to FLT_MAX, optionally rounded up to
///   a power of two. Pass scale_ub = +inf when there is none. NaN amax gives a NaN scale.
QFUSE_HD float fp8_group_scale(float amax, float scale_ub, bool pow2) {
  float s = nan_min(amax / kFp8Max, scale_ub);
  s = nan_max(s, kMinScale);
  if (s > FLT_MAX) s = FLT_MAX;
  return pow2 ? ue8m0_round_up_normal(s) : s;  // s >= kMinScale here
}

/// The reciprocal every FP8 quantizer multiplies by.
QFUSE_HD float fp8_inv_scale(float scale) {
  return 1.0f / scale;
}

/// NVFP4 (SPEC §0.3): the fp32 value whose E4M3 encoding is the block scale `sf`.
QFUSE_HD float nvfp4_sf_input(float global_scale, float block_amax) {
  return global_scale * block_amax / kE2M1Max;
}

/// NVFP4: the factor applied to the block's values, given the decoded block scale.
QFUSE_HD float nvfp4_out_scale(float sf_value, float global_scale) {
  return sf_value == 0.0f ? 0.0f : 1.0f / (sf_value / global_scale);
}

/// RN(1 / x) for a normal x with 2^-125 < |x| < 2^125, without the range check and slow path of
/// IEEE division. The device's form is nvcc's own fast path of rcp.rn (the approximate reciprocal
/// and one Newton step, correctly rounded in that range); the host divides.
QFUSE_HD float rcp_rn_normal(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return fmaf(y, fmaf(-x, y, 1.0f), y);
#else
  return 1.0f / x;
#endif
}

/// RN(a / b) by one correction step (Markstein): given y = RN(1 / b), q = RN(a y) is within one
/// ulp of a / b, the remainder a - b q is exact in an fma, and RN(q + r y) = RN(a / b), as long
/// as nothing over- or underflows. Exact power-of-two scaling of a or b scales every step, so a
/// check of one binade covers every normal quotient (tests/quant: test_numerics, test_convert_gpu).
QFUSE_HD float div_rn_markstein(float a, float b, float y) {
  const float q = a * y;
  return fmaf(fmaf(-b, q, a), y, q);
}

/// The global scales for which nvfp4_sf_input_fma and nvfp4_out_scale_fma are exact: every
/// quotient sf / gs (sf an E4M3 value in [2^-9, 448]) and its reciprocal stay normal.
QFUSE_HD bool nvfp4_fma_scales_ok(float global_scale) {
  return global_scale >= 0x1p-60f && global_scale <= 0x1p60f;  // false for NaN
}

/// nvfp4_sf_input without IEEE division's range check and slow path, for a global scale that
/// passes nvfp4_fma_scales_ok: its E4M3 encoding is the same for every block_amax (NaN and inf
/// included). The product is capped at 2^120 (NaN stays NaN), where the quotient saturates the
/// E4M3 scale either way; below the cap the quotient is RN(x / 6) for every normal result, and
/// the tiny ones (under 2^-120) encode to zero in both forms.
QFUSE_HD float nvfp4_sf_input_fma(float global_scale, float block_amax) {
  const float x = nan_min(global_scale * block_amax, 0x1p120f);
  return div_rn_markstein(x, kE2M1Max, 1.0f / kE2M1Max);  // 1/6 rounded once, at compile time
}

/// nvfp4_out_scale without IEEE division, bit for bit, for a global scale that passes
/// nvfp4_fma_scales_ok and inv_global_scale = rcp_rn_normal(global_scale).
QFUSE_HD float nvfp4_out_scale_fma(float sf_value, float global_scale, float inv_global_scale) {
  const float r = rcp_rn_normal(div_rn_markstein(sf_value, global_scale, inv_global_scale));
#if defined(__CUDA_ARCH__)
  // NOTE: a select; nvcc branched around the reciprocal.
  float out;
  asm("{\n\t.reg .pred z;\n\tsetp.eq.f32 z, %1, 0f00000000;\n\tselp.f32 %0, 0f00000000, %2, z;\n\t}"
      : "=f"(out)
      : "f"(sf_value), "f"(r));
  return out;
#else
  return sf_value == 0.0f ? 0.0f : r;
#endif
}

// ---- The reference engine's rule (QuantRule::kEngine) -------------------------------------
// The arithmetic of the reference engine's kernels behind the drop-in ops (docs/python.md lists
// them and where each differs from the rules above), for the engine-rule cores (quantizer.cuh)
// and the host references alike. Where the engine executes an approximate hardware instruction
// (rcp.approx.ftz, ex2.approx.ftz: MUFU, results not specified bit for bit) the functions take it
// as a parameter: the device passes the instruction; the host references a model by default (the
// correctly rounded value), and the GPU tests pass the device's own results, so that device and
// host compare byte for byte. Everything else here is IEEE arithmetic, exact on both.

/// RN(x / s): the engine's dynamic FP8 ops (per-token, per-group, the fused SiLU per-block op)
/// divide every value by its scale, `x / s` compiled with nvcc's default -prec-div=true, i.e.
/// div.rn.f32. Correctly rounded for every operand (zero, subnormal, infinite, NaN and huge
/// quotients included), on the device through __fdiv_rn whatever the compile flags, on the host
/// by the C++ division (the library is built without -ffast-math).
/// NOTE: not div_rn_markstein with the group's reciprocal (3 instructions a value instead of
/// div.rn's ~8 and a range check): its first quotient RN(x * RN(1/s)) is not always within one
/// ulp of x / s (about 1 % of random operands), so Markstein's theorem does not cover the one
/// correction step; it held on 5e8 random pairs, but that is not a proof.
QFUSE_HD float engine_fp8_quotient(float x, float s) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(x, s);
#else
  return x / s;
#endif
}

/// log2f as nvcc's libdevice computes it (transcribed from its PTX in CUDA 13.0; a GPU test
/// compares it with the device's log2f): the engine rounds UE8M0 scales through it. A polynomial
/// of fma.rn steps, so the host computes the same bits.
QFUSE_HD float engine_log2f(float a) {
  const bool sub = a < bits_float(0x00800000u);  // 2^-126
  const float x = sub ? a * bits_float(0x4B000000u) : a;
  const float ebias = sub ? -23.0f : 0.0f;
  const uint32_t ix = float_bits(x);
  const uint32_t e = (ix - 0x3F3504F3u) & 0xFF800000u;  // exponent relative to sqrt(0.5)
  const float t = bits_float(ix - e) - 1.0f;            // mantissa in [sqrt(0.5), sqrt(2)) - 1
  const float fe =
      fmaf(static_cast<float>(static_cast<int32_t>(e)), bits_float(0x34000000u), ebias);
  float p = fmaf(bits_float(0x3DC6B27Fu), t, bits_float(0xBE2C7F30u));
  p = fmaf(p, t, bits_float(0x3E2FCF2Au));
  p = fmaf(p, t, bits_float(0xBE374E43u));
  p = fmaf(p, t, bits_float(0x3E520BF4u));
  p = fmaf(p, t, bits_float(0xBE763C8Bu));
  p = fmaf(p, t, bits_float(0x3E93BF99u));
  p = fmaf(p, t, bits_float(0xBEB8AA49u));
  p = fmaf(p, t, bits_float(0x3EF6384Au));
  p = fmaf(p, t, bits_float(0xBF38AA3Bu));
  p = t * p;
  p = t * p;
  float r = fe + fmaf(t, bits_float(0x3FB8AA3Bu), p);
  if (!(ix < 0x7F800000u)) r = fmaf(x, INFINITY, INFINITY);  // +inf, NaN, negative
  return x == 0.0f ? -INFINITY : r;
}

/// The engine's UE8M0 rounding of a per-group scale: 2^ceil(log2f(max(|s|, 1e-10f))), with
/// libdevice's log2f (engine_log2f) and an exact 2^n (its exp2f of an integer: ex2.approx of an
/// integer is exact, which a GPU test checks). It differs from ue8m0_round_up where log2f rounds
/// to an integer: a scale a few ulps above 2^k (k <= -5 or k >= 4: 1 ulp for k in [-8, -5], 2 in
/// [-16, -9], 5 in [-32, -17]) rounds down to 2^k, and the group's largest values then saturate.
/// NaN stays NaN and the exponent is capped at 127 (qfuse's policy for NaN and infinite amaxes,
/// SPEC §0.1; the engine's fmaxf would turn a NaN scale into 2^-33 and its exp2f(128) is inf).
QFUSE_HD float engine_ue8m0(float s) {
  if (is_nan(s)) return s;
  const float a = fabsf(s);
  const float l = ceilf(engine_log2f(a > bits_float(0x2EDBE6FFu) ? a : bits_float(0x2EDBE6FFu)));
  const int n = l > 127.0f ? 127 : static_cast<int>(l);  // n >= -33
  return bits_float(static_cast<uint32_t>(n + 127) << 23);
}

/// The engine rule's scale of a per-group FP8 group (before the UE8M0 rounding when pow2):
///   eps > 0: s = min(max(amax, eps) / 448, scale_ub), no scale floor (the engine's
///            per_token_group_fp8_quant: its amax starts at eps; it has no scale_ub);
///   eps = 0: s = max(min(amax / 448, scale_ub), 1 / (448 * 512)), fp8_group_scale's (its
///            silu_and_mul_per_block_quant).
/// Clamped to FLT_MAX and NaN-propagating as fp8_group_scale (qfuse's policy for NaN and
/// infinite amaxes; the engine's fmaxf drops NaN). pow2: engine_ue8m0.
QFUSE_HD float engine_group_scale(float amax, float eps, float scale_ub, bool pow2) {
  float s = eps > 0.0f ? nan_min(nan_max(amax, eps) / kFp8Max, scale_ub)
                       : nan_max(nan_min(amax / kFp8Max, scale_ub), kMinScale);
  if (s > FLT_MAX) s = FLT_MAX;
  return pow2 ? engine_ue8m0(s) : s;
}

/// rcp.approx.ftz.f32, the engine's reciprocal in NVFP4 quantization. Device: the instruction.
/// Host: a model, the correctly rounded reciprocal with subnormal inputs and results flushed to
/// zero (the instruction is within one ulp of it, PTX ISA); references that must match the
/// device bit for bit take the device's values (ref::RefScalars::rcp_approx).
struct RcpApproxFtz {
  QFUSE_HD float operator()(float x) const {
#if defined(__CUDA_ARCH__)
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#else
    if (fabsf(x) < bits_float(0x00800000u)) x = bits_float(float_bits(x) & 0x80000000u);
    const float y = 1.0f / x;
    return fabsf(y) < bits_float(0x00800000u) ? bits_float(float_bits(y) & 0x80000000u) : y;
#endif
  }
};

/// ex2.approx.ftz.f32, inside the engine's expf. Device: the instruction. Host: a model, 2^x
/// rounded once (from fp64), subnormals flushed; the same caveat as RcpApproxFtz.
struct Ex2ApproxFtz {
  QFUSE_HD float operator()(float x) const {
#if defined(__CUDA_ARCH__)
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#else
    if (fabsf(x) < bits_float(0x00800000u)) x = 0.0f;
    const float y = static_cast<float>(std::exp2(static_cast<double>(x)));
    return y < bits_float(0x00800000u) ? 0.0f : y;
#endif
  }
};

/// NVFP4, engine rule: the value whose E4M3 encoding is the block scale,
///   gs * (blockmax * rcp(6)), rcp = rcp.approx.ftz (the engine's order of the products).
template <class Rcp>
QFUSE_HD float engine_nvfp4_sf_input(float global_scale, float block_amax, const Rcp& rcp) {
  return global_scale * (block_amax * rcp(kE2M1Max));
}

/// NVFP4, engine rule: the factor applied to the block's values, given the decoded block scale:
///   sf == 0 ? 0 : rcp(sf * rcp(gs)).
template <class Rcp>
QFUSE_HD float engine_nvfp4_out_scale(float sf_value, float global_scale, const Rcp& rcp) {
  return sf_value != 0.0f ? rcp(sf_value * rcp(global_scale)) : 0.0f;
}

/// 1 + expf(-g) as the engine's SiLU per-block kernel computes it: libdevice's expf (argument
/// reduction by fma, ex2.approx.ftz, a scaling by 2^k) whose last product nvcc fuses with the
/// "+ 1" into one fma (transcribed from the PTX nvcc 13.0 makes of the engine's expression; a GPU
/// test compares it with that expression compiled on the device).
template <class Ex2>
QFUSE_HD float engine_sigmoid_den(float g, const Ex2& ex2) {
  const float a = -g;
  const float r = fmaf(a, bits_float(0x3BBB989Du), 0.5f);
#if defined(__CUDA_ARCH__)
  const float t = __saturatef(r);                                 // cvt.sat: [0, 1], NaN -> 0
  const float j = __fmaf_rd(t, 252.0f, bits_float(0x4B400001u));  // 12582913 + floor(252 t)
#else
  const float t = is_nan(r) ? 0.0f : (r < 0.0f ? 0.0f : (r > 1.0f ? 1.0f : r));
  // NOTE: fma.rm exactly: 252 t is exact in fp64 and the sum stays in [2^23, 2^24), step 1.
  const float j = bits_float(0x4B400001u) + static_cast<float>(std::floor(252.0 * t));
#endif
  const float f = fmaf(a, bits_float(0x32A57060u),
                       fmaf(a, bits_float(0x3FB8AA3Bu), -(j + bits_float(0xCB40007Fu))));
  const float scale = bits_float(float_bits(j) << 23);  // 2^(k - 126), k = floor(252 t)
  return fmaf(ex2(f), scale, 1.0f);
}

/// silu(g) * u as the engine's SiLU per-block kernel computes it: g * RN(1 / (1 + expf(-g))),
/// then times u, each product rounded (SPEC §1's formula in the engine's order of operations).
template <class Ex2>
QFUSE_HD float engine_silu_mul(float g, float u, const Ex2& ex2) {
#if defined(__CUDA_ARCH__)
  const float sig = __frcp_rn(engine_sigmoid_den(g, ex2));
  return __fmul_rn(__fmul_rn(g, sig), u);
#else
  const float sig = 1.0f / engine_sigmoid_den(g, ex2);
  return (g * sig) * u;
#endif
}

/// Round-to-nearest-even E2M1 with saturation to +-6 (SPEC §0.3), as a 4-bit code
/// (sign in bit 3). Magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}; the sign of zero is kept.
/// NaN gives +6 (code 0x7), as the hardware's satfinite conversion on later GPUs does.
/// NOTE: works on the fp32 bits (about 12 instructions instead of 7 compare-and-adds): for
/// |x| >= 1 the E2M1 code is (exponent << 1 | top mantissa bit) - 252 after rounding the mantissa
/// to one bit (ties to even), saturated at 7; below 1 the step is 0.5, so the code is
/// rint(2|x|) in {0, 1, 2}.
QFUSE_HD uint8_t e2m1_encode(float x) {
  const uint32_t bits = float_bits(x);
  const uint32_t abits = bits & 0x7fffffffu;
  const uint32_t rounded = abits + 0x1fffffu + ((abits >> 22) & 1u);
  const uint32_t normal = (rounded >> 22) - 252u;
  // rint(2|x|) for 2|x| < 2: adding 1.5 * 2^23 rounds to an integer (ties to even) that lands
  // in the low mantissa bits; cheaper than a float-to-int conversion on the device.
  const uint32_t sub = float_bits(bits_float(abits) * 2.0f + 12582912.0f) - 0x4B400000u;
  uint32_t code = abits >= 0x3f800000u ? (normal < 7u ? normal : 7u) : sub;
  if (abits > 0x7f800000u) return 0x7;  // NaN
  return static_cast<uint8_t>(((bits >> 28) & 0x8u) | code);
}

/// Eight E2M1 codes in one word, nibble i = e2m1_encode(x[i]) bit for bit (a host test checks
/// every float of the rounding range and samples the rest). The device's NVFP4 quantizer uses it.
/// NOTE: floating-point rounding instead of e2m1_encode's integer work (the integer pipe runs at
/// half rate, and NVFP4 kernels were issue-bound on it). With a = min(|x|, 6), the sum
/// a + M rounds a to the E2M1 step of its binade (ties to even) when ulp(M) is that step:
/// M = 2^22 (step 0.5) below 2, 2^23 above (step 1), 2^24 from 4 (step 2). M also carries 2j
/// extra ulps in binade j (0, 1, 2), so that the low three mantissa bits of the sum are the code
/// itself: k + 2j where k = rounded a / step (an even offset leaves the tie-breaking unchanged).
/// The clamp keeps the sign of zero and maps NaN to +6 (fminf/fmaxf drop a NaN operand).
/// kBelow7: no clamp at all, for |x| < 7 (|x| in [6, 7) rounds to 6 in the step-2 binade).
template <bool kBelow7>
QFUSE_HD uint32_t e2m1_encode8_impl(const float (&x)[8]) {
  uint32_t code = 0, sign[8];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 0; i < 8; ++i) {
    float c;
    if constexpr (kBelow7) {
      c = x[i];
    } else {
#if defined(__CUDA_ARCH__)
      c = fmaxf(fminf(x[i], kE2M1Max), -kE2M1Max);
#else
      // NOTE: glibc's fminf returns NaN for a signalling NaN operand (IEEE minNum); the
      // device's min drops any NaN. Comparisons give the device's result.
      c = x[i] >= -kE2M1Max && x[i] <= kE2M1Max ? x[i] : (x[i] < -kE2M1Max ? -kE2M1Max : kE2M1Max);
#endif
    }
    const float a = fabsf(c);
    const uint32_t e = float_bits(fmaxf(a, 1.0f)) >> 23;             // 127 + j
    const float m = bits_float(e * 0x800002u + (22u << 23) - 254u);  // 2^(22+j) + 2j ulps
    const uint32_t s = float_bits(a + m);                            // ((e + 22) << 23) | code
    // Past nibble 2, the exponent bits of s shift out of the word; below, mask them.
    code += (i < 3 ? s & 7u : s) << (4 * i);
    sign[i] = float_bits(c);
  }
#if defined(__CUDA_ARCH__)
  // Sign bits (bit 31 of each word) gathered with byte permutes: the top bytes of the even
  // elements into one word, of the odd ones into another, then one shift and two masks.
  const uint32_t even = __byte_perm(__byte_perm(sign[0], sign[2], 0x7300),
                                    __byte_perm(sign[4], sign[6], 0x7300), 0x7632);
  const uint32_t odd = __byte_perm(__byte_perm(sign[1], sign[3], 0x7300),
                                   __byte_perm(sign[5], sign[7], 0x7300), 0x7632);
  return code | ((even >> 4) & 0x08080808u) | (odd & 0x80808080u);
#else
  for (int i = 0; i < 8; ++i) code |= (sign[i] >> 31) << (4 * i + 3);
  return code;
#endif
}

QFUSE_HD uint32_t e2m1_encode8(const float (&x)[8]) {
  return e2m1_encode8_impl<false>(x);
}

/// e2m1_encode8 for values with |x| < 7 (so no NaN or infinity): no clamp, two min/max per value
/// fewer (the NVFP4 quantizer's usual case: a block's values scaled by its factor stay below
/// 6 * (1 + 2^-4) unless its scale saturated or is an E4M3 subnormal).
QFUSE_HD uint32_t e2m1_encode8_below7(const float (&x)[8]) {
  return e2m1_encode8_impl<true>(x);
}

/// Value of an E2M1 code (low 4 bits).
QFUSE_HD float e2m1_value(uint8_t code) {
  const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float v = mag[code & 0x7];
  return (code & 0x8) ? -v : v;
}

/// Value of an E4M3 (e4m3fn) code. 0x7F and 0xFF are NaN.
QFUSE_HD float e4m3_value(uint8_t code) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  // NOTE: hardware cvt.rn.f16x2.e4m3x2 (exact: every E4M3 value is an fp16 value).
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(code, __NV_E4M3)));
#endif
  const int sign = code >> 7;
  const int e = (code >> 3) & 0xf;
  const int m = code & 0x7;
  float v;
  if (e == 0xf && m == 0x7) return NAN;
  if (e == 0) {
    v = static_cast<float>(m) * (1.0f / 512.0f);  // m * 2^-9
  } else {
    v = (1.0f + static_cast<float>(m) / 8.0f) *
        bits_float(static_cast<uint32_t>(e - 7 + 127) << 23);
  }
  return sign ? -v : v;
}

/// Byte offset of NVFP4 block scale (m, k) in the 128x4 swizzled layout (SPEC §0.3).
QFUSE_HD int64_t nvfp4_swizzled_offset(int64_t m, int64_t k, int64_t num_k_tiles) {
  return (m / 128) * num_k_tiles * 512 + (k / 4) * 512 + (m % 32) * 16 + ((m % 128) / 32) * 4 +
         k % 4;
}

/// SiLU in fp32: a / (1 + exp(-a)).
/// NOTE: the device divides with __fdividef (reciprocal + multiply, 2 ulp): where 1 + exp(-a)
/// exceeds 2^126 (a < -87) it gives 0 instead of a value below 1e-36.
QFUSE_HD float silu(float a) {
#if defined(__CUDA_ARCH__)
  return __fdividef(a, 1.0f + expf(-a));
#else
  return a / (1.0f + expf(-a));
#endif
}

}  // namespace qfuse::rules
