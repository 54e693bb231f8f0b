// Tests of the fp64 host reference of SiLU-and-mul (SPEC §1): y[t, i] = silu(x[t, i]) * x[t, H +
// i].
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse {
namespace {

uint16_t bits(float v, DType dt) {
  return dt == DType::kBF16 ? ref::bf16_bits(v) : ref::f16_bits(v);
}

/// x [T, 2H] with row stride ld from gate/up values (exactly representable in bf16 and fp16).
std::vector<uint16_t> make_x(const std::vector<std::vector<float>>& gate,
                             const std::vector<std::vector<float>>& up, DType dt, int64_t ld,
                             uint16_t pad) {
  const int64_t T = static_cast<int64_t>(gate.size()), H = static_cast<int64_t>(gate[0].size());
  std::vector<uint16_t> x(T * ld, pad);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < H; ++i) {
      x[t * ld + i] = bits(gate[t][i], dt);
      x[t * ld + H + i] = bits(up[t][i], dt);
    }
  return x;
}

class SiluMulRef : public ::testing::TestWithParam<DType> {};

TEST_P(SiluMulRef, HandValues) {
  const DType dt = GetParam();
  // Row 0: silu(0) = 0; silu(1) * 2 = 2 / (1 + e^-1); silu(-2) * 0.5; silu(3) * -1.
  // Row 1: large negative gate -> ~0; silu(a) ~ a for large a; up = 0 -> 0.
  const std::vector<std::vector<float>> gate = {{0.0f, 1.0f, -2.0f, 3.0f},
                                                {-60.0f, 20.0f, 0.5f, -0.25f}};
  const std::vector<std::vector<float>> up = {{5.0f, 2.0f, 0.5f, -1.0f}, {4.0f, 1.0f, 0.0f, 8.0f}};
  const auto x = make_x(gate, up, dt, 8, 0);
  const std::vector<double> y = ref::silu_and_mul(x.data(), dt, 2, 4, 8);
  ASSERT_EQ(y.size(), 8u);
  EXPECT_EQ(y[0], 0.0);
  EXPECT_DOUBLE_EQ(y[1], 2.0 / (1.0 + std::exp(-1.0)));
  EXPECT_NEAR(y[1], 1.4621171572600098, 1e-15);
  EXPECT_DOUBLE_EQ(y[2], -2.0 / (1.0 + std::exp(2.0)) * 0.5);
  EXPECT_DOUBLE_EQ(y[3], -3.0 / (1.0 + std::exp(-3.0)));
  EXPECT_LE(std::fabs(y[4]), 60.0 * 4.0 * std::exp(-60.0) * 1.0001);
  EXPECT_LE(y[4], 0.0);
  EXPECT_NEAR(y[5], 20.0, 20.0 * 3e-9);
  EXPECT_EQ(y[6], 0.0);
  EXPECT_DOUBLE_EQ(y[7], -0.25 / (1.0 + std::exp(0.25)) * 8.0);
}

TEST_P(SiluMulRef, NaNPropagates) {
  const DType dt = GetParam();
  const std::vector<std::vector<float>> gate = {{NAN, 1.0f, 2.0f}};
  const std::vector<std::vector<float>> up = {{1.0f, NAN, 3.0f}};
  const auto x = make_x(gate, up, dt, 6, 0);
  const std::vector<double> y = ref::silu_and_mul(x.data(), dt, 1, 3, 6);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_TRUE(std::isnan(y[1]));
  EXPECT_DOUBLE_EQ(y[2], 2.0 / (1.0 + std::exp(-2.0)) * 3.0);
}

TEST_P(SiluMulRef, InputsAreReadInTheirDtype) {
  // 1 + 2^-9 is exact in fp16 but rounds to 1 in bf16 (8 significant bits): the reference must
  // decode the given bits, not reinterpret them in the other format.
  const DType dt = GetParam();
  const float v = 1.0f + std::ldexp(1.0f, -9);
  const std::vector<uint16_t> x = {bits(v, dt), bits(1.0f, dt)};
  const std::vector<double> y = ref::silu_and_mul(x.data(), dt, 1, 1, 2);
  const double g = dt == DType::kBF16 ? 1.0 : static_cast<double>(v);
  EXPECT_DOUBLE_EQ(y[0], g / (1.0 + std::exp(-g)));
}

TEST_P(SiluMulRef, RowStrideLargerThanWidth) {
  const DType dt = GetParam();
  const int64_t T = 3, H = 5, ld = 2 * H + 3;
  std::vector<std::vector<float>> gate(T, std::vector<float>(H)), up = gate;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < H; ++i) {
      gate[t][i] = 0.25f * static_cast<float>(t * H + i) - 2.0f;  // exact in bf16/fp16
      up[t][i] = 0.5f * static_cast<float>(i + 1) * (t % 2 ? -1.0f : 1.0f);
    }
  // Padding columns hold a large value that would show up if read.
  const auto x = make_x(gate, up, dt, ld, bits(1000.0f, dt));
  const std::vector<double> y = ref::silu_and_mul(x.data(), dt, T, H, ld);
  ASSERT_EQ(y.size(), static_cast<size_t>(T * H));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < H; ++i) {
      const double a = gate[t][i], b = up[t][i];
      EXPECT_DOUBLE_EQ(y[t * H + i], a / (1.0 + std::exp(-a)) * b) << t << "," << i;
    }
}

TEST_P(SiluMulRef, AgreesWithFp32RuleWithinFp32Rounding) {
  // rules::silu is what the kernels compute in fp32; the fp64 reference must agree closely.
  const DType dt = GetParam();
  for (float a : {-8.0f, -1.5f, -0.125f, 0.0f, 0.75f, 4.0f, 12.0f}) {
    const std::vector<uint16_t> x = {bits(a, dt), bits(1.5f, dt)};
    const double y = ref::silu_and_mul(x.data(), dt, 1, 1, 2)[0];
    const double f = static_cast<double>(rules::silu(a)) * 1.5;
    EXPECT_NEAR(y, f, 1e-6 * std::fabs(f) + 1e-30) << a;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SiluMulRef, ::testing::Values(DType::kBF16, DType::kF16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(to_string(i.param));
                         });

TEST(SiluMulRef, EmptyInput) {
  EXPECT_TRUE(ref::silu_and_mul(nullptr, DType::kBF16, 0, 4, 8).empty());
}

}  // namespace
}  // namespace qfuse
