// The op registry and the built-in ops' declarations (ports, attributes, type inference).
#include "qfuse/graph/op_registry.h"
#include "graph/text.h"

#include <algorithm>

#include "graph/op_helpers.h"
#include "graph/op_impls.h"
#include "qfuse/graph/family.h"
#include "qfuse/quant/capabilities.h"

namespace qfuse::graph {
namespace {

using detail::dtype_attr;
using detail::expect_input;
using detail::expect_plain;
using detail::invalid;
using detail::kFloatDtypes;
using detail::make_desc;
using detail::shape_text;

Status infer_gemm(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                  std::map<std::string, TensorDesc>* out) {
  detail::GemmInfo g;
  QFUSE_RETURN_IF_ERROR(detail::gemm_info(n, in, &g));
  (*out)["out"] = make_desc(g.out_dtype, {g.M, g.N});
  return Status::Ok();
}

OpDef gemm_def() {
  OpDef d;
  d.name = "gemm";
  d.summary =
      "out [M, N] = a [M, K] . b [N, K]^T; bf16/fp16, or FP8 a (per-tensor/token/group scales) "
      "with FP8 b (per-tensor or 128x128-block scales)";
  d.cls = OpClass::kGemm;
  d.inputs = {{"a"}, {"b"}, {"a_scale", true}, {"a_scales", true}, {"b_scale", true}};
  d.outputs = {{"out"}};
  d.attrs = {{"out_dtype", AttrType::kDType, {}},
             {"b_scaling", AttrType::kString, {"none", "per_tensor", "block128"}}};
  d.infer = infer_gemm;
  d.host_run = detail::host_gemm;
  return d;
}

}  // namespace

// ---- OpDef / OpRegistry -------------------------------------------------------------------------

bool OpDef::has_quant_attr() const {
  for (const AttrDef& a : attrs)
    if (a.name == "quant") return true;
  return false;
}

bool OpDef::supports_fused_quant(const QuantSpec& spec) const {
  if (fused_quant_supported) return fused_quant_supported(spec);
  return !fused_quant_op.empty() && fused_output_quant_supported(fused_quant_op, spec);
}

OpRegistry OpRegistry::with_builtins() {
  OpRegistry r;
  const Status st = r.add(gemm_def());
  (void)st;  // complete and the first op
  GraphFamilyRegistrar reg(&r, nullptr);
  detail::register_graph_families(reg);
  r.family_status_ = reg.status();
  return r;
}

Status OpRegistry::add(OpDef def) {
  if (def.name.empty()) return invalid("op definition without a name");
  if (ops_.count(def.name)) return invalid("op '" + def.name + "' is already registered");
  if (!def.infer) return invalid("op '" + def.name + "': no type inference (OpDef::infer)");
  if (def.fusion != FusionFamily::kNone && def.fused_quant_op.empty())
    return invalid("op '" + def.name + "': a fusion family needs fused_quant_op");
  if (def.fused_quant_op == def.name && !def.has_quant_attr())
    return invalid("op '" + def.name + "' fuses into itself but has no 'quant' attribute");
  const std::string name = def.name;  // NOTE: the right side of = is evaluated first (C++17)
  ops_[name] = std::make_shared<const OpDef>(std::move(def));
  return Status::Ok();
}

const OpDef* OpRegistry::find(const std::string& name) const {
  auto it = ops_.find(name);
  return it == ops_.end() ? nullptr : it->second.get();
}

std::vector<std::string> OpRegistry::names() const {
  std::vector<std::string> r;
  for (const auto& kv : ops_) r.push_back(kv.first);
  return r;
}

OpRegistry& default_registry() {
  static OpRegistry r = OpRegistry::with_builtins();
  return r;
}

// ---- helpers
// -------------------------------------------------------------------------------------

std::string port_label(const Node& node, bool input, const std::string& port) {
  const auto& m = input ? node.inputs : node.outputs;
  auto it = m.find(port);
  return std::string(input ? "input '" : "output '") + port + "'" +
         (it != m.end() ? " (tensor '" + it->second + "')" : "");
}

Status node_quant_spec(const Node& node, QuantSpec* spec) {
  *spec = QuantSpec::none();
  auto it = node.attrs.find("quant");
  if (it == node.attrs.end()) return Status::Ok();
  const Status st = parse_quant_spec(it->second, spec);
  if (!st.ok()) return invalid("attr 'quant': " + st.message());
  return Status::Ok();
}

Status infer_quantized_output(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                              const QuantSpec& spec, int64_t rows, int64_t cols, DType none_dtype,
                              std::map<std::string, TensorDesc>* out) {
  const std::string q = to_string(spec);
  const TensorDesc one_f32 = make_desc(DType::kF32, {1});
  auto scalar = [&](const char* port, bool allowed, bool required, const char* what) -> Status {
    auto it = in.find(port);
    if (it == in.end()) {
      if (required)
        return invalid("input '" + std::string(port) + "' is required for quant " + q + " (" +
                       what + ")");
      return Status::Ok();
    }
    if (!allowed) return invalid(port_label(n, true, port) + ": quant " + q + " reads no " + what);
    if (!it->second->same_type(one_f32))
      return invalid(port_label(n, true, port) + ": expected [1] fp32, got " +
                     it->second->describe());
    return Status::Ok();
  };
  QFUSE_RETURN_IF_ERROR(scalar("scale", spec.reads_scale(), spec.reads_scale(),
                               "given fp32 scale (per-tensor scale or NVFP4 global scale)"));
  QFUSE_RETURN_IF_ERROR(
      scalar("scale_ub", spec.accepts_scale_ub(), false, "scale upper bound (dynamic FP8 only)"));
  if (spec.kind == QuantKind::kNvfp4 && cols % 16 != 0)
    return invalid("quant " + q + ": expected a multiple of 16 columns, got " +
                   std::to_string(cols));
  const std::optional<DType> qd = quantized_dtype(spec);
  const DType dt = qd ? *qd : none_dtype;
  (*out)["out"] = make_desc(dt, {rows, spec.kind == QuantKind::kNvfp4 ? cols / 2 : cols}, spec);
  if (spec.writes_scales()) {
    ScaleShape ss;
    QFUSE_RETURN_IF_ERROR(scale_shape(spec, rows, cols, &ss));
    std::vector<int64_t> shape(ss.sizes, ss.sizes + ss.rank);
    (*out)["scales"] = make_desc(ss.dtype, shape);
  } else if (n.outputs.count("scales")) {
    return invalid(port_label(n, false, "scales") + ": quant " + q + " writes no scale buffer");
  }
  return Status::Ok();
}

namespace detail {

Status gemm_info(const Node& n, const std::map<std::string, const TensorDesc*>& in, GemmInfo* g) {
  const TensorDesc *a = nullptr, *b = nullptr;
  auto ia = in.find("a");
  if (ia != in.end() && ia->second->quant.kind != QuantKind::kNone && !ia->second->quant.is_fp8())
    return invalid(port_label(n, true, "a") + ": gemm does not read " +
                   to_string(ia->second->quant) +
                   " operands (it reads bf16, fp16 and FP8 per-tensor, per-token or per-group)");
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "a", {DType::kBF16, DType::kF16, DType::kE4M3}, 2, &a));
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "b", {DType::kBF16, DType::kF16, DType::kE4M3}, 2, &b));
  g->M = a->shape[0];
  g->K = a->shape[1];
  g->N = b->shape[0];
  g->a_dtype = a->dtype;
  g->b_dtype = b->dtype;
  g->a_quant = a->quant;
  if (b->shape[1] != g->K)
    return invalid(port_label(n, true, "b") + ": expected shape [N, " + std::to_string(g->K) +
                   "] (K of a), got " + shape_text(b->shape));
  QFUSE_RETURN_IF_ERROR(dtype_attr(n, "out_dtype", DType::kBF16, kFloatDtypes, &g->out_dtype));
  auto connected = [&](const char* p) { return in.count(p) != 0; };
  auto no_input = [&](const char* p, const std::string& why) -> Status {
    if (connected(p)) return invalid(port_label(n, true, p) + ": not read " + why);
    return Status::Ok();
  };
  auto expect_type = [&](const char* p, const TensorDesc& want, const std::string& what) -> Status {
    auto it = in.find(p);
    if (it == in.end()) return invalid("input '" + std::string(p) + "' is required (" + what + ")");
    if (!it->second->same_type(want))
      return invalid(port_label(n, true, p) + ": expected " + want.describe() + " (" + what +
                     "), got " + it->second->describe());
    return Status::Ok();
  };
  const TensorDesc one_f32 = make_desc(DType::kF32, {1});

  // Operand a: its quantization comes with the tensor.
  if (a->quant.kind == QuantKind::kNone) {
    if (a->dtype == DType::kE4M3)
      return invalid(port_label(n, true, "a") +
                     ": e4m3 values without a quant kind (declare the quant that wrote them)");
    g->a_scaling = GemmScaling::kNone;
    QFUSE_RETURN_IF_ERROR(no_input("a_scale", "for a plain operand a"));
    QFUSE_RETURN_IF_ERROR(no_input("a_scales", "for a plain operand a"));
  } else if (a->quant.is_fp8()) {
    if (a->quant.kind == QuantKind::kFp8PerTensor) {
      g->a_scaling = GemmScaling::kPerTensor;
      QFUSE_RETURN_IF_ERROR(expect_type("a_scale", one_f32, "the per-tensor scale of a"));
      QFUSE_RETURN_IF_ERROR(no_input("a_scales", "for a per-tensor operand a (use a_scale)"));
    } else {
      g->a_scaling = a->quant.kind == QuantKind::kFp8PerToken ? GemmScaling::kPerToken
                                                              : GemmScaling::kPerGroup;
      ScaleShape ss;
      QFUSE_RETURN_IF_ERROR(scale_shape(a->quant, g->M, g->K, &ss));
      QFUSE_RETURN_IF_ERROR(expect_type(
          "a_scales", make_desc(ss.dtype, std::vector<int64_t>(ss.sizes, ss.sizes + ss.rank)),
          "the scales of a, " + to_string(a->quant)));
      QFUSE_RETURN_IF_ERROR(no_input("a_scale", "for operand a of " + to_string(a->quant)));
    }
  } else {
    return invalid(port_label(n, true, "a") + ": gemm does not read " + to_string(a->quant) +
                   " operands (it reads bf16, fp16 and FP8 per-tensor, per-token or per-group)");
  }

  // Operand b: a weight, plain or FP8 with per-tensor or 128x128-block scales.
  QFUSE_RETURN_IF_ERROR(expect_plain(n, "b", *b));
  const std::string bs = n.attr("b_scaling", b->dtype == DType::kE4M3 ? "per_tensor" : "none");
  if (a->quant.kind == QuantKind::kNone) {
    if (b->dtype != a->dtype)
      return invalid(port_label(n, true, "b") + ": expected dtype " +
                     std::string(to_string(a->dtype)) + " (that of a), got " +
                     std::string(to_string(b->dtype)));
    if (bs != "none")
      return invalid("attr 'b_scaling': expected none for a " + std::string(to_string(b->dtype)) +
                     " operand b, got " + bs);
    QFUSE_RETURN_IF_ERROR(no_input("b_scale", "for a plain operand b"));
    g->b_scaling = GemmScaling::kNone;
    return Status::Ok();
  }
  if (b->dtype != DType::kE4M3)
    return invalid(port_label(n, true, "b") + ": expected dtype e4m3 (a is FP8), got " +
                   std::string(to_string(b->dtype)));
  if (bs == "per_tensor") {
    g->b_scaling = GemmScaling::kPerTensor;
    return expect_type("b_scale", one_f32, "the per-tensor scale of b");
  }
  if (bs == "block128") {
    g->b_scaling = GemmScaling::kBlock128;
    return expect_type("b_scale",
                       make_desc(DType::kF32, {ceil_div(g->N, 128), ceil_div(g->K, 128)}),
                       "the 128x128-block scales of b");
  }
  return invalid("attr 'b_scaling': expected per_tensor|block128 for an e4m3 operand b, got " + bs);
}

}  // namespace detail
}  // namespace qfuse::graph
