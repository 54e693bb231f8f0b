// mla_decode with W_UV (the up-projection fused into the split-KV combine, issue 14) on the GPU:
//   - the fp32 output against the fp64 reference of the whole path (decode over the dequantized
//     cache, then o_latent . W_UV in fp64): relative L2 within the decode's tolerance
//     (docs/tolerances.md), rows without a visible key exactly zero, lse as the decode's;
//   - every quantization kind with qfuse's rules (and bf16 / fp16) within one quantization step
//     of the same kernel's fp32 values (the pre-quantization values: check_quant_output's fused
//     mode), scale-buffer padding zero, bytes between rows untouched;
// over heads {16, 128}, bf16 and FP8 caches, T {1, 7, 256}, a padded W_UV head stride; and a
// CUDA-graph replay of the two-launch per-token form equal to eager.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "common/quant_check.h"
#include "mla_decode/mla_testing.h"
#include "qfuse/quant/reference.h"

namespace qfuse::test {
namespace {

constexpr int64_t kV = kMlaVHeadDim;

double tolerance(DType cache) {
  return cache == DType::kBF16 ? 1e-2 : 4e-2;
}

/// W_UV [N, 512, 128] bf16 ~ N(0, 1 / sqrt(512)) on the device, head stride padded by `pad` rows.
struct Wuv {
  std::vector<uint16_t> host;  // contiguous [N, 512, 128]
  DeviceBuffer dev;
  int64_t head_stride = 0;
  TensorRef view() const {
    return TensorRef::strided(
        dev.get(), DType::kBF16,
        {static_cast<int64_t>(host.size()) / (kMlaLatentDim * kV), kMlaLatentDim, kV},
        {head_stride, kV, 1});
  }
};

Wuv make_wuv(int64_t N, int64_t pad_rows, uint64_t seed) {
  Wuv w;
  w.host.resize(N * kMlaLatentDim * kV);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt(512.0f));
  for (auto& x : w.host) x = ref::bf16_bits(nd(rng));
  w.head_stride = (kMlaLatentDim + pad_rows) * kV;
  std::vector<uint16_t> dev(N * w.head_stride, 0x7FC0);  // NaN in the padding rows
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(dev.data() + n * w.head_stride, w.host.data() + n * kMlaLatentDim * kV,
                kMlaLatentDim * kV * 2);
  w.dev = DeviceBuffer(dev.size() * 2);
  w.dev.upload(dev.data(), dev.size() * 2);
  return w;
}

/// One fused call writing `q` (and lse [T, N + 3] when given).
Status run_up(const MlaProblem& p, const Wuv& w, const QuantOutput& q, DeviceBuffer* lse,
              cudaStream_t stream = nullptr) {
  MlaDecodeOptions opt;
  size_t bytes = 0;
  QFUSE_RETURN_IF_ERROR(
      mla_decode_workspace_size(p.B, p.c.s_q, static_cast<int>(p.N), opt, &bytes));
  DeviceBuffer ws(bytes);
  ws.fill(kPoison);
  MlaDecodeArgs a = p.args();
  a.w_uv = w.view();
  a.out = q;
  if (lse != nullptr) a.lse = TensorRef::strided(lse->get(), DType::kF32, {p.T, p.N}, {p.N + 3, 1});
  QFUSE_RETURN_IF_ERROR(mla_decode(a, MlaWorkspace{ws.get(), bytes}, opt, stream));
  if (cudaStreamSynchronize(stream) != cudaSuccess)
    return Status(StatusCode::kCudaError, cudaGetErrorString(cudaGetLastError()));
  return mla_decode_check(MlaWorkspace{ws.get(), bytes}, stream);
}

struct UpCase {
  MlaCase mc;
  int64_t w_pad = 0;
};

std::string name_of(const UpCase& u) {
  return describe(u.mc) + " w_pad=" + std::to_string(u.w_pad);
}

std::vector<int> random_lens(int n, int max_len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> l(n);
  for (auto& x : l) x = static_cast<int>(rng() % (max_len + 1));
  l[0] = 0;  // an empty request
  return l;
}

std::vector<UpCase> cases() {
  std::vector<UpCase> v;
  for (int heads : {16, 128})
    for (DType cache : {DType::kBF16, DType::kE4M3}) {
      UpCase one, seven, big;
      one.mc.lens = {1000};
      seven.mc.lens = {1, 63, 64, 65, 1000, 4097, 0};
      seven.w_pad = 8;
      big.mc.s_q = 2;
      big.mc.lens = random_lens(128, heads == 16 ? 2500 : 500, 7 + heads);
      big.mc.block_size = 16;
      for (UpCase* u : {&one, &seven, &big}) {
        u->mc.heads = heads;
        u->mc.cache = cache;
        u->mc.seed = static_cast<uint64_t>(heads) * 3 + (cache == DType::kBF16 ? 1 : 2);
        v.push_back(*u);
      }
    }
  return v;
}

class MlaUpProj : public ::testing::TestWithParam<UpCase> {};

TEST_P(MlaUpProj, EveryKindAgainstTheReference) {
  QFUSE_REQUIRE_GPU();
  const UpCase& u = GetParam();
  SCOPED_TRACE(name_of(u));
  MlaProblem p = make_problem(u.mc);
  p.compute_reference();
  const Wuv w = make_wuv(p.N, u.w_pad, u.mc.seed + 101);
  const int64_t C = p.N * kV;

  // The fp32 output (the pre-quantization values) against the fp64 whole path.
  auto f32 = DeviceQuantOutput::make(QuantSpec::none(), p.T, C, DType::kF32, 1.0f, std::nullopt, 3);
  DeviceBuffer lse(p.T * (p.N + 3) * 4);
  lse.fill(kPoison);
  {
    const Status st = run_up(p, w, f32.view(), &lse);
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  std::vector<double> ref;
  ref::mla_up_proj(p.ref_out, w.host.data(), p.T, p.N, false, &ref);
  const std::vector<uint8_t> raw = f32.out.download();
  std::vector<double> y(p.T * C);
  double err2 = 0.0, ref2 = 0.0, worst = 0.0;
  int64_t nonfinite = 0, bad_zero = 0;
  for (int64_t t = 0; t < p.T; ++t)
    for (int64_t n = 0; n < p.N; ++n) {
      double e2 = 0.0, r2 = 0.0;
      for (int64_t j = 0; j < kV; ++j) {
        float v;
        std::memcpy(&v, raw.data() + (t * f32.out_ld + n * kV + j) * 4, 4);
        const double r = ref[(t * p.N + n) * kV + j];
        y[t * C + n * kV + j] = v;
        nonfinite += !std::isfinite(v);
        e2 += (v - r) * (v - r);
        r2 += r * r;
      }
      err2 += e2;
      ref2 += r2;
      if (r2 == 0.0)
        bad_zero += e2 != 0.0;
      else
        worst = std::max(worst, std::sqrt(e2 / r2));
    }
  const double rel = std::sqrt(err2 / std::max(ref2, 1e-300));
  EXPECT_EQ(nonfinite, 0);
  EXPECT_EQ(bad_zero, 0) << "rows without a visible key must be zeros";
  EXPECT_LE(rel, tolerance(u.mc.cache)) << "relative L2 error of the fp32 output";
  EXPECT_LE(worst, 3 * tolerance(u.mc.cache)) << "worst (token, head) row";
  {
    const std::vector<uint8_t> lb = lse.download();
    std::vector<float> l(lb.size() / 4);
    std::memcpy(l.data(), lb.data(), lb.size());
    std::string first;
    EXPECT_EQ(lse_mismatches(l, p.N + 3, p, &first), 0) << "lse, first: " << first;
  }
  std::printf("[ mla up   ] %-70s rel_l2 %.2e worst row %.2e\n", name_of(u).c_str(), rel, worst);

  // Every kind within one step of the same kernel's fp32 values.
  double amax = 0.0;
  for (double v : y) amax = std::max(amax, std::fabs(v));
  const std::vector<int64_t> rows = sample_rows(p.T, C, u.mc.seed);
  std::vector<std::pair<QuantSpec, DType>> kinds = {{QuantSpec::none(), DType::kBF16},
                                                    {QuantSpec::none(), DType::kF16}};
  for (const QuantSpec& s : all_quant_specs())
    if (s.kind != QuantKind::kNone) kinds.push_back({s, DType::kBF16});
  for (const auto& [spec, none_dtype] : kinds) {
    SCOPED_TRACE(to_string(spec) + " " + std::string(to_string(none_dtype)));
    const float scale = spec.kind == QuantKind::kNvfp4
                            ? static_cast<float>(448.0 * 6.0 / std::max(amax, 1e-3) * 1.3)
                            : static_cast<float>(std::max(amax, 1e-3) / 448.0 * 0.77);
    auto d = DeviceQuantOutput::make(spec, p.T, C, none_dtype, scale, std::nullopt, 3);
    const Status st = run_up(p, w, d.view(), nullptr);
    ASSERT_TRUE(st.ok()) << st.to_string();
    CheckOptions co;
    co.exact = false;
    co.scale_value = scale;
    co.none_dtype = none_dtype;
    co.rows = rows;
    co.scale_ulps = 2;
    EXPECT_TRUE(check_quant_output(d, y, co));
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, MlaUpProj, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<UpCase>& i) {
                           return "c" + std::to_string(i.index);
                         });

TEST(MlaUpProjGpu, PerTokenGraphReplayEqualsEager) {
  QFUSE_REQUIRE_GPU();
  MlaCase c;
  c.heads = 32;
  c.s_q = 2;
  c.lens = {5, 700, 64, 0, 2100};
  MlaProblem p = make_problem(c);
  const Wuv w = make_wuv(p.N, 0, 5);
  const int64_t C = p.N * kV;
  const QuantSpec spec = QuantSpec::fp8_per_token();
  auto eager = DeviceQuantOutput::make(spec, p.T, C, DType::kBF16, 1.0f);
  ASSERT_TRUE(run_up(p, w, eager.view(), nullptr).ok());

  auto graphed = DeviceQuantOutput::make(spec, p.T, C, DType::kBF16, 1.0f);
  MlaDecodeOptions opt;
  size_t bytes = 0;
  ASSERT_TRUE(mla_decode_workspace_size(p.B, c.s_q, c.heads, opt, &bytes).ok());
  DeviceBuffer ws(bytes);
  MlaDecodeArgs a = p.args();
  a.w_uv = w.view();
  a.out = graphed.view();
  cudaStream_t stream;
  QFUSE_CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  QFUSE_CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const Status st = mla_decode(a, MlaWorkspace{ws.get(), bytes}, opt, stream);
  QFUSE_CUDA_OK(cudaStreamEndCapture(stream, &graph));
  ASSERT_TRUE(st.ok()) << st.to_string();
  cudaGraphExec_t exec;
  QFUSE_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 2; ++i) {
    graphed.poison();
    QFUSE_CUDA_OK(cudaGraphLaunch(exec, stream));
    QFUSE_CUDA_OK(cudaStreamSynchronize(stream));
    EXPECT_EQ(graphed.out.download(), eager.out.download()) << "codes, replay " << i;
    EXPECT_EQ(graphed.scales.download(), eager.scales.download()) << "scales, replay " << i;
  }
  QFUSE_CUDA_OK(cudaGraphExecDestroy(exec));
  QFUSE_CUDA_OK(cudaGraphDestroy(graph));
  QFUSE_CUDA_OK(cudaStreamDestroy(stream));
}

}  // namespace
}  // namespace qfuse::test
