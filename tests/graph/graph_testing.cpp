#include "graph/graph_testing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "graph/op_helpers.h"
#include "graph/op_impls.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"
#include "qfuse/quant/scale_addr.h"

namespace qfuse::graph::test {

Graph parse_or_fail(const json& j, const OpRegistry* registry) {
  Graph g;
  ParseOptions opt;
  opt.registry = registry;
  const Status st = parse_graph_json(j.dump(), opt, &g);
  EXPECT_TRUE(st.ok()) << st.to_string() << "\n" << j.dump(2);
  return g;
}

std::string parse_error(const json& j, const OpRegistry* registry) {
  Graph g;
  ParseOptions opt;
  opt.registry = registry;
  const Status st = parse_graph_json(j.dump(), opt, &g);
  return st.ok() ? "" : st.message();
}

namespace {

void add_quant(json& j, const std::string& src, const std::string& spec_text) {
  QuantSpec spec;
  EXPECT_TRUE(parse_quant_spec(spec_text, &spec).ok()) << spec_text;
  json qin = {{"x", src}};
  json qout = {{"out", "q"}};
  if (spec.reads_scale()) {
    qin["scale"] = "sc";
    j["inputs"].push_back("sc");
    j["tensors"]["sc"] = {{"dtype", "fp32"}, {"shape", {1}}};
  }
  j["outputs"].push_back("q");
  if (spec.writes_scales()) {
    qout["scales"] = "s";
    j["outputs"].push_back("s");
  }
  j["nodes"].push_back({{"name", "quant"},
                        {"op", "quantize"},
                        {"inputs", qin},
                        {"outputs", qout},
                        {"attrs", {{"quant", spec_text}}}});
}

}  // namespace

json act_quant_graph(const std::string& spec, int64_t T, int64_t H) {
  json j;
  j["name"] = "act_quant";
  j["dims"] = {{"T", T}, {"H", H}};
  j["inputs"] = {"x"};
  j["outputs"] = json::array();
  j["tensors"] = {{"x", {{"dtype", "bf16"}, {"shape", {"T", "2*H"}}}}};
  j["nodes"] = json::array();
  j["nodes"].push_back({{"name", "act"},
                        {"op", "silu_and_mul"},
                        {"inputs", {{"x", "x"}}},
                        {"outputs", {{"out", "h"}}}});
  add_quant(j, "h", spec);
  return j;
}

json mlp_graph(const std::string& spec) {
  json j = json::parse(R"({
    "name": "mlp", "dims": {"T": 16, "H": 256, "I": 256},
    "inputs": ["x", "w1", "w2", "w2s"], "outputs": ["y"],
    "tensors": {
      "x": {"dtype": "bf16", "shape": ["T", "H"]},
      "w1": {"dtype": "bf16", "shape": ["2*I", "H"]},
      "w2": {"dtype": "e4m3", "shape": ["H", "I"]},
      "w2s": {"dtype": "fp32", "shape": ["H/128", "I/128"]}
    },
    "nodes": [
      {"name": "up", "op": "gemm", "inputs": {"a": "x", "b": "w1"}, "outputs": {"out": "gu"}},
      {"name": "act", "op": "silu_and_mul", "inputs": {"x": "gu"}, "outputs": {"out": "h"}},
      {"name": "quant", "op": "quantize", "inputs": {"x": "h"},
       "outputs": {"out": "hq", "scales": "hs"}, "attrs": {"quant": "SPEC"}},
      {"name": "down", "op": "gemm",
       "inputs": {"a": "hq", "a_scales": "hs", "b": "w2", "b_scale": "w2s"},
       "outputs": {"out": "y"}, "attrs": {"b_scaling": "block128"}}
    ]})");
  j["nodes"][2]["attrs"]["quant"] = spec;
  return j;
}

json gemm_graph(const std::string& spec, int64_t M, int64_t N, int64_t K,
                const std::string& b_scaling, const std::string& out_dtype) {
  QuantSpec q;
  EXPECT_TRUE(parse_quant_spec(spec, &q).ok()) << spec;
  json j;
  j["name"] = "gemm";
  j["inputs"] = {"a", "w", "w_s"};
  j["outputs"] = {"y"};
  j["tensors"] = {{"a", {{"dtype", "e4m3"}, {"shape", {M, K}}, {"quant", spec}}},
                  {"w", {{"dtype", "e4m3"}, {"shape", {N, K}}}}};
  json in = {{"a", "a"}, {"b", "w"}, {"b_scale", "w_s"}};
  if (q.kind == QuantKind::kFp8PerTensor) {
    j["inputs"].push_back("a_sc");
    j["tensors"]["a_sc"] = {{"dtype", "fp32"}, {"shape", {1}}};
    in["a_scale"] = "a_sc";
  } else {
    ScaleShape ss;
    EXPECT_TRUE(scale_shape(q, M, K, &ss).ok()) << spec;
    j["inputs"].push_back("a_s");
    j["tensors"]["a_s"] = {{"dtype", std::string(to_string(ss.dtype))},
                           {"shape", std::vector<int64_t>(ss.sizes, ss.sizes + ss.rank)}};
    in["a_scales"] = "a_s";
  }
  const std::vector<int64_t> ws_shape =
      b_scaling == "block128" ? std::vector<int64_t>{ceil_div(N, 128), ceil_div(K, 128)}
                              : std::vector<int64_t>{1};
  j["tensors"]["w_s"] = {{"dtype", "fp32"}, {"shape", ws_shape}};
  j["nodes"] = json::array();
  j["nodes"].push_back({{"name", "gemm"},
                        {"op", "gemm"},
                        {"inputs", in},
                        {"outputs", {{"out", "y"}}},
                        {"attrs", {{"b_scaling", b_scaling}, {"out_dtype", out_dtype}}}});
  return j;
}

json merge_quant_graph(const std::string& spec, int64_t N, int64_t T, int64_t NH, int64_t D) {
  json j;
  j["name"] = "merge_quant";
  j["dims"] = {{"N", N}, {"T", T}, {"NH", NH}, {"D", D}};
  j["inputs"] = {"o", "lse"};
  j["outputs"] = json::array();
  j["tensors"] = {{"o", {{"dtype", "fp32"}, {"shape", {"N", "T", "NH", "D"}}}},
                  {"lse", {{"dtype", "fp32"}, {"shape", {"N", "NH", "T"}}}}};
  j["nodes"] = json::array();
  j["nodes"].push_back({{"name", "merge"},
                        {"op", "merge_states"},
                        {"inputs", {{"o", "o"}, {"lse", "lse"}}},
                        {"outputs", {{"out", "m"}}}});
  add_quant(j, "m", spec);
  return j;
}

json attention_quant_graph(const std::string& spec) {
  json j;
  j["name"] = "attention_quant";
  j["dims"] = {{"T", 8}, {"S", 12}, {"NH", 2}, {"D", 64}};
  j["inputs"] = {"q_in", "k", "v"};
  j["outputs"] = json::array();
  j["tensors"] = {{"q_in", {{"dtype", "bf16"}, {"shape", {"T", "NH", "D"}}}},
                  {"k", {{"dtype", "bf16"}, {"shape", {"S", "NH", "D"}}}},
                  {"v", {{"dtype", "bf16"}, {"shape", {"S", "NH", "D"}}}}};
  j["nodes"] = json::array();
  j["nodes"].push_back({{"name", "attn"},
                        {"op", "test_attention"},
                        {"inputs", {{"q", "q_in"}, {"k", "k"}, {"v", "v"}}},
                        {"outputs", {{"out", "a"}}}});
  add_quant(j, "a", spec);
  return j;
}

json mla_quant_graph(const std::string& spec_text, int layers, const std::string& cache, bool up) {
  QuantSpec spec;
  EXPECT_TRUE(parse_quant_spec(spec_text, &spec).ok()) << spec_text;
  json j;
  j["name"] = "mla_quant";
  j["dims"] = {{"B", 2}, {"SQ", 2}, {"N", 16}, {"NB", 8}, {"BS", 16}, {"MB", 4}};
  j["inputs"] = {"cache", "block_table", "seq_lens"};
  j["outputs"] = json::array();
  j["tensors"] = {{"cache", {{"dtype", cache}, {"shape", {"NB", "BS", 576}}}},
                  {"block_table", {{"dtype", "i32"}, {"shape", {"B", "MB"}}}},
                  {"seq_lens", {{"dtype", "i32"}, {"shape", {"B"}}}}};
  if (cache == "e4m3") {
    j["inputs"].push_back("k_scale");
    j["tensors"]["k_scale"] = {{"dtype", "fp32"}, {"shape", {1}}};
  }
  j["nodes"] = json::array();
  for (int l = 0; l < layers; ++l) {
    const std::string L = std::to_string(l);
    j["inputs"].push_back("q" + L);
    j["tensors"]["q" + L] = {{"dtype", "bf16"}, {"shape", {"B*SQ", "N", 576}}};
    json in = {{"q", "q" + L},
               {"kv_cache", "cache"},
               {"block_table", "block_table"},
               {"seq_lens", "seq_lens"}};
    if (cache == "e4m3") in["k_scale"] = "k_scale";
    if (up) {
      j["inputs"].push_back("w" + L);
      j["tensors"]["w" + L] = {{"dtype", "bf16"}, {"shape", {"N", 512, 128}}};
      in["w_uv"] = "w" + L;
    }
    j["nodes"].push_back({{"name", "attn" + L},
                          {"op", "mla_attention"},
                          {"inputs", in},
                          {"outputs", {{"out", "o" + L}}},
                          {"attrs", {{"s_q", "2"}, {"softmax_scale", "0.0722"}}}});
    json qin = {{"x", "o" + L}};
    json qout = {{"out", "y" + L}};
    if (spec.reads_scale()) {
      qin["scale"] = "sc" + L;
      j["inputs"].push_back("sc" + L);
      j["tensors"]["sc" + L] = {{"dtype", "fp32"}, {"shape", {1}}};
    }
    j["outputs"].push_back("y" + L);
    if (spec.writes_scales()) {
      qout["scales"] = "s" + L;
      j["outputs"].push_back("s" + L);
    }
    j["nodes"].push_back({{"name", "quant" + L},
                          {"op", "quantize"},
                          {"inputs", qin},
                          {"outputs", qout},
                          {"attrs", {{"quant", spec_text}}}});
  }
  return j;
}

// ---- the test-only attention op ----------------------------------------------------------------

float scalar_of(const HostTensors& t, const char* name) {
  auto it = t.find(name);
  if (it == t.end()) return 1.0f;
  float v;
  std::memcpy(&v, it->second.data.data(), 4);
  return v;
}

std::vector<QuantSpec> quantized_specs() {
  std::vector<QuantSpec> out;
  for (const QuantSpec& s : all_quant_specs())
    if (s.kind != QuantKind::kNone) out.push_back(s);
  return out;
}

std::vector<QuantSpec> test_attention_specs() {
  return {QuantSpec::fp8_per_tensor(), QuantSpec::fp8_per_group(128)};
}

namespace {

bool attention_writes(const QuantSpec& s) {
  for (const QuantSpec& x : test_attention_specs())
    if (x == s) return true;
  return false;
}

Status infer_attention(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                       std::map<std::string, TensorDesc>* out) {
  for (const char* p : {"q", "k", "v"}) {
    const TensorDesc* d = in.at(p);
    if (d->dtype != DType::kBF16 || d->shape.size() != 3)
      return Status(StatusCode::kInvalidArgument,
                    port_label(n, true, p) + ": expected [*, NH, D] bf16, got " + d->describe());
  }
  const TensorDesc &q = *in.at("q"), &k = *in.at("k"), &v = *in.at("v");
  if (k.shape != v.shape || k.shape[1] != q.shape[1] || k.shape[2] != q.shape[2])
    return Status(StatusCode::kInvalidArgument, "input 'k'/'v': shapes disagree with q");
  QuantSpec spec;
  QFUSE_RETURN_IF_ERROR(node_quant_spec(n, &spec));
  if (spec.kind != QuantKind::kNone && !attention_writes(spec))
    return Status(StatusCode::kInvalidArgument,
                  "attr 'quant': test_attention does not write " + to_string(spec));
  std::map<std::string, const TensorDesc*> qin;
  for (const auto& [p, d] : in)
    if (p == "scale" || p == "scale_ub") qin[p] = d;
  return infer_quantized_output(n, qin, spec, q.shape[0], q.shape[1] * q.shape[2], DType::kBF16,
                                out);
}

Status host_attention(const HostRunArgs& a) {
  const HostTensor &q = *a.in.at("q"), &k = *a.in.at("k"), &v = *a.in.at("v");
  const int64_t T = q.desc.shape[0], NH = q.desc.shape[1], D = q.desc.shape[2], S = k.desc.shape[0];
  auto val = [](const HostTensor& t, int64_t i) {
    uint16_t b;
    std::memcpy(&b, t.data.data() + 2 * i, 2);
    return static_cast<double>(ref::bf16_value(b));
  };
  std::vector<float> y(static_cast<size_t>(T * NH * D));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < NH; ++h) {
      std::vector<double> p(S);
      double m = -INFINITY, sum = 0.0;
      for (int64_t s = 0; s < S; ++s) {
        double dot = 0.0;
        for (int64_t d = 0; d < D; ++d)
          dot += val(q, (t * NH + h) * D + d) * val(k, (s * NH + h) * D + d);
        p[s] = dot / std::sqrt(static_cast<double>(D));
        m = std::max(m, p[s]);
      }
      for (int64_t s = 0; s < S; ++s) sum += (p[s] = std::exp(p[s] - m));
      for (int64_t d = 0; d < D; ++d) {
        double o = 0.0;
        for (int64_t s = 0; s < S; ++s) o += p[s] * val(v, (s * NH + h) * D + d);
        y[(t * NH + h) * D + d] = static_cast<float>(o / sum);
      }
    }
  QuantSpec spec;
  QFUSE_RETURN_IF_ERROR(node_quant_spec(*a.node, &spec));
  return detail::host_write_quantized(a, spec, y, T, NH * D);
}

}  // namespace

const OpRegistry& test_registry() {
  static const OpRegistry reg = [] {
    OpRegistry r = OpRegistry::with_builtins();
    OpDef d;
    d.name = "test_attention";
    d.summary = "test-only attention with a quantized epilogue";
    d.inputs = {{"q"}, {"k"}, {"v"}, {"scale", true}, {"scale_ub", true}};
    d.outputs = {{"out"}, {"scales", true}};
    d.attrs = {{"quant", AttrType::kQuant, {}}};
    d.infer = infer_attention;
    d.fusion = FusionFamily::kAttention;
    d.fused_quant_op = "test_attention";
    d.fused_quant_supported = attention_writes;
    d.host_run = host_attention;
    const Status st = r.add(std::move(d));
    EXPECT_TRUE(st.ok()) << st.to_string();
    return r;
  }();
  return reg;
}

// ---- dequantization
// --------------------------------------------------------------------------------

std::vector<double> dequantize(const HostTensor& values, const HostTensor* scales,
                               const QuantSpec& spec, float given_scale,
                               std::vector<double>* factor) {
  const int64_t rows = values.desc.shape[0];
  const int64_t cols =
      spec.kind == QuantKind::kNvfp4 ? values.desc.shape[1] * 2 : values.desc.shape[1];
  std::vector<double> out(static_cast<size_t>(rows * cols));
  if (factor != nullptr) factor->assign(out.size(), 1.0);
  ScaleShape shape;
  EXPECT_TRUE(scale_shape(spec, rows, cols, &shape).ok());
  const ScaleAddr addr = ScaleAddr::make(spec, shape, rows);
  auto scale_at = [&](int64_t r, int64_t g) -> double {
    const int64_t off = addr.offset(r, g);
    if (shape.dtype == DType::kF32) {
      float f;
      std::memcpy(&f, scales->data.data() + 4 * off, 4);
      return f;
    }
    if (shape.dtype == DType::kUE8M0) return rules::ue8m0_value(scales->data[off]);
    return rules::e4m3_value(scales->data[off]);
  };
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double v = 0.0, f = 1.0;
      switch (spec.kind) {
        case QuantKind::kFp8PerTensor:
          f = given_scale;
          v = rules::e4m3_value(values.data[r * cols + c]) * f;
          break;
        case QuantKind::kFp8PerToken:
          f = scale_at(r, 0);
          v = rules::e4m3_value(values.data[r * cols + c]) * f;
          break;
        case QuantKind::kFp8PerGroup:
          f = scale_at(r, c / spec.group_size);
          v = rules::e4m3_value(values.data[r * cols + c]) * f;
          break;
        case QuantKind::kNvfp4: {
          const uint8_t b = values.data[r * (cols / 2) + c / 2];
          const uint8_t code = c % 2 ? b >> 4 : b & 0xF;
          f = scale_at(r, c / 16) / given_scale;
          v = rules::e2m1_value(code) * f;
          break;
        }
        default: {
          std::vector<double> plain;
          EXPECT_TRUE(host_values(values, &plain).ok());
          return plain;
        }
      }
      out[r * cols + c] = v;
      if (factor != nullptr) (*factor)[r * cols + c] = f;
    }
  return out;
}

int64_t check_within_one_step(const QuantSpec& spec, const std::vector<double>& d,
                              const std::vector<double>& f, const std::vector<double>& y,
                              double rel, std::string* report) {
  const bool fp4 = spec.kind == QuantKind::kNvfp4;
  const double max_code = fp4 ? 6.0 : 448.0;
  int64_t bad = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double v = f[i] > 0 ? std::fabs(y[i]) / f[i] : 0.0;
    double tol;
    if (fp4) {
      tol = (v < 2.0 ? 0.5 : v < 4.0 ? 1.0 : 2.0) * f[i];
    } else {
      int e = 0;
      std::frexp(v, &e);
      tol = (v < std::ldexp(1.0, -6) ? std::ldexp(1.0, -9) : std::ldexp(1.0, e - 4)) * f[i];
    }
    tol += rel * std::fabs(y[i]) + 1e-30;
    bool ok;
    if (v * (1.0 - rel) >= max_code)
      ok = std::fabs(std::fabs(d[i]) - max_code * f[i]) <= tol;
    else
      ok = std::fabs(d[i] - y[i]) <= tol * (1.0 + 1e-9);
    if (!ok && bad++ < 5 && report != nullptr)
      *report += "element " + std::to_string(i) + ": got " + std::to_string(d[i]) + ", exact " +
                 std::to_string(y[i]) + ", factor " + std::to_string(f[i]) + "\n";
  }
  return bad;
}

std::string source_path(const std::string& rel) {
  // NOTE: binaries built here run on the GPU machine from the repository root (scripts/gpu.sh),
  // where the build's source path does not exist.
  if (const char* env = std::getenv("QFUSE_SOURCE_DIR")) return std::string(env) + "/" + rel;
  const std::string built = std::string(QFUSE_SOURCE_DIR) + "/" + rel;
  return std::filesystem::exists(built) ? built : rel;
}

Status DeviceRun::init(const Graph& g, const HostTensors& host, const ExecutorOptions& options) {
  QFUSE_RETURN_IF_ERROR(DeviceExecutor::create(g, &ex, nullptr, options));
  for (const std::string& in : g.inputs) {
    const HostTensor& t = host.at(in);
    auto& b = inputs[in] = qfuse::test::DeviceBuffer(std::max<size_t>(t.data.size(), 1));
    b.upload(t.data.data(), t.data.size());
    ptrs[in] = b.get();
  }
  ws = qfuse::test::DeviceBuffer(std::max<size_t>(ex->workspace_bytes(), 1));
  ws.fill(qfuse::test::kPoison);
  return Status::Ok();
}

HostTensor DeviceRun::download(const std::string& name) {
  HostTensor t;
  t.desc = *ex->graph().tensor(name);
  t.data.resize(t.desc.bytes());
  const auto& slice = ex->plan().tensors.at(name);
  EXPECT_EQ(
      cudaMemcpy(t.data.data(), ws.as<char>() + slice.offset, slice.bytes, cudaMemcpyDeviceToHost),
      cudaSuccess);
  return t;
}

}  // namespace qfuse::graph::test
