// Tests of the quantization vocabulary (kind.h): string forms, validation, scale-buffer shapes.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "qfuse/quant/kind.h"

namespace qfuse {
namespace {

using L = ScaleLayout;
using F = ScaleFormat;

TEST(QuantSpec, AllSpecsAreValidDistinctAndRoundTrip) {
  const std::vector<QuantSpec> all = all_quant_specs();
  // none, per-tensor, per-token, 2 group sizes x 3 layouts x 3 formats, 2 NVFP4 layouts.
  EXPECT_EQ(all.size(), 3u + 2u * 3u * 3u + 2u);
  std::set<std::string> names;
  for (const QuantSpec& s : all) {
    const std::string name = to_string(s);
    EXPECT_TRUE(s.validate().ok()) << name << ": " << s.validate().to_string();
    EXPECT_TRUE(names.insert(name).second) << "duplicate " << name;
    QuantSpec parsed = QuantSpec::fp8_per_token();
    if (s == parsed) parsed = QuantSpec::none();
    const Status st = parse_quant_spec(name, &parsed);
    ASSERT_TRUE(st.ok()) << name << ": " << st.to_string();
    EXPECT_EQ(parsed, s) << name;
  }
}

TEST(QuantSpec, ExactStrings) {
  EXPECT_EQ(to_string(QuantSpec::none()), "none");
  EXPECT_EQ(to_string(QuantSpec::fp8_per_tensor()), "fp8_per_tensor");
  EXPECT_EQ(to_string(QuantSpec::fp8_per_token()), "fp8_per_token");
  EXPECT_EQ(to_string(QuantSpec::fp8_per_group(128, L::kColMajorTma, F::kUe8m0Packed)),
            "fp8_group128:col_tma:ue8m0_packed");
  EXPECT_EQ(to_string(QuantSpec::fp8_per_group(64)), "fp8_group64:row:f32");
  EXPECT_EQ(to_string(QuantSpec::fp8_per_group(64, L::kColMajor, F::kUe8m0F32)),
            "fp8_group64:col:ue8m0");
  EXPECT_EQ(to_string(QuantSpec::nvfp4()), "nvfp4:swizzled");
  EXPECT_EQ(to_string(QuantSpec::nvfp4(L::kRowMajor)), "nvfp4:linear");
}

TEST(QuantSpec, ParseKnownStrings) {
  QuantSpec s;
  ASSERT_TRUE(parse_quant_spec("fp8_group128:col_tma:ue8m0_packed", &s).ok());
  EXPECT_EQ(s.kind, QuantKind::kFp8PerGroup);
  EXPECT_EQ(s.group_size, 128);
  EXPECT_EQ(s.layout, L::kColMajorTma);
  EXPECT_EQ(s.format, F::kUe8m0Packed);
  ASSERT_TRUE(parse_quant_spec("nvfp4:linear", &s).ok());
  EXPECT_EQ(s.kind, QuantKind::kNvfp4);
  EXPECT_EQ(s.group_size, 16);
  EXPECT_EQ(s.layout, L::kRowMajor);
  EXPECT_EQ(s.format, F::kE4M3);
  ASSERT_TRUE(parse_quant_spec("fp8_per_token", &s).ok());
  EXPECT_EQ(s, QuantSpec::fp8_per_token());
}

TEST(QuantSpec, ParseRejectsBadStringsAndQuotesThem) {
  for (const char* bad : {"", "fp8", "FP8_PER_TOKEN", "fp8_group32:row:f32", "fp8_group128:col_tma",
                          "fp8_group128:col_tma:ue8m0_packed:x", "fp8_group128:col:e4m3", "nvfp4",
                          "nvfp4:col", "none ", " none", "fp8_group128:tma:f32"}) {
    QuantSpec s = QuantSpec::fp8_per_token();
    const Status st = parse_quant_spec(bad, &s);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "'" << bad << "'";
    std::string quoted = "'";
    quoted += bad;
    quoted += "'";
    EXPECT_NE(st.message().find(quoted), std::string::npos) << st.message();
    EXPECT_EQ(s, QuantSpec::fp8_per_token()) << "output changed on error for '" << bad << "'";
  }
}

void expect_invalid(const QuantSpec& s, const std::string& arg) {
  const Status st = s.validate();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << to_string(s);
  EXPECT_NE(st.message().find("'" + arg + "'"), std::string::npos) << st.message();
}

TEST(QuantSpec, ValidateRejectsInconsistentFields) {
  expect_invalid(QuantSpec::fp8_per_group(32), "quant.group_size");
  expect_invalid(QuantSpec::fp8_per_group(0), "quant.group_size");
  expect_invalid(QuantSpec::fp8_per_group(256), "quant.group_size");
  expect_invalid(QuantSpec::fp8_per_group(128, L::kNvfp4Swizzled), "quant.layout");
  expect_invalid(QuantSpec::fp8_per_group(128, L::kNone), "quant.layout");
  expect_invalid(QuantSpec::fp8_per_group(128, L::kRowMajor, F::kE4M3), "quant.format");
  expect_invalid(QuantSpec::nvfp4(L::kColMajor), "quant.layout");
  expect_invalid(QuantSpec::nvfp4(L::kColMajorTma), "quant.layout");
  QuantSpec s = QuantSpec::nvfp4();
  s.format = F::kF32;
  expect_invalid(s, "quant.format");
  s = QuantSpec::nvfp4();
  s.group_size = 32;
  expect_invalid(s, "quant.group_size");
  s = QuantSpec::fp8_per_tensor();
  s.layout = L::kRowMajor;
  expect_invalid(s, "quant.spec");
  s = QuantSpec::fp8_per_token();
  s.group_size = 128;
  expect_invalid(s, "quant.spec");
  s = QuantSpec::none();
  s.format = F::kUe8m0F32;
  expect_invalid(s, "quant.spec");
}

TEST(QuantSpec, Predicates) {
  EXPECT_FALSE(QuantSpec::none().is_fp8());
  EXPECT_TRUE(QuantSpec::fp8_per_tensor().is_fp8());
  EXPECT_TRUE(QuantSpec::fp8_per_group(64).is_fp8());
  EXPECT_FALSE(QuantSpec::nvfp4().is_fp8());
  EXPECT_TRUE(QuantSpec::fp8_per_tensor().reads_scale());
  EXPECT_TRUE(QuantSpec::nvfp4().reads_scale());
  EXPECT_FALSE(QuantSpec::fp8_per_token().reads_scale());
  EXPECT_FALSE(QuantSpec::fp8_per_tensor().writes_scales());
  EXPECT_TRUE(QuantSpec::fp8_per_token().writes_scales());
  EXPECT_TRUE(QuantSpec::nvfp4().writes_scales());
  EXPECT_TRUE(QuantSpec::fp8_per_group(128).accepts_scale_ub());
  EXPECT_FALSE(QuantSpec::fp8_per_tensor().accepts_scale_ub());
  EXPECT_FALSE(QuantSpec::nvfp4().accepts_scale_ub());
}

ScaleShape shape_of(const QuantSpec& s, int64_t rows, int64_t cols) {
  ScaleShape sh;
  const Status st = scale_shape(s, rows, cols, &sh);
  EXPECT_TRUE(st.ok()) << to_string(s) << ": " << st.to_string();
  return sh;
}

void expect_shape(const ScaleShape& sh, DType dtype, std::vector<int64_t> sizes, int64_t groups,
                  int64_t padded_rows) {
  EXPECT_EQ(sh.dtype, dtype);
  ASSERT_EQ(sh.rank, static_cast<int>(sizes.size()));
  for (size_t i = 0; i < sizes.size(); ++i) EXPECT_EQ(sh.sizes[i], sizes[i]) << "dim " << i;
  EXPECT_EQ(sh.num_groups, groups);
  EXPECT_EQ(sh.padded_rows, padded_rows);
}

TEST(ScaleShape, NoBufferKinds) {
  EXPECT_EQ(shape_of(QuantSpec::none(), 5, 1000).rank, 0);
  EXPECT_EQ(shape_of(QuantSpec::fp8_per_tensor(), 5, 1000).rank, 0);
}

TEST(ScaleShape, PerToken) {
  expect_shape(shape_of(QuantSpec::fp8_per_token(), 5, 1000), DType::kF32, {5}, 1, 5);
}

TEST(ScaleShape, PerGroupFp32Layouts) {
  // rows 5, cols 1000, g 128 -> G = ceil(1000/128) = 8; TMA ld = round_up(5, 4) = 8.
  for (F f : {F::kF32, F::kUe8m0F32}) {
    expect_shape(shape_of(QuantSpec::fp8_per_group(128, L::kRowMajor, f), 5, 1000), DType::kF32,
                 {5, 8}, 8, 5);
    expect_shape(shape_of(QuantSpec::fp8_per_group(128, L::kColMajor, f), 5, 1000), DType::kF32,
                 {8, 5}, 8, 5);
    expect_shape(shape_of(QuantSpec::fp8_per_group(128, L::kColMajorTma, f), 5, 1000), DType::kF32,
                 {8, 8}, 8, 8);
  }
  // g 64 -> G = ceil(1000/64) = 16; rows 8 are already TMA-aligned.
  expect_shape(shape_of(QuantSpec::fp8_per_group(64, L::kRowMajor), 3, 1000), DType::kF32, {3, 16},
               16, 3);
  expect_shape(shape_of(QuantSpec::fp8_per_group(64, L::kColMajorTma), 8, 1000), DType::kF32,
               {16, 8}, 16, 8);
  expect_shape(shape_of(QuantSpec::fp8_per_group(64, L::kColMajorTma), 9, 1000), DType::kF32,
               {16, 12}, 16, 12);
}

TEST(ScaleShape, PerGroupPackedUe8m0) {
  const F p = F::kUe8m0Packed;
  // G = 8 -> 8 bytes per row (already a multiple of 4).
  expect_shape(shape_of(QuantSpec::fp8_per_group(128, L::kRowMajor, p), 5, 1000), DType::kUE8M0,
               {5, 8}, 8, 5);
  // Column-major packed: [G4/4 words, ld, 4 bytes].
  expect_shape(shape_of(QuantSpec::fp8_per_group(128, L::kColMajorTma, p), 5, 1000), DType::kUE8M0,
               {2, 8, 4}, 8, 8);
  expect_shape(shape_of(QuantSpec::fp8_per_group(128, L::kColMajor, p), 5, 1000), DType::kUE8M0,
               {2, 5, 4}, 8, 5);
  // cols 1100 -> G = 9, padded to 12 groups.
  expect_shape(shape_of(QuantSpec::fp8_per_group(128, L::kRowMajor, p), 5, 1100), DType::kUE8M0,
               {5, 12}, 9, 5);
  expect_shape(shape_of(QuantSpec::fp8_per_group(128, L::kColMajorTma, p), 5, 1100), DType::kUE8M0,
               {3, 8, 4}, 9, 8);
}

TEST(ScaleShape, Nvfp4) {
  // rows 5, cols 512 -> 32 block scales per row; swizzled pads rows to 128 and columns to 4.
  expect_shape(shape_of(QuantSpec::nvfp4(), 5, 512), DType::kE4M3, {128, 32}, 32, 128);
  expect_shape(shape_of(QuantSpec::nvfp4(L::kRowMajor), 5, 512), DType::kE4M3, {5, 32}, 32, 5);
  // cols 80 -> 5 block scales, padded to 8; rows 130 -> 256.
  expect_shape(shape_of(QuantSpec::nvfp4(), 130, 80), DType::kE4M3, {256, 8}, 5, 256);
  expect_shape(shape_of(QuantSpec::nvfp4(L::kRowMajor), 130, 80), DType::kE4M3, {130, 5}, 5, 130);
}

TEST(ScaleShape, RejectsInvalidSpec) {
  ScaleShape sh;
  const Status st = scale_shape(QuantSpec::fp8_per_group(32), 5, 1000, &sh);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'quant.group_size'"), std::string::npos) << st.message();
}

TEST(QuantizedDtype, PerKind) {
  EXPECT_FALSE(quantized_dtype(QuantSpec::none()).has_value());
  EXPECT_EQ(quantized_dtype(QuantSpec::fp8_per_tensor()), DType::kE4M3);
  EXPECT_EQ(quantized_dtype(QuantSpec::fp8_per_token()), DType::kE4M3);
  EXPECT_EQ(quantized_dtype(QuantSpec::fp8_per_group(64, L::kColMajor, F::kUe8m0Packed)),
            DType::kE4M3);
  EXPECT_EQ(quantized_dtype(QuantSpec::nvfp4()), DType::kE2M1x2);
  EXPECT_EQ(quantized_dtype(QuantSpec::nvfp4(L::kRowMajor)), DType::kE2M1x2);
}

TEST(QuantSpec, CeilDivAndRoundUp) {
  EXPECT_EQ(ceil_div(1000, 128), 8);
  EXPECT_EQ(ceil_div(1024, 128), 8);
  EXPECT_EQ(ceil_div(1025, 128), 9);
  EXPECT_EQ(round_up(5, 4), 8);
  EXPECT_EQ(round_up(8, 4), 8);
  EXPECT_EQ(round_up(0, 4), 0);
}

}  // namespace
}  // namespace qfuse
