// Fusion passes: every pattern matches where it should and nowhere else; counts and skip reasons;
// a pass never produces a graph that fails validation.
#include <gtest/gtest.h>

#include "graph/graph_testing.h"
#include "qfuse/graph/passes.h"
#include "qfuse/quant/capabilities.h"

namespace qfuse::graph {
namespace {

using test::json;

PassReport run(const std::string& pass, Graph* g, FusionConfig cfg = {},
               const OpRegistry* reg = nullptr) {
  PassReport r;
  const Status st = run_pass(pass, cfg, g, &r, reg);
  EXPECT_TRUE(st.ok()) << st.to_string();
  EXPECT_TRUE(validate(*g, reg).ok()) << to_text(*g);
  return r;
}

int count_op(const Graph& g, const std::string& op) {
  int n = 0;
  for (const Node& x : g.nodes) n += x.op == op;
  return n;
}

bool has_reason(const PassReport& r, const std::string& node, const std::string& fragment) {
  for (const auto& s : r.skipped)
    if (s.node == node && s.reason.find(fragment) != std::string::npos) return true;
  return false;
}

class ActQuantEveryKind : public ::testing::TestWithParam<QuantSpec> {};

TEST_P(ActQuantEveryKind, FusesWhereTheCapabilitySaysSo) {
  const QuantSpec spec = GetParam();
  Graph g = test::parse_or_fail(test::act_quant_graph(to_string(spec)));
  const Graph before = g;
  const PassReport r = run("fuse_act_quant", &g);
  EXPECT_EQ(r.matched, 1);
  const bool supported = fused_output_quant_supported("silu_mul_quant", spec);
  EXPECT_EQ(r.replaced, supported ? 1 : 0) << r.to_string();
  if (!supported) {
    EXPECT_EQ(g, before);
    EXPECT_TRUE(has_reason(r, "act", "capability query")) << r.to_string();
    return;
  }
  ASSERT_EQ(g.nodes.size(), 1u);
  const Node& f = g.nodes[0];
  EXPECT_EQ(f.op, "silu_mul_quant");
  EXPECT_EQ(f.name, "act+quant");
  EXPECT_EQ(f.attr("quant"), to_string(spec));
  EXPECT_EQ(f.inputs.at("x"), "x");
  EXPECT_EQ(f.outputs.at("out"), "q");
  EXPECT_EQ(f.outputs.count("scales"), spec.writes_scales() ? 1u : 0u);
  EXPECT_EQ(f.inputs.count("scale"), spec.reads_scale() ? 1u : 0u);
  EXPECT_EQ(g.tensor("h"), nullptr) << "the intermediate is gone";
  EXPECT_EQ(*g.tensor("q"), *before.tensor("q")) << "outputs keep their types";
}

INSTANTIATE_TEST_SUITE_P(AllSpecs, ActQuantEveryKind, ::testing::ValuesIn(all_quant_specs()));

TEST(FuseActQuant, MlpExampleCountsAndResult) {
  Graph g;
  ASSERT_TRUE(
      load_graph_file(test::source_path("examples/graphs/deepseek_v3_mlp.json"), {}, &g).ok());
  std::vector<PassReport> reports;
  ASSERT_TRUE(run_fusion_passes(FusionConfig{}, &g, &reports).ok());
  ASSERT_EQ(reports.size(), pass_names().size());
  EXPECT_EQ(reports[0].name, "fuse_act_quant");
  EXPECT_EQ(reports[0].matched, 1);
  EXPECT_EQ(reports[0].replaced, 1);
  EXPECT_EQ(reports[1].matched, 0);
  EXPECT_EQ(reports[2].matched, 0);
  EXPECT_EQ(count_op(g, "silu_mul_quant"), 1);
  EXPECT_EQ(count_op(g, "quantize"), 0);
  EXPECT_EQ(count_op(g, "silu_and_mul"), 0);
  EXPECT_EQ(count_op(g, "gemm"), 2);
  EXPECT_EQ(g.tensor("h"), nullptr);
  EXPECT_TRUE(validate(g).ok());
}

TEST(FuseActQuant, CountsSeveralPatternsAndIgnoresNonMatches) {
  json j = test::act_quant_graph("fp8_per_token");
  // A second silu -> quantize pair, and a silu with no quantize after it.
  j["inputs"].push_back("x2");
  j["tensors"]["x2"] = {{"dtype", "bf16"}, {"shape", {"T", "2*H"}}};
  j["nodes"].push_back({{"name", "act2"},
                        {"op", "silu_and_mul"},
                        {"inputs", {{"x", "x2"}}},
                        {"outputs", {{"out", "h2"}}}});
  j["nodes"].push_back({{"name", "quant2"},
                        {"op", "quantize"},
                        {"inputs", {{"x", "h2"}}},
                        {"outputs", {{"out", "q2"}, {"scales", "s2"}}},
                        {"attrs", {{"quant", "fp8_group64:col:ue8m0"}}}});
  j["nodes"].push_back({{"name", "act3"},
                        {"op", "silu_and_mul"},
                        {"inputs", {{"x", "x2"}}},
                        {"outputs", {{"out", "h3"}}}});
  j["outputs"].push_back("q2");
  j["outputs"].push_back("s2");
  j["outputs"].push_back("h3");
  Graph g = test::parse_or_fail(j);
  const PassReport r = run("fuse_act_quant", &g);
  EXPECT_EQ(r.matched, 2) << r.to_string();
  EXPECT_EQ(r.replaced, 2) << r.to_string();
  EXPECT_TRUE(r.skipped.empty());
  EXPECT_EQ(count_op(g, "silu_mul_quant"), 2);
  EXPECT_EQ(count_op(g, "silu_and_mul"), 1);
  EXPECT_EQ(g.node("act2+quant2")->attr("quant"), "fp8_group64:col:ue8m0");
}

TEST(FuseActQuant, NotWhenTheIntermediateHasAnotherReader) {
  json j = test::act_quant_graph("fp8_per_token");
  j["nodes"].push_back({{"name", "other"},
                        {"op", "quantize"},
                        {"inputs", {{"x", "h"}}},
                        {"outputs", {{"out", "q_other"}}},
                        {"attrs", {{"quant", "none"}}}});
  j["outputs"].push_back("q_other");
  Graph g = test::parse_or_fail(j);
  const Graph before = g;
  const PassReport r = run("fuse_act_quant", &g);
  EXPECT_EQ(r.matched, 1);
  EXPECT_EQ(r.replaced, 0);
  EXPECT_TRUE(has_reason(r, "act", "intermediate 'h' is also read by 'other' (input 'x')"))
      << r.to_string();
  EXPECT_EQ(g, before);
}

TEST(FuseActQuant, NotWhenTheIntermediateIsAGraphOutput) {
  json j = test::act_quant_graph("fp8_per_token");
  j["outputs"].push_back("h");
  Graph g = test::parse_or_fail(j);
  const Graph before = g;
  const PassReport r = run("fuse_act_quant", &g);
  EXPECT_EQ(r.matched, 1);
  EXPECT_EQ(r.replaced, 0);
  EXPECT_TRUE(has_reason(r, "act", "intermediate 'h' is a graph output")) << r.to_string();
  EXPECT_EQ(g, before);
}

TEST(FuseActQuant, NotWhenTheFlagIsOff) {
  Graph g = test::parse_or_fail(test::mlp_graph());
  const Graph before = g;
  FusionConfig cfg;
  cfg.fuse_act_quant = false;
  const PassReport r = run("fuse_act_quant", &g, cfg);
  EXPECT_EQ(r.matched, 1);
  EXPECT_EQ(r.replaced, 0);
  EXPECT_TRUE(has_reason(r, "act", "fuse_act_quant is off")) << r.to_string();
  EXPECT_EQ(g, before);
  // The attention flag does not gate the activation pass.
  FusionConfig attn_off;
  attn_off.fuse_attn_quant = false;
  EXPECT_EQ(run("fuse_act_quant", &g, attn_off).replaced, 1);
}

TEST(FuseActQuant, NotWhenTheCapabilityQuerySaysNo) {
  // A registry in which silu_and_mul's fused variant writes only fp8_per_tensor.
  static const OpRegistry reg = [] {
    OpRegistry r;
    for (const std::string& name : default_registry().names()) {
      OpDef d = *default_registry().find(name);
      if (name == "silu_and_mul")
        d.fused_quant_supported = [](const QuantSpec& s) {
          return s == QuantSpec::fp8_per_tensor();
        };
      EXPECT_TRUE(r.add(d).ok());
    }
    return r;
  }();
  Graph g = test::parse_or_fail(test::act_quant_graph("fp8_per_token"), &reg);
  PassReport r = run("fuse_act_quant", &g, {}, &reg);
  EXPECT_EQ(r.matched, 1);
  EXPECT_EQ(r.replaced, 0);
  EXPECT_TRUE(has_reason(r, "act", "'silu_mul_quant' does not write fp8_per_token"))
      << r.to_string();
  Graph ok = test::parse_or_fail(test::act_quant_graph("fp8_per_tensor"), &reg);
  r = run("fuse_act_quant", &ok, {}, &reg);
  EXPECT_EQ(r.replaced, 1);
}

TEST(FuseMergeQuant, FollowsTheCapabilityTable) {
  for (const QuantSpec& spec : all_quant_specs()) {
    if (spec.kind == QuantKind::kNone) continue;
    Graph g = test::parse_or_fail(test::merge_quant_graph(to_string(spec)));
    const Graph before = g;
    const PassReport r = run("fuse_merge_quant", &g);
    EXPECT_EQ(r.matched, 1) << to_string(spec);
    // NOTE: the merge_states kernel family declares its specs in the capability table (every
    // kind today); a kind it dropped would stay unfused with the capability query as the reason.
    const bool supported = fused_output_quant_supported("merge_states", spec);
    EXPECT_EQ(r.replaced, supported ? 1 : 0) << to_string(spec) << " " << r.to_string();
    if (supported) {
      ASSERT_EQ(g.nodes.size(), 1u);
      EXPECT_EQ(g.nodes[0].op, "merge_states");
      EXPECT_EQ(g.nodes[0].attr("quant"), to_string(spec));
      EXPECT_EQ(g.nodes[0].outputs.at("out"), "q");
    } else {
      EXPECT_TRUE(has_reason(r, "merge", "capability query")) << r.to_string();
      EXPECT_EQ(g, before);
    }
  }
}

TEST(FuseMergeQuant, GatedByTheAttentionFlagAndIgnoresQuantizedMerges) {
  Graph g = test::parse_or_fail(test::merge_quant_graph("fp8_per_tensor"));
  FusionConfig cfg;
  cfg.fuse_attn_quant = false;
  PassReport r = run("fuse_merge_quant", &g, cfg);
  EXPECT_EQ(r.matched, 1);
  EXPECT_EQ(r.replaced, 0);
  EXPECT_TRUE(has_reason(r, "merge", "fuse_attn_quant is off")) << r.to_string();
  // The activation pass never touches a merge.
  r = run("fuse_act_quant", &g);
  EXPECT_EQ(r.matched, 0);
}

TEST(FuseAttnQuant, RegisteredAttentionOpFusesItsEpilogue) {
  const OpRegistry& reg = test::test_registry();
  for (const QuantSpec& spec : all_quant_specs()) {
    if (spec.kind == QuantKind::kNone) continue;
    Graph g = test::parse_or_fail(test::attention_quant_graph(to_string(spec)), &reg);
    const Graph before = g;
    const PassReport r = run("fuse_attn_quant", &g, {}, &reg);
    EXPECT_EQ(r.matched, 1) << to_string(spec);
    bool supported = false;
    for (const QuantSpec& s : test::test_attention_specs()) supported |= s == spec;
    EXPECT_EQ(r.replaced, supported ? 1 : 0) << to_string(spec) << " " << r.to_string();
    if (supported) {
      ASSERT_EQ(g.nodes.size(), 1u);
      EXPECT_EQ(g.nodes[0].op, "test_attention");
      EXPECT_EQ(g.nodes[0].name, "attn+quant");
      EXPECT_EQ(g.nodes[0].attr("quant"), to_string(spec));
      // Running the pass again finds nothing: the attention op already writes quantized output.
      const PassReport again = run("fuse_attn_quant", &g, {}, &reg);
      EXPECT_EQ(again.matched, 0);
    } else {
      EXPECT_TRUE(has_reason(r, "attn", "capability query")) << r.to_string();
      EXPECT_EQ(g, before);
    }
  }
}

TEST(FuseAttnQuant, FlagOffAndOtherPassesLeaveItAlone) {
  const OpRegistry& reg = test::test_registry();
  Graph g = test::parse_or_fail(test::attention_quant_graph("fp8_per_tensor"), &reg);
  const Graph before = g;
  FusionConfig cfg;
  cfg.fuse_attn_quant = false;
  PassReport r = run("fuse_attn_quant", &g, cfg, &reg);
  EXPECT_EQ(r.matched, 1);
  EXPECT_EQ(r.replaced, 0);
  EXPECT_TRUE(has_reason(r, "attn", "fuse_attn_quant is off"));
  EXPECT_EQ(run("fuse_act_quant", &g, {}, &reg).matched, 0);
  EXPECT_EQ(run("fuse_merge_quant", &g, {}, &reg).matched, 0);
  EXPECT_EQ(g, before);
}

TEST(FuseAttnQuant, MlaLayersFuseTheirEpilogues) {
  for (int layers : {1, 3}) {
    Graph g = test::parse_or_fail(test::mla_quant_graph("fp8_per_tensor", layers));
    const Graph before = g;
    const PassReport r = run("fuse_attn_quant", &g);
    EXPECT_EQ(r.matched, layers) << r.to_string();
    EXPECT_EQ(r.replaced, layers) << r.to_string();
    EXPECT_TRUE(r.skipped.empty()) << r.to_string();
    EXPECT_EQ(count_op(g, "quantize"), 0);
    ASSERT_EQ(count_op(g, "mla_attention"), layers);
    for (int l = 0; l < layers; ++l) {
      const std::string L = std::to_string(l);
      const Node* f = nullptr;
      for (const Node& n : g.nodes)
        if (n.name == "attn" + L + "+quant" + L) f = &n;
      ASSERT_NE(f, nullptr) << to_text(g);
      EXPECT_EQ(f->attr("quant"), "fp8_per_tensor");
      EXPECT_EQ(f->attr("s_q"), "2") << "the attention's attributes are kept";
      EXPECT_EQ(f->inputs.at("scale"), "sc" + L);
      EXPECT_EQ(f->inputs.at("w_uv"), "w" + L);
      EXPECT_EQ(f->outputs.at("out"), "y" + L);
      EXPECT_EQ(g.tensor("o" + L), nullptr) << "the bf16 intermediate is gone";
      EXPECT_EQ(*g.tensor("y" + L), *before.tensor("y" + L));
    }
    EXPECT_EQ(run("fuse_attn_quant", &g).matched, 0) << "nothing left to fuse";
  }
}

TEST(FuseAttnQuant, MlaFollowsTheCapabilityTable) {
  // Every kind with qfuse's rules fuses (with and without W_UV); the reference engine's rule,
  // which the standalone quantize writes for the drop-in ops, is not one of the fused kernel's:
  // the pair stays unfused, with the reason.
  std::vector<QuantSpec> specs = all_quant_specs();
  for (const QuantSpec& s : engine_quant_specs()) specs.push_back(s);
  for (bool up : {true, false})
    for (const QuantSpec& spec : specs) {
      if (spec.kind == QuantKind::kNone) continue;
      SCOPED_TRACE(to_string(spec) + (up ? " with w_uv" : " o_latent"));
      Graph g = test::parse_or_fail(test::mla_quant_graph(to_string(spec), 1, "e4m3", up));
      const Graph before = g;
      const PassReport r = run("fuse_attn_quant", &g);
      EXPECT_EQ(r.matched, 1);
      const bool supported = spec.rule == QuantRule::kNative;
      EXPECT_EQ(supported, fused_output_quant_supported("mla_decode_up_proj", spec));
      EXPECT_EQ(r.replaced, supported ? 1 : 0) << r.to_string();
      if (!supported) {
        EXPECT_TRUE(has_reason(r, "attn0", "capability query")) << r.to_string();
        EXPECT_EQ(g, before);
      } else {
        ASSERT_EQ(g.nodes.size(), 1u);
        EXPECT_EQ(g.nodes[0].inputs.count("scales"), 0u);
        EXPECT_EQ(g.nodes[0].outputs.count("scales"), spec.writes_scales() ? 1u : 0u);
      }
    }
}

TEST(Passes, OutputAlwaysValidates) {
  // Every kind x every flag combination x with / without an extra reader of the intermediate.
  const OpRegistry& reg = test::test_registry();
  int graphs = 0;
  for (const QuantSpec& spec : all_quant_specs()) {
    for (int flags = 0; flags < 4; ++flags) {
      for (bool extra_reader : {false, true}) {
        for (json j :
             {test::act_quant_graph(to_string(spec)), test::merge_quant_graph(to_string(spec)),
              test::attention_quant_graph(to_string(spec))}) {
          const std::string mid = j["nodes"][0]["outputs"]["out"];
          if (extra_reader) j["outputs"].push_back(mid);
          Graph g;
          ParseOptions opt;
          opt.registry = &reg;
          if (!parse_graph_json(j.dump(), opt, &g).ok()) continue;  // e.g. nvfp4 with odd sizes
          FusionConfig cfg;
          cfg.fuse_act_quant = flags & 1;
          cfg.fuse_attn_quant = flags & 2;
          std::vector<PassReport> reports;
          const Status st = run_fusion_passes(cfg, &g, &reports, &reg);
          ASSERT_TRUE(st.ok()) << st.to_string();
          ASSERT_TRUE(validate(g, &reg).ok()) << to_text(g);
          Graph back;
          ASSERT_TRUE(parse_graph_json(to_json(g, &reg), opt, &back).ok());
          EXPECT_EQ(back, g);
          ++graphs;
        }
      }
    }
  }
  EXPECT_GT(graphs, 100);
}

TEST(Passes, ReportsAndErrors) {
  Graph g = test::parse_or_fail(test::mlp_graph());
  PassReport r;
  const Status st = run_pass("fuse_everything", FusionConfig{}, &g, &r);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("unknown pass 'fuse_everything'"), std::string::npos);
  FusionConfig off;
  off.fuse_act_quant = false;
  ASSERT_TRUE(run_pass("fuse_act_quant", off, &g, &r).ok());
  EXPECT_EQ(r.to_string(),
            "fuse_act_quant: matched 1, replaced 0\n  skipped 'act': fuse_act_quant is off");
  // An invalid graph is refused before the pass touches it.
  g.tensors["h"].shape = {1, 1};
  EXPECT_FALSE(run_pass("fuse_act_quant", FusionConfig{}, &g, &r).ok());
}

}  // namespace
}  // namespace qfuse::graph
