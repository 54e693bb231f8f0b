// Device path of the built-in graph ops: the library's kernels, called with the executor's views.
#include "graph/op_impls.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::graph::detail {
Status device_quant_output(const DeviceRunArgs& a, QuantOutput* q) {
  QFUSE_RETURN_IF_ERROR(node_quant_spec(*a.node, &q->spec));
  q->out = a.out.at("out");
  auto sc = a.out.find("scales");
  if (sc != a.out.end()) q->scales = sc->second;
  auto s = a.in.find("scale");
  if (s != a.in.end()) q->scale = static_cast<const float*>(s->second.data);
  auto ub = a.in.find("scale_ub");
  if (ub != a.in.end()) q->scale_ub = static_cast<const float*>(ub->second.data);
  return Status::Ok();
}

Status device_quantize(const DeviceRunArgs& a, cudaStream_t stream) {
  QuantOutput q;
  QFUSE_RETURN_IF_ERROR(device_quant_output(a, &q));
  return quantize(a.in.at("x"), q, stream);
}

Status device_silu_and_mul(const DeviceRunArgs& a, cudaStream_t stream) {
  return silu_and_mul(a.in.at("x"), a.out.at("out"), stream);
}

Status device_silu_mul_quant(const DeviceRunArgs& a, cudaStream_t stream) {
  QuantOutput q;
  QFUSE_RETURN_IF_ERROR(device_quant_output(a, &q));
  return silu_mul_quant(a.in.at("x"), q, stream);
}

}  // namespace qfuse::graph::detail
