// quantize() with the reference engine's rule (QuantRule::kEngine, the drop-in ops' kinds) on the
// GPU against the host reference, byte for byte: every engine spec, bf16/fp16/fp32 inputs, rows
// built to land on E4M3 ties (exact ties x / s = midpoint, and values where x / s and
// x * (1 / s) round to different codes), the per-group amax floor eps, scale_ub, UE8M0 scales a
// few ulps above a power of two (the engine's log2f rounding), partial groups, NaN/inf/zero,
// the per-token kernel's long rows. NVFP4 is compared with the host reference fed the device's
// own rcp.approx.ftz results (common/engine_device.h). Outputs are poisoned before every run.
#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "common/engine_device.h"
#include "common/gpu.h"
#include "common/quant_check.h"
#include "qfuse/quant/quantize.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::test {
namespace {

/// The E4M3 midpoints between consecutive positive codes below 448.
std::vector<float> midpoints() {
  std::vector<float> m;
  for (int c = 0; c < 0x7E; ++c) m.push_back((rules::e4m3_value(c) + rules::e4m3_value(c + 1)) / 2);
  return m;
}

/// Row t of the tie rows: every 64 columns start with amax = 448 s, followed by +-m * s for the
/// midpoints m (exact in bf16 for these s: x / s is exactly a midpoint). s = 7 * 2^k are the
/// scales where x * RN(1 / s) leaves some of those ties.
void put_ties(std::vector<float>& v, int64_t T, int64_t H) {
  const float scales[] = {0.875f, 0.0546875f, 0.75f, 0.625f, 3.5f, 0.4375f};
  const std::vector<float> mids = midpoints();
  for (int64_t t = 0; t < T && t < 6; ++t) {
    const float s = scales[t];
    for (int64_t c = 0; c < H; ++c) {
      const float m = mids[(c + t * 17) % mids.size()];
      v[t * H + c] = c % 64 == 0 ? 448.0f * s : m * s * ((c % 2) ? 1.0f : -1.0f);
    }
  }
}

/// Rows 6.. : fp32 values whose group / row scale amax / 448 is 0-3 ulps above a power of two
/// (the engine's UE8M0 rounding keeps the power where log2f rounds to an integer), and a group
/// of values near a midpoint times s (within an fp32 ulp: RN(x / s) lands on it).
void put_near_powers(std::vector<float>& v, int64_t T, int64_t H) {
  for (int64_t t = 6; t < T && t < 14; ++t) {
    const int k = -12 + 3 * static_cast<int>(t - 6);
    float s = std::ldexp(1.0f, k);
    for (int64_t j = 0; j < (t - 6) % 4; ++j) s = std::nextafter(s, 1.0f);
    for (int64_t c = 0; c < H; ++c) {
      float x = v[t * H + c];
      x = std::fmod(std::fabs(x), 440.0f) * s * (x < 0 ? -1.0f : 1.0f);
      v[t * H + c] = c % 64 == 0 ? s * 448.0f : x;
    }
  }
}

struct EngineCase {
  DType dtype = DType::kBF16;
  int64_t T = 0, H = 0;
  float eps = 0.0f;
  std::optional<float> ub;
  bool specials = false;
  uint64_t seed = 1;
};

void run_engine(const QuantSpec& spec, const EngineCase& c) {
  SCOPED_TRACE(to_string(spec) + " " + std::string(to_string(c.dtype)) + " T=" +
               std::to_string(c.T) + " H=" + std::to_string(c.H) + " eps=" + std::to_string(c.eps));
  ASSERT_EQ(spec.rule, QuantRule::kEngine);
  std::vector<float> v = random_floats(c.T * c.H, c.seed, 1.5f);
  if (spec.kind != QuantKind::kNvfp4) {
    put_ties(v, c.T, c.H);
    if (c.dtype == DType::kF32) put_near_powers(v, c.T, c.H);
  }
  if (c.specials && c.T > 20) {
    for (int64_t x = 0; x < 64 && x < c.H; ++x) v[16 * c.H + x] = 0.0f;  // a zero group
    v[17 * c.H + 5] = NAN;
    v[18 * c.H + c.H / 2] = INFINITY;
    v[19 * c.H + 3] = -INFINITY;
    for (int64_t x = 0; x < c.H; ++x) v[20 * c.H + x] = 1e-30f * static_cast<float>(x % 5);
  }
  std::vector<float> rounded;
  const std::vector<uint8_t> bytes = encode(v, c.dtype, &rounded);
  DeviceBuffer dx(bytes.size());
  dx.upload(bytes.data(), bytes.size());
  float gs = 1.0f;
  if (spec.kind == QuantKind::kNvfp4) {
    float amax = 0;
    for (float f : rounded) amax = std::isfinite(f) ? std::fmax(amax, std::fabs(f)) : amax;
    gs = 448.0f * 6.0f / amax * 1.3f;
  }
  DeviceQuantOutput d = DeviceQuantOutput::make(spec, c.T, c.H, DType::kBF16, gs, c.ub);
  QuantOutput q = d.view();
  q.eps = c.eps;
  const Status st = quantize(TensorRef::contiguous(dx.get(), c.dtype, {c.T, c.H}), q, nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  CheckOptions opt;
  opt.exact = true;
  opt.scale_value = gs;
  opt.scale_ub = c.ub.value_or(INFINITY);
  opt.eps = c.eps;
  if (spec.kind == QuantKind::kNvfp4) opt.rcp_approx = device_rcp_hook();
  const std::vector<double> y(rounded.begin(), rounded.end());
  EXPECT_TRUE(check_quant_output(d, y, opt));
}

class QuantizeEngine : public ::testing::TestWithParam<std::tuple<QuantSpec, DType>> {};

TEST_P(QuantizeEngine, MatchesTheHostReferenceOnTiesAndSpecialValues) {
  QFUSE_REQUIRE_GPU();
  const auto& [spec, dtype] = GetParam();
  for (auto [T, H] : {std::pair<int64_t, int64_t>{24, 1024}, {130, 2048}, {5, 272}}) {
    EngineCase c;
    c.dtype = dtype;
    c.T = T;
    c.H = spec.kind == QuantKind::kNvfp4 ? H : H - 24;  // partial last groups where allowed
    c.specials = true;
    c.seed = static_cast<uint64_t>(T + H);
    run_engine(spec, c);
    if (spec.kind == QuantKind::kFp8PerGroup) {
      c.eps = 1e-10f;  // per_token_group_fp8_quant's amax floor
      run_engine(spec, c);
      c.eps = 0.0f;
      c.ub = 0.01f;  // silu_and_mul_per_block_quant's scale bound
      run_engine(spec, c);
    }
    if (spec.kind == QuantKind::kFp8PerToken) {
      c.ub = 3.0f;  // scaled_fp8_quant's per-token amax bound
      run_engine(spec, c);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, QuantizeEngine,
                         ::testing::Combine(::testing::ValuesIn(engine_quant_specs()),
                                            ::testing::Values(DType::kBF16, DType::kF16,
                                                              DType::kF32)));

TEST(QuantizeEngineGpu, PerTokenLongRowsAndLargeBatches) {
  // The engine rule's one per-token kernel form: 8 chunks a lane, 1-8 warps a row, the tail of
  // longer rows re-read.
  QFUSE_REQUIRE_GPU();
  const QuantSpec spec = QuantSpec::fp8_per_token().with_rule(QuantRule::kEngine);
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    for (auto [T, H] : {std::pair<int64_t, int64_t>{3, 20001},
                        {1, 33001},
                        {200, 7999},
                        {4096, 199},
                        {2000, 1000}}) {
      EngineCase c;
      c.dtype = dtype;
      c.T = T;
      c.H = H;
      c.seed = static_cast<uint64_t>(T * 7 + H);
      run_engine(spec, c);
    }
  }
}

TEST(QuantizeEngineGpu, TiesDifferFromTheNativeRule) {
  // The device's engine and native codes of the tie rows differ exactly where the host
  // reference's do (a sanity check that the engine cores are the ones dispatched).
  QFUSE_REQUIRE_GPU();
  const int64_t T = 6, H = 128;
  std::vector<float> v(T * H, 0.0f);
  put_ties(v, T, H);
  std::vector<float> rounded;
  const auto bytes = encode(v, DType::kBF16, &rounded);
  ASSERT_EQ(rounded, v);
  DeviceBuffer dx(bytes.size());
  dx.upload(bytes.data(), bytes.size());
  const TensorRef x = TensorRef::contiguous(dx.get(), DType::kBF16, {T, H});
  for (const QuantSpec& native : {QuantSpec::fp8_per_token(), QuantSpec::fp8_per_group(64)}) {
    auto de = DeviceQuantOutput::make(native.with_rule(QuantRule::kEngine), T, H, DType::kBF16, 1);
    auto dn = DeviceQuantOutput::make(native, T, H, DType::kBF16, 1);
    ASSERT_TRUE(quantize(x, de.view(), nullptr).ok());
    ASSERT_TRUE(quantize(x, dn.view(), nullptr).ok());
    QFUSE_CUDA_OK(cudaDeviceSynchronize());
    const auto re = ref::quantize(v.data(), T, H, native.with_rule(QuantRule::kEngine), {});
    const auto rn = ref::quantize(v.data(), T, H, native, {});
    const auto oe = de.out.download(), on = dn.out.download();
    EXPECT_EQ(oe, re.out) << to_string(native);
    EXPECT_EQ(on, rn.out) << to_string(native);
    int64_t differ = 0;
    for (int64_t i = 0; i < T * H; ++i) differ += oe[i] != on[i];
    EXPECT_GT(differ, 0) << to_string(native);
  }
}

}  // namespace
}  // namespace qfuse::test
