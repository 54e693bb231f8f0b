// Tests of the numeric rules of SPEC §0 (rules.h) and the host encoders (reference.h).
//
// Expectations are computed independently: code tables decoded with ldexp, rounding checked
// against a nearest-value search over those tables (ties to the even code).
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse {
namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// ---- E4M3 --------------------------------------------------------------------------------------

/// E4M3 (e4m3fn) decoded from its definition: bias 7, subnormals m * 2^-9, 0x7F/0xFF NaN.
double e4m3_decode(int c) {
  if ((c & 0x7F) == 0x7F) return NAN;
  const int e = (c >> 3) & 0xF, m = c & 7;
  const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 7 - 3);
  return (c & 0x80) ? -mag : mag;
}

/// Nearest finite E4M3 code by search (ties to the even code), saturating at 448.
uint8_t e4m3_nearest(float x) {
  if (std::isnan(x)) return 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const double a = std::fabs(static_cast<double>(x));
  int best = 0;
  double best_d = INFINITY;
  for (int c = 0; c <= 0x7E; ++c) {
    const double d = std::fabs(e4m3_decode(c) - a);
    if (d < best_d || (d == best_d && (c & 1) == 0)) best = c, best_d = d;
  }
  return static_cast<uint8_t>(sign | best);
}

TEST(E4M3, DecodesAll256Codes) {
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    const float v = rules::e4m3_value(static_cast<uint8_t>(c));
    const double want = e4m3_decode(c);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(v)) << "code " << c;
      ++nans;
      continue;
    }
    EXPECT_EQ(static_cast<double>(v), want) << "code " << c;
    EXPECT_EQ(std::signbit(v), (c & 0x80) != 0) << "code " << c;
  }
  EXPECT_EQ(nans, 2);
  EXPECT_EQ(rules::e4m3_value(0x7E), 448.0f);
  EXPECT_EQ(rules::e4m3_value(0xFE), -448.0f);
  EXPECT_EQ(rules::e4m3_value(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(rules::e4m3_value(0x08), std::ldexp(1.0f, -6));
  EXPECT_EQ(rules::e4m3_value(0x38), 1.0f);
}

TEST(E4M3, EncodeOfEveryValueIsItsCode) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;
    EXPECT_EQ(ref::e4m3_encode(rules::e4m3_value(static_cast<uint8_t>(c))), c) << "code " << c;
  }
  EXPECT_EQ(ref::e4m3_encode(-0.0f), 0x80);
  EXPECT_EQ(ref::e4m3_encode(0.0f), 0x00);
}

TEST(E4M3, TiesToEvenBetweenAdjacentCodes) {
  for (int c = 0; c < 0x7E; ++c) {
    const double lo = e4m3_decode(c), hi = e4m3_decode(c + 1);
    const float mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2) << "midpoint not exact for code " << c;
    const int even = (c & 1) == 0 ? c : c + 1;
    EXPECT_EQ(ref::e4m3_encode(mid), even) << "tie " << mid;
    EXPECT_EQ(ref::e4m3_encode(-mid), 0x80 | even) << "tie " << -mid;
    EXPECT_EQ(ref::e4m3_encode(std::nextafter(mid, INFINITY)), c + 1) << "above " << mid;
    EXPECT_EQ(ref::e4m3_encode(std::nextafter(mid, 0.0f)), c) << "below " << mid;
    EXPECT_EQ(ref::e4m3_encode(-std::nextafter(mid, INFINITY)), 0x80 | (c + 1));
  }
}

TEST(E4M3, Saturation) {
  for (float x : {448.0f, 449.0f, 464.0f, 465.0f, 480.0f, 1e6f, FLT_MAX, INFINITY}) {
    EXPECT_EQ(ref::e4m3_encode(x), 0x7E) << x;
    EXPECT_EQ(ref::e4m3_encode(-x), 0xFE) << -x;
  }
  // Just below 448 the nearest code is still 448; the midpoint with 416 is a tie to even (448).
  EXPECT_EQ(ref::e4m3_encode(432.0f), 0x7E);
  EXPECT_EQ(ref::e4m3_encode(std::nextafter(432.0f, 0.0f)), 0x7D);
}

TEST(E4M3, NaNAndSubnormalBoundaries) {
  EXPECT_EQ(ref::e4m3_encode(NAN), 0x7F);
  EXPECT_TRUE(std::isnan(rules::e4m3_value(ref::e4m3_encode(-NAN))));
  EXPECT_TRUE(std::isnan(rules::e4m3_value(ref::e4m3_encode(from_bits(0x7F800001u)))));
  const float q = std::ldexp(1.0f, -10);  // half of the smallest subnormal 2^-9
  EXPECT_EQ(ref::e4m3_encode(q), 0x00);   // tie -> even (0)
  EXPECT_EQ(ref::e4m3_encode(-q), 0x80);
  EXPECT_EQ(ref::e4m3_encode(std::nextafter(q, 1.0f)), 0x01);
  EXPECT_EQ(ref::e4m3_encode(3 * q), 0x02);   // 1.5 * 2^-9: tie between 1 and 2 -> 2
  EXPECT_EQ(ref::e4m3_encode(15 * q), 0x08);  // 7.5 * 2^-9: tie between 7 and 8 -> 8 (2^-6)
  EXPECT_EQ(ref::e4m3_encode(FLT_TRUE_MIN), 0x00);
  EXPECT_EQ(ref::e4m3_encode(-FLT_TRUE_MIN), 0x80);
  EXPECT_EQ(ref::e4m3_encode(1e-30f), 0x00);
}

TEST(E4M3, RandomValuesMatchNearestSearch) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> expo(-14.0f, 10.0f);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  for (int i = 0; i < 20000; ++i) {
    float x = std::ldexp(mant(rng), static_cast<int>(std::floor(expo(rng))));
    if (i & 1) x = -x;
    ASSERT_EQ(ref::e4m3_encode(x), e4m3_nearest(x)) << x;
  }
}

// ---- E2M1 --------------------------------------------------------------------------------------

const double kE2M1Mag[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};

TEST(E2M1, DecodesAll16Codes) {
  for (int c = 0; c < 16; ++c) {
    const double want = (c & 8) ? -kE2M1Mag[c & 7] : kE2M1Mag[c & 7];
    EXPECT_EQ(static_cast<double>(rules::e2m1_value(static_cast<uint8_t>(c))), want) << c;
    // Only the low 4 bits count.
    EXPECT_EQ(rules::e2m1_value(static_cast<uint8_t>(c | 0xF0)),
              rules::e2m1_value(static_cast<uint8_t>(c)));
  }
  for (int c = 0; c < 16; ++c) {
    EXPECT_EQ(rules::e2m1_encode(rules::e2m1_value(static_cast<uint8_t>(c))), c) << c;
  }
}

TEST(E2M1, NamedBoundaries) {
  struct Case {
    float x;
    uint8_t code;
  };
  // Ties go to the even code: 0.25->0, 0.75->1.0, 1.25->1.0, 1.75->2.0, 2.5->2.0, 3.5->4.0, 5->4.
  for (const Case& c :
       {Case{0.25f, 0}, Case{0.75f, 2}, Case{1.25f, 2}, Case{1.75f, 4}, Case{2.5f, 4},
        Case{3.5f, 6}, Case{5.0f, 6}, Case{0.3f, 1}, Case{2.6f, 5}, Case{5.1f, 7}}) {
    EXPECT_EQ(rules::e2m1_encode(c.x), c.code) << c.x;
    EXPECT_EQ(rules::e2m1_encode(-c.x), c.code | 0x8) << -c.x;
  }
}

TEST(E2M1, EveryMidpointTiesToEvenAndNeighboursGoToTheNearer) {
  for (int c = 0; c < 7; ++c) {
    const float mid = static_cast<float>((kE2M1Mag[c] + kE2M1Mag[c + 1]) / 2);
    const int even = (c & 1) == 0 ? c : c + 1;
    EXPECT_EQ(rules::e2m1_encode(mid), even) << mid;
    EXPECT_EQ(rules::e2m1_encode(std::nextafter(mid, INFINITY)), c + 1) << mid;
    EXPECT_EQ(rules::e2m1_encode(std::nextafter(mid, 0.0f)), c) << mid;
    EXPECT_EQ(rules::e2m1_encode(-std::nextafter(mid, INFINITY)), 0x8 | (c + 1)) << mid;
    EXPECT_EQ(rules::e2m1_encode(-std::nextafter(mid, 0.0f)), 0x8 | c) << mid;
  }
}

TEST(E2M1, SaturationNaNAndSignedZero) {
  for (float x : {6.0f, 6.5f, 7.0f, 1e9f, FLT_MAX, INFINITY}) {
    EXPECT_EQ(rules::e2m1_encode(x), 0x7) << x;
    EXPECT_EQ(rules::e2m1_encode(-x), 0xF) << -x;
  }
  EXPECT_EQ(rules::e2m1_encode(NAN), 0x7);  // documented in rules.h: NaN -> +6
  EXPECT_EQ(rules::e2m1_encode(0.0f), 0x0);
  EXPECT_EQ(rules::e2m1_encode(-0.0f), 0x8);
  EXPECT_EQ(rules::e2m1_encode(-0.1f), 0x8);
  EXPECT_EQ(rules::e2m1_encode(-0.25f), 0x8);
  EXPECT_EQ(rules::e2m1_encode(0.1f), 0x0);
}

/// e2m1_encode8 (and e2m1_encode8_below7 where every |x| < 7) against the scalar encoder for 8
/// consecutive bit patterns from `first`; returns the number of mismatching nibbles (and reports
/// the first).
int encode8_mismatches(uint32_t first) {
  float x[8];
  bool below7 = true;
  for (int i = 0; i < 8; ++i) {
    x[i] = from_bits(first + static_cast<uint32_t>(i));
    below7 = below7 && std::fabs(x[i]) < 7.0f;  // false for NaN
  }
  int bad = 0;
  for (int variant = 0; variant < (below7 ? 2 : 1); ++variant) {
    const uint32_t w = variant == 0 ? rules::e2m1_encode8(x) : rules::e2m1_encode8_below7(x);
    for (int i = 0; i < 8; ++i) {
      const uint32_t want = rules::e2m1_encode(x[i]);
      const uint32_t got = (w >> (4 * i)) & 0xf;
      if (got != want && bad++ == 0)
        ADD_FAILURE() << (variant ? "below7 " : "") << "bits 0x" << std::hex << to_bits(x[i])
                      << " lane " << std::dec << i << ": got " << got << ", want " << want;
    }
  }
  return bad;
}

TEST(E2M1, EightWideEncoderMatchesScalarOnEveryFloatOfTheRoundingRange) {
  // Every float with 0.25 <= |x| < 8 (all rounding boundaries and the saturation edge), both
  // signs, in every lane position.
  int bad = 0;
  for (uint32_t sign : {0u, 0x80000000u})
    for (uint32_t b = 0x3e800000u; b < 0x41000000u && bad == 0; b += 8)
      bad += encode8_mismatches(sign | b);
  EXPECT_EQ(bad, 0);
}

TEST(E2M1, EightWideEncoderMatchesScalarOnSamplesAndSpecials) {
  int bad = 0;
  // A stride prime to 8 puts each sampled pattern in every lane position over the sweep.
  for (uint64_t b = 0; b < (1ull << 32) && bad < 4; b += 4099)
    bad += encode8_mismatches(static_cast<uint32_t>(b));
  // Zeros, denormals, the largest finite values, infinities and NaNs of both signs (the run of 8
  // from each start covers the neighbours).
  for (uint32_t b : {0x00000000u, 0x80000000u, 0x007ffff8u, 0x807ffff8u, 0x7f7ffff8u, 0xff7ffff8u,
                     0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u, 0x7ffffff8u, 0xfffffff8u})
    bad += encode8_mismatches(b);
  EXPECT_EQ(bad, 0);
}

// ---- NVFP4 swizzled scale layout ---------------------------------------------------------------

/// The 128x4 tile as [32][4][4] bytes: (row % 32, row / 32 within the tile, k % 4).
int64_t swizzle_by_tiles(int64_t m, int64_t k, int64_t num_k_tiles) {
  const int64_t tile = (m / 128) * num_k_tiles + k / 4;
  const int64_t r = m % 128;
  return tile * 512 + ((r % 32) * 4 + r / 32) * 4 + k % 4;
}

TEST(Nvfp4Swizzle, WorkedExampleOfSpec) {
  // 5 rows, n = 512 -> 32 scales per row -> numKTiles = 8, buffer 128 x 32 = 4096 bytes.
  const int64_t K = 512 / 16, num_k_tiles = (K + 3) / 4;
  ASSERT_EQ(num_k_tiles, 8);
  EXPECT_EQ(rules::nvfp4_swizzled_offset(3, 9, num_k_tiles), 1073);
  std::set<int64_t> seen;
  for (int64_t m = 0; m < 5; ++m)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t off = rules::nvfp4_swizzled_offset(m, k, num_k_tiles);
      EXPECT_LT(off, 4096);
      EXPECT_EQ(off, swizzle_by_tiles(m, k, num_k_tiles));
      seen.insert(off);
    }
  EXPECT_EQ(seen.size(), 5u * 32u);
}

TEST(Nvfp4Swizzle, BijectionOverAPaddedBuffer) {
  const int64_t rows = 256, cols = 12, num_k_tiles = 3;
  std::vector<int> hits(rows * cols, 0);
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t k = 0; k < cols; ++k) {
      const int64_t off = rules::nvfp4_swizzled_offset(m, k, num_k_tiles);
      ASSERT_GE(off, 0);
      ASSERT_LT(off, rows * cols);
      EXPECT_EQ(off, swizzle_by_tiles(m, k, num_k_tiles)) << m << "," << k;
      ++hits[off];
    }
  for (int64_t i = 0; i < rows * cols; ++i) EXPECT_EQ(hits[i], 1) << "offset " << i;
}

// ---- UE8M0 -------------------------------------------------------------------------------------

TEST(Ue8m0, RoundUp) {
  for (int k = -127; k <= 127; ++k) {
    const float p = std::ldexp(1.0f, k);
    EXPECT_EQ(rules::ue8m0_round_up(p), p) << "2^" << k;
    if (k >= -126 && k < 127) {  // p * (1 + 2^-23) is the next float above a normal p
      EXPECT_EQ(rules::ue8m0_round_up(std::nextafter(p, INFINITY)), 2 * p) << "2^" << k << "+";
    }
  }
  EXPECT_EQ(rules::ue8m0_round_up(3.0f), 4.0f);
  EXPECT_EQ(rules::ue8m0_round_up(0.3f), 0.5f);
  EXPECT_EQ(rules::ue8m0_round_up(0.75f), 1.0f);
  EXPECT_EQ(rules::ue8m0_round_up(1000.0f), 1024.0f);
  EXPECT_EQ(rules::ue8m0_round_up(std::nextafter(1.0f, 0.0f)), 1.0f);
  EXPECT_TRUE(std::isnan(rules::ue8m0_round_up(NAN)));
}

TEST(Ue8m0, BranchFreeRoundUpMatchesOnEveryNormalBinadeEdgeAndSamples) {
  // Every mantissa of two binades, the neighbours of every power of two from 2^-126 to 2^127,
  // FLT_MAX, infinity and NaN.
  std::vector<uint32_t> bits;
  for (uint32_t m = 0; m < (1u << 23); ++m) {
    bits.push_back((120u << 23) | m);
    bits.push_back((254u << 23) | m);
  }
  for (uint32_t e = 1; e < 255; ++e)
    for (uint32_t d : {0u, 1u, 2u, 0x400000u, 0x7ffffeu, 0x7fffffu}) bits.push_back((e << 23) | d);
  int bad = 0;
  for (uint32_t b : bits) {
    const float s = from_bits(b), got = rules::ue8m0_round_up_normal(s);
    const float want = rules::ue8m0_round_up(s);
    if (to_bits(got) != to_bits(want) && bad++ < 5)
      ADD_FAILURE() << std::hex << "bits 0x" << b << ": got 0x" << to_bits(got) << ", want 0x"
                    << to_bits(want);
  }
  EXPECT_EQ(bad, 0);
  EXPECT_TRUE(std::isnan(rules::ue8m0_round_up_normal(NAN)));
}

TEST(Ue8m0, DenormalAndHugeInputsAreClamped) {
  const float lo = std::ldexp(1.0f, -127), hi = std::ldexp(1.0f, 127);
  EXPECT_EQ(rules::ue8m0_round_up(0.0f), lo);
  EXPECT_EQ(rules::ue8m0_round_up(FLT_TRUE_MIN), lo);
  EXPECT_EQ(rules::ue8m0_round_up(std::ldexp(1.0f, -140)), lo);
  EXPECT_EQ(rules::ue8m0_round_up(std::ldexp(1.0f, -127)), lo);
  EXPECT_EQ(rules::ue8m0_round_up(std::nextafter(lo, 1.0f)), std::ldexp(1.0f, -126));
  EXPECT_EQ(rules::ue8m0_round_up(std::ldexp(3.0f, -128)), std::ldexp(1.0f, -126));
  EXPECT_EQ(rules::ue8m0_round_up(std::ldexp(1.5f, 127)), hi);
  EXPECT_EQ(rules::ue8m0_round_up(FLT_MAX), hi);
  EXPECT_EQ(rules::ue8m0_round_up(INFINITY), hi);
}

TEST(Ue8m0, ByteAndValueRoundTrip) {
  for (int b = 0; b < 255; ++b) {
    const float v = rules::ue8m0_value(static_cast<uint8_t>(b));
    EXPECT_EQ(v, std::ldexp(1.0f, b - 127)) << b;
    EXPECT_EQ(rules::ue8m0_byte(v), b) << b;
  }
  EXPECT_TRUE(std::isnan(rules::ue8m0_value(0xFF)));
  EXPECT_EQ(rules::ue8m0_byte(NAN), 0xFF);
  EXPECT_EQ(rules::ue8m0_byte(rules::ue8m0_round_up(3.0f)), 129);  // 4 = 2^(129 - 127)
}

// ---- dynamic FP8 scale -------------------------------------------------------------------------

TEST(Fp8DynamicScale, Basics) {
  EXPECT_EQ(rules::kMinScale, static_cast<float>(1.0 / (448.0 * 512.0)));
  EXPECT_EQ(rules::fp8_dynamic_scale(0.0f, INFINITY, false), rules::kMinScale);
  EXPECT_EQ(rules::fp8_dynamic_scale(1e-4f, INFINITY, false), rules::kMinScale);
  EXPECT_EQ(rules::fp8_dynamic_scale(448.0f, INFINITY, false), 1.0f);
  EXPECT_EQ(rules::fp8_dynamic_scale(3.7f, INFINITY, false), 3.7f / 448.0f);
  EXPECT_EQ(rules::fp8_dynamic_scale(INFINITY, INFINITY, false), FLT_MAX);
  EXPECT_TRUE(std::isnan(rules::fp8_dynamic_scale(NAN, INFINITY, false)));
  EXPECT_TRUE(std::isnan(rules::fp8_dynamic_scale(NAN, 1.0f, true)));
}

TEST(Fp8DynamicScale, UpperBound) {
  EXPECT_EQ(rules::fp8_dynamic_scale(1000.0f, 224.0f, false), 0.5f);
  EXPECT_EQ(rules::fp8_dynamic_scale(100.0f, 224.0f, false), 100.0f / 448.0f);
  EXPECT_EQ(rules::fp8_dynamic_scale(INFINITY, 224.0f, false), 0.5f);
  EXPECT_EQ(rules::fp8_dynamic_scale(0.0f, 224.0f, false), rules::kMinScale);
}

TEST(Fp8DynamicScale, PowerOfTwo) {
  EXPECT_EQ(rules::fp8_dynamic_scale(300.0f, INFINITY, true), 1.0f);  // 0.67 -> 1
  EXPECT_EQ(rules::fp8_dynamic_scale(448.0f, INFINITY, true), 1.0f);
  EXPECT_EQ(rules::fp8_dynamic_scale(449.0f, INFINITY, true), 2.0f);
  EXPECT_EQ(rules::fp8_dynamic_scale(1.0f, INFINITY, true), std::ldexp(1.0f, -8));   // 1/448
  EXPECT_EQ(rules::fp8_dynamic_scale(0.0f, INFINITY, true), std::ldexp(1.0f, -17));  // 1/229376
  EXPECT_EQ(rules::fp8_dynamic_scale(1000.0f, 224.0f, true), 0.5f);
  EXPECT_EQ(rules::fp8_dynamic_scale(INFINITY, INFINITY, true), std::ldexp(1.0f, 127));
  // Per-group: the bound is on the scale.
  EXPECT_EQ(rules::fp8_group_scale(1000.0f, 0.5f, false), 0.5f);
  EXPECT_EQ(rules::fp8_group_scale(100.0f, 0.5f, false), 100.0f / 448.0f);
  EXPECT_EQ(rules::fp8_group_scale(INFINITY, 0.5f, false), 0.5f);
  EXPECT_EQ(rules::fp8_group_scale(0.0f, 0.5f, false), rules::kMinScale);
  EXPECT_EQ(rules::fp8_group_scale(1000.0f, 1e-9f, false), rules::kMinScale);
  EXPECT_EQ(rules::fp8_group_scale(INFINITY, INFINITY, false), FLT_MAX);
  EXPECT_TRUE(std::isnan(rules::fp8_group_scale(NAN, 0.5f, true)));
  EXPECT_EQ(rules::fp8_group_scale(1000.0f, 0.3f, true), 0.5f);
  for (float a : {0.0f, 1e-3f, 1.0f, 300.0f, 448.0f, 449.0f, 1e30f})
    for (bool pow2 : {false, true})
      EXPECT_EQ(rules::fp8_group_scale(a, INFINITY, pow2),
                rules::fp8_dynamic_scale(a, INFINITY, pow2))
          << "without a bound the two rules agree, amax " << a;
}

// ---- NVFP4 block scale without IEEE division (what the device quantizer uses) ---------------

bool same_float(float a, float b) {
  return to_bits(a) == to_bits(b) || (std::isnan(a) && std::isnan(b));
}

TEST(Nvfp4BlockScale, DivisionFreeScaleInputIsExactOnEveryFloatOfABinade) {
  EXPECT_EQ(to_bits(1.0f / 6.0f), 0x3E2AAAABu);  // the reciprocal the correction step needs
  // Every float of [1, 2): each step of the division scales exactly with a power of two, so
  // this covers every normal quotient.
  int bad = 0;
  for (uint32_t b = 0x3F800000u; b < 0x40000000u; ++b) {
    const float x = from_bits(b);
    if (!same_float(rules::nvfp4_sf_input_fma(1.0f, x), rules::nvfp4_sf_input(1.0f, x)) &&
        bad++ < 3)
      ADD_FAILURE() << "x = " << x;
  }
  EXPECT_EQ(bad, 0);
}

TEST(Nvfp4BlockScale, DivisionFreeScaleInputEncodesAlikeForEveryAmaxAndUsualGlobalScale) {
  // The E4M3 scale of a block, for a sweep of every amax bit pattern (NaN, infinities,
  // subnormals included) and global scales across and at the ends of the allowed range.
  int bad = 0;
  for (float gs : {1.0f, 0.0917f, 1337.5f, 0x1p-60f, 0x1p60f, 3.0e-12f, 7.7e15f}) {
    ASSERT_TRUE(rules::nvfp4_fma_scales_ok(gs)) << gs;
    for (uint64_t b = 0; b < (1ull << 32); b += 4099) {
      const float amax = std::fabs(from_bits(static_cast<uint32_t>(b)));
      const uint8_t want = ref::e4m3_encode(rules::nvfp4_sf_input(gs, amax));
      const uint8_t got = ref::e4m3_encode(rules::nvfp4_sf_input_fma(gs, amax));
      if (got != want && bad++ < 3)
        ADD_FAILURE() << "gs " << gs << " amax " << amax << ": " << int(got) << " vs " << int(want);
    }
    for (float amax : {0.0f, 1e-45f, FLT_MIN, FLT_MAX, INFINITY, NAN})
      EXPECT_EQ(ref::e4m3_encode(rules::nvfp4_sf_input_fma(gs, amax)),
                ref::e4m3_encode(rules::nvfp4_sf_input(gs, amax)))
          << "gs " << gs << " amax " << amax;
  }
  EXPECT_EQ(bad, 0);
}

TEST(Nvfp4BlockScale, DivisionFreeFactorMatchesForEveryScaleCode) {
  // Every E4M3 scale the quantizer can produce (0, NaN and all positive values) against a sample
  // of global scales: every 61st float of [1, 2) and random ones over the allowed range. (The
  // device's reciprocal is checked on every float of a binade by test_convert_gpu.)
  std::vector<float> gs;
  for (uint32_t b = 0x3F800000u; b < 0x40000000u; b += 61) gs.push_back(from_bits(b));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> e(-60.0f, 60.0f);
  for (int i = 0; i < 20000; ++i) gs.push_back(std::exp2(e(rng)));
  for (float g : {0x1p-60f, 0x1p60f}) gs.push_back(g);
  int bad = 0;
  for (float g : gs) {
    ASSERT_TRUE(rules::nvfp4_fma_scales_ok(g)) << g;
    const float inv = rules::rcp_rn_normal(g);
    for (int c = 0; c <= 0x7F; ++c) {
      const float sf = rules::e4m3_value(static_cast<uint8_t>(c));
      if (!same_float(rules::nvfp4_out_scale_fma(sf, g, inv), rules::nvfp4_out_scale(sf, g)) &&
          bad++ < 3)
        ADD_FAILURE() << "gs " << g << " code " << c;
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(Nvfp4BlockScale, RangeOfTheDivisionFreeForm) {
  EXPECT_TRUE(rules::nvfp4_fma_scales_ok(0x1p-60f));
  EXPECT_TRUE(rules::nvfp4_fma_scales_ok(0x1p60f));
  EXPECT_FALSE(rules::nvfp4_fma_scales_ok(std::nextafter(0x1p-60f, 0.0f)));
  EXPECT_FALSE(rules::nvfp4_fma_scales_ok(std::nextafter(0x1p60f, INFINITY)));
  for (float g : {0.0f, -1.0f, INFINITY, NAN, -NAN})
    EXPECT_FALSE(rules::nvfp4_fma_scales_ok(g)) << g;
}

TEST(NanMinMax, PropagateFromEitherSide) {
  EXPECT_TRUE(std::isnan(rules::nan_max(NAN, 1.0f)));
  EXPECT_TRUE(std::isnan(rules::nan_max(1.0f, NAN)));
  EXPECT_TRUE(std::isnan(rules::nan_min(NAN, 1.0f)));
  EXPECT_TRUE(std::isnan(rules::nan_min(1.0f, NAN)));
  EXPECT_EQ(rules::nan_max(1.0f, 2.0f), 2.0f);
  EXPECT_EQ(rules::nan_max(2.0f, 1.0f), 2.0f);
  EXPECT_EQ(rules::nan_min(1.0f, 2.0f), 1.0f);
  EXPECT_EQ(rules::nan_min(2.0f, 1.0f), 1.0f);
  EXPECT_EQ(rules::nan_max(-INFINITY, 0.0f), 0.0f);
}

// ---- bf16 / fp16 -------------------------------------------------------------------------------

/// Nearest bf16 by comparing the two truncation candidates in fp64, ties to the even pattern.
uint16_t bf16_nearest(float f) {
  const uint32_t u = to_bits(f);
  const uint32_t lo = u & 0xFFFF0000u, hi = lo + 0x10000u;
  const double dl = std::fabs(static_cast<double>(from_bits(lo)) - f);
  const double dh = std::fabs(static_cast<double>(from_bits(hi)) - f);
  if (dl < dh || (dl == dh && ((lo >> 16) & 1) == 0)) return static_cast<uint16_t>(lo >> 16);
  return static_cast<uint16_t>(hi >> 16);
}

TEST(Bf16, RoundToNearestEven) {
  EXPECT_EQ(ref::bf16_bits(1.0f), 0x3F80);
  EXPECT_EQ(ref::bf16_bits(-1.5f), 0xBFC0);
  EXPECT_EQ(ref::bf16_bits(from_bits(0x3F808000u)), 0x3F80);  // tie, even below
  EXPECT_EQ(ref::bf16_bits(from_bits(0x3F818000u)), 0x3F82);  // tie, even above
  EXPECT_EQ(ref::bf16_bits(from_bits(0x3F808001u)), 0x3F81);
  EXPECT_EQ(ref::bf16_bits(from_bits(0x3F807FFFu)), 0x3F80);
  EXPECT_EQ(ref::bf16_bits(FLT_MAX), 0x7F80);  // rounds up to inf
  EXPECT_EQ(ref::bf16_bits(from_bits(0x7F7F7FFFu)), 0x7F7F);
  EXPECT_EQ(ref::bf16_bits(INFINITY), 0x7F80);
  EXPECT_EQ(ref::bf16_bits(-INFINITY), 0xFF80);
  EXPECT_EQ(ref::bf16_bits(from_bits(0x00010000u)), 0x0001);  // fp32 subnormal kept
  EXPECT_TRUE(std::isnan(ref::bf16_value(ref::bf16_bits(NAN))));
  // A NaN whose payload sits only in the dropped bits must not become inf.
  EXPECT_TRUE(std::isnan(ref::bf16_value(ref::bf16_bits(from_bits(0x7F800001u)))));
  EXPECT_TRUE(std::isnan(ref::bf16_value(ref::bf16_bits(from_bits(0xFF800001u)))));
  std::mt19937 rng(7);
  for (int i = 0; i < 100000; ++i) {
    const float f = from_bits(static_cast<uint32_t>(rng()));
    if (std::isnan(f) || std::isinf(f) || std::fabs(f) > from_bits(0x7F7F7FFFu)) continue;
    ASSERT_EQ(ref::bf16_bits(f), bf16_nearest(f)) << std::hex << to_bits(f);
  }
}

TEST(Bf16, ValueAndRoundTrip) {
  EXPECT_EQ(ref::bf16_value(0x3F80), 1.0f);
  EXPECT_EQ(ref::bf16_value(0xC040), -3.0f);
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float v = ref::bf16_value(static_cast<uint16_t>(b));
    EXPECT_EQ(to_bits(v), b << 16);
    if (!std::isnan(v)) {
      ASSERT_EQ(ref::bf16_bits(v), b);
    }
  }
}

/// fp16 decoded from its definition: bias 15, subnormals m * 2^-24.
double f16_decode(uint32_t h) {
  const int e = (h >> 10) & 0x1F, m = h & 0x3FF;
  double v;
  if (e == 31)
    v = m ? NAN : INFINITY;
  else
    v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 15 - 10);
  return (h & 0x8000) ? -v : v;
}

/// Nearest fp16 by binary search over the monotone positive finite codes; >= 65520 -> inf.
uint16_t f16_nearest(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return sign | 0x7C00;
  uint32_t lo = 0, hi = 0x7BFF;  // largest code with value <= a
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) / 2;
    if (f16_decode(mid) <= a)
      lo = mid;
    else
      hi = mid - 1;
  }
  if (lo == 0x7BFF) return sign | 0x7BFF;
  const double dl = a - f16_decode(lo), dh = f16_decode(lo + 1) - a;
  const uint32_t c = (dl < dh || (dl == dh && (lo & 1) == 0)) ? lo : lo + 1;
  return static_cast<uint16_t>(sign | c);
}

TEST(F16, NamedCases) {
  EXPECT_EQ(ref::f16_bits(1.0f), 0x3C00);
  EXPECT_EQ(ref::f16_bits(-2.0f), 0xC000);
  EXPECT_EQ(ref::f16_bits(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie, even below
  EXPECT_EQ(ref::f16_bits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie, even above
  EXPECT_EQ(ref::f16_bits(65504.0f), 0x7BFF);
  EXPECT_EQ(ref::f16_bits(65519.0f), 0x7BFF);
  EXPECT_EQ(ref::f16_bits(65520.0f), 0x7C00);  // tie between 65504 and 2^16 -> inf
  EXPECT_EQ(ref::f16_bits(-65520.0f), 0xFC00);
  EXPECT_EQ(ref::f16_bits(1e6f), 0x7C00);
  EXPECT_EQ(ref::f16_bits(INFINITY), 0x7C00);
  EXPECT_EQ(ref::f16_bits(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(ref::f16_bits(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(ref::f16_bits(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(ref::f16_bits(std::ldexp(1.0f, -25)), 0x0000);     // tie -> 0
  EXPECT_EQ(ref::f16_bits(std::ldexp(3.0f, -25)), 0x0002);     // 1.5 units: tie -> 2
  EXPECT_EQ(ref::f16_bits(std::ldexp(1023.5f, -24)), 0x0400);  // rounds into the normals
  EXPECT_EQ(ref::f16_bits(-0.0f), 0x8000);
  const uint16_t n = ref::f16_bits(NAN);
  EXPECT_EQ(n & 0x7C00, 0x7C00);
  EXPECT_NE(n & 0x03FF, 0);
  EXPECT_TRUE(std::isnan(ref::f16_value(ref::f16_bits(from_bits(0x7F800001u)))));
}

TEST(F16, RandomValuesMatchNearestSearch) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> expo(-27.0f, 17.0f);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  for (int i = 0; i < 50000; ++i) {
    float f = std::ldexp(mant(rng), static_cast<int>(std::floor(expo(rng))));
    if (i & 1) f = -f;
    ASSERT_EQ(ref::f16_bits(f), f16_nearest(f)) << f;
  }
}

TEST(F16, ValueOfEveryCodeAndRoundTrip) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float v = ref::f16_value(static_cast<uint16_t>(h));
    const double want = f16_decode(h);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(v)) << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(v), want) << h;
    ASSERT_EQ(std::signbit(v), (h & 0x8000) != 0) << h;
    ASSERT_EQ(ref::f16_bits(v), h) << h;
  }
}

}  // namespace
}  // namespace qfuse
