// Graph validation (errors name the node and field) and the JSON format (round trip, examples).
#include <gtest/gtest.h>

#include "graph/graph_testing.h"
#include "qfuse/graph/passes.h"

namespace qfuse::graph {
namespace {

using test::json;

/// Parsing `j` fails with a message containing every fragment.
void expect_error(const json& j, std::initializer_list<const char*> fragments) {
  const std::string msg = test::parse_error(j);
  ASSERT_FALSE(msg.empty()) << "parsed:\n" << j.dump(2);
  for (const char* f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << msg;
}

TEST(GraphJson, ExamplesParseAndRoundTrip) {
  for (const char* file :
       {"examples/graphs/deepseek_v3_mlp.json", "examples/graphs/splitkv_oproj.json",
        "examples/graphs/deepseek_v3_mla_decode.json"}) {
    for (bool host : {false, true}) {
      Graph g;
      ParseOptions opt;
      opt.use_host_dims = host;
      const Status st = load_graph_file(test::source_path(file), opt, &g);
      ASSERT_TRUE(st.ok()) << st.to_string();
      EXPECT_TRUE(validate(g).ok());
      Graph back;
      ASSERT_TRUE(parse_graph_json(to_json(g), {}, &back).ok()) << to_json(g);
      EXPECT_EQ(back, g) << to_json(g);
      EXPECT_EQ(to_json(back), to_json(g));
    }
  }
}

TEST(GraphJson, ExampleShapesFollowTheDims) {
  Graph big, small, custom;
  const std::string f = test::source_path("examples/graphs/deepseek_v3_mlp.json");
  ASSERT_TRUE(load_graph_file(f, {}, &big).ok());
  ParseOptions host;
  host.use_host_dims = true;
  ASSERT_TRUE(load_graph_file(f, host, &small).ok());
  ParseOptions over;
  over.dim_overrides = {{"T", 8}};
  ASSERT_TRUE(load_graph_file(f, over, &custom).ok());
  EXPECT_EQ(big.tensor("gate_up")->shape, (std::vector<int64_t>{4096, 4096}));
  EXPECT_EQ(big.tensor("h_scales")->shape, (std::vector<int64_t>{16, 4096}));
  EXPECT_EQ(small.tensor("w_down_scale")->shape, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(custom.tensor("y")->shape, (std::vector<int64_t>{8, 7168}));
  // T = 7 is not a multiple of 4: the declared [I/128, T] no longer fits the TMA-aligned layout
  // ([G, round_up(T, 4)]), and validation says where.
  ParseOptions odd;
  odd.dim_overrides = {{"T", 7}};
  const Status st = load_graph_file(f, odd, &custom);
  EXPECT_NE(st.message().find("node 'quant': output 'scales' (tensor 'h_scales'): expected shape "
                              "[16, 8], got [16, 7]"),
            std::string::npos)
      << st.message();
}

TEST(GraphJson, InferredTensorsAndRoundTripAfterPasses) {
  Graph g = test::parse_or_fail(test::mlp_graph());
  ASSERT_NE(g.tensor("gu"), nullptr);
  EXPECT_EQ(g.tensor("gu")->shape, (std::vector<int64_t>{16, 512}));
  EXPECT_EQ(g.tensor("hq")->quant, QuantSpec::fp8_per_group(128));
  EXPECT_EQ(g.tensor("hs")->shape, (std::vector<int64_t>{16, 2}));
  std::vector<PassReport> reports;
  ASSERT_TRUE(run_fusion_passes(FusionConfig{}, &g, &reports).ok());
  Graph back;
  ASSERT_TRUE(parse_graph_json(to_json(g), {}, &back).ok());
  EXPECT_EQ(back, g);
}

TEST(GraphJson, TextFormNamesNodesOpsAndTensors) {
  const Graph g = test::parse_or_fail(test::mlp_graph());
  const std::string t = to_text(g);
  for (const char* s : {"graph 'mlp'", "up", "gemm", "silu_and_mul", "quantize", "out=hq",
                        "fp8_group128:row:f32", "outputs: y"})
    EXPECT_NE(t.find(s), std::string::npos) << s << "\n" << t;
}

TEST(GraphValidation, UnknownOp) {
  json j = test::mlp_graph();
  j["nodes"][1]["op"] = "silu_and_mull";
  expect_error(j, {"node 'act'", "unknown op 'silu_and_mull'", "silu_and_mul"});
}

TEST(GraphValidation, DanglingEdge) {
  json j = test::mlp_graph();
  j["nodes"][1]["inputs"]["x"] = "nowhere";
  expect_error(j, {"node 'act'", "input 'x'", "'nowhere'", "dangling"});
}

TEST(GraphValidation, Cycle) {
  json j = test::act_quant_graph("fp8_per_token");
  // act reads what a second silu writes, which reads act's output.
  j["nodes"][0]["inputs"]["x"] = "loop";
  j["nodes"].push_back({{"name", "back"},
                        {"op", "silu_and_mul"},
                        {"inputs", {{"x", "h"}}},
                        {"outputs", {{"out", "loop"}}}});
  expect_error(j, {"cycle", "'act'", "'back'"});
}

TEST(GraphValidation, ShapeMismatchAlongAnEdge) {
  json j = test::mlp_graph();
  j["tensors"]["h"] = {{"dtype", "bf16"}, {"shape", {"T", "2*I"}}};
  expect_error(
      j, {"node 'act'", "output 'out' (tensor 'h')", "expected shape [16, 256]", "got [16, 512]"});
}

TEST(GraphValidation, DtypeMismatchAlongAnEdge) {
  json j = test::mlp_graph();
  j["tensors"]["h"] = {{"dtype", "fp16"}, {"shape", {"T", "I"}}};
  expect_error(j, {"node 'act'", "output 'out' (tensor 'h')", "expected dtype bf16, got fp16"});
  json k = test::mlp_graph();
  k["tensors"]["x"]["dtype"] = "fp32";
  expect_error(k, {"node 'up'", "input 'a' (tensor 'x')", "got fp32"});
  json w = test::mlp_graph();
  w["tensors"]["w2"]["dtype"] = "bf16";
  expect_error(w, {"node 'down'", "input 'b' (tensor 'w2')", "expected dtype e4m3"});
}

TEST(GraphValidation, QuantMismatchAlongAnEdge) {
  json j = test::mlp_graph();
  j["tensors"]["hq"] = {{"dtype", "e4m3"}, {"shape", {"T", "I"}}, {"quant", "fp8_per_token"}};
  expect_error(j, {"node 'quant'", "output 'out' (tensor 'hq')",
                   "expected quant fp8_group128:row:f32, got fp8_per_token"});
}

TEST(GraphValidation, QuantKindNoOpSupports) {
  json j = test::mlp_graph("fp8_group32:row:f32");
  expect_error(j, {"node 'quant'", "attr 'quant'", "fp8_group32"});
  // nvfp4 is a valid kind, but no gemm reads it on this build.
  json k = test::mlp_graph("nvfp4:swizzled");
  k["nodes"][2]["inputs"]["scale"] = "gs";
  k["inputs"].push_back("gs");
  k["tensors"]["gs"] = {{"dtype", "fp32"}, {"shape", {1}}};
  expect_error(k, {"node 'down'", "input 'a' (tensor 'hq')", "does not read nvfp4:swizzled"});
  // silu_and_mul writes no quantized output: its capability says so.
  json s = test::act_quant_graph("fp8_per_token");
  s["nodes"][0]["attrs"] = {{"quant", "fp8_per_token"}};
  expect_error(s, {"node 'act'", "attr 'quant' is unknown for op 'silu_and_mul'"});
}

TEST(GraphValidation, ScaleInputsFollowTheKind) {
  json j = test::act_quant_graph("fp8_per_tensor");
  j["nodes"][1]["inputs"].erase("scale");
  j["inputs"] = {"x"};
  j["tensors"].erase("sc");
  expect_error(j, {"node 'quant'", "input 'scale' is required for quant fp8_per_tensor"});
  json k = test::act_quant_graph("fp8_per_token");
  k["nodes"][1]["outputs"].erase("scales");
  k["outputs"] = {"q"};
  expect_error(k, {"node 'quant'", "output 'scales' must be connected"});
  json w = test::act_quant_graph("fp8_per_tensor");
  w["tensors"]["sc"]["shape"] = {2};
  expect_error(w, {"node 'quant'", "input 'scale' (tensor 'sc')", "expected [1] fp32"});
}

TEST(GraphValidation, PortsAttributesAndNames) {
  json a = test::mlp_graph();
  a["nodes"][1]["attrs"] = {{"foo", 1}};
  expect_error(a, {"node 'act'", "attr 'foo' is unknown"});
  json b = test::mlp_graph();
  b["nodes"][1]["inputs"]["y"] = "gu";
  expect_error(b, {"node 'act'", "input 'y' is unknown for op 'silu_and_mul'"});
  json c = test::mlp_graph();
  c["nodes"][1]["inputs"] = json::object();
  expect_error(c, {"node 'act'", "input 'x' is required"});
  json d = test::mlp_graph();
  d["nodes"][3]["attrs"]["b_scaling"] = "block64";
  expect_error(d, {"node 'down'", "attr 'b_scaling'", "none|per_tensor|block128", "block64"});
  json e = test::mlp_graph();
  e["nodes"][1]["name"] = "up";
  expect_error(e, {"node 'up'", "name used twice"});
  json f = test::mlp_graph();
  f["nodes"][1]["outputs"]["out"] = "gu";
  expect_error(f, {"node 'act'", "writes tensor 'gu'", "node 'up' also writes"});
  json g = test::mlp_graph();
  g["nodes"][3]["attrs"]["out_dtype"] = "fp64";
  expect_error(g, {"node 'down'", "attr 'out_dtype'", "unknown dtype 'fp64'"});
}

TEST(GraphValidation, MlaOpsNameWhatIsWrong) {
  // Node 0 is attn0 (mla_attention), node 1 quant0; tensors as test::mla_quant_graph.
  const auto mla = [](const char* cache = "bf16") {
    return test::mla_quant_graph("fp8_per_tensor", 1, cache);
  };
  json a = mla();
  a["tensors"]["q0"]["shape"] = {"B*SQ", "N", 512};
  expect_error(a, {"node 'attn0'", "input 'q'", "[T, N, 576]"});
  json b = mla();
  b["dims"]["N"] = 24;
  expect_error(b, {"node 'attn0'", "heads (dim 1) must be 16, 32, 64 or 128", "24"});
  json c = mla();
  c["nodes"][0]["attrs"]["s_q"] = "3";
  expect_error(c, {"node 'attn0'", "attr 's_q'", "1, 2 or 4"});
  json d = mla();
  d["dims"]["B"] = 3;
  d["nodes"][0]["attrs"]["s_q"] = "4";
  expect_error(d, {"node 'attn0'", "not a multiple of attr s_q"});
  json e = mla();
  e["tensors"]["block_table"]["shape"] = {3, "MB"};
  expect_error(e, {"node 'attn0'", "input 'block_table'", "B = T / s_q = 2"});
  json f = mla();
  f["tensors"]["seq_lens"]["shape"] = {3};
  expect_error(f, {"node 'attn0'", "input 'seq_lens'", "[2]"});
  json g = mla();
  g["tensors"]["w0"]["shape"] = {"N", 512, 64};
  expect_error(g, {"node 'attn0'", "input 'w_uv'", "[16, 512, 128]"});
  json h = mla("e4m3");
  h["nodes"][0]["inputs"].erase("k_scale");
  expect_error(h, {"node 'attn0'", "k_scale"});
  json i = mla("bf16");
  i["inputs"].push_back("ks");
  i["tensors"]["ks"] = {{"dtype", "fp32"}, {"shape", {1}}};
  i["nodes"][0]["inputs"]["k_scale"] = "ks";
  expect_error(i, {"node 'attn0'", "input 'k_scale'", "only for an e4m3 cache"});
  json k = mla();
  k["dims"]["BS"] = 8;
  expect_error(k, {"node 'attn0'", "block size", "16, 32, 64 or 128"});
  json l = mla();
  l["nodes"][0]["attrs"]["softmax_scale"] = "-1";
  expect_error(l, {"node 'attn0'", "attr 'softmax_scale'", "> 0"});
  json m = mla();
  m["nodes"][0]["attrs"]["quant"] = "fp8_per_token:engine";
  m["nodes"][0]["inputs"]["scale"] = "sc0";
  expect_error(m, {"node 'attn0'", "does not write fp8_per_token:engine"});
  // The cache writer.
  json w;
  w["name"] = "write";
  w["dims"] = {{"T", 4}};
  w["inputs"] = {"kv_c", "k_pe", "slots", "cache_in"};
  w["outputs"] = {"cache"};
  w["tensors"] = {{"kv_c", {{"dtype", "bf16"}, {"shape", {"T", 512}}}},
                  {"k_pe", {{"dtype", "bf16"}, {"shape", {"T", 64}}}},
                  {"slots", {{"dtype", "i64"}, {"shape", {"T"}}}},
                  {"cache_in", {{"dtype", "bf16"}, {"shape", {4, 16, 576}}}}};
  w["nodes"] = {
      {{"name", "write"},
       {"op", "mla_write_cache"},
       {"inputs",
        {{"kv_c", "kv_c"}, {"k_pe", "k_pe"}, {"slot_mapping", "slots"}, {"cache_in", "cache_in"}}},
       {"outputs", {{"cache", "cache"}}}}};
  EXPECT_EQ(test::parse_error(w), "");
  json w1 = w;
  w1["tensors"]["slots"]["dtype"] = "i32";
  expect_error(w1, {"node 'write'", "input 'slot_mapping'"});
  json w2 = w;
  w2["tensors"]["k_pe"]["shape"] = {"T", 32};
  expect_error(w2, {"node 'write'", "input 'k_pe'", "[T, 64]"});
  json w3 = w;
  w3["tensors"]["cache_in"]["dtype"] = "e4m3";
  expect_error(w3, {"node 'write'", "k_scale"});
  // The writer works in place: nothing else may read the cache it overwrites.
  json w4 = w;
  w4["outputs"].push_back("cache_in");
  expect_error(
      w4, {"node 'write'", "written in place over input 'cache_in'", "which is a graph output"});
  json w5 = w;
  w5["outputs"].push_back("k2");
  w5["nodes"].push_back({{"name", "peek"},
                         {"op", "quantize"},
                         {"inputs", {{"x", "cache_in"}}},
                         {"outputs", {{"out", "k2"}}},
                         {"attrs", {{"quant", "none"}}}});
  expect_error(
      w5, {"node 'write'", "written in place over input 'cache_in'", "node 'peek' also reads"});
}

TEST(GraphValidation, FileLevelErrors) {
  json a = test::mlp_graph();
  a["extra"] = 1;
  expect_error(a, {"unknown key 'extra'"});
  json b = test::mlp_graph();
  b["tensors"]["x"]["shape"] = {"T", "Q"};
  expect_error(b, {"tensor 'x'", "unknown dim 'Q'"});
  json c = test::mlp_graph();
  c["tensors"]["unused"] = {{"dtype", "bf16"}, {"shape", {4}}};
  expect_error(c, {"tensor 'unused' is declared but no node reads or writes it"});
  json d = test::mlp_graph();
  d["outputs"] = {"nothing"};
  expect_error(d, {"graph output 'nothing'"});
  json e = test::mlp_graph();
  e["tensors"]["x"]["dtype"] = "bf17";
  expect_error(e, {"tensor 'x'", "unknown dtype 'bf17'"});
  Graph g;
  const Status st = parse_graph_json("{\"name\": ", {}, &g);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("graph JSON"), std::string::npos) << st.message();
  ParseOptions opt;
  opt.dim_overrides = {{"Z", 3}};
  const Status o = parse_graph_json(test::mlp_graph().dump(), opt, &g);
  EXPECT_NE(o.message().find("dim override 'Z'"), std::string::npos) << o.message();
}

TEST(GraphValidation, ValidateChecksAGraphBuiltInCode) {
  Graph g = test::parse_or_fail(test::mlp_graph());
  ASSERT_TRUE(validate(g).ok());
  g.tensors["h"].shape = {16, 255};
  const Status st = validate(g);
  EXPECT_NE(st.message().find("node 'act': output 'out' (tensor 'h')"), std::string::npos)
      << st.message();
}

TEST(DimExpr, Evaluates) {
  const std::vector<std::pair<std::string, int64_t>> dims = {{"T", 10}, {"I", 300}};
  int64_t v = 0;
  ASSERT_TRUE(eval_dim_expr("2*I", dims, &v).ok());
  EXPECT_EQ(v, 600);
  ASSERT_TRUE(eval_dim_expr("I/128", dims, &v).ok());
  EXPECT_EQ(v, 3);  // rounds up
  ASSERT_TRUE(eval_dim_expr("T * I / 100", dims, &v).ok());
  EXPECT_EQ(v, 30);
  EXPECT_FALSE(eval_dim_expr("I/0", dims, &v).ok());
  EXPECT_FALSE(eval_dim_expr("2**I", dims, &v).ok());
  EXPECT_FALSE(eval_dim_expr("X", dims, &v).ok());
}

}  // namespace
}  // namespace qfuse::graph
