// merge_states in the graph: the host reference (ref::merge_states, fp64) and the device kernel
// (merge_states_stacked), both writing through the shared quantizer.
#include <cstring>

#include "graph/op_impls.h"
#include "qfuse/merge_states/merge_states.h"

namespace qfuse::graph::detail {

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
  opt.copy_from = std::stoll(a.node->attr("copy_from", "-1"));
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
  opt.copy_from = std::stoll(a.node->attr("copy_from", "-1"));
  auto ol = a.out.find("out_lse");
  if (ol != a.out.end()) opt.out_lse = ol->second;
  return merge_states_stacked(a.in.at("o"), a.in.at("lse"), q, opt, stream);
}

}  // namespace qfuse::graph::detail
