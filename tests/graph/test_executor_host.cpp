// The host reference path of the executor: fused and unfused graphs agree within SPEC §0.4 (each
// against the fp64 reference), and the memory plan is sound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "graph/graph_testing.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/graph/executor.h"
#include "qfuse/graph/passes.h"
#include "qfuse/mla_decode/mla_decode.h"
#include "qfuse/quant/capabilities.h"
#include "qfuse/quant/rules.h"

namespace qfuse::graph {
namespace {

using test::json;

struct Runs {
  Graph unfused, fused;
  HostTensors u, f;
};

/// Parses j, fuses a copy, runs both on the same random inputs. Returns false (after reporting)
/// when the host path cannot run an op of the graph.
bool run_both(const json& j, Runs* r, const OpRegistry* reg = nullptr, uint64_t seed = 7) {
  r->unfused = test::parse_or_fail(j, reg);
  r->fused = r->unfused;
  std::vector<PassReport> reports;
  EXPECT_TRUE(run_fusion_passes(FusionConfig{}, &r->fused, &reports, reg).ok());
  EXPECT_TRUE(make_random_inputs(r->unfused, seed, &r->u, reg).ok());
  r->f = r->u;
  const Status a = run_host(r->unfused, &r->u, reg);
  if (a.code() == StatusCode::kNotSupported) return false;
  EXPECT_TRUE(a.ok()) << a.to_string();
  const Status b = run_host(r->fused, &r->f, reg);
  EXPECT_TRUE(b.ok()) << b.to_string();
  return a.ok() && b.ok();
}

/// Both runs' quantized output `q` (+ scales `s`; given scale `sc`) within one step of the values
/// y, the unfused run's allowing y's relative difference `rel_unfused`, the fused run's
/// `rel_fused`.
void expect_quantized_close(const QuantSpec& spec, const Runs& r, const std::vector<double>& y,
                            double rel_unfused = 0x1p-8, double rel_fused = 1e-6,
                            const std::string& q = "q", const std::string& s_name = "s",
                            const char* sc = "sc") {
  const float given = test::scalar_of(r.u, sc);
  for (const HostTensors* t : {&r.u, &r.f}) {
    const bool unfused = t == &r.u;
    std::vector<double> fac;
    const HostTensor* s = t->count(s_name) ? &t->at(s_name) : nullptr;
    const std::vector<double> d = test::dequantize(t->at(q), s, spec, given, &fac);
    ASSERT_EQ(d.size(), y.size());
    std::string report;
    // NOTE: with y exact, the unfused path quantizes bf16(y): its values may be off by bf16's
    // half ulp (2^-9 relative), and its dynamic scales by the same relative amount.
    const int64_t bad =
        test::check_within_one_step(spec, d, fac, y, unfused ? rel_unfused : rel_fused, &report);
    EXPECT_EQ(bad, 0) << to_string(spec) << (unfused ? " unfused" : " fused") << "\n" << report;
  }
}

class HostActQuant : public ::testing::TestWithParam<QuantSpec> {};

TEST_P(HostActQuant, FusedAndUnfusedWithinOneStepOfTheReference) {
  const QuantSpec spec = GetParam();
  Runs r;
  ASSERT_TRUE(run_both(test::act_quant_graph(to_string(spec), 9, 320), &r));
  ASSERT_EQ(r.fused.nodes.size(), 1u);
  const HostTensor& x = r.u.at("x");
  std::vector<uint16_t> bits(x.data.size() / 2);
  std::memcpy(bits.data(), x.data.data(), x.data.size());
  const std::vector<double> y = ref::silu_and_mul(bits.data(), DType::kBF16, 9, 320, 640);
  expect_quantized_close(spec, r, y);
  if (spec.writes_scales()) {
    EXPECT_EQ(r.u.at("s").data.size(), r.f.at("s").data.size());
  }
}

INSTANTIATE_TEST_SUITE_P(AllSpecs, HostActQuant, ::testing::ValuesIn(test::quantized_specs()));

/// Both runs' quantized output "q" (scales "s", given scale "sc") dequantizes to within one step
/// of the unfused graph's bf16 intermediate `exact` (allowing its bf16 rounding).
void expect_both_within_one_step(const Runs& r, const char* exact, const QuantSpec& spec) {
  std::vector<double> y;
  ASSERT_TRUE(host_values(r.u.at(exact), &y).ok());
  const float given = test::scalar_of(r.u, "sc");
  for (const HostTensors* t : {&r.u, &r.f}) {
    std::vector<double> fac;
    const HostTensor* s = t->count("s") ? &t->at("s") : nullptr;
    const std::vector<double> d = test::dequantize(t->at("q"), s, spec, given, &fac);
    std::string report;
    EXPECT_EQ(test::check_within_one_step(spec, d, fac, y, 0x1p-8, &report), 0)
        << to_string(spec) << "\n"
        << report;
  }
}

TEST(HostExecutor, AttentionEpilogueFusedEqualsUnfused) {
  const OpRegistry& reg = test::test_registry();
  for (const QuantSpec& spec : test::test_attention_specs()) {
    Runs r;
    ASSERT_TRUE(run_both(test::attention_quant_graph(to_string(spec)), &r, &reg));
    ASSERT_EQ(r.fused.nodes.size(), 1u) << to_text(r.fused);
    // The unfused graph's bf16 intermediate is the exact output rounded to bf16: both paths are
    // compared with it, allowing that rounding.
    expect_both_within_one_step(r, "a", spec);
  }
}

TEST(HostExecutor, MergeFusedAndUnfusedWithinOneStep) {
  for (const QuantSpec& spec :
       {QuantSpec::fp8_per_tensor(), QuantSpec::fp8_per_group(128), QuantSpec::fp8_per_token()}) {
    Runs r;
    ASSERT_TRUE(run_both(test::merge_quant_graph(to_string(spec)), &r)) << to_string(spec);
    expect_both_within_one_step(r, "m", spec);  // "m": bf16 of the exact merge
  }
}

/// fp64 MLP without any quantization, from the run's inputs: y = down(silu(up(x))).
std::vector<double> exact_mlp(const HostTensors& t, int64_t T, int64_t H, int64_t I) {
  std::vector<double> x, w1;
  EXPECT_TRUE(host_values(t.at("x"), &x).ok());
  EXPECT_TRUE(host_values(t.at("w1"), &w1).ok());
  std::vector<double> h(static_cast<size_t>(T * I));
  for (int64_t r = 0; r < T; ++r)
    for (int64_t i = 0; i < I; ++i) {
      double g = 0, u = 0;
      for (int64_t k = 0; k < H; ++k) {
        g += x[r * H + k] * w1[i * H + k];
        u += x[r * H + k] * w1[(I + i) * H + k];
      }
      h[r * I + i] = g / (1.0 + std::exp(-g)) * u;
    }
  const HostTensor& w2 = t.at("w2");
  std::vector<double> y(static_cast<size_t>(T * H));
  for (int64_t r = 0; r < T; ++r)
    for (int64_t n = 0; n < H; ++n) {
      double acc = 0;
      for (int64_t i = 0; i < I; ++i) {
        float s;
        std::memcpy(&s, t.at("w2s").data.data() + 4 * ((n / 128) * ceil_div(I, 128) + i / 128), 4);
        acc += h[r * I + i] * rules::e4m3_value(w2.data[n * I + i]) * s;
      }
      y[r * H + n] = acc;
    }
  return y;
}

TEST(HostExecutor, MlpFusedAndUnfusedAgreeAndMatchTheExactMlp) {
  Runs r;
  ASSERT_TRUE(run_both(test::mlp_graph(), &r));
  EXPECT_EQ(r.fused.nodes.size(), 3u);
  std::vector<double> yu, yf;
  ASSERT_TRUE(host_values(r.u.at("y"), &yu).ok());
  ASSERT_TRUE(host_values(r.f.at("y"), &yf).ok());
  const std::vector<double> exact = exact_mlp(r.u, 16, 256, 256);
  auto rms = [](const std::vector<double>& a, const std::vector<double>* b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double d = b ? a[i] - (*b)[i] : a[i];
      s += d * d;
    }
    return std::sqrt(s / a.size());
  };
  const double scale = rms(exact, nullptr);
  ASSERT_GT(scale, 0.05) << "inputs should give outputs of order one";
  // FP8 activations (3 mantissa bits, round to nearest) cost a few percent per output.
  EXPECT_LT(rms(yu, &exact) / scale, 0.05);
  EXPECT_LT(rms(yf, &exact) / scale, 0.05);
  // Fused and unfused differ only where bf16 rounding moved a value across an FP8 rounding
  // boundary: far less than either's distance to the exact result.
  EXPECT_LT(rms(yf, &yu) / scale, 0.02);
  const Difference d = compare_values(yf, yu);
  EXPECT_EQ(d.nan_mismatch, 0);
  EXPECT_LT(d.max_abs, 0.2 * d.ref_max_abs);
  // The fused run has no bf16 intermediate.
  EXPECT_EQ(r.f.count("h"), 0u);
  EXPECT_EQ(r.u.count("h"), 1u);
}

TEST(HostExecutor, MlaAttentionFusedAndUnfusedWithinOneStep) {
  // Per cache dtype and output kind: the fused node's codes within one step of the exact fp64
  // output (the unfused graph's bf16 intermediate is that output rounded once), the unfused
  // graph's within one step of its bf16 rounding; and the o_latent form (no W_UV) once.
  struct Case {
    const char* spec;
    const char* cache;
    bool up;
  };
  for (const Case& c :
       {Case{"fp8_per_tensor", "e4m3", true}, Case{"fp8_per_token", "bf16", true},
        Case{"fp8_group128:col_tma:ue8m0_packed", "e4m3", true},
        Case{"fp8_group64:row:f32", "bf16", true}, Case{"nvfp4:swizzled", "e4m3", true},
        Case{"fp8_group128:row:f32", "e4m3", false}}) {
    SCOPED_TRACE(std::string(c.spec) + " " + c.cache + (c.up ? "" : " o_latent"));
    QuantSpec spec;
    ASSERT_TRUE(parse_quant_spec(c.spec, &spec).ok());
    Runs r;
    ASSERT_TRUE(run_both(test::mla_quant_graph(c.spec, 1, c.cache, c.up), &r));
    ASSERT_EQ(r.fused.nodes.size(), 1u) << to_text(r.fused);
    std::vector<double> y;
    ASSERT_TRUE(host_values(r.u.at("o0"), &y).ok());
    double amax = 0.0;
    for (double v : y) amax = std::max(amax, std::fabs(v));
    EXPECT_GT(amax, 0.0) << "random requests see keys";
    // y is the bf16 intermediate: the unfused run quantizes exactly it, the fused run the exact
    // values (half a bf16 ulp away).
    expect_quantized_close(spec, r, y, 1e-6, 0x1p-8, "y0", "s0", "sc0");
  }
}

TEST(HostExecutor, ExampleGraphsRunOnHostDims) {
  for (const char* file :
       {"examples/graphs/deepseek_v3_mlp.json", "examples/graphs/splitkv_oproj.json",
        "examples/graphs/deepseek_v3_mla_decode.json"}) {
    Graph g;
    ParseOptions opt;
    opt.use_host_dims = true;
    ASSERT_TRUE(load_graph_file(test::source_path(file), opt, &g).ok());
    HostTensors t;
    ASSERT_TRUE(make_random_inputs(g, 1, &t).ok());
    const Status st = run_host(g, &t);
    if (st.code() == StatusCode::kNotSupported) continue;  // merge_states not built in yet
    ASSERT_TRUE(st.ok()) << st.to_string();
    std::vector<double> y;
    ASSERT_TRUE(host_values(t.at("y"), &y).ok());
    double m = 0;
    for (double v : y) {
      ASSERT_TRUE(std::isfinite(v)) << file;
      m = std::max(m, std::fabs(v));
    }
    EXPECT_GT(m, 0.1) << file;
  }
}

TEST(HostExecutor, MissingInputsAreNamed) {
  const Graph g = test::parse_or_fail(test::mlp_graph());
  HostTensors t;
  ASSERT_TRUE(make_random_inputs(g, 3, &t).ok());
  t.erase("w2s");
  Status st = run_host(g, &t);
  EXPECT_NE(st.message().find("graph input 'w2s' is not given"), std::string::npos) << st.message();
  ASSERT_TRUE(make_random_inputs(g, 3, &t).ok());
  t.at("x").data.pop_back();
  st = run_host(g, &t);
  EXPECT_NE(st.message().find("graph input 'x'"), std::string::npos) << st.message();
}

TEST(MemoryPlan, SlicesAreAlignedDisjointAndCoverEveryNonInput) {
  for (json j : {test::mlp_graph(), test::mlp_graph("fp8_group128:col_tma:f32"),
                 test::act_quant_graph("nvfp4:swizzled"), test::mla_quant_graph("none", 2)}) {
    const Graph g = test::parse_or_fail(j);
    MemoryPlan p;
    ASSERT_TRUE(plan_memory(g, &p).ok());
    size_t bytes = 0;
    ASSERT_TRUE(workspace_bytes(g, &bytes).ok());
    EXPECT_EQ(bytes, p.total_bytes);
    std::vector<std::pair<size_t, size_t>> ranges;
    for (const auto& [name, t] : g.tensors) {
      if (g.is_input(name)) {
        EXPECT_EQ(p.tensors.count(name), 0u) << name;
        continue;
      }
      ASSERT_EQ(p.tensors.count(name), 1u) << name;
      const auto& s = p.tensors.at(name);
      EXPECT_EQ(s.offset % 256, 0u);
      EXPECT_EQ(s.bytes, t.bytes());
      ranges.emplace_back(s.offset, s.offset + s.bytes);
    }
    for (const auto& [node, s] : p.gemm) {
      if (s.a_bytes) ranges.emplace_back(s.a_offset, s.a_offset + s.a_bytes);
      if (s.b_bytes) ranges.emplace_back(s.b_offset, s.b_offset + s.b_bytes);
      if (s.b_scale_bytes)
        ranges.emplace_back(s.b_scale_offset, s.b_scale_offset + s.b_scale_bytes);
    }
    for (const auto& [node, s] : p.scratch) {
      EXPECT_EQ(s.offset % 256, 0u) << node;
      ranges.emplace_back(s.offset, s.offset + s.bytes);
    }
    if (p.cublas_bytes) ranges.emplace_back(p.cublas_offset, p.cublas_offset + p.cublas_bytes);
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 0; i < ranges.size(); ++i) {
      EXPECT_LE(ranges[i].second, p.total_bytes);
      if (i > 0) {
        EXPECT_LE(ranges[i - 1].second, ranges[i].first);
      }
    }
  }
  // The MLP's down GEMM (block-scaled FP8, row-major activation scales, which cuBLASLt does not
  // read) gets dequantization scratch; a bf16 GEMM none.
  MemoryPlan p;
  ASSERT_TRUE(plan_memory(test::parse_or_fail(test::mlp_graph()), &p).ok());
  EXPECT_EQ(p.gemm.at("up").a_bytes, 0u);
  EXPECT_EQ(p.gemm.at("down").a_bytes, 16u * 256 * 2);
  EXPECT_EQ(p.gemm.at("down").b_bytes, 256u * 256 * 2);
  EXPECT_GT(p.cublas_bytes, 0u);
  // Each MLA attention node gets the decode's workspace (planned for 132 SMs without a device):
  // 2 requests of 2 tokens, 16 heads.
  MemoryPlan m;
  ASSERT_TRUE(plan_memory(test::parse_or_fail(test::mla_quant_graph("none", 2)), &m).ok());
  ASSERT_EQ(m.scratch.size(), 2u);
  size_t want = 0;
  if (!gpu_available())
    ASSERT_TRUE(mla_decode_workspace_size(2, 2, 16, {}, &want, 132).ok());
  else
    ASSERT_TRUE(mla_decode_workspace_size(2, 2, 16, {}, &want).ok());
  EXPECT_EQ(m.scratch.at("attn0").bytes, want);
  EXPECT_EQ(m.scratch.at("attn1").bytes, want);
  EXPECT_NE(m.scratch.at("attn0").offset, m.scratch.at("attn1").offset);
  // The example's cache writer works in place: its output is the input cache's storage.
  Graph ex;
  ParseOptions opt;
  opt.use_host_dims = true;
  ASSERT_TRUE(
      load_graph_file(test::source_path("examples/graphs/deepseek_v3_mla_decode.json"), opt, &ex)
          .ok());
  MemoryPlan e;
  ASSERT_TRUE(plan_memory(ex, &e).ok());
  ASSERT_EQ(e.aliases.size(), 1u);
  EXPECT_EQ(e.aliases.at("cache"), "cache_in");
  EXPECT_EQ(e.tensors.count("cache"), 0u) << "no slice for the in-place output";
  EXPECT_EQ(e.tensors.count("o"), 1u);
}

TEST(HostValues, CompareValues) {
  const Difference d = compare_values({1.0, 2.5, NAN}, {1.0, 2.0, 1.0});
  EXPECT_EQ(d.max_abs, 0.5);
  EXPECT_DOUBLE_EQ(d.max_rel, 0.25);
  EXPECT_DOUBLE_EQ(d.rms_rel, 0.5 / std::sqrt(5.0));
  EXPECT_EQ(d.nan_mismatch, 1);
  EXPECT_EQ(d.ref_max_abs, 2.0);
}

}  // namespace
}  // namespace qfuse::graph
