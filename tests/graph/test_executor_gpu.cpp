// GPU executor: fused and unfused graphs on the device agree with the host reference path within
// SPEC §0.4, a run can be captured in a CUDA graph, and the fused DeepSeek-V3 MLP is faster.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "bench/harness.h"
#include "common/compare.h"
#include "common/gpu.h"
#include "graph/graph_testing.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/graph/executor.h"
#include "qfuse/graph/passes.h"
#include "qfuse/quant/capabilities.h"

namespace qfuse::graph {
namespace {

using test::json;

using test::DeviceRun;

class GpuActQuant : public ::testing::TestWithParam<QuantSpec> {};

TEST_P(GpuActQuant, FusedAndUnfusedWithinOneStepOfTheHostReference) {
  QFUSE_REQUIRE_GPU();
  const QuantSpec spec = GetParam();
  const int64_t T = 37, H = 1024;
  const Graph unfused = test::parse_or_fail(test::act_quant_graph(to_string(spec), T, H));
  Graph fused = unfused;
  std::vector<PassReport> reports;
  ASSERT_TRUE(run_fusion_passes(FusionConfig{}, &fused, &reports).ok());
  ASSERT_EQ(fused.nodes.size(), 1u);
  HostTensors host;
  ASSERT_TRUE(make_random_inputs(unfused, 11, &host).ok());
  // The exact values: fp64 silu of the same inputs.
  std::vector<double> y;
  {
    const HostTensor& x = host.at("x");
    std::vector<uint16_t> bits(x.data.size() / 2);
    std::memcpy(bits.data(), x.data.data(), x.data.size());
    y = ref::silu_and_mul(bits.data(), DType::kBF16, T, H, 2 * H);
  }
  for (const Graph* g : {static_cast<const Graph*>(&unfused), static_cast<const Graph*>(&fused)}) {
    DeviceRun d;
    ASSERT_TRUE(d.init(*g, host).ok());
    const Status st = d.run();
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const HostTensor q = d.download("q");
    HostTensor s;
    if (spec.writes_scales()) s = d.download("s");
    std::vector<double> fac;
    const std::vector<double> dq = test::dequantize(q, spec.writes_scales() ? &s : nullptr, spec,
                                                    test::scalar_of(host, "sc"), &fac);
    std::string report;
    const bool is_unfused = g == &unfused;
    EXPECT_EQ(test::check_within_one_step(spec, dq, fac, y, is_unfused ? 0x1p-8 : 1e-5, &report), 0)
        << to_string(spec) << (is_unfused ? " unfused" : " fused") << "\n"
        << report;
  }
}

INSTANTIATE_TEST_SUITE_P(AllSpecs, GpuActQuant, ::testing::ValuesIn(test::quantized_specs()));

double rms_rel(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0, s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    e += (a[i] - b[i]) * (a[i] - b[i]);
    s += b[i] * b[i];
  }
  return std::sqrt(e / std::max(s, 1e-300));
}

/// Runs `file` (host dims, small enough for the host path) fused and unfused on the device and
/// on the host, and compares the outputs.
void check_example(const char* file, const std::vector<std::pair<std::string, int64_t>>& dims) {
  Graph unfused;
  ParseOptions opt;
  opt.use_host_dims = true;
  opt.dim_overrides = dims;
  ASSERT_TRUE(load_graph_file(test::source_path(file), opt, &unfused).ok());
  Graph fused = unfused;
  std::vector<PassReport> reports;
  ASSERT_TRUE(run_fusion_passes(FusionConfig{}, &fused, &reports).ok());
  HostTensors host;
  ASSERT_TRUE(make_random_inputs(unfused, 5, &host).ok());
  HostTensors ref = host;
  const Status hs = run_host(unfused, &ref);
  if (hs.code() == StatusCode::kNotSupported) GTEST_SKIP() << hs.message();
  ASSERT_TRUE(hs.ok()) << hs.to_string();
  std::vector<double> y_ref, y_unfused;
  ASSERT_TRUE(host_values(ref.at("y"), &y_ref).ok());
  for (const Graph* g : {static_cast<const Graph*>(&unfused), static_cast<const Graph*>(&fused)}) {
    DeviceRun d;
    const Status is = d.init(*g, host);
    ASSERT_TRUE(is.ok()) << is.to_string();
    const Status st = d.run();
    if (st.code() == StatusCode::kNotSupported) GTEST_SKIP() << st.message();
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<double> y;
    ASSERT_TRUE(host_values(d.download("y"), &y).ok());
    for (double v : y) ASSERT_TRUE(std::isfinite(v));
    // The host reference quantizes its own (fp64-derived) activations; the device's differ by
    // bf16 / fp32 rounding, which can move an FP8 code by one step: a few percent at most.
    const double e = rms_rel(y, y_ref);
    EXPECT_LT(e, 0.03) << file << (g == &fused ? " fused" : " unfused");
    std::printf("%s %s: rms difference to the host reference %.4f\n", file,
                g == &fused ? "fused" : "unfused", e);
    if (g == &unfused) {
      y_unfused = y;
    } else {
      EXPECT_LT(rms_rel(y, y_unfused), 0.03) << file << " fused vs unfused";
    }
  }
}

TEST(GpuExecutor, DeepSeekMlpExampleMatchesTheHostPath) {
  QFUSE_REQUIRE_GPU();
  check_example("examples/graphs/deepseek_v3_mlp.json", {});
}

TEST(GpuExecutor, SplitKvOprojExampleMatchesTheHostPath) {
  QFUSE_REQUIRE_GPU();
  check_example("examples/graphs/splitkv_oproj.json", {});
}

TEST(GpuExecutor, MlaDecodeExampleMatchesTheHostPath) {
  QFUSE_REQUIRE_GPU();
  check_example("examples/graphs/deepseek_v3_mla_decode.json", {});
}

TEST(GpuExecutor, RunIsCapturableInACudaGraph) {
  QFUSE_REQUIRE_GPU();
  Graph g;
  ParseOptions opt;
  opt.use_host_dims = true;
  ASSERT_TRUE(
      load_graph_file(test::source_path("examples/graphs/deepseek_v3_mlp.json"), opt, &g).ok());
  std::vector<PassReport> reports;
  ASSERT_TRUE(run_fusion_passes(FusionConfig{}, &g, &reports).ok());
  HostTensors host;
  ASSERT_TRUE(make_random_inputs(g, 9, &host).ok());
  DeviceRun d;
  ASSERT_TRUE(d.init(g, host).ok());
  cudaStream_t s;
  QFUSE_CUDA_OK(cudaStreamCreate(&s));
  ASSERT_TRUE(d.run(s).ok());  // warm-up outside the capture
  QFUSE_CUDA_OK(cudaStreamSynchronize(s));
  const HostTensor direct = d.download("y");
  d.ws.fill(qfuse::test::kPoison);
  cudaGraph_t graph;
  QFUSE_CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  const Status st = d.run(s);
  QFUSE_CUDA_OK(cudaStreamEndCapture(s, &graph));
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(d.download("y").data, std::vector<uint8_t>(direct.data.size(), qfuse::test::kPoison))
      << "capturing must not run anything";
  cudaGraphExec_t exec;
  QFUSE_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) QFUSE_CUDA_OK(cudaGraphLaunch(exec, s));
  QFUSE_CUDA_OK(cudaStreamSynchronize(s));
  EXPECT_EQ(d.download("y").data, direct.data) << "replays give the direct run's output";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

TEST(GpuExecutor, MissingInputAndSmallWorkspaceAreErrors) {
  QFUSE_REQUIRE_GPU();
  const Graph g = test::parse_or_fail(test::mlp_graph());
  HostTensors host;
  ASSERT_TRUE(make_random_inputs(g, 1, &host).ok());
  DeviceRun d;
  ASSERT_TRUE(d.init(g, host).ok());
  qfuse::test::expect_invalid_argument(d.ex->run(d.ptrs, d.ws.get(), d.ws.bytes() - 1, nullptr),
                                       "workspace_size");
  auto ptrs = d.ptrs;
  ptrs.erase("w1");
  const Status st = d.ex->run(ptrs, d.ws.get(), d.ws.bytes(), nullptr);
  EXPECT_NE(st.message().find("graph input 'w1'"), std::string::npos) << st.message();
}

TEST(GpuExecutor, FusedDeepSeekMlpIsFaster) {
  QFUSE_REQUIRE_GPU();
  Graph unfused;
  ASSERT_TRUE(
      load_graph_file(test::source_path("examples/graphs/deepseek_v3_mlp.json"), {}, &unfused)
          .ok());
  Graph fused = unfused;
  std::vector<PassReport> reports;
  ASSERT_TRUE(run_fusion_passes(FusionConfig{}, &fused, &reports).ok());
  HostTensors host;
  ASSERT_TRUE(make_random_inputs(unfused, 2, &host).ok());
  DeviceRun du, df;
  ASSERT_TRUE(du.init(unfused, host).ok());
  ASSERT_TRUE(df.init(fused, host).ok());
  // NOTE: interleaved replays of the two graphs (bench/harness.h): timed one after the other,
  // the GEMMs' clock drift was as large as the fusion's gain (0.92-1.01x over seven runs).
  std::vector<double> med, ratio;
  cudaStream_t s;
  QFUSE_CUDA_OK(cudaStreamCreate(&s));
  const Status st = bench::time_interleaved(
      {[&](cudaStream_t q) { return du.run(q); }, [&](cudaStream_t q) { return df.run(q); }}, 5, 61,
      s, &med, &ratio);
  cudaStreamDestroy(s);
  ASSERT_TRUE(st.ok()) << st.to_string();
  std::printf(
      "DeepSeek-V3 MLP T=4096 H=7168 I=2048: unfused %.1f us, fused %.1f us, paired ratio %.3f\n",
      med[0], med[1], ratio[1]);
  EXPECT_GT(ratio[1], 1.0) << "the fused graph is not faster";
}

}  // namespace
}  // namespace qfuse::graph
