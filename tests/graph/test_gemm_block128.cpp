// Choice of the executor's GEMM path and the scale layouts of cuBLASLt's block-scaled FP8 modes
// (src/graph/gemm_block128.h), without a device: which operand types take GemmPath::kFp8Block128,
// why the others fall back, and what the memory plan reserves for each.
#include <gtest/gtest.h>

#include "graph/gemm_block128.h"
#include "graph/graph_testing.h"
#include "graph/op_impls.h"
#include "qfuse/graph/executor.h"

namespace qfuse::graph {
namespace {

/// The GemmInfo of test::gemm_graph's node.
detail::GemmInfo info_of(const Graph& g) {
  detail::GemmInfo gi;
  std::map<std::string, const TensorDesc*> in;
  for (const auto& [p, t] : g.nodes.at(0).inputs) in[p] = g.tensor(t);
  EXPECT_TRUE(detail::gemm_info(g.nodes.at(0), in, &gi).ok());
  return gi;
}

struct PathCase {
  const char* spec;
  int64_t M, N, K;
  const char* b_scaling;
  GemmPath path;
  const char* why;  // a piece of the reason a kDequantBf16 node gives
};

TEST(GemmPath, Block128OnlyWhereCublasLtReadsTheScales) {
  const PathCase cases[] = {
      {"fp8_group128:col:f32", 200, 320, 512, "block128", GemmPath::kFp8Block128, ""},
      {"fp8_group128:col_tma:f32", 132, 264, 384, "block128", GemmPath::kFp8Block128, ""},
      // fp32 powers of two are fp32 scales to cuBLASLt.
      {"fp8_group128:col:ue8m0", 256, 384, 1024, "block128", GemmPath::kFp8Block128, ""},
      {"fp8_group128:col_tma:f32", 64, 256, 400, "block128", GemmPath::kFp8Block128, ""},
      // One group per row: row-major [M, 1] is column-major [1, M].
      {"fp8_group128:row:f32", 64, 256, 128, "block128", GemmPath::kFp8Block128, ""},
      {"fp8_group128:row:f32", 64, 256, 256, "block128", GemmPath::kDequantBf16, "VEC128 order"},
      {"fp8_group128:col_tma:f32", 37, 256, 256, "block128", GemmPath::kDequantBf16,
       "multiples of 4"},
      {"fp8_group128:col:f32", 36, 130, 256, "block128", GemmPath::kDequantBf16, "multiples of 4"},
      {"fp8_group128:col_tma:ue8m0_packed", 64, 256, 256, "block128", GemmPath::kDequantBf16,
       "packed UE8M0"},
      {"fp8_group64:col:f32", 64, 256, 256, "block128", GemmPath::kDequantBf16, "not 1x128-group"},
      {"fp8_per_token", 64, 256, 256, "block128", GemmPath::kDequantBf16, "not 1x128-group"},
      {"fp8_per_tensor", 64, 256, 256, "block128", GemmPath::kDequantBf16, "not 1x128-group"},
      {"fp8_group128:col:f32", 64, 256, 256, "per_tensor", GemmPath::kDequantBf16,
       "b is not 128x128-block"},
      {"fp8_per_tensor", 64, 256, 256, "per_tensor", GemmPath::kFp8PerTensor, ""},
  };
  for (const PathCase& c : cases) {
    const Graph g = test::parse_or_fail(test::gemm_graph(c.spec, c.M, c.N, c.K, c.b_scaling));
    const detail::GemmInfo gi = info_of(g);
    std::string why;
    const GemmPath p = detail::gemm_path(gi, {}, &why);
    const std::string label = std::string(c.spec) + " M=" + std::to_string(c.M) +
                              " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) + " b " +
                              c.b_scaling;
    EXPECT_EQ(p, c.path) << label << ": " << to_string(p) << " (" << why << ")";
    EXPECT_NE(why.find(c.why), std::string::npos) << label << ": " << why;
    EXPECT_EQ(detail::fp8_block128_obstacle(gi).empty(), c.path == GemmPath::kFp8Block128) << label;
  }
}

TEST(GemmPath, OptionForcesTheDequantizingPath) {
  const Graph g = test::parse_or_fail(test::gemm_graph("fp8_group128:col:f32", 64, 256, 512));
  ExecutorOptions off;
  off.native_block_scaled_fp8 = false;
  std::string why;
  EXPECT_EQ(detail::gemm_path(info_of(g), off, &why), GemmPath::kDequantBf16);
  EXPECT_NE(why.find("native_block_scaled_fp8"), std::string::npos) << why;
  EXPECT_EQ(detail::gemm_path(info_of(g)), GemmPath::kFp8Block128);
}

TEST(Block128Layout, CublasLtOrders) {
  // BLK128x128: the K-block index contiguous, row blocks ceil(K/128) rounded up to 4 apart.
  EXPECT_EQ(detail::cublas_blk128_offset(0, 3, 3, 4), 3);
  EXPECT_EQ(detail::cublas_blk128_offset(1, 2, 3, 4), 6);
  EXPECT_EQ(detail::cublas_blk128_offset(1, 0, 5, 3), 4);
  EXPECT_EQ(detail::cublas_blk128_offset(4, 2, 5, 3), 18);
  EXPECT_EQ(detail::cublas_blk128_elems(5, 3), 20);
  EXPECT_EQ(detail::cublas_blk128_elems(1, 2), 4);
  EXPECT_EQ(detail::cublas_blk128_elems(0, 2), 0);
  // qfuse's [ceil(N/128), ceil(K/128)] row-major is that order when ceil(K/128) % 4 == 0.
  EXPECT_TRUE(detail::blk128_scales_in_place(3, 4));
  EXPECT_TRUE(detail::blk128_scales_in_place(56, 16));
  EXPECT_FALSE(detail::blk128_scales_in_place(3, 3));
  EXPECT_FALSE(detail::blk128_scales_in_place(1, 2));  // cuBLASLt would read past the end
  // VEC128: the row (token) index contiguous.
  EXPECT_EQ(detail::cublas_vec128_offset(5, 2, 200, 4), 405);
  auto in_place = [](const char* spec, int64_t rows, int64_t cols) {
    QuantSpec q;
    EXPECT_TRUE(parse_quant_spec(spec, &q).ok());
    ScaleShape s;
    EXPECT_TRUE(scale_shape(q, rows, cols, &s).ok());
    return detail::vec128_scales_in_place(ScaleAddr::make(q, s, rows), rows, ceil_div(cols, 128));
  };
  EXPECT_TRUE(in_place("fp8_group128:col:f32", 37, 512));
  EXPECT_TRUE(in_place("fp8_group128:col_tma:f32", 36, 512));
  EXPECT_FALSE(in_place("fp8_group128:col_tma:f32", 37, 512));  // ld 40, not 37
  EXPECT_FALSE(in_place("fp8_group128:row:f32", 36, 512));
  EXPECT_FALSE(in_place("fp8_group128:col_tma:ue8m0_packed", 36, 512));
}

TEST(MemoryPlan, GemmScratchFollowsThePath) {
  ExecutorOptions off;
  off.native_block_scaled_fp8 = false;
  struct Case {
    int64_t K;
    bool native;
    size_t a_bytes, b_bytes, b_scale_bytes;
  };
  // M = 64, N = 320 (3 row blocks).
  const Case cases[] = {
      {512, true, 0, 0, 0},                          // scales read in place
      {384, true, 0, 0, 3 * 4 * 4},                  // ceil(K/128) = 3: repacked, ld 4
      {512, false, 64 * 512 * 2, 320 * 512 * 2, 0},  // dequantized to bf16
  };
  for (const Case& c : cases) {
    const Graph g = test::parse_or_fail(test::gemm_graph("fp8_group128:col:f32", 64, 320, c.K));
    MemoryPlan p;
    ASSERT_TRUE(plan_memory(g, &p, nullptr, c.native ? ExecutorOptions{} : off).ok());
    const MemoryPlan::GemmScratch& s = p.gemm.at("gemm");
    EXPECT_EQ(s.a_bytes, c.a_bytes) << c.K << " " << c.native;
    EXPECT_EQ(s.b_bytes, c.b_bytes) << c.K << " " << c.native;
    EXPECT_EQ(s.b_scale_bytes, c.b_scale_bytes) << c.K << " " << c.native;
    if (s.b_scale_bytes > 0) {
      EXPECT_EQ(s.b_scale_offset % 256, 0u);
      EXPECT_LE(s.b_scale_offset + s.b_scale_bytes, p.cublas_offset);
    }
    size_t bytes = 0;
    ASSERT_TRUE(workspace_bytes(g, &bytes, nullptr, c.native ? ExecutorOptions{} : off).ok());
    EXPECT_EQ(bytes, p.total_bytes);
  }
}

TEST(HostExecutor, GemmGraphRunsOnTheHostPath) {
  const Graph g = test::parse_or_fail(test::gemm_graph("fp8_group128:col_tma:f32", 36, 136, 256));
  HostTensors t;
  ASSERT_TRUE(make_random_inputs(g, 4, &t).ok());
  ASSERT_TRUE(run_host(g, &t).ok());
  std::vector<double> y;
  ASSERT_TRUE(host_values(t.at("y"), &y).ok());
  ASSERT_EQ(y.size(), 36u * 136);
  double mag = 0;
  for (double v : y) {
    ASSERT_TRUE(std::isfinite(v));
    mag = std::max(mag, std::fabs(v));
  }
  EXPECT_GT(mag, 0.0);
}

}  // namespace
}  // namespace qfuse::graph
