// Host tests of the merge_states fp64 reference (SPEC §2) on hand-computed cases, and of the
// stacked-tensor split. These run in CI; the GPU tests compare the kernel against this reference.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "qfuse/merge_states/merge_states.h"

namespace qfuse {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

/// n partials of fp32 [T=1, H, D] values and [H, T=1] lse.
struct Host {
  int n;
  int64_t H, D;
  std::vector<std::vector<float>> o;
  std::vector<std::vector<float>> lse;
  ref::MergeHostInput in() const {
    ref::MergeHostInput r;
    r.n = n, r.dtype = DType::kF32, r.T = 1, r.H = H, r.D = D;
    for (int i = 0; i < n; ++i) {
      r.o[i] = o[i].data(), r.st[i] = H * D, r.sh[i] = D;
      r.lse[i] = lse[i].data(), r.ld_lse[i] = 1;
    }
    return r;
  }
};

TEST(MergeReference, TwoWayWeightsFromLse) {
  // lse 0 and log 3: weights 1/4 and 3/4, merged lse log 4.
  Host h{2, 1, 2, {{1.0f, -2.0f}, {5.0f, 2.0f}}, {{0.0f}, {std::log(3.0f)}}};
  std::vector<double> lse;
  const std::vector<double> out = ref::merge_states(h.in(), {}, &lse);
  EXPECT_NEAR(out[0], 0.25 * 1 + 0.75 * 5, 1e-6);
  EXPECT_NEAR(out[1], 0.25 * -2 + 0.75 * 2, 1e-6);
  EXPECT_NEAR(lse[0], std::log(4.0), 1e-6);
}

TEST(MergeReference, Base2) {
  Host h{2, 1, 1, {{1.0f}, {4.0f}}, {{1.0f}, {2.0f}}};  // 2^1 : 2^2 -> 1/3, 2/3
  MergeOptions opt;
  opt.lse_base = LseBase::kBase2;
  std::vector<double> lse;
  const std::vector<double> out = ref::merge_states(h.in(), opt, &lse);
  EXPECT_NEAR(out[0], 1.0 / 3 + 8.0 / 3, 1e-6);
  EXPECT_NEAR(lse[0], std::log2(6.0), 1e-6);
}

TEST(MergeReference, InfiniteLseIsEmptyAndNotRead) {
  // +inf and -inf both mean "empty"; an empty partial's values (NaN here) are never read.
  for (float empty : {kInf, -kInf}) {
    Host h{3, 1, 2, {{NAN, NAN}, {3.0f, -1.0f}, {1.0f, 1.0f}}, {{empty}, {0.5f}, {0.5f}}};
    std::vector<double> lse;
    const std::vector<double> out = ref::merge_states(h.in(), {}, &lse);
    EXPECT_DOUBLE_EQ(out[0], 2.0);
    EXPECT_DOUBLE_EQ(out[1], 0.0);
    EXPECT_NEAR(lse[0], 0.5 + std::log(2.0), 1e-6);
  }
}

TEST(MergeReference, AllEmptyRowIsZeroWithMinusInfLse) {
  Host h{2, 2, 2, {{7, 7, NAN, 1}, {8, 8, NAN, 2}}, {{kInf, 0.0f}, {-kInf, 1.0f}}};
  std::vector<double> lse;
  const std::vector<double> out = ref::merge_states(h.in(), {}, &lse);
  EXPECT_EQ(out[0], 0.0);
  EXPECT_EQ(out[1], 0.0);
  EXPECT_EQ(lse[0], -std::numeric_limits<double>::infinity());
  // Head 1 is a normal merge, but its first value is NaN in a non-empty partial: NaN propagates.
  EXPECT_TRUE(std::isnan(out[2]));
  EXPECT_FALSE(std::isnan(out[3]));
}

TEST(MergeReference, NanLseMakesTheRowNan) {
  Host h{2, 1, 2, {{1, 2}, {3, 4}}, {{NAN}, {0.0f}}};
  std::vector<double> lse;
  const std::vector<double> out = ref::merge_states(h.in(), {}, &lse);
  EXPECT_TRUE(std::isnan(out[0]) && std::isnan(out[1]) && std::isnan(lse[0]));
}

TEST(MergeReference, CopyFromTakesTheLastPartialRaw) {
  // T = 3 tokens, H = 1, D = 1; rows t >= 1 copy partial 1 and its raw lse (even +inf).
  const std::vector<float> o0 = {1, 2, 3}, o1 = {10, 20, 30};
  const std::vector<float> l0 = {0, 0, 0}, l1 = {0, kInf, 0.25f};
  ref::MergeHostInput in;
  in.n = 2, in.dtype = DType::kF32, in.T = 3, in.H = 1, in.D = 1;
  in.o[0] = o0.data(), in.o[1] = o1.data();
  in.st[0] = in.st[1] = 1, in.sh[0] = in.sh[1] = 1;
  in.lse[0] = l0.data(), in.lse[1] = l1.data(), in.ld_lse[0] = in.ld_lse[1] = 3;
  MergeOptions opt;
  opt.copy_from = 1;
  std::vector<double> lse;
  const std::vector<double> out = ref::merge_states(in, opt, &lse);
  EXPECT_NEAR(out[0], 5.5, 1e-9);
  EXPECT_EQ(out[1], 20.0);
  EXPECT_EQ(out[2], 30.0);
  EXPECT_NEAR(lse[0], std::log(2.0), 1e-7);
  EXPECT_EQ(lse[1], std::numeric_limits<double>::infinity());
  EXPECT_EQ(lse[2], 0.25);
}

TEST(MergeReference, Bf16InputsAndStrides) {
  // bf16 bits of 1.5 and -0.75, head stride 3 (padding holds garbage that must not be read).
  const std::vector<uint16_t> o0 = {0x3FC0, 0x7FC0, 0x7FC0}, o1 = {0xBF40, 0x7FC0, 0x7FC0};
  const std::vector<float> l = {0.0f};
  ref::MergeHostInput in;
  in.n = 2, in.dtype = DType::kBF16, in.T = 1, in.H = 1, in.D = 1;
  in.o[0] = o0.data(), in.o[1] = o1.data();
  in.st[0] = in.st[1] = 3, in.sh[0] = in.sh[1] = 3;
  in.lse[0] = in.lse[1] = l.data(), in.ld_lse[0] = in.ld_lse[1] = 1;
  EXPECT_NEAR(ref::merge_states(in, {}, nullptr)[0], 0.375, 1e-12);
}

TEST(MergeStacked, UnstackGivesViewsOfEachPartial) {
  char* base = reinterpret_cast<char*>(0x100000);
  const TensorRef o = TensorRef::contiguous(base, DType::kBF16, {3, 5, 4, 64});
  const TensorRef lse = TensorRef::contiguous(base + (1 << 20), DType::kF32, {3, 4, 5});
  MergePartials p;
  ASSERT_TRUE(unstack_partials(o, lse, &p).ok());
  ASSERT_EQ(p.n, 3);
  EXPECT_EQ(p.o[2].data, base + 2 * 5 * 4 * 64 * 2);
  EXPECT_EQ(p.o[1].rank, 3);
  EXPECT_EQ(p.o[1].sizes[2], 64);
  EXPECT_EQ(p.o[1].strides[0], 4 * 64);
  EXPECT_EQ(p.lse[2].data, base + (1 << 20) + 2 * 4 * 5 * 4);
  EXPECT_EQ(p.lse[1].sizes[0], 4);
  EXPECT_EQ(p.lse[1].strides[0], 5);
}

}  // namespace
}  // namespace qfuse
