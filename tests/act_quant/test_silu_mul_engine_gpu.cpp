// silu_mul_quant with the reference engine's rule (per-group FP8, the drop-in
// silu_and_mul_per_block_quant) on the GPU against the host reference byte for byte: the
// engine's SiLU arithmetic (ref::silu_and_mul_engine, fed the device's own ex2.approx.ftz
// results) quantized by the engine rule (ref::quantize). bf16/fp16, groups of 64 and 128, row and
// column scales, scale_ub, partial groups, strided rows, NaN/inf/zero inputs.
#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

#include "common/compare.h"
#include "common/engine_device.h"
#include "common/gpu.h"
#include "common/quant_check.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::test {
namespace {

struct Case {
  DType dtype = DType::kBF16;
  int64_t T = 0, H = 0, pad = 0;
  std::optional<float> ub;
  uint64_t seed = 1;
};

/// Runs silu_mul_quant with `spec` and returns the device output; `y` gets the engine's fp32
/// products (exact, with the device's ex2).
DeviceQuantOutput run(const QuantSpec& spec, const Case& c, std::vector<double>* y) {
  const int64_t ld = 2 * c.H + c.pad;
  std::vector<float> v = random_floats(c.T * ld, c.seed, 2.0f);
  if (c.T > 3) {
    v[1 * ld + 3] = NAN;               // a NaN gate: its group's scale is NaN
    v[2 * ld + c.H + 5] = INFINITY;    // an infinite up value
    for (int64_t i = 0; i < c.H; ++i)  // row 3: zero up values
      v[3 * ld + c.H + i] = 0.0f;
    v[0 * ld + 7] = -100.0f;  // exp(-g) overflows: silu = -0
    v[0 * ld + 8] = 100.0f;
  }
  std::vector<float> rounded;
  const std::vector<uint8_t> bytes = encode(v, c.dtype, &rounded);
  DeviceBuffer dx(bytes.size());
  dx.upload(bytes.data(), bytes.size());
  const TensorRef x = TensorRef::strided(dx.get(), c.dtype, {c.T, 2 * c.H}, {ld, 1});
  DeviceQuantOutput d = DeviceQuantOutput::make(spec, c.T, c.H, DType::kBF16, 1.0f, c.ub);
  const Status st = silu_mul_quant(x, d.view(), nullptr);
  EXPECT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint16_t> bits(c.T * ld);
  std::memcpy(bits.data(), bytes.data(), bytes.size());
  const std::vector<float> yf =
      ref::silu_and_mul_engine(bits.data(), c.dtype, c.T, c.H, ld, device_ex2_hook(c.dtype));
  y->assign(yf.begin(), yf.end());
  return d;
}

class SiluMulEngine : public ::testing::TestWithParam<DType> {};

TEST_P(SiluMulEngine, MatchesTheEnginesArithmeticByteForByte) {
  QFUSE_REQUIRE_GPU();
  std::vector<QuantSpec> specs;
  for (const QuantSpec& s : engine_quant_specs())
    if (s.kind == QuantKind::kFp8PerGroup) specs.push_back(s);
  for (const QuantSpec& spec : specs) {
    for (auto [T, H, pad] :
         {std::tuple<int64_t, int64_t, int64_t>{7, 2048, 0}, {130, 1000, 16}, {4096, 512, 0}}) {
      for (std::optional<float> ub : {std::optional<float>{}, std::optional<float>{0.02f}}) {
        SCOPED_TRACE(to_string(spec) + " T=" + std::to_string(T) + " H=" + std::to_string(H) +
                     (ub ? " ub" : ""));
        Case c;
        c.dtype = GetParam();
        c.T = T, c.H = H, c.pad = pad, c.ub = ub;
        c.seed = static_cast<uint64_t>(T + H);
        std::vector<double> y;
        const DeviceQuantOutput d = run(spec, c, &y);
        CheckOptions opt;
        opt.exact = true;
        opt.scale_ub = ub.value_or(INFINITY);
        opt.rows = sample_rows(T, H, c.seed);
        EXPECT_TRUE(check_quant_output(d, y, opt));
      }
    }
  }
}

TEST_P(SiluMulEngine, DiffersFromTheNativeRuleOnlyByTheEnginesRounding) {
  // The native rule (fast exp, x * (1 / s)) gives codes within one step of the engine's, and
  // somewhere a different one (the engine cores are the ones dispatched).
  QFUSE_REQUIRE_GPU();
  Case c;
  c.dtype = GetParam();
  c.T = 256, c.H = 2048, c.seed = 9;
  const QuantSpec native = QuantSpec::fp8_per_group(128);
  std::vector<double> y;
  const DeviceQuantOutput e = run(native.with_rule(QuantRule::kEngine), c, &y);
  const DeviceQuantOutput n = run(native, c, &y);
  const auto oe = e.out.download(), on = n.out.download();
  int64_t differ = 0, far = 0;
  for (size_t i = 0; i < oe.size(); ++i) {
    if (oe[i] == on[i]) continue;
    ++differ;
    const float a = rules::e4m3_value(oe[i]), b = rules::e4m3_value(on[i]);
    if (!(std::isnan(a) && std::isnan(b)) &&
        std::fabs(a - b) > fp8_step(std::fmax(std::fabs(a), std::fabs(b))))
      ++far;
  }
  // NOTE: with fp16 inputs the two rules gave the same codes on all 512K elements on the H200
  // (2026-12-05); the bf16 case pins that the engine cores are the ones dispatched, and
  // MatchesTheEnginesArithmeticByteForByte checks both dtypes against the engine's arithmetic.
  if (GetParam() == DType::kBF16) EXPECT_GT(differ, 0);
  EXPECT_EQ(far, 0);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SiluMulEngine, ::testing::Values(DType::kBF16, DType::kF16));

}  // namespace
}  // namespace qfuse::test
