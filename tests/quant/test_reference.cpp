// Tests of the host quantizers (ref::quantize) on small hand-computed cases, one per kind and
// scale layout. Scales are checked against the formulas of SPEC §0.2/§0.3 written out here; codes
// against hand values and against an independent nearest-value search over the code tables.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>
#include <vector>

#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse {
namespace {

using L = ScaleLayout;
using F = ScaleFormat;

double e4m3_decode(int c) {
  if ((c & 0x7F) == 0x7F) return NAN;
  const int e = (c >> 3) & 0xF, m = c & 7;
  const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
  return (c & 0x80) ? -mag : mag;
}

/// Independent E4M3 encoder: nearest finite code by search, ties to the even code, saturating.
uint8_t e4m3_nearest(float x) {
  if (std::isnan(x)) return 0x7F;
  const double a = std::fabs(static_cast<double>(x));
  int best = 0;
  for (int c = 1; c <= 0x7E; ++c) {
    const double d = std::fabs(e4m3_decode(c) - a), db = std::fabs(e4m3_decode(best) - a);
    if (d < db || (d == db && (c & 1) == 0)) best = c;
  }
  return static_cast<uint8_t>((std::signbit(x) ? 0x80 : 0) | best);
}

/// Independent E2M1 encoder (NaN -> +6 as documented in rules.h).
uint8_t e2m1_nearest(float x) {
  static const double mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  if (std::isnan(x)) return 0x7;
  const double a = std::fabs(static_cast<double>(x));
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const double d = std::fabs(mag[c] - a), db = std::fabs(mag[best] - a);
    if (d < db || (d == db && (c & 1) == 0)) best = c;
  }
  return static_cast<uint8_t>((std::signbit(x) ? 0x8 : 0) | best);
}

float f32_at(const std::vector<uint8_t>& buf, int64_t idx) {
  float f;
  std::memcpy(&f, &buf.at(idx * 4), 4);
  return f;
}

/// A deterministic small filler in [-0.05, 0.05], never zero.
float filler(int64_t t, int64_t c) {
  return 0.01f * static_cast<float>(((t * 7 + c) % 9) - 4) + 0.003f;
}

std::vector<float> filled(int64_t rows, int64_t cols) {
  std::vector<float> y(rows * cols);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < cols; ++c) y[t * cols + c] = filler(t, c);
  return y;
}

/// Checks every code of a dynamic FP8 result against the independent encoder and given scales.
void expect_codes(const std::vector<float>& y, int64_t rows, int64_t cols, int64_t g,
                  const std::vector<std::vector<float>>& scale, const ref::QuantResult& r) {
  ASSERT_EQ(r.out.size(), static_cast<size_t>(rows * cols));
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < cols; ++c) {
      const float inv = 1.0f / scale[t][c / g];
      ASSERT_EQ(r.out[t * cols + c], e4m3_nearest(y[t * cols + c] * inv)) << t << "," << c;
    }
}

TEST(RefQuantize, PerTensorNonUnitScale) {
  const float s = 0.37f;
  const std::vector<float> y = {s * 1.0f,  s * 2.0f, -s * 3.0f, s * 448.0f, s * 0.5f, s * 1.1f,
                                s * 10.0f, 1000.0f,  -1000.0f,  0.0f,       -0.0f,    s * 300.0f};
  ref::RefScalars sc;
  sc.scale = s;
  const auto r = ref::quantize(y.data(), 3, 4, QuantSpec::fp8_per_tensor(), sc);
  EXPECT_EQ(r.out_dtype, DType::kE4M3);
  EXPECT_TRUE(r.scales.empty());
  // 1 -> 0x38, 2 -> 0x40, -3 -> 0xC4, 448 -> 0x7E, 0.5 -> 0x30, 1.1 -> 1.125 (0x39),
  // 10 -> 0x52, saturation 0x7E/0xFE, +-0, 300 -> 288 (0x79).
  const std::vector<uint8_t> want = {0x38, 0x40, 0xC4, 0x7E, 0x30, 0x39,
                                     0x52, 0x7E, 0xFE, 0x00, 0x80, 0x79};
  EXPECT_EQ(r.out, want);
}

TEST(RefQuantize, PerTokenScaleIsAmaxOver448) {
  const std::vector<float> y = {1.0f, -2.0f, 3.5f, 0.5f,  // amax 3.5 -> scale 2^-7
                                0.1f, -0.3f, 0.2f, 0.05f};
  const auto r = ref::quantize(y.data(), 2, 4, QuantSpec::fp8_per_token(), {});
  ASSERT_EQ(r.scales.size(), 2u * 4u);
  EXPECT_EQ(f32_at(r.scales, 0), std::ldexp(1.0f, -7));
  EXPECT_EQ(f32_at(r.scales, 1), 0.3f / 448.0f);
  // Row 0 times 128: 128, -256, 448, 64. Row 1 times 448/0.3: 149.3 -> 144, -448, 298.7 -> 288,
  // 74.7 -> 72.
  const std::vector<uint8_t> want = {0x70, 0xF8, 0x7E, 0x68, 0x71, 0xFE, 0x79, 0x69};
  EXPECT_EQ(r.out, want);
}

TEST(RefQuantize, PerGroupPartialLastGroup) {
  // cols 100, g 64: group 1 has 36 real columns. Row 1 holds a large value near its start that a
  // group reading 64 contiguous columns from row 0's column 64 would pick up.
  const int64_t rows = 2, cols = 100;
  std::vector<float> y = filled(rows, cols);
  y[0 * cols + 10] = 7.0f;     // row 0 group 0: scale 7/448 = 2^-6
  y[0 * cols + 99] = -0.875f;  // row 0 group 1: scale 2^-9
  y[1 * cols + 5] = 100.0f;    // row 1 group 0: scale 100/448
  y[1 * cols + 70] = 3.5f;     // row 1 group 1: scale 2^-7
  const auto r = ref::quantize(y.data(), rows, cols, QuantSpec::fp8_per_group(64), {});
  ASSERT_EQ(r.scales.size(), 2u * 2u * 4u);
  const std::vector<std::vector<float>> s = {{std::ldexp(1.0f, -6), std::ldexp(1.0f, -9)},
                                             {100.0f / 448.0f, std::ldexp(1.0f, -7)}};
  for (int t = 0; t < 2; ++t)
    for (int j = 0; j < 2; ++j) EXPECT_EQ(f32_at(r.scales, t * 2 + j), s[t][j]) << t << "," << j;
  EXPECT_EQ(r.out[0 * cols + 10], 0x7E);
  EXPECT_EQ(r.out[0 * cols + 99], 0xFE);
  EXPECT_EQ(r.out[1 * cols + 70], 0x7E);
  expect_codes(y, rows, cols, 64, s, r);
}

/// rows x (G*128) input whose group (t, j) has amax (t + 1) * (j + 2) * 0.5.
std::vector<float> group_input(int64_t rows, int64_t G, float (*amax)(int64_t, int64_t)) {
  const int64_t cols = G * 128;
  std::vector<float> y = filled(rows, cols);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t j = 0; j < G; ++j) y[t * cols + j * 128 + (t + 3 * j) % 128] = -amax(t, j);
  return y;
}
float amax_linear(int64_t t, int64_t j) {
  return (t + 1) * (j + 2) * 0.5f;
}

TEST(RefQuantize, ColumnMajorScalePositions) {
  for (L layout : {L::kColMajor, L::kColMajorTma}) {
    const int64_t rows = 5, G = 3, cols = G * 128;
    const int64_t ld = layout == L::kColMajorTma ? 8 : 5;
    const auto y = group_input(rows, G, amax_linear);
    const auto r = ref::quantize(y.data(), rows, cols, QuantSpec::fp8_per_group(128, layout), {});
    ASSERT_EQ(r.scales.size(), static_cast<size_t>(G * ld * 4));
    std::vector<std::vector<float>> s(rows, std::vector<float>(G));
    for (int64_t t = 0; t < ld; ++t)
      for (int64_t j = 0; j < G; ++j) {
        if (t < rows) {
          s[t][j] = amax_linear(t, j) / 448.0f;
          EXPECT_EQ(f32_at(r.scales, j * ld + t), s[t][j]) << t << "," << j;
        } else {
          EXPECT_EQ(f32_at(r.scales, j * ld + t), 0.0f) << "TMA padding row " << t;
          for (int b = 0; b < 4; ++b) EXPECT_EQ(r.scales[(j * ld + t) * 4 + b], 0);
        }
      }
    expect_codes(y, rows, cols, 128, s, r);
    ScaleShape shape;
    ASSERT_TRUE(scale_shape(QuantSpec::fp8_per_group(128, layout), rows, cols, &shape).ok());
    EXPECT_EQ(ref::scale_offset(QuantSpec::fp8_per_group(128, layout), shape, 3, 2), 2 * ld + 3);
  }
}

TEST(RefQuantize, Ue8m0Fp32ScalesArePowersOfTwo) {
  const int64_t rows = 1, cols = 3 * 64;
  std::vector<float> y = filled(rows, cols);
  y[5] = 300.0f;  // 300/448 -> 1
  y[64] = -3.5f;  // 3.5/448 = 2^-7 exactly, unchanged
  y[130] = 5.0f;  // 5/448 = 0.0112 -> 2^-6
  const auto r = ref::quantize(y.data(), rows, cols,
                               QuantSpec::fp8_per_group(64, L::kRowMajor, F::kUe8m0F32), {});
  const std::vector<std::vector<float>> s = {{1.0f, std::ldexp(1.0f, -7), std::ldexp(1.0f, -6)}};
  for (int j = 0; j < 3; ++j) EXPECT_EQ(f32_at(r.scales, j), s[0][j]) << j;
  EXPECT_EQ(r.out[5], 0x79);    // 300 -> 288
  EXPECT_EQ(r.out[64], 0xFE);   // -448
  EXPECT_EQ(r.out[130], 0x7A);  // 5 * 64 = 320
  expect_codes(y, rows, cols, 64, s, r);
}

/// Group (t, j) amax 448 * 2^(5t + j - 4): the power-of-two scale is 2^(5t + j - 4) exactly.
float amax_pow2(int64_t t, int64_t j) {
  return 448.0f * std::ldexp(1.0f, static_cast<int>(5 * t + j - 4));
}

TEST(RefQuantize, PackedUe8m0RowMajor) {
  const int64_t rows = 2, G = 5, G4 = 8, cols = G * 128;
  const auto y = group_input(rows, G, amax_pow2);
  const auto r = ref::quantize(y.data(), rows, cols,
                               QuantSpec::fp8_per_group(128, L::kRowMajor, F::kUe8m0Packed), {});
  ASSERT_EQ(r.scales.size(), static_cast<size_t>(rows * G4));
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t j = 0; j < G4; ++j) {
      const int want = j < G ? static_cast<int>(127 + 5 * t + j - 4) : 0;
      EXPECT_EQ(r.scales[t * G4 + j], want) << t << "," << j;
    }
  std::vector<std::vector<float>> s(rows, std::vector<float>(G));
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t j = 0; j < G; ++j) s[t][j] = std::ldexp(1.0f, static_cast<int>(5 * t + j - 4));
  expect_codes(y, rows, cols, 128, s, r);
}

TEST(RefQuantize, PackedUe8m0ColumnMajor) {
  // The DeepGEMM MN-major packed int32 layout: byte ((j/4)*ld + t)*4 + j%4.
  for (L layout : {L::kColMajor, L::kColMajorTma}) {
    const int64_t rows = 5, G = 5, cols = G * 128, ld = layout == L::kColMajorTma ? 8 : 5;
    const auto y = group_input(rows, G, amax_pow2);
    const auto r = ref::quantize(y.data(), rows, cols,
                                 QuantSpec::fp8_per_group(128, layout, F::kUe8m0Packed), {});
    ASSERT_EQ(r.scales.size(), static_cast<size_t>(2 * ld * 4));
    std::vector<int> want(r.scales.size(), 0);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t j = 0; j < G; ++j) want[((j / 4) * ld + t) * 4 + j % 4] = 127 + 5 * t + j - 4;
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(r.scales[i], want[i]) << "byte " << i;
  }
}

TEST(RefQuantize, Nvfp4NonUnitGlobalScale) {
  const float gs = 2.5f;
  const int64_t rows = 2, cols = 32;
  std::vector<float> y(rows * cols, 0.0f);
  // Row 0 block 0: bmax 3 -> sf = e4m3(2.5 * 3 / 6 = 1.25) = 0x3A, out_scale 1/(1.25/2.5) = 2.
  const float b00[16] = {3,    1, -0.75f, 0.3f, 0.4f, 1.25f, 0,     -3,
                         0.1f, 2, -1,     0.6f, 1.5f, 2.5f,  -0.2f, 0.9f};
  // Row 0 block 1: bmax 5 -> sf = e4m3(2.0833) = 2.0 (0x40), out_scale 1/(2/2.5) = 1.25.
  const float b01[16] = {5,     -1.2f, 2.4f, 0.4f, -5,   1,     0.5f, 4,
                         -0.4f, 3,     0,    0.1f, 1.6f, -2.4f, 4.4f, 0.8f};
  for (int i = 0; i < 16; ++i) y[i] = b00[i], y[16 + i] = b01[i];
  for (int i = 0; i < 16; ++i) y[cols + i] = 0.5f * b01[i], y[cols + 16 + i] = 2 * b00[i];
  ref::RefScalars sc;
  sc.scale = gs;
  for (L layout : {L::kNvfp4Swizzled, L::kRowMajor}) {
    const auto r = ref::quantize(y.data(), rows, cols, QuantSpec::nvfp4(layout), sc);
    EXPECT_EQ(r.out_dtype, DType::kE2M1x2);
    ASSERT_EQ(r.out.size(), static_cast<size_t>(rows * cols / 2));
    // Hand-checked codes of row 0 block 0 (x * 2): 6, 2, -1.5, 0.6->0.5, 0.8->1, 2.5->2 (tie).
    EXPECT_EQ(r.out[0], 0x7 | (0x4 << 4));
    EXPECT_EQ(r.out[1], 0xB | (0x1 << 4));
    EXPECT_EQ(r.out[2], 0x2 | (0x4 << 4));
    // Row 0 block 1 (x * 1.25): 6.25->6, -1.5, 3, 0.5.
    EXPECT_EQ(r.out[8], 0x7 | (0xB << 4));
    EXPECT_EQ(r.out[9], 0x5 | (0x1 << 4));
    // Every block against the formula with independent encoders.
    std::vector<uint8_t> sf(rows * 2);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t k = 0; k < 2; ++k) {
        float bmax = 0;
        for (int i = 0; i < 16; ++i) bmax = std::fmax(bmax, std::fabs(y[t * cols + k * 16 + i]));
        sf[t * 2 + k] = e4m3_nearest(gs * bmax / 6.0f);
        const float os = 1.0f / (static_cast<float>(e4m3_decode(sf[t * 2 + k])) / gs);
        for (int i = 0; i < 16; ++i) {
          const int64_t e = t * cols + k * 16 + i;
          const uint8_t code = (r.out[e / 2] >> (4 * (e % 2))) & 0xF;
          EXPECT_EQ(code, e2m1_nearest(y[e] * os)) << t << "," << k << "," << i;
        }
      }
    EXPECT_EQ(sf[0], 0x3A);
    EXPECT_EQ(sf[1], 0x40);
    if (layout == L::kNvfp4Swizzled) {
      ASSERT_EQ(r.scales.size(), 128u * 4u);
      std::vector<uint8_t> want(512, 0);  // (m, k) at m*16 + k for m < 32, k < 4
      for (int m = 0; m < 2; ++m)
        for (int k = 0; k < 2; ++k) want[m * 16 + k] = sf[m * 2 + k];
      EXPECT_EQ(r.scales, want);
    } else {
      EXPECT_EQ(r.scales, sf);
    }
  }
}

TEST(RefQuantize, Nvfp4SwizzledPaddingIsZero) {
  // rows 130 -> 256 padded rows; cols 80 -> 5 scales per row -> 8 columns, numKTiles 2.
  const int64_t rows = 130, cols = 80;
  std::vector<float> y = filled(rows, cols);
  // Block maxima 0.05 * (1 + (5m + k) % 8): eight distinct scale bytes, none zero.
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t k = 0; k < 5; ++k)
      y[m * cols + k * 16 + m % 16] = 0.05f * static_cast<float>(1 + (5 * m + k) % 8);
  ref::RefScalars sc;
  sc.scale = 448.0f * 6.0f / 0.4f;
  const auto r = ref::quantize(y.data(), rows, cols, QuantSpec::nvfp4(), sc);
  ASSERT_EQ(r.scales.size(), 256u * 8u);
  std::set<int64_t> data;
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t k = 0; k < 5; ++k) {
      const int64_t off =
          (m / 128) * 2 * 512 + (k / 4) * 512 + (m % 32) * 16 + ((m % 128) / 32) * 4 + k % 4;
      data.insert(off);
      float bmax = 0;
      for (int i = 0; i < 16; ++i) bmax = std::fmax(bmax, std::fabs(y[m * cols + k * 16 + i]));
      EXPECT_EQ(r.scales[off], e4m3_nearest(sc.scale * bmax / 6.0f)) << m << "," << k;
      EXPECT_NE(r.scales[off], 0);
    }
  EXPECT_EQ(data.count(1552), 1u);  // (129, 4): 1*1024 + 1*512 + 1*16
  for (int64_t i = 0; i < 256 * 8; ++i)
    if (!data.count(i)) {
      EXPECT_EQ(r.scales[i], 0) << "padding byte " << i;
    }
}

TEST(RefQuantize, AllZeroGroupGivesZeroCodesAndMinScale) {
  std::vector<float> y = filled(1, 128);
  for (int c = 0; c < 64; ++c) y[c] = 0.0f;
  const auto r = ref::quantize(y.data(), 1, 128, QuantSpec::fp8_per_group(64), {});
  EXPECT_EQ(f32_at(r.scales, 0), rules::kMinScale);
  EXPECT_EQ(f32_at(r.scales, 0), static_cast<float>(1.0 / (448.0 * 512.0)));
  for (int c = 0; c < 64; ++c) EXPECT_EQ(r.out[c], 0x00) << c;
  float amax1 = 0.0f;
  for (int c = 64; c < 128; ++c) amax1 = std::fmax(amax1, std::fabs(y[c]));
  EXPECT_EQ(f32_at(r.scales, 1), amax1 / 448.0f);
}

TEST(RefQuantize, NaNPoisonsOnlyItsGroup) {
  std::vector<float> y = filled(2, 128);
  y[3] = NAN;
  const auto r = ref::quantize(y.data(), 2, 128, QuantSpec::fp8_per_group(64), {});
  EXPECT_TRUE(std::isnan(f32_at(r.scales, 0)));
  for (int c = 0; c < 64; ++c) EXPECT_EQ(r.out[c] & 0x7F, 0x7F) << c;  // every code NaN
  for (int j : {1, 2, 3}) EXPECT_FALSE(std::isnan(f32_at(r.scales, j))) << j;
  for (int c = 64; c < 256; ++c) EXPECT_NE(r.out[c] & 0x7F, 0x7F) << c;
  // Per-token: the NaN row only.
  const auto p = ref::quantize(y.data(), 2, 128, QuantSpec::fp8_per_token(), {});
  EXPECT_TRUE(std::isnan(f32_at(p.scales, 0)));
  EXPECT_FALSE(std::isnan(f32_at(p.scales, 1)));
  // NVFP4: block scale NaN (0x7F), block codes +6 (rules.h), other blocks unaffected.
  ref::RefScalars sc;
  sc.scale = 3.0f;
  const auto n = ref::quantize(y.data(), 2, 128, QuantSpec::nvfp4(L::kRowMajor), sc);
  EXPECT_EQ(n.scales[0], 0x7F);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(n.out[i], 0x77) << i;
  EXPECT_NE(n.scales[1], 0x7F);
}

TEST(RefQuantize, InfinityGivesMaxScaleAndSaturates) {
  std::vector<float> y = filled(1, 128);
  y[7] = INFINITY;
  y[9] = -INFINITY;
  const auto r = ref::quantize(y.data(), 1, 128, QuantSpec::fp8_per_group(64), {});
  EXPECT_EQ(f32_at(r.scales, 0), FLT_MAX);
  EXPECT_EQ(r.out[7], 0x7E);
  EXPECT_EQ(r.out[9], 0xFE);
  for (int c = 0; c < 64; ++c)
    if (c != 7 && c != 9) {
      EXPECT_EQ(rules::e4m3_value(r.out[c]), 0.0f) << c;
    }
  EXPECT_TRUE(std::isfinite(f32_at(r.scales, 1)));
  EXPECT_LT(f32_at(r.scales, 1), 1.0f);
}

TEST(RefQuantize, ScaleUpperBound) {
  const std::vector<float> y = {1000.0f, 100.0f, -1.0f, 0.5f,    // min(1000, 224)/448 = 0.5
                                10.0f,   -5.0f,  2.0f,  0.25f};  // 10/448, below the bound
  ref::RefScalars sc;
  sc.scale_ub = 224.0f;
  const auto r = ref::quantize(y.data(), 2, 4, QuantSpec::fp8_per_token(), sc);
  EXPECT_EQ(f32_at(r.scales, 0), 0.5f);
  EXPECT_EQ(f32_at(r.scales, 1), 10.0f / 448.0f);
  EXPECT_EQ(r.out[0], 0x7E);  // 2000 saturates
  EXPECT_EQ(r.out[1], 0x74);  // 200: tie between 192 (even) and 208
  EXPECT_EQ(r.out[2], 0xC0);  // -2
  EXPECT_EQ(r.out[3], 0x38);  // 1
  EXPECT_EQ(r.out[4], 0x7E);  // 448
}

// Per-group kinds bound the scale, not the amax (SPEC §0.2): s = max(min(amax / 448, ub),
// min_scale). Bounding the amax instead would give min(1000, 0.5) / 448 here.
TEST(RefQuantize, PerGroupScaleUpperBoundBoundsTheScale) {
  std::vector<float> y(128, 1.0f);
  y[3] = 1000.0f;  // group 0 amax 1000 -> 1000/448 = 2.23 > ub
  for (int c = 64; c < 128; ++c) y[c] = 0.1f * (c - 90);  // group 1 amax 3.7 -> 3.7/448 < ub
  ref::RefScalars sc;
  sc.scale_ub = 0.5f;
  const auto f = ref::quantize(y.data(), 1, 128, QuantSpec::fp8_per_group(64), sc);
  EXPECT_EQ(f32_at(f.scales, 0), 0.5f);
  EXPECT_EQ(f32_at(f.scales, 1), rules::fp8_group_scale(3.7f, 0.5f, false));
  EXPECT_NEAR(f32_at(f.scales, 1), 3.7f / 448.0f, 1e-6f);
  EXPECT_EQ(f.out[3], 0x7E);  // 1000 / 0.5 = 2000 saturates to 448
  EXPECT_EQ(f.out[0], 0x40);  // 1 / 0.5 = 2
  // UE8M0: min(2.23, 0.5) = 0.5 is a power of two already; with ub 0.3: rounded up to 0.5.
  const auto g =
      ref::quantize(y.data(), 1, 128, QuantSpec::fp8_per_group(64, L::kRowMajor, F::kUe8m0F32), sc);
  EXPECT_EQ(f32_at(g.scales, 0), 0.5f);
  sc.scale_ub = 0.3f;
  const auto h =
      ref::quantize(y.data(), 1, 128, QuantSpec::fp8_per_group(64, L::kRowMajor, F::kUe8m0F32), sc);
  EXPECT_EQ(f32_at(h.scales, 0), 0.5f);
  // Per-token keeps bounding the amax: min(1000, 0.5) / 448.
  sc.scale_ub = 0.5f;
  const auto t = ref::quantize(y.data(), 1, 128, QuantSpec::fp8_per_token(), sc);
  EXPECT_EQ(f32_at(t.scales, 0), 0.5f / 448.0f);
}

TEST(RefQuantize, InvalidSpecIsAStatusNotAnException) {
  const std::vector<float> y = {1.0f, 2.0f};
  const QuantSpec bad{QuantKind::kFp8PerGroup, 32, ScaleLayout::kRowMajor, ScaleFormat::kF32};
  const ref::QuantResult r = ref::quantize(y.data(), 1, 2, bad, {});
  EXPECT_EQ(r.status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(r.out.empty());
  EXPECT_TRUE(ref::quantize(y.data(), 1, 2, QuantSpec::fp8_per_token(), {}).status.ok());
}

TEST(RefQuantize, NoneWritesFloatBits) {
  const std::vector<float> y = {1.0f, -2.5f, 0.1f, 65520.0f};
  ref::RefScalars sc;
  auto bits16 = [](const std::vector<uint8_t>& b, int i) {
    return static_cast<uint16_t>(b[2 * i] | (b[2 * i + 1] << 8));
  };
  sc.none_dtype = DType::kBF16;
  auto r = ref::quantize(y.data(), 1, 4, QuantSpec::none(), sc);
  EXPECT_EQ(r.out_dtype, DType::kBF16);
  ASSERT_EQ(r.out.size(), 8u);
  EXPECT_TRUE(r.scales.empty());
  const uint16_t bf[4] = {0x3F80, 0xC020, 0x3DCD, 0x4780};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(bits16(r.out, i), bf[i]) << i;
  sc.none_dtype = DType::kF16;
  r = ref::quantize(y.data(), 1, 4, QuantSpec::none(), sc);
  EXPECT_EQ(r.out_dtype, DType::kF16);
  const uint16_t h[4] = {0x3C00, 0xC100, 0x2E66, 0x7C00};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(bits16(r.out, i), h[i]) << i;
  sc.none_dtype = DType::kF32;
  r = ref::quantize(y.data(), 1, 4, QuantSpec::none(), sc);
  EXPECT_EQ(r.out_dtype, DType::kF32);
  ASSERT_EQ(r.out.size(), 16u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(f32_at(r.out, i), y[i]) << i;
}

}  // namespace
}  // namespace qfuse
