// quantize() on the GPU against the host reference, byte for byte: every quantization kind and
// scale layout, bf16/fp16/fp32 inputs, the T x H grid of the foundation issue, partial groups,
// strided and misaligned views (scalar path), NaN/inf/all-zero groups, scale_ub, T = 0 and CUDA
// graph capture. Outputs are poisoned before every run.
#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>

#include "common/gpu.h"
#include "common/quant_check.h"
#include "qfuse/quant/quantize.h"
#include "qfuse/quant/rules.h"

namespace qfuse::test {
namespace {

constexpr float kTensorScale = 0.0917f;  // makes outliers saturate

float nvfp4_global_scale(const std::vector<float>& v) {
  float amax = 0;
  for (float f : v) amax = std::isfinite(f) ? std::fmax(amax, std::fabs(f)) : amax;
  return 448.0f * 6.0f / amax * 1.3f;  // some blocks saturate their scale
}

struct Problem {
  DType dtype = DType::kBF16;
  int64_t T = 0, H = 0;
  int64_t in_pad = 0;     // extra elements per input row
  int64_t out_pad = 0;    // extra storage units per output row
  bool misalign = false;  // input starts one element past a 16-byte boundary
  std::optional<float> ub;
  std::optional<float> global_scale;  // NVFP4: instead of nvfp4_global_scale of the input
  uint64_t seed = 1;
};

/// Runs quantize() on random inputs (plus `edit` applied to the fp32 values) and compares.
void run_case(const QuantSpec& spec, const Problem& p,
              void (*edit)(std::vector<float>&, int64_t, int64_t) = nullptr,
              cudaStream_t stream = nullptr) {
  SCOPED_TRACE(to_string(spec) + " " + std::string(to_string(p.dtype)) +
               " T=" + std::to_string(p.T) + " H=" + std::to_string(p.H));
  std::vector<float> v = random_floats(p.T * p.H, p.seed, 1.5f);
  if (edit) edit(v, p.T, p.H);
  std::vector<float> rounded;
  const std::vector<uint8_t> bytes = encode(v, p.dtype, &rounded);
  const int64_t es = dtype_size(p.dtype);
  const int64_t ld = p.H + p.in_pad;
  const int64_t lead = p.misalign ? 1 : 0;
  DeviceBuffer dx((lead + p.T * ld) * es + 16);
  dx.fill(0x55);
  for (int64_t t = 0; t < p.T; ++t)
    QFUSE_CUDA_OK(cudaMemcpy(static_cast<uint8_t*>(dx.get()) + (lead + t * ld) * es,
                             &bytes[t * p.H * es], p.H * es, cudaMemcpyHostToDevice));
  const TensorRef x =
      TensorRef::strided(static_cast<uint8_t*>(dx.get()) + lead * es, p.dtype, {p.T, p.H}, {ld, 1});
  const float scale = spec.kind == QuantKind::kNvfp4
                          ? p.global_scale.value_or(nvfp4_global_scale(rounded))
                          : kTensorScale;
  DeviceQuantOutput d =
      DeviceQuantOutput::make(spec, p.T, p.H, DType::kBF16, scale, p.ub, p.out_pad);
  const Status st = quantize(x, d.view(), stream);
  ASSERT_TRUE(st.ok()) << st.to_string();
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  CheckOptions opt;
  opt.exact = true;
  opt.scale_value = scale;
  opt.scale_ub = p.ub.value_or(INFINITY);
  opt.rows = sample_rows(p.T, p.H, p.seed);
  const std::vector<double> y(rounded.begin(), rounded.end());
  EXPECT_TRUE(check_quant_output(d, y, opt));
}

// ---- the T x H grid for the main kinds -----------------------------------------------------

class QuantizeGrid : public ::testing::TestWithParam<std::tuple<std::string, int64_t, int64_t>> {};

TEST_P(QuantizeGrid, MatchesReference) {
  QFUSE_REQUIRE_GPU();
  const auto& [name, T, H] = GetParam();
  QuantSpec spec;
  ASSERT_TRUE(parse_quant_spec(name, &spec).ok());
  if (spec.kind == QuantKind::kNvfp4 && H % 16 != 0) GTEST_SKIP() << "nvfp4 needs H % 16 == 0";
  Problem p;
  p.T = T;
  p.H = H;
  p.seed = static_cast<uint64_t>(T * 131 + H);
  run_case(spec, p);
}

INSTANTIATE_TEST_SUITE_P(
    Grid, QuantizeGrid,
    ::testing::Combine(::testing::Values("fp8_per_tensor", "fp8_per_token", "fp8_group128:row:f32",
                                         "fp8_group64:col_tma:ue8m0_packed",
                                         "fp8_group128:col:ue8m0", "nvfp4:swizzled"),
                       ::testing::Values(1, 7, 16, 1000, 4096),
                       ::testing::Values(64, 1000, 2048, 7168, 14336)));

// ---- every kind and layout, every input dtype ----------------------------------------------

class QuantizeAllSpecs : public ::testing::TestWithParam<std::tuple<QuantSpec, DType>> {};

TEST_P(QuantizeAllSpecs, MatchesReference) {
  QFUSE_REQUIRE_GPU();
  const auto& [spec, dtype] = GetParam();
  for (auto [T, H] : {std::pair<int64_t, int64_t>{7, 1024}, {130, 2048}, {5, 272}}) {
    Problem p;
    p.dtype = dtype;
    p.T = T;
    p.H = spec.kind == QuantKind::kNvfp4 ? H : H - 24;  // partial last groups where allowed
    p.seed = static_cast<uint64_t>(T + H);
    run_case(spec, p);
  }
}

std::vector<QuantSpec> quantized_specs() {
  std::vector<QuantSpec> v;
  for (const QuantSpec& s : all_quant_specs()) v.push_back(s);
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, QuantizeAllSpecs,
                         ::testing::Combine(::testing::ValuesIn(quantized_specs()),
                                            ::testing::Values(DType::kBF16, DType::kF16,
                                                              DType::kF32)));

// ---- special values ------------------------------------------------------------------------

void put_specials(std::vector<float>& v, int64_t T, int64_t H) {
  for (int64_t c = 0; c < 128 && c < H; ++c) v[0 * H + c] = 0.0f;  // an all-zero group
  if (T > 1) v[1 * H + 5] = NAN;
  if (T > 2) v[2 * H + 130] = INFINITY;
  if (T > 3) v[3 * H + 700 % H] = -INFINITY;
  if (T > 4)
    for (int64_t c = 0; c < H; ++c) v[4 * H + c] = 0.0f;  // an all-zero row
  if (T > 5) v[5 * H + 17] = 1e30f;                       // saturates after scaling
}

class QuantizeSpecialValues : public ::testing::TestWithParam<QuantSpec> {};

TEST_P(QuantizeSpecialValues, NanInfZeroFollowTheRules) {
  QFUSE_REQUIRE_GPU();
  Problem p;
  p.dtype = DType::kF32;  // keeps 1e30 finite
  p.T = 9;
  p.H = 1024;
  run_case(GetParam(), p, put_specials);
}

INSTANTIATE_TEST_SUITE_P(All, QuantizeSpecialValues, ::testing::ValuesIn(quantized_specs()));

// NVFP4 and per-group FP8 beyond one wave of the grid take the wide-lane kernels (two 16-value
// runs per lane for bf16, one for fp32; NVFP4 with its clamp-free E2M1 round for blocks whose
// scaled values stay below 7): the same special values there, with rows that end in a partial
// task (H = 2064) or a partial group (H = 2056, per-group only).
TEST(QuantizeGpu, WideLanesFollowTheRulesForNanInfAndZero) {
  QFUSE_REQUIRE_GPU();
  for (const char* name : {"nvfp4:swizzled", "nvfp4:linear", "fp8_group128:row:f32",
                           "fp8_group64:col_tma:ue8m0_packed", "fp8_group128:col:ue8m0"}) {
    QuantSpec spec;
    ASSERT_TRUE(parse_quant_spec(name, &spec).ok());
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      for (int64_t H : {2048, 2064, 2056}) {
        if (spec.kind == QuantKind::kNvfp4 && H % 16 != 0) continue;
        Problem p;
        p.dtype = dtype;
        p.T = 4096;
        p.H = H;
        run_case(spec, p, put_specials);
      }
    }
  }
}

// Per-token: every form of per_token_kernel, with and without special values. Small batches
// spread a row over up to 32 warps (blocks of 1024, one or two chunks per lane), large ones keep
// 1-8 chunks per lane in blocks of 256; rows past 8 chunks a lane re-read their tail; odd widths
// end in a partial chunk.
TEST(QuantizeGpu, PerTokenEveryKernelForm) {
  QFUSE_REQUIRE_GPU();
  const std::pair<int64_t, int64_t> shapes[] = {
      {3, 20001},    // small batch, too long for 1024 threads: 8 chunks per lane, re-read tail
      {1, 33001},    // the same, one row
      {200, 20001},  // the same for a large batch
      {2, 11999},    // 1024 threads, 2 chunks per lane
      {70, 12001},   // the same
      {100, 7999},   // 1024 threads, 1 chunk per lane
      {101, 3999},   // 1024 threads holding 2 rows (16 warps each), the last block half idle
      {40, 1000},    // 256 threads holding 2 rows (4 warps each)
      {1000, 3999},  // 4 warps per row, 4 chunks per lane
      {2000, 1000},  // one warp per row, 4 chunks per lane
      {4096, 301},   // one warp per row, 2 chunks per lane
      {4096, 199}};  // one warp per row, 1 chunk per lane
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    for (const auto& [T, H] : shapes) {
      Problem p;
      p.dtype = dtype;
      p.T = T;
      p.H = H;
      p.seed = static_cast<uint64_t>(T * 3 + H);
      run_case(QuantSpec::fp8_per_token(), p);
      run_case(QuantSpec::fp8_per_token(), p, put_specials);
    }
  }
}

TEST(QuantizeGpu, NanGroupGetsNanScaleAndZeroGroupMinScale) {
  QFUSE_REQUIRE_GPU();
  const int64_t T = 2, H = 256;
  std::vector<float> v = random_floats(T * H, 3);
  for (int c = 0; c < 128; ++c) v[c] = 0.0f;  // row 0, group 0 zero
  v[H + 200] = NAN;                           // row 1, group 1 NaN
  std::vector<float> rounded;
  const auto bytes = encode(v, DType::kF32, &rounded);
  DeviceBuffer dx(bytes.size());
  dx.upload(bytes.data(), bytes.size());
  auto d = DeviceQuantOutput::make(QuantSpec::fp8_per_group(128), T, H, DType::kBF16, 1.0f);
  ASSERT_TRUE(
      quantize(TensorRef::contiguous(dx.get(), DType::kF32, {T, H}), d.view(), nullptr).ok());
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  const auto s = d.scales.download();
  const auto q = d.out.download();
  float sc[4];
  std::memcpy(sc, s.data(), 16);
  EXPECT_EQ(sc[0], rules::kMinScale);
  EXPECT_TRUE(std::isnan(sc[3]));
  for (int c = 0; c < 128; ++c) EXPECT_EQ(q[c] & 0x7F, 0) << c;
  for (int c = 128; c < 256; ++c) EXPECT_EQ(q[H + c] & 0x7F, 0x7F) << c;  // NaN codes
  EXPECT_FALSE(std::isnan(sc[2]));
}

TEST(QuantizeGpu, Nvfp4GlobalScalesInAndOutsideTheDivisionFreeRange) {
  QFUSE_REQUIRE_GPU();
  // The quantizer computes block scales without IEEE division for global scales in
  // [2^-60, 2^60] (rules::nvfp4_fma_scales_ok) and with it elsewhere: both ends of the range and
  // beyond, with inputs scaled so that the blocks' scales are neither all saturated nor all zero.
  const QuantSpec spec = QuantSpec::nvfp4();
  const struct {
    float gs, input_scale;
  } cases[] = {{0x1p60f, 0x1p-54f}, {0x1p-60f, 0x1p66f},    {0x1p75f, 0x1p-69f},
               {0x1p-75f, 0x1p81f}, {0x1.8p100f, 0x1p-94f}, {0x1p-100f, 0x1p106f}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.gs);
    EXPECT_EQ(rules::nvfp4_fma_scales_ok(c.gs), c.gs >= 0x1p-60f && c.gs <= 0x1p60f);
    static float input_scale;
    input_scale = c.input_scale;
    Problem p;
    p.T = 130;
    p.H = 2048;
    p.global_scale = c.gs;
    run_case(spec, p, [](std::vector<float>& v, int64_t, int64_t) {
      for (float& f : v) f *= input_scale;
    });
  }
}

// ---- views: strided, padded output rows, misaligned (scalar path), odd widths ---------------

TEST(QuantizeGpu, StridedMisalignedAndOddWidths) {
  QFUSE_REQUIRE_GPU();
  for (const QuantSpec& spec : quantized_specs()) {
    for (int64_t H : {13, 100, 200, 1040}) {
      if (spec.kind == QuantKind::kNvfp4 && H % 16 != 0) continue;
      Problem p;
      p.dtype = DType::kBF16;
      p.T = 37;
      p.H = H;
      p.in_pad = 24;
      p.out_pad = 5;
      p.misalign = H % 2 == 0;
      p.seed = static_cast<uint64_t>(H);
      run_case(spec, p);
    }
  }
}

TEST(QuantizeGpu, LargeOddWidthWithAlignedRows) {
  // Enough rows for the cp.async pipeline (rowwise_async_kernel), 16-byte aligned rows and a
  // width that is not a multiple of 8: partial chunks are zero-filled copies.
  QFUSE_REQUIRE_GPU();
  for (const QuantSpec& spec : quantized_specs()) {
    if (spec.kind == QuantKind::kNvfp4) continue;
    Problem p;
    p.T = 3000;
    p.H = 1001;
    p.in_pad = 7;  // row stride 1008 elements
    p.seed = 77;
    run_case(spec, p);
  }
}

TEST(QuantizeGpu, ScaleUpperBound) {
  QFUSE_REQUIRE_GPU();
  for (const char* name : {"fp8_per_token", "fp8_group128:row:f32", "fp8_group64:col_tma:ue8m0"}) {
    QuantSpec spec;
    ASSERT_TRUE(parse_quant_spec(name, &spec).ok());
    Problem p;
    p.T = 64;
    p.H = 2048;
    // Below most amaxes: per-token bounds the amax, per-group the scale (the same 0.75 / 448), so
    // those scales become 0.75 / 448 and values saturate.
    p.ub = spec.kind == QuantKind::kFp8PerToken ? 0.75f : 0.75f / 448.0f;
    run_case(spec, p);
  }
}

TEST(QuantizeGpu, EmptyInputIsANoOp) {
  QFUSE_REQUIRE_GPU();
  auto d = DeviceQuantOutput::make(QuantSpec::nvfp4(), 1, 64, DType::kBF16, 1.0f);
  DeviceBuffer dx(64 * 2);
  QuantOutput q = d.view();
  q.out.sizes[0] = 0;
  q.scales.sizes[0] = 0;  // swizzled rows pad to 0 for T = 0
  EXPECT_TRUE(quantize(TensorRef::contiguous(dx.get(), DType::kBF16, {0, 64}), q, nullptr).ok());
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  for (uint8_t b : d.out.download()) ASSERT_EQ(b, kPoison);
  for (uint8_t b : d.scales.download()) ASSERT_EQ(b, kPoison);
}

TEST(QuantizeGpu, CapturedInCudaGraph) {
  QFUSE_REQUIRE_GPU();
  cudaStream_t s;
  QFUSE_CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int64_t T = 33, H = 1024;
  for (const char* name :
       {"fp8_group128:col_tma:ue8m0_packed", "nvfp4:swizzled", "fp8_per_token"}) {
    QuantSpec spec;
    ASSERT_TRUE(parse_quant_spec(name, &spec).ok());
    DeviceBuffer dx(T * H * 2);
    auto d = DeviceQuantOutput::make(spec, T, H, DType::kBF16, 200.0f);
    const TensorRef x = TensorRef::contiguous(dx.get(), DType::kBF16, {T, H});
    cudaGraph_t g;
    QFUSE_CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    const Status st = quantize(x, d.view(), s);
    QFUSE_CUDA_OK(cudaStreamEndCapture(s, &g));
    ASSERT_TRUE(st.ok()) << st.to_string();
    cudaGraphExec_t ge;
    QFUSE_CUDA_OK(cudaGraphInstantiate(&ge, g, 0));
    for (uint64_t seed : {11u, 12u}) {  // new inputs, same graph
      std::vector<float> rounded;
      const auto bytes = encode(random_floats(T * H, seed), DType::kBF16, &rounded);
      dx.upload(bytes.data(), bytes.size());
      d.poison();
      QFUSE_CUDA_OK(cudaGraphLaunch(ge, s));
      QFUSE_CUDA_OK(cudaStreamSynchronize(s));
      CheckOptions opt;
      opt.scale_value = 200.0f;
      EXPECT_TRUE(check_quant_output(d, std::vector<double>(rounded.begin(), rounded.end()), opt));
    }
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
  }
  cudaStreamDestroy(s);
}

}  // namespace
}  // namespace qfuse::test
