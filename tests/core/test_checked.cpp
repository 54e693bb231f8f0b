// Checked size arithmetic (checked.h) and TensorRef with hostile ranks and sizes (issue 12):
// hand-made edges and random shapes against a 128-bit oracle.
#include <gtest/gtest.h>

#include <random>

#include "common/hostile.h"
#include "qfuse/core/checked.h"
#include "qfuse/core/quote.h"
#include "qfuse/core/tensor.h"

namespace qfuse {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

TEST(CheckedArithmetic, MulAndAddReportOverflow) {
  int64_t r = 7;
  EXPECT_TRUE(checked_mul(int64_t{1} << 31, int64_t{1} << 31, &r));
  EXPECT_EQ(r, int64_t{1} << 62);
  EXPECT_FALSE(checked_mul(int64_t{1} << 32, int64_t{1} << 32, &r));
  EXPECT_EQ(r, int64_t{1} << 62) << "unchanged on overflow";
  EXPECT_FALSE(checked_add(kMax, 1, &r));
  EXPECT_EQ(saturating_mul(kMax, 2), kMax);
  EXPECT_EQ(saturating_mul(kMax, -2), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(saturating_add(kMax, kMax), kMax);
}

TEST(CheckedSizes, NamesTheDimensionThatBreaksTheLimit) {
  const int64_t ok[] = {4096, 7168};
  int64_t n = 0;
  EXPECT_TRUE(check_sizes("x", ok, 2, &n).ok());
  EXPECT_EQ(n, 4096 * 7168);

  const int64_t wraps[] = {int64_t{1} << 32, int64_t{1} << 32};  // 2^64 wraps to 0
  const Status st = check_sizes("x", wraps, 2, &n);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("argument 'x.sizes[1]'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("2^40"), std::string::npos) << st.message();

  const int64_t negative[] = {3, -1, 5};
  EXPECT_NE(check_sizes("o", negative, 3, &n).message().find("'o.sizes[1]': expected a size >= 0"),
            std::string::npos);

  // Zero sizes count as 1: an empty tensor with a huge other dimension is still refused, so
  // that partial products (H * D of [0, H, D]) cannot overflow either.
  const int64_t empty_but_huge[] = {0, int64_t{1} << 30, int64_t{1} << 30};
  EXPECT_EQ(check_sizes(empty_but_huge, 3).dim, 2);
  const int64_t at_limit[] = {0, int64_t{1} << 20, int64_t{1} << 20};
  EXPECT_TRUE(check_sizes(at_limit, 3, &n).ok());
  EXPECT_EQ(n, 0);
  const int64_t one_past[] = {kMaxElements + 1};
  EXPECT_EQ(check_sizes(one_past, 1).dim, 0);
}

TEST(CheckedSizes, RandomShapesAgreeWithA128BitProduct) {
  std::mt19937_64 rng(12);
  for (int iter = 0; iter < 20000; ++iter) {
    int64_t s[4];
    const int rank = static_cast<int>(rng() % 5);
    for (int d = 0; d < rank; ++d)
      s[d] = rng() % 3 == 0 ? test::hostile_int64(rng) : static_cast<int64_t>(rng() % 5000);
    // Oracle: first negative dim, else first dim where the 128-bit extent passes the limit.
    int want = -1;
    __int128 extent = 1;
    for (int d = 0; d < rank && want < 0; ++d) {
      if (s[d] < 0) {
        want = d;
        break;
      }
      extent *= s[d] == 0 ? 1 : s[d];
      if (extent > kMaxElements) want = d;
    }
    int64_t n = -5;
    const SizeProblem p = check_sizes(s, rank, &n);
    ASSERT_EQ(p.dim, want) << sizes_text(s, rank);
    if (want < 0) {
      __int128 prod = 1;
      for (int d = 0; d < rank; ++d) prod *= s[d];
      EXPECT_EQ(n, static_cast<int64_t>(prod));
    }
  }
}

TEST(TensorRefHostile, MoreThanFourSizesKeepTheRankButWriteNothingPastTheArrays) {
  // NOTE: used to assert only in debug builds and write past `sizes` (ASan: stack overflow).
  const TensorRef t = TensorRef::contiguous(nullptr, DType::kF32, {2, 3, 4, 5, 6, 7});
  EXPECT_EQ(t.rank, 6);
  EXPECT_FALSE(t.valid_rank());
  EXPECT_EQ(t.shape_string(), "[invalid rank 6]");
  EXPECT_EQ(t.describe(), "[invalid rank 6] fp32");
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.numel(), 2 * 3 * 4 * 5) << "the stored dims only";
}

TEST(TensorRefHostile, StridesOfAnotherLengthMakeAnInvalidView) {
  const TensorRef t = TensorRef::strided(nullptr, DType::kBF16, {2, 3}, {3});
  EXPECT_EQ(t.rank, -1);
  EXPECT_EQ(t.shape_string(), "[invalid rank -1]");
  const TensorRef u = TensorRef::strided(nullptr, DType::kBF16, {1, 2, 3, 4, 5}, {1, 2, 3, 4, 5});
  EXPECT_EQ(u.rank, 5);
  EXPECT_FALSE(u.valid_rank());
}

TEST(TensorRefHostile, HugeSizesSaturateInsteadOfWrapping) {
  const TensorRef t =
      TensorRef::contiguous(nullptr, DType::kBF16, {int64_t{1} << 32, int64_t{1} << 32});
  EXPECT_EQ(t.numel(), kMax) << "2^64 saturates (it used to wrap to 0: an empty tensor)";
  EXPECT_EQ(t.strides[0], int64_t{1} << 32);
  const TensorRef u = TensorRef::contiguous(nullptr, DType::kBF16, {kMax, kMax, kMax});
  EXPECT_EQ(u.strides[0], kMax) << "saturated, no signed overflow (UBSan)";
  (void)u.is_contiguous();
}

TEST(TensorRefHostile, RandomViewsNeverReadPastTheArrays) {
  std::mt19937_64 rng(3);
  for (int iter = 0; iter < 5000; ++iter) {
    TensorRef t;
    t.rank = static_cast<int>(rng() % 12) - 3;
    for (int d = 0; d < TensorRef::kMaxRank; ++d) {
      t.sizes[d] = test::hostile_int64(rng);
      t.strides[d] = test::hostile_int64(rng);
    }
    const std::string s = t.describe();
    EXPECT_LT(s.size(), 200u);
    (void)t.numel();
    (void)t.is_contiguous();
    (void)t.shape_string();
  }
}

TEST(Quoted, EscapesControlBytesAndCutsLongText) {
  EXPECT_EQ(quote_text("T"), "'T'");
  EXPECT_EQ(quote_text(std::string("a\x1b[2Jb\n", 7)), "'a\\x1b[2Jb\\x0a'");
  const std::string q = quote_text(std::string(100000, 'v'));
  EXPECT_LT(q.size(), 100u);
  EXPECT_NE(q.find("(100000 bytes)"), std::string::npos) << q;
}

}  // namespace
}  // namespace qfuse
