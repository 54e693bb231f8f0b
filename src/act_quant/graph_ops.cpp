// silu_and_mul and silu_mul_quant in the graph: type inference, the host reference
// (ref::silu_and_mul in fp64, written by ref::quantize) and the device kernels; silu_and_mul fuses
// with a following quantize into silu_mul_quant (pass fuse_act_quant).
#include <cstring>

#include "graph/op_helpers.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/graph/family.h"

namespace qfuse::graph {
namespace {

using detail::cap_inputs;
using detail::device_quant_output;
using detail::dtype_attr;
using detail::expect_input;
using detail::expect_plain;
using detail::host_element;
using detail::host_store;
using detail::host_write_quantized;
using detail::invalid;
using detail::kFloatDtypes;
using detail::require_quant;
using detail::shape_text;

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

std::vector<double> silu_reference(const HostTensor& x) {
  const int64_t T = x.desc.shape[0], H = x.desc.shape[1] / 2;
  std::vector<uint16_t> bits(static_cast<size_t>(T * 2 * H));
  std::memcpy(bits.data(), x.data.data(), bits.size() * 2);
  return ref::silu_and_mul(bits.data(), x.desc.dtype, T, H, 2 * H);
}

Status host_silu_and_mul(const HostRunArgs& a) {
  const std::vector<double> y = silu_reference(*a.in.at("x"));
  HostTensor* out = a.out.at("out");
  for (size_t i = 0; i < y.size(); ++i)
    host_store(out, static_cast<int64_t>(i), static_cast<float>(y[i]));
  return Status::Ok();
}

Status host_silu_mul_quant(const HostRunArgs& a) {
  const HostTensor& x = *a.in.at("x");
  QuantSpec spec;
  QFUSE_RETURN_IF_ERROR(node_quant_spec(*a.node, &spec));
  const std::vector<double> y = silu_reference(x);
  return host_write_quantized(a, spec, std::vector<float>(y.begin(), y.end()), x.desc.shape[0],
                              x.desc.shape[1] / 2);
}

Status device_silu_and_mul(const DeviceRunArgs& a, cudaStream_t stream) {
  return silu_and_mul(a.in.at("x"), a.out.at("out"), stream);
}

Status device_silu_mul_quant(const DeviceRunArgs& a, cudaStream_t stream) {
  QuantOutput q;
  QFUSE_RETURN_IF_ERROR(device_quant_output(a, &q));
  return silu_mul_quant(a.in.at("x"), q, stream);
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
  d.host_run = host_silu_and_mul;
  d.device_run = device_silu_and_mul;
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
  d.host_run = host_silu_mul_quant;
  d.device_run = device_silu_mul_quant;
  return d;
}

}  // namespace
}  // namespace qfuse::graph

QFUSE_REGISTER_GRAPH_FAMILY(act_quant) {
  r.add_op(qfuse::graph::silu_and_mul_def());
  r.add_op(qfuse::graph::silu_mul_quant_def());
}
