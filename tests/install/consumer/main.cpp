// An outside program against the installed qfuse: host-only calls of both libraries.
#include <cstdio>

#include "qfuse/graph/graph_json.h"
#include "qfuse/graph/op_registry.h"
#include "qfuse/quant/capabilities.h"
#include "qfuse/quant/kind.h"

int main() {
  qfuse::QuantSpec spec;
  const qfuse::Status st = qfuse::parse_quant_spec("fp8_group128:col_tma:ue8m0_packed", &spec);
  if (!st.ok()) {
    std::printf("parse_quant_spec: %s\n", st.to_string().c_str());
    return 1;
  }
  qfuse::ScaleShape shape;
  if (!qfuse::scale_shape(spec, 5, 512, &shape).ok() || shape.rank == 0) return 1;
  std::printf("%s: scales [%lld, %lld]\n", qfuse::to_string(spec).c_str(),
              static_cast<long long>(shape.sizes[0]), static_cast<long long>(shape.sizes[1]));
  if (qfuse::registered_families().empty() || qfuse::op_capabilities().empty()) return 1;
  for (const qfuse::OpCapability& op : qfuse::op_capabilities())
    std::printf("op %s (family %s): %zu output specs\n", op.op.c_str(), op.family.c_str(),
                op.output_specs.size());
  if (!qfuse::fused_output_quant_supported("silu_mul_quant", spec)) return 1;
  const qfuse::graph::OpRegistry& reg = qfuse::graph::default_registry();
  if (!reg.family_status().ok() || reg.find("merge_states") == nullptr) return 1;
  const char* text = R"({"name": "g", "dims": {"T": 4, "H": 256},
    "inputs": ["x"], "outputs": ["y"],
    "tensors": {"x": {"dtype": "bf16", "shape": ["T", "2*H"]}},
    "nodes": [{"name": "act", "op": "silu_and_mul", "inputs": {"x": "x"}, "outputs": {"out": "y"}}]})";
  qfuse::graph::Graph g;
  const qfuse::Status pst = qfuse::graph::parse_graph_json(text, {}, &g);
  std::printf("graph: %s\n", pst.ok() ? "parsed and validated" : pst.to_string().c_str());
  return pst.ok() ? 0 : 1;
}
