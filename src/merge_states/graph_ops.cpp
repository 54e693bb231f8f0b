// merge_states in the graph: type inference, the host reference (ref::merge_states, fp64) and the
// device kernel (merge_states_stacked), both writing through the shared quantizer; the op fuses
// with a following quantize into itself with its quant attribute set (pass fuse_merge_quant).
#include <cstring>

#include "graph/op_helpers.h"
#include "qfuse/graph/family.h"
#include "qfuse/merge_states/merge_states.h"
#include "qfuse/quant/capabilities.h"

namespace qfuse::graph {
namespace {

using detail::cap_inputs;
using detail::device_quant_output;
using detail::expect_input;
using detail::expect_plain;
using detail::host_element;
using detail::host_store;
using detail::host_write_quantized;
using detail::invalid;
using detail::kFloatDtypes;
using detail::make_desc;
using detail::require_quant;
using detail::shape_text;

/// The validated copy_from attribute (-1 when unset).
int64_t copy_from_attr(const Node& n) {
  int64_t v = -1;
  (void)detail::int_attr(n, "copy_from", -1, &v);  // checked by the type inference
  return v;
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
  int64_t copy_from = -1;
  QFUSE_RETURN_IF_ERROR(detail::int_attr(n, "copy_from", -1, &copy_from));
  if (copy_from < -1 || copy_from > T)
    return invalid("attr 'copy_from': expected -1 or 0.." + std::to_string(T) + ", got " +
                   std::to_string(copy_from));
  QFUSE_RETURN_IF_ERROR(detail::infer_optional_quant_output(n, in, "merge_states", T, H * D, out));
  if (n.outputs.count("out_lse")) (*out)["out_lse"] = make_desc(DType::kF32, {H, T});
  return Status::Ok();
}

Status host_merge_states(const HostRunArgs& a) {
  const HostTensor& o = *a.in.at("o");
  const HostTensor& lse = *a.in.at("lse");
  const int64_t N = o.desc.shape[0], T = o.desc.shape[1], H = o.desc.shape[2], D = o.desc.shape[3];
  ref::MergeHostInput in;
  in.n = static_cast<int>(N);
  in.dtype = o.desc.dtype;
  in.T = T;
  in.H = H;
  in.D = D;
  const size_t esz = dtype_size(o.desc.dtype);
  for (int64_t i = 0; i < N; ++i) {
    in.o[i] = o.data.data() + static_cast<size_t>(i * T * H * D) * esz;
    in.st[i] = H * D;
    in.sh[i] = D;
    in.lse[i] = reinterpret_cast<const float*>(lse.data.data()) + i * H * T;
    in.ld_lse[i] = T;
  }
  MergeOptions opt;
  opt.lse_base = a.node->attr("lse_base", "e") == "2" ? LseBase::kBase2 : LseBase::kNatural;
  opt.copy_from = copy_from_attr(*a.node);
  std::vector<double> out_lse;
  auto ol = a.out.find("out_lse");
  const std::vector<double> y = ref::merge_states(in, opt, ol != a.out.end() ? &out_lse : nullptr);
  if (ol != a.out.end())
    for (size_t i = 0; i < out_lse.size(); ++i)
      host_store(ol->second, static_cast<int64_t>(i), static_cast<float>(out_lse[i]));
  QuantSpec spec;
  QFUSE_RETURN_IF_ERROR(node_quant_spec(*a.node, &spec));
  return host_write_quantized(a, spec, std::vector<float>(y.begin(), y.end()), T, H * D);
}

Status device_merge_states(const DeviceRunArgs& a, cudaStream_t stream) {
  QuantOutput q;
  QFUSE_RETURN_IF_ERROR(device_quant_output(a, &q));
  MergeOptions opt;
  opt.lse_base = a.node->attr("lse_base", "e") == "2" ? LseBase::kBase2 : LseBase::kNatural;
  opt.copy_from = copy_from_attr(*a.node);
  auto ol = a.out.find("out_lse");
  if (ol != a.out.end()) opt.out_lse = ol->second;
  return merge_states_stacked(a.in.at("o"), a.in.at("lse"), q, opt, stream);
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
  d.host_run = host_merge_states;
  d.device_run = device_merge_states;
  return d;
}

}  // namespace
}  // namespace qfuse::graph

QFUSE_REGISTER_GRAPH_FAMILY(merge_states) {
  r.add_op(qfuse::graph::merge_states_def());
}
