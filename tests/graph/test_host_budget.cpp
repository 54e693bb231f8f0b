// The host reference path's budget (issue 12): a graph too large for fp64 loops is an error that
// says which dims to set, returned before anything is allocated.
#include <gtest/gtest.h>

#include <chrono>

#include "graph/graph_testing.h"
#include "qfuse/graph/executor.h"
#include "qfuse/graph/graph_json.h"

namespace qfuse::graph {
namespace {

Graph load_example(const char* name, bool host_dims) {
  Graph g;
  ParseOptions opt;
  opt.use_host_dims = host_dims;
  const Status st =
      load_graph_file(std::string(QFUSE_SOURCE_DIR) + "/examples/graphs/" + name, opt, &g);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return g;
}

TEST(HostBudget, FullSizeExampleIsAnErrorNamingTheDims) {
  const Graph g = load_example("deepseek_v3_mlp.json", false);
  const Status st = check_host_budget(g);
  ASSERT_EQ(st.code(), StatusCode::kInvalidArgument);
  for (const char* f :
       {"too large for the host reference path", "GEMM multiply-adds",
        "set smaller values for the dims T=4096 H=7168 I=2048", "host_dims", "--dim NAME=SIZE"})
    EXPECT_NE(st.message().find(f), std::string::npos) << f << "\n in: " << st.message();

  // run_host says the same at once instead of running fp64 GEMMs for minutes.
  HostTensors none;
  const auto t0 = std::chrono::steady_clock::now();
  const Status run = run_host(g, &none);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  EXPECT_EQ(run.message(), st.message());
}

TEST(HostBudget, HostDimsFitAndMemoryIsCountedToo) {
  EXPECT_TRUE(check_host_budget(load_example("deepseek_v3_mlp.json", true)).ok());
  EXPECT_TRUE(check_host_budget(load_example("splitkv_oproj.json", true)).ok());
  const Graph full = load_example("splitkv_oproj.json", false);
  HostBudget tight;
  tight.max_bytes = 1 << 20;
  tight.max_macs = int64_t{1} << 62;
  const Status st = check_host_budget(full, tight);
  EXPECT_NE(st.message().find("MiB of host memory (budget 1 MiB; largest tensor"),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("S=4 T=2048 NH=16 D=128 HID=7168"), std::string::npos)
      << st.message();
}

TEST(HostBudget, FixedShapesSayToUseNamedDims) {
  const Graph g = test::parse_or_fail(test::gemm_graph("fp8_group128:col:f32", 4096, 4096, 4096));
  const Status st = check_host_budget(g);
  EXPECT_NE(st.message().find("its shapes are fixed numbers"), std::string::npos) << st.message();
}

TEST(MakeTensorRef, RankAboveFourWritesNothingPastTheArrays) {
  TensorDesc d;
  d.dtype = DType::kF32;
  d.shape = {2, 3, 4, 5, 6, 7};
  const TensorRef r = make_tensor_ref(d, nullptr);
  EXPECT_EQ(r.rank, 6);
  EXPECT_FALSE(r.valid_rank());
  d.shape = {int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_EQ(make_tensor_ref(d, nullptr).strides[0], int64_t{1} << 40);
}

TEST(HostBudget, NullArgumentsAreErrors) {
  const Graph g = test::parse_or_fail(test::act_quant_graph("fp8_per_token"));
  EXPECT_EQ(run_host(g, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(make_random_inputs(g, 1, nullptr).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qfuse::graph
