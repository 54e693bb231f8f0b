// silu_mul_quant / silu_and_mul on the GPU against the fp64 host reference (SPEC §1, §0.4):
// scales within a few fp32 ulps of the reference (the device's expf differs from the host's),
// every code within one FP8 / E2M1 step of y / scale_device, bf16 outputs within one ulp.
// Covers the T x H grid of the foundation issue, every kind and layout, partial groups, strided
// and misaligned inputs, NaN/inf inputs and all-zero groups. Outputs are poisoned before a run.
#include <cmath>
#include <cstring>
#include <tuple>

#include "common/gpu.h"
#include "common/quant_check.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/quant/reference.h"

namespace qfuse::test {
namespace {

constexpr float kTensorScale = 0.0431f;

/// An input x [T, 2H] on the device (row stride ld >= 2H, optionally one element off a 16-byte
/// boundary) and the fp64 reference y for the rows that will be compared (0 elsewhere).
struct SiluInput {
  int64_t T = 0, H = 0, ld = 0;
  DType dtype = DType::kBF16;
  DeviceBuffer buf;
  TensorRef x;
  std::vector<int64_t> rows;
  std::vector<double> y;
  float y_amax = 0;
};

SiluInput make_input(DType dtype, int64_t T, int64_t H, uint64_t seed, int64_t pad = 0,
                     bool misalign = false, void (*edit)(std::vector<float>&, int64_t) = nullptr) {
  SiluInput in;
  in.T = T, in.H = H, in.dtype = dtype, in.ld = 2 * H + pad;
  std::vector<float> v = random_floats(T * in.ld, seed, 2.0f);
  if (edit) edit(v, in.ld);
  std::vector<float> rounded;
  const std::vector<uint8_t> bytes = encode(v, dtype, &rounded);
  const int64_t lead = misalign ? 1 : 0;
  in.buf = DeviceBuffer((T * in.ld + lead) * 2 + 16);
  EXPECT_EQ(cudaMemcpy(static_cast<uint8_t*>(in.buf.get()) + lead * 2, bytes.data(), bytes.size(),
                       cudaMemcpyHostToDevice),
            cudaSuccess);
  in.x = TensorRef::strided(static_cast<uint8_t*>(in.buf.get()) + lead * 2, dtype, {T, 2 * H},
                            {in.ld, 1});
  in.rows = sample_rows(T, H, seed);
  in.y.assign(T * H, 0.0);
  std::vector<uint16_t> row_bits(in.ld);
  for (int64_t t : in.rows) {
    std::memcpy(row_bits.data(), &bytes[t * in.ld * 2], in.ld * 2);
    const std::vector<double> y = ref::silu_and_mul(row_bits.data(), dtype, 1, H, in.ld);
    for (int64_t c = 0; c < H; ++c) {
      in.y[t * H + c] = y[c];
      if (std::isfinite(y[c]))
        in.y_amax = std::fmax(in.y_amax, static_cast<float>(std::fabs(y[c])));
    }
  }
  return in;
}

float scale_for(const QuantSpec& spec, const SiluInput& in) {
  if (spec.kind == QuantKind::kNvfp4) return 448.0f * 6.0f / in.y_amax * 1.3f;
  return kTensorScale;
}

void check_spec(const QuantSpec& spec, const SiluInput& in, DType none_dtype = DType::kBF16) {
  SCOPED_TRACE(to_string(spec) + " T=" + std::to_string(in.T) + " H=" + std::to_string(in.H));
  const float scale = scale_for(spec, in);
  auto d = DeviceQuantOutput::make(spec, in.T, in.H, none_dtype, scale, std::nullopt, 3);
  const Status st = spec.kind == QuantKind::kNone ? silu_and_mul(in.x, d.view().out, nullptr)
                                                  : silu_mul_quant(in.x, d.view(), nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  CheckOptions opt;
  opt.exact = false;
  opt.scale_value = scale;
  opt.none_dtype = none_dtype;
  opt.rows = in.rows;
  EXPECT_TRUE(check_quant_output(d, in.y, opt));
}

const char* kMainSpecs[] = {"none",
                            "fp8_per_tensor",
                            "fp8_per_token",
                            "fp8_group128:row:f32",
                            "fp8_group128:col_tma:f32",
                            "fp8_group64:col_tma:ue8m0_packed",
                            "fp8_group64:col:f32",
                            "nvfp4:swizzled"};

class SiluMulGrid : public ::testing::TestWithParam<std::tuple<int64_t, int64_t>> {};

TEST_P(SiluMulGrid, AllMainKindsMatchReference) {
  QFUSE_REQUIRE_GPU();
  const auto [T, H] = GetParam();
  const SiluInput in = make_input(DType::kBF16, T, H, static_cast<uint64_t>(T * 7 + H));
  for (const char* name : kMainSpecs) {
    QuantSpec spec;
    ASSERT_TRUE(parse_quant_spec(name, &spec).ok());
    if (spec.kind == QuantKind::kNvfp4 && H % 16 != 0) continue;
    check_spec(spec, in);
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, SiluMulGrid,
                         ::testing::Combine(::testing::Values(1, 7, 16, 1000, 4096),
                                            ::testing::Values(64, 1000, 2048, 7168, 14336)));

class SiluMulAllSpecs : public ::testing::TestWithParam<DType> {};

TEST_P(SiluMulAllSpecs, EveryKindAndLayout) {
  QFUSE_REQUIRE_GPU();
  for (int64_t H : {1000, 1024, 13}) {
    const SiluInput in = make_input(GetParam(), 130, H, static_cast<uint64_t>(H), 16, false);
    for (const QuantSpec& spec : all_quant_specs()) {
      if (spec.kind == QuantKind::kNvfp4 && H % 16 != 0) continue;
      check_spec(spec, in);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SiluMulAllSpecs, ::testing::Values(DType::kBF16, DType::kF16));

TEST(SiluMulGpu, PlainOutputDtypes) {
  QFUSE_REQUIRE_GPU();
  const SiluInput in = make_input(DType::kF16, 19, 777, 5);
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF32}) check_spec(QuantSpec::none(), in, dt);
}

TEST(SiluMulGpu, StridedAndMisalignedInputs) {
  QFUSE_REQUIRE_GPU();
  for (bool misalign : {false, true}) {
    const SiluInput in = make_input(DType::kBF16, 45, 2048, 9, 40, misalign);
    for (const char* name : kMainSpecs) {
      QuantSpec spec;
      ASSERT_TRUE(parse_quant_spec(name, &spec).ok());
      check_spec(spec, in);
    }
  }
}

void put_specials(std::vector<float>& v, int64_t ld) {
  const int64_t H = ld / 2;                                // called with pad 0
  for (int64_t c = 0; c < 128; ++c) v[0 * ld + c] = 0.0f;  // gate zero: y = 0 for a group
  v[1 * ld + 3] = NAN;                                     // NaN gate
  v[2 * ld + H + 300] = NAN;                               // NaN up
  v[3 * ld + 40] = INFINITY;                               // silu(inf) * up = +-inf
  v[4 * ld + 900] = -100.0f;                               // silu -> -0
  v[5 * ld + H + 77] = 60000.0f;                           // large product: saturates
}

TEST(SiluMulGpu, NanInfAndZeroGroups) {
  QFUSE_REQUIRE_GPU();
  const SiluInput in = make_input(DType::kBF16, 8, 1024, 21, 0, false, put_specials);
  for (const QuantSpec& spec : all_quant_specs()) check_spec(spec, in);
}

// Per-token forms the grid does not reach: rows past 8 chunks a lane (re-read tail), 1024-thread
// blocks (two chunks per lane, two rows per block), odd widths; silu keeps fp32 values per lane
// (not the raw inputs).
TEST(SiluMulGpu, PerTokenEveryKernelForm) {
  QFUSE_REQUIRE_GPU();
  const std::pair<int64_t, int64_t> shapes[] = {{6, 20001},  {200, 20001}, {7, 3999},
                                                {70, 12001}, {101, 3999},  {2000, 1000}};
  for (const auto& [T, H] : shapes) {
    const SiluInput in =
        make_input(DType::kBF16, T, H, static_cast<uint64_t>(T + H), 0, false, put_specials);
    check_spec(QuantSpec::fp8_per_token(), in);
  }
}

// NVFP4 beyond one wave of the grid: the wide-lane kernel (clamp-free E2M1 round where exact).
TEST(SiluMulGpu, Nvfp4WideLanesNanInfAndZeroGroups) {
  QFUSE_REQUIRE_GPU();
  const SiluInput in = make_input(DType::kBF16, 4096, 2048, 22, 0, false, put_specials);
  for (const char* name : {"nvfp4:swizzled", "nvfp4:linear"}) {
    QuantSpec spec;
    ASSERT_TRUE(parse_quant_spec(name, &spec).ok());
    check_spec(spec, in);
  }
}

}  // namespace
}  // namespace qfuse::test
