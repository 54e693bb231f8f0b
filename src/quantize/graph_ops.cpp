// The quantize op in the graph: type inference, the host reference (ref::quantize of the input's
// values) and the device kernel.
#include "graph/op_helpers.h"
#include "qfuse/graph/family.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::graph {
namespace {

using detail::cap_inputs;
using detail::device_quant_output;
using detail::dtype_attr;
using detail::expect_input;
using detail::expect_plain;
using detail::host_element;
using detail::host_write_quantized;
using detail::invalid;
using detail::kFloatDtypes;
using detail::require_quant;
using detail::shape_text;

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

Status host_quantize(const HostRunArgs& a) {
  const HostTensor& x = *a.in.at("x");
  QuantSpec spec;
  QFUSE_RETURN_IF_ERROR(node_quant_spec(*a.node, &spec));
  const int64_t T = x.desc.shape[0], H = x.desc.shape[1];
  std::vector<float> y(static_cast<size_t>(T * H));
  for (int64_t i = 0; i < T * H; ++i) y[i] = host_element(x, i);
  return host_write_quantized(a, spec, y, T, H);
}

Status device_quantize(const DeviceRunArgs& a, cudaStream_t stream) {
  QuantOutput q;
  QFUSE_RETURN_IF_ERROR(device_quant_output(a, &q));
  return quantize(a.in.at("x"), q, stream);
}

OpDef quantize_def() {
  OpDef d;
  d.name = "quantize";
  d.summary = "x [T, H] -> out (+ scales) in the form of attr quant (the standalone quantizer)";
  d.inputs = {{"x"}, {"scale", true}, {"scale_ub", true}};
  d.outputs = {{"out"}, {"scales", true}};
  d.attrs = {{"quant", AttrType::kQuant, {}}, {"out_dtype", AttrType::kDType, {}}};
  d.infer = infer_quantize;
  d.host_run = host_quantize;
  d.device_run = device_quantize;
  return d;
}

}  // namespace
}  // namespace qfuse::graph

QFUSE_REGISTER_GRAPH_FAMILY(quantize) {
  r.add_op(qfuse::graph::quantize_def());
}
