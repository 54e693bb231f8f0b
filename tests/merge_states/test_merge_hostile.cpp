// merge_states with sizes whose products overflow 64 bits and strides whose spans wrap (issue
// 12). Before, T·H·D wrapped to 0: a merge with every pointer null returned OK. Each case is an
// InvalidArgument naming the tensor and the dimension, decided before any device call.
#include <gtest/gtest.h>

#include <random>

#include "common/compare.h"
#include "common/hostile.h"
#include "qfuse/core/checked.h"
#include "qfuse/merge_states/merge_states.h"

namespace qfuse {
namespace {

constexpr int64_t k32 = int64_t{1} << 32;

TEST(MergeHostile, ProductThatWrapsToZeroIsNotAnEmptyMerge) {
  // T·H·D = 2^32 · 2^16 · 2^16 = 2^64: wrapped to 0 ("empty") with every pointer null.
  MergePartials p;
  p.n = 2;
  for (int i = 0; i < 2; ++i) {
    p.o[i] = TensorRef::contiguous(nullptr, DType::kBF16, {k32, 1 << 16, 1 << 16});
    p.lse[i] = TensorRef::contiguous(nullptr, DType::kF32, {1 << 16, k32});
  }
  QuantOutput q;
  q.out = TensorRef::contiguous(nullptr, DType::kBF16, {k32, int64_t{1} << 32});
  const Status st = merge_states(p, q, MergeOptions{}, nullptr);
  test::expect_invalid_argument(st, "o[0].sizes[1]", "2^40");
}

TEST(MergeHostile, EmptyTokensWithHugeHeadsAreRefusedToo) {
  // T = 0, H·D = 2^80: counting zero sizes as one keeps H * D from overflowing.
  MergePartials p;
  p.n = 2;
  for (int i = 0; i < 2; ++i) {
    p.o[i] = TensorRef::contiguous(nullptr, DType::kF32, {0, int64_t{1} << 40, int64_t{1} << 40});
    p.lse[i] = TensorRef::contiguous(nullptr, DType::kF32, {int64_t{1} << 40, 0});
  }
  QuantOutput q;
  q.out = TensorRef::contiguous(nullptr, DType::kBF16, {0, 0});
  test::expect_invalid_argument(merge_states(p, q, MergeOptions{}, nullptr), "o[0].sizes[2]");
}

TEST(MergeHostile, HeadStrideWhoseSpanWrapsIsRefused) {
  MergePartials p;
  p.n = 2;
  for (int i = 0; i < 2; ++i) {
    p.o[i] = TensorRef::strided(reinterpret_cast<void*>(0x100000), DType::kBF16, {4, 3, 64},
                                {192, int64_t{1} << 62, 1});
    p.lse[i] = TensorRef::contiguous(reinterpret_cast<void*>(0x200000), DType::kF32, {3, 4});
  }
  QuantOutput q;
  q.out = TensorRef::contiguous(reinterpret_cast<void*>(0x300000), DType::kBF16, {4, 192});
  test::expect_invalid_argument(merge_states(p, q, MergeOptions{}, nullptr), "o[0].strides",
                                "2^40");
}

TEST(MergeHostile, UnstackChecksSizesStridesAndTheOutPointer) {
  const TensorRef o = TensorRef::contiguous(nullptr, DType::kF32, {2, 4, 2, 64});
  const TensorRef lse = TensorRef::contiguous(nullptr, DType::kF32, {2, 2, 4});
  test::expect_invalid_argument(unstack_partials(o, lse, nullptr), "out", "null");
  TensorRef wide = o;
  wide.strides[0] = std::numeric_limits<int64_t>::max();  // i * strides[0] * 4 overflowed
  MergePartials p;
  test::expect_invalid_argument(unstack_partials(wide, lse, &p), "o.strides[0]");
  TensorRef huge = o;
  huge.sizes[3] = int64_t{1} << 41;
  test::expect_invalid_argument(unstack_partials(huge, lse, &p), "o.sizes[3]", "2^40");
}

TEST(MergeHostile, RandomShapesNeverPassWithAnOverflowingProduct) {
  std::mt19937_64 rng(9);
  for (int iter = 0; iter < 20000; ++iter) {
    const int64_t T = test::hostile_int64(rng), H = rng() % 2 ? test::hostile_int64(rng) : 2,
                  D = rng() % 2 ? test::hostile_int64(rng) : 64;
    MergePartials p;
    p.n = 2;
    for (int i = 0; i < 2; ++i) {
      p.o[i] = TensorRef::contiguous(nullptr, DType::kBF16, {T, H, D});
      p.lse[i] = TensorRef::contiguous(nullptr, DType::kF32, {H, T});
    }
    QuantOutput q;
    q.out = TensorRef::contiguous(nullptr, DType::kBF16, {T, saturating_mul(H, D)});
    const Status st = merge_states(p, q, MergeOptions{}, nullptr);
    if (!st.ok()) continue;
    // OK only for a genuinely empty merge of a shape inside the limit.
    const int64_t s[3] = {T, H, D};
    int64_t numel = -1;
    ASSERT_TRUE(check_sizes(s, 3, &numel).ok()) << T << " " << H << " " << D;
    EXPECT_EQ(numel, 0);
  }
}

}  // namespace
}  // namespace qfuse
