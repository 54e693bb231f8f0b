// The op registry and the built-in ops' declarations (ports, attributes, type inference).
#include "qfuse/graph/op_registry.h"
#include "graph/text.h"

#include <algorithm>

#include "graph/op_impls.h"
#include "qfuse/merge_states/merge_states.h"
#include "qfuse/quant/capabilities.h"

namespace qfuse::graph {
namespace {

using detail::invalid;
using detail::shape_text;
std::string dtype_list(const std::vector<DType>& v) {
  std::string r;
  for (DType d : v) {
    if (!r.empty()) r += "|";
    r += to_string(d);
  }
  return r;
}

TensorDesc make_desc(DType dtype, std::vector<int64_t> shape, QuantSpec q = QuantSpec::none()) {
  TensorDesc d;
  d.dtype = dtype;
  d.shape = std::move(shape);
  d.quant = q;
  return d;
}

Status expect_input(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                    const std::string& port, const std::vector<DType>& dtypes, size_t rank,
                    const TensorDesc** out) {
  auto it = in.find(port);
  if (it == in.end()) return invalid("input '" + port + "' is required but not connected");
  const TensorDesc& d = *it->second;
  if (std::find(dtypes.begin(), dtypes.end(), d.dtype) == dtypes.end())
    return invalid(port_label(n, true, port) + ": expected dtype " + dtype_list(dtypes) + ", got " +
                   std::string(to_string(d.dtype)));
  if (d.shape.size() != rank)
    return invalid(port_label(n, true, port) + ": expected rank " + std::to_string(rank) +
                   ", got " + std::to_string(d.shape.size()) + " " + shape_text(d.shape));
  *out = &d;
  return Status::Ok();
}

/// A plain (unquantized) input: a quantized tensor here would be read as if it were not.
Status expect_plain(const Node& n, const std::string& port, const TensorDesc& d) {
  if (d.quant.kind != QuantKind::kNone)
    return invalid(port_label(n, true, port) + ": expected quant none, got " + to_string(d.quant) +
                   " (op '" + n.op + "' reads plain values)");
  return Status::Ok();
}

Status dtype_attr(const Node& n, const std::string& key, DType fallback,
                  const std::vector<DType>& allowed, DType* out) {
  const std::string v = n.attr(key);
  *out = fallback;
  if (!v.empty()) *out = *parse_dtype(v);  // checked by validate()
  if (std::find(allowed.begin(), allowed.end(), *out) == allowed.end())
    return invalid("attr '" + key + "': expected " + dtype_list(allowed) + ", got " +
                   std::string(to_string(*out)));
  return Status::Ok();
}

Status require_quant(const Node& n, const std::string& op_for_caps, QuantSpec* spec) {
  if (n.attrs.count("quant") == 0) return invalid("attr 'quant' is required by op '" + n.op + "'");
  QFUSE_RETURN_IF_ERROR(node_quant_spec(n, spec));
  if (!fused_output_quant_supported(op_for_caps, *spec))
    return invalid("attr 'quant': op '" + op_for_caps + "' does not write " + to_string(*spec) +
                   " (capability table)");
  return Status::Ok();
}

const std::vector<DType> kFloatDtypes = {DType::kBF16, DType::kF16, DType::kF32};

std::vector<DType> cap_inputs(const char* op) {
  const OpCapability* c = find_op_capability(op);
  return c != nullptr ? c->input_dtypes : std::vector<DType>{};
}

// ---- built-in ops ----------------------------------------------------------------------------

Status infer_quantize(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                      std::map<std::string, TensorDesc>* out) {
  const TensorDesc* x = nullptr;
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "x", cap_inputs("quantize"), 2, &x));
  QFUSE_RETURN_IF_ERROR(expect_plain(n, "x", *x));
  QuantSpec spec;
  QFUSE_RETURN_IF_ERROR(require_quant(n, "quantize", &spec));
  DType none_dtype = x->dtype;
  if (n.attrs.count("out_dtype") && spec.kind != QuantKind::kNone)
    return invalid("attr 'out_dtype': only for quant none (" + to_string(spec) + " writes " +
                   std::string(to_string(*quantized_dtype(spec))) + ")");
  QFUSE_RETURN_IF_ERROR(dtype_attr(n, "out_dtype", x->dtype, kFloatDtypes, &none_dtype));
  return infer_quantized_output(n, in, spec, x->shape[0], x->shape[1], none_dtype, out);
}

Status infer_silu(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                  std::map<std::string, TensorDesc>* out, bool quant) {
  const char* op = quant ? "silu_mul_quant" : "silu_and_mul";
  const TensorDesc* x = nullptr;
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "x", cap_inputs(op), 2, &x));
  QFUSE_RETURN_IF_ERROR(expect_plain(n, "x", *x));
  if (x->shape[1] % 2 != 0)
    return invalid(port_label(n, true, "x") + ": expected an even number of columns [T, 2H], got " +
                   shape_text(x->shape));
  const int64_t T = x->shape[0], H = x->shape[1] / 2;
  QuantSpec spec;
  if (quant) QFUSE_RETURN_IF_ERROR(require_quant(n, op, &spec));
  DType none_dtype = x->dtype;
  if (n.attrs.count("out_dtype") && spec.kind != QuantKind::kNone)
    return invalid("attr 'out_dtype': only for quant none");
  QFUSE_RETURN_IF_ERROR(dtype_attr(n, "out_dtype", x->dtype, kFloatDtypes, &none_dtype));
  return infer_quantized_output(n, in, spec, T, H, none_dtype, out);
}

Status infer_merge_states(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                          std::map<std::string, TensorDesc>* out) {
  const TensorDesc *o = nullptr, *lse = nullptr;
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "o", kFloatDtypes, 4, &o));
  QFUSE_RETURN_IF_ERROR(expect_plain(n, "o", *o));
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "lse", {DType::kF32}, 3, &lse));
  const int64_t N = o->shape[0], T = o->shape[1], H = o->shape[2], D = o->shape[3];
  if (N < 2 || N > kMaxMergeStates)
    return invalid(port_label(n, true, "o") + ": expected 2.." + std::to_string(kMaxMergeStates) +
                   " partials in dim 0 of [N, T, H, D], got " + std::to_string(N));
  const std::vector<int64_t> want_lse = {N, H, T};
  if (lse->shape != want_lse)
    return invalid(port_label(n, true, "lse") + ": expected shape " + shape_text(want_lse) +
                   " ([N, H, T] of o), got " + shape_text(lse->shape));
  QuantSpec spec;
  QFUSE_RETURN_IF_ERROR(node_quant_spec(n, &spec));
  if (spec.kind != QuantKind::kNone && !fused_output_quant_supported("merge_states", spec))
    return invalid("attr 'quant': op 'merge_states' does not write " + to_string(spec) +
                   " (capability table)");
  if (n.attrs.count("out_dtype") && spec.kind != QuantKind::kNone)
    return invalid("attr 'out_dtype': only for quant none");
  DType none_dtype = DType::kBF16;
  QFUSE_RETURN_IF_ERROR(dtype_attr(n, "out_dtype", DType::kBF16, kFloatDtypes, &none_dtype));
  const int64_t copy_from = std::stoll(n.attr("copy_from", "-1"));
  if (copy_from < -1 || copy_from > T)
    return invalid("attr 'copy_from': expected -1 or 0.." + std::to_string(T) + ", got " +
                   std::to_string(copy_from));
  std::map<std::string, const TensorDesc*> q_in;  // the quantizer's own inputs
  for (const auto& [p, d] : in)
    if (p == "scale" || p == "scale_ub") q_in[p] = d;
  QFUSE_RETURN_IF_ERROR(infer_quantized_output(n, q_in, spec, T, H * D, none_dtype, out));
  if (n.outputs.count("out_lse")) (*out)["out_lse"] = make_desc(DType::kF32, {H, T});
  return Status::Ok();
}

Status infer_gemm(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                  std::map<std::string, TensorDesc>* out) {
  detail::GemmInfo g;
  QFUSE_RETURN_IF_ERROR(detail::gemm_info(n, in, &g));
  (*out)["out"] = make_desc(g.out_dtype, {g.M, g.N});
  return Status::Ok();
}

OpDef quantize_def() {
  OpDef d;
  d.name = "quantize";
  d.summary = "x [T, H] -> out (+ scales) in the form of attr quant (the standalone quantizer)";
  d.inputs = {{"x"}, {"scale", true}, {"scale_ub", true}};
  d.outputs = {{"out"}, {"scales", true}};
  d.attrs = {{"quant", AttrType::kQuant, {}}, {"out_dtype", AttrType::kDType, {}}};
  d.infer = infer_quantize;
  d.host_run = detail::host_quantize;
  d.device_run = detail::device_quantize;
  return d;
}

OpDef silu_and_mul_def() {
  OpDef d;
  d.name = "silu_and_mul";
  d.summary = "x [T, 2H] -> silu(x[:, :H]) * x[:, H:] [T, H] (out_dtype, default x's)";
  d.inputs = {{"x"}};
  d.outputs = {{"out"}};
  d.attrs = {{"out_dtype", AttrType::kDType, {}}};
  d.infer = [](const Node& n, const auto& in, auto* out) { return infer_silu(n, in, out, false); };
  d.fusion = FusionFamily::kAct;
  d.fused_quant_op = "silu_mul_quant";
  d.host_run = detail::host_silu_and_mul;
  d.device_run = detail::device_silu_and_mul;
  return d;
}

OpDef silu_mul_quant_def() {
  OpDef d;
  d.name = "silu_mul_quant";
  d.summary = "silu_and_mul written through the quantizer of attr quant";
  d.inputs = {{"x"}, {"scale", true}, {"scale_ub", true}};
  d.outputs = {{"out"}, {"scales", true}};
  d.attrs = {{"quant", AttrType::kQuant, {}}, {"out_dtype", AttrType::kDType, {}}};
  d.infer = [](const Node& n, const auto& in, auto* out) { return infer_silu(n, in, out, true); };
  d.host_run = detail::host_silu_mul_quant;
  d.device_run = detail::device_silu_mul_quant;
  return d;
}

OpDef merge_states_def() {
  OpDef d;
  d.name = "merge_states";
  d.summary =
      "o [N, T, H, D], lse [N, H, T] -> merged out [T, H*D] (attr quant: any kind), out_lse [H, T]";
  d.inputs = {{"o"}, {"lse"}, {"scale", true}, {"scale_ub", true}};
  d.outputs = {{"out"}, {"scales", true}, {"out_lse", true}};
  d.attrs = {{"quant", AttrType::kQuant, {}},
             {"out_dtype", AttrType::kDType, {}},
             {"lse_base", AttrType::kString, {"e", "2"}},
             {"copy_from", AttrType::kInt, {}}};
  d.infer = infer_merge_states;
  d.fusion = FusionFamily::kMerge;
  d.fused_quant_op = "merge_states";
  d.host_run = detail::host_merge_states;
  d.device_run = detail::device_merge_states;
  return d;
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
  for (OpDef d :
       {quantize_def(), silu_and_mul_def(), silu_mul_quant_def(), merge_states_def(), gemm_def()}) {
    const Status st = r.add(std::move(d));
    (void)st;  // built-ins are complete and distinct
  }
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
