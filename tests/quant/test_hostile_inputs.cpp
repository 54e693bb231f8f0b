// Hostile inputs to the quantization vocabulary and the quantize() checks (issue 12): a null
// out-parameter, spec strings mutated at random, sizes whose products overflow 64 bits, strides
// whose span wraps. Every case is an InvalidArgument naming the argument and the dimension,
// decided before any device call (no GPU needed).
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "common/compare.h"
#include "common/hostile.h"
#include "qfuse/core/checked.h"
#include "qfuse/quant/kind.h"
#include "qfuse/quant/quantize.h"

namespace qfuse {
namespace {

void* fake(uintptr_t a) {
  return reinterpret_cast<void*>(a);
}

TEST(ParseQuantSpecHostile, NullOutIsAnError) {
  const Status st = parse_quant_spec("fp8_per_tensor", nullptr);
  test::expect_invalid_argument(st, "out", "null");
  ScaleShape* none = nullptr;
  test::expect_invalid_argument(scale_shape(QuantSpec::fp8_per_token(), 4, 4, none), "out");
}

TEST(ParseQuantSpecHostile, LongAndBinaryTextIsQuotedAndCut) {
  QuantSpec s;
  const std::string huge(1 << 20, 'x');
  const Status st = parse_quant_spec(huge, &s);
  ASSERT_FALSE(st.ok());
  EXPECT_LT(st.message().size(), 400u) << "the text is cut, not dumped";
  EXPECT_NE(st.message().find("(1048576 bytes)"), std::string::npos) << st.message();
  const Status bin = parse_quant_spec(std::string("fp8\x00\x1b[31m", 9), &s);
  EXPECT_EQ(bin.message().find('\x1b'), std::string::npos) << "control bytes escaped";
}

TEST(ParseQuantSpecHostile, RandomMutantsParseExactlyWhenTheyAreAValidForm) {
  std::set<std::string> valid;
  for (const QuantSpec& s : all_quant_specs()) valid.insert(to_string(s));
  for (const QuantSpec& s : engine_quant_specs()) valid.insert(to_string(s));
  std::mt19937_64 rng(2026);
  int accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    const auto base = std::next(valid.begin(), static_cast<long>(rng() % valid.size()));
    const std::string text = iter % 4 == 0 ? *base : test::mutate_text(*base, rng);
    QuantSpec s;
    const Status st = parse_quant_spec(text, &s);
    ASSERT_EQ(st.ok(), valid.count(text) == 1) << test::quoted_for_test(text);
    if (st.ok()) {
      ++accepted;
      EXPECT_EQ(to_string(s), text);
      EXPECT_TRUE(s.validate().ok());
    } else {
      EXPECT_LT(st.message().size(), 400u);
    }
  }
  EXPECT_GT(accepted, 4000);
}

TEST(ScaleShapeHostile, NegativeAndHugeSizesAreErrorsNamingRowsOrCols) {
  ScaleShape sh;
  test::expect_invalid_argument(scale_shape(QuantSpec::nvfp4(), -1, 64, &sh), "rows", ">= 0");
  test::expect_invalid_argument(scale_shape(QuantSpec::fp8_per_group(128), 4, -128, &sh), "cols");
  // round_up(rows, 128) and ceil_div(cols, 16) near INT64_MAX overflowed before.
  const int64_t big = std::numeric_limits<int64_t>::max() - 3;
  test::expect_invalid_argument(scale_shape(QuantSpec::nvfp4(), big, 64, &sh), "rows", "2^40");
  test::expect_invalid_argument(scale_shape(QuantSpec::fp8_per_group(64), 8, big, &sh), "cols");
  // [2^39 + 1, 1] values are within the limit; the swizzled scale buffer [2^39 + 128, 4] is not.
  const Status st = scale_shape(QuantSpec::nvfp4(), (int64_t{1} << 39) + 1, 1, &sh);
  test::expect_invalid_argument(st, "scales.sizes[1]", "2^40");
}

TEST(ScaleShapeHostile, RandomSizesGiveBoundedShapesOrErrors) {
  std::mt19937_64 rng(5);
  const std::vector<QuantSpec> specs = all_quant_specs();
  for (int iter = 0; iter < 20000; ++iter) {
    const QuantSpec& spec = specs[rng() % specs.size()];
    const int64_t rows = test::hostile_int64(rng), cols = test::hostile_int64(rng);
    ScaleShape sh;
    if (!scale_shape(spec, rows, cols, &sh).ok()) continue;
    ASSERT_GE(rows, 0);
    ASSERT_GE(cols, 0);
    EXPECT_TRUE(check_sizes(sh.sizes, sh.rank).ok());
  }
}

TEST(QuantizeHostile, ShapeWhoseProductWrapsIsRefusedBeforeTheNullPointerCheck) {
  // [2^32, 2^32]: numel wrapped to 0 before, so null pointers passed as an "empty" tensor.
  QuantOutput q;
  q.spec = QuantSpec::fp8_per_tensor();
  const TensorRef x =
      TensorRef::contiguous(nullptr, DType::kBF16, {int64_t{1} << 32, int64_t{1} << 32});
  q.out = TensorRef::contiguous(nullptr, DType::kE4M3, {int64_t{1} << 32, int64_t{1} << 32});
  test::expect_invalid_argument(quantize(x, q, nullptr), "x.sizes[1]", "2^40");
}

TEST(QuantizeHostile, RowStrideWhoseSpanWrapsIsRefused) {
  QuantOutput q;
  q.spec = QuantSpec::fp8_per_tensor();
  q.scale = static_cast<const float*>(fake(0x40000));
  const TensorRef x =
      TensorRef::strided(fake(0x10000), DType::kBF16, {4, 64}, {int64_t{1} << 62, 1});
  q.out = TensorRef::contiguous(fake(0x20000), DType::kE4M3, {4, 64});
  test::expect_invalid_argument(quantize(x, q, nullptr), "x.strides[0]", "2^40");
}

TEST(QuantizeHostile, RankAboveFourIsARankError) {
  QuantOutput q;
  q.spec = QuantSpec::fp8_per_tensor();
  const TensorRef x = TensorRef::contiguous(fake(0x10000), DType::kBF16, {1, 2, 3, 4, 5});
  q.out = TensorRef::contiguous(fake(0x20000), DType::kE4M3, {1, 2, 3, 4, 5, 6, 7});
  test::expect_invalid_argument(quantize(x, q, nullptr), "x.rank", "got 5");
}

TEST(QuantizeHostile, RandomViewsAreAcceptedOnlyWithBoundedSpans) {
  // Random hostile views of x and out: whatever validation accepts (it then fails at the
  // device check without a GPU) has sizes and spans inside the element limit.
  std::mt19937_64 rng(77);
  for (int iter = 0; iter < 20000; ++iter) {
    TensorRef x;
    x.data = fake(0x10000);
    x.dtype = DType::kBF16;
    x.rank = rng() % 8 == 0 ? static_cast<int>(rng() % 7) - 1 : 2;
    for (int d = 0; d < TensorRef::kMaxRank; ++d) {
      x.sizes[d] = rng() % 2 ? test::hostile_int64(rng) : static_cast<int64_t>(rng() % 300);
      x.strides[d] = rng() % 2 ? test::hostile_int64(rng) : static_cast<int64_t>(rng() % 600);
    }
    QuantOutput q;
    q.spec = QuantSpec::fp8_per_tensor();
    q.scale = static_cast<const float*>(fake(0x40000));
    q.out = TensorRef::contiguous(fake(0x20000), DType::kE4M3, {x.sizes[0], x.sizes[1]});
    const Status st = quantize(x, q, nullptr);
    if (st.code() == StatusCode::kInvalidArgument) {
      EXPECT_LT(st.message().size(), 400u);
      continue;
    }
    // Accepted by validation (then a device error without a GPU, or an empty no-op).
    ASSERT_EQ(x.rank, 2);
    int64_t numel = 0;
    ASSERT_TRUE(check_sizes(x.sizes.data(), 2, &numel).ok());
    if (x.sizes[0] > 1) {
      __int128 span = static_cast<__int128>(x.sizes[0] - 1) * x.strides[0] + x.sizes[1];
      EXPECT_LE(span, kMaxElements) << x.describe();
    }
  }
}

}  // namespace
}  // namespace qfuse
