// Host side of the executor: the host reference run, the choice of GEMM paths and the memory
// plan.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <new>
#include <random>
#include <set>

#include "graph/gemm_block128.h"
#include "graph/op_impls.h"
#include "graph/text.h"
#include "qfuse/core/arch.h"
#include "qfuse/core/checked.h"
#include "qfuse/core/quote.h"
#include "qfuse/graph/executor.h"
#include "qfuse/quant/reference.h"

namespace qfuse::graph {
namespace {

using detail::invalid;
constexpr size_t kAlign = 256;

size_t align_up(size_t v) {
  return (v + kAlign - 1) / kAlign * kAlign;
}

Status run_host_nodes(const Graph& g, HostTensors* tensors, const OpRegistry& reg);

std::map<std::string, const TensorDesc*> input_descs(const Graph& g, const Node& n) {
  std::map<std::string, const TensorDesc*> d;
  for (const auto& [p, t] : n.inputs) d[p] = g.tensor(t);
  return d;
}

}  // namespace

const char* to_string(GemmPath p) {
  switch (p) {
    case GemmPath::kBf16:
      return "cuBLASLt bf16";
    case GemmPath::kFp8PerTensor:
      return "cuBLASLt FP8 E4M3, per-tensor scales";
    case GemmPath::kFp8Block128:
      return "cuBLASLt FP8 E4M3, 1x128 / 128x128 block scales";
    case GemmPath::kDequantBf16:
      return "dequantize FP8 to bf16, then cuBLASLt bf16";
  }
  return "?";
}

TensorRef make_tensor_ref(const TensorDesc& desc, void* data) {
  TensorRef r;
  r.data = data;
  r.dtype = desc.dtype;
  r.rank = static_cast<int>(desc.shape.size());
  // NOTE: a shape of rank > 4 (never in a validated graph) keeps its rank, which every entry
  // point rejects; nothing is written past the arrays.
  if (!r.valid_rank()) return r;
  int64_t stride = 1;
  for (int d = r.rank - 1; d >= 0; --d) {
    r.sizes[d] = desc.shape[d];
    r.strides[d] = stride;
    stride = saturating_mul(stride, std::max<int64_t>(desc.shape[d], 1));
  }
  return r;
}

// ---- host run
// ------------------------------------------------------------------------------------

Status check_host_budget(const Graph& g, const HostBudget& budget, const OpRegistry* registry) {
  const OpRegistry& reg = registry != nullptr ? *registry : default_registry();
  QFUSE_RETURN_IF_ERROR(validate(g, &reg));
  // NOTE: a valid graph's tensors each hold at most kMaxElements: the sums below saturate only
  // for graphs far past any budget.
  int64_t bytes = 0, macs = 0;
  const TensorDesc* largest = nullptr;
  for (const auto& [name, t] : g.tensors) {
    bytes = saturating_add(bytes, static_cast<int64_t>(t.bytes()));
    if (largest == nullptr || t.bytes() > largest->bytes()) largest = &t;
  }
  for (const Node& n : g.nodes) {
    for (const auto* ports : {&n.inputs, &n.outputs})
      for (const auto& [p, t] : *ports)
        bytes = saturating_add(bytes, saturating_mul(8, g.tensor(t)->numel()));
    const OpDef* def = reg.find(n.op);
    if (def->cls != OpClass::kGemm) continue;
    detail::GemmInfo gi;
    QFUSE_RETURN_IF_ERROR(detail::gemm_info(n, input_descs(g, n), &gi));
    macs = saturating_add(macs, saturating_mul(saturating_mul(gi.M, gi.N), gi.K));
  }
  if (bytes <= budget.max_bytes && macs <= budget.max_macs) return Status::Ok();

  // Which dims make it large: those the declared shapes are written with.
  std::set<std::string> used;
  for (const auto& [name, t] : g.tensors)
    for (const std::string& e : t.shape_expr)
      for (size_t a = 0; a < e.size();) {
        size_t b = e.find_first_of("*/", a);
        if (b == std::string::npos) b = e.size();
        std::string term = e.substr(a, b - a);
        term.erase(0, term.find_first_not_of(' '));
        term.erase(term.find_last_not_of(' ') + 1);
        if (!term.empty() && !std::isdigit(static_cast<unsigned char>(term[0]))) used.insert(term);
        a = b + 1;
      }
  std::string dims;
  for (const auto& [k, v] : g.dims)
    if (used.count(k)) dims += (dims.empty() ? "" : " ") + k + "=" + std::to_string(v);
  std::string cost;
  if (bytes > budget.max_bytes)
    cost = "about " + std::to_string(bytes >> 20) + " MiB of host memory (budget " +
           std::to_string(budget.max_bytes >> 20) + " MiB; largest tensor " +
           quote_text(largest->name) + " " + largest->describe() + ")";
  if (macs > budget.max_macs)
    cost += std::string(cost.empty() ? "" : " and ") + std::to_string(macs) +
            " GEMM multiply-adds (budget " + std::to_string(budget.max_macs) + ")";
  return Status(
      StatusCode::kInvalidArgument,
      "graph " + quote_text(g.name) + " is too large for the host reference path: it needs " +
          cost + "; " +
          (dims.empty() ? std::string("its shapes are fixed numbers: write them with named dims "
                                      "(\"dims\") and give smaller \"host_dims\"")
                        : "set smaller values for the dims " + dims +
                              " (a \"host_dims\" object in the graph file, or qfuse fuse "
                              "--dim NAME=SIZE)"));
}

Status run_host(const Graph& g, HostTensors* tensors, const OpRegistry* registry,
                const HostBudget& budget) {
  if (tensors == nullptr)
    return invalid("argument 'tensors': expected the graph's input tensors, got null");
  const OpRegistry& reg = registry != nullptr ? *registry : default_registry();
  QFUSE_RETURN_IF_ERROR(check_host_budget(g, budget, &reg));
  try {
    return run_host_nodes(g, tensors, reg);
  } catch (const std::exception& e) {  // std::bad_alloc, std::length_error
    return Status(StatusCode::kInvalidArgument,
                  "graph " + quote_text(g.name) +
                      ": out of host memory on the host reference path (" + e.what() + ")");
  }
}

namespace {

Status run_host_nodes(const Graph& g, HostTensors* tensors, const OpRegistry& reg) {
  for (const std::string& in : g.inputs) {
    auto it = tensors->find(in);
    if (it == tensors->end()) return invalid("graph input '" + in + "' is not given");
    if (it->second.data.size() != g.tensor(in)->bytes())
      return invalid("graph input '" + in + "': expected " + std::to_string(g.tensor(in)->bytes()) +
                     " bytes, got " + std::to_string(it->second.data.size()));
    it->second.desc = *g.tensor(in);
  }
  std::vector<size_t> order;
  QFUSE_RETURN_IF_ERROR(topological_order(g, &order));
  for (size_t i : order) {
    const Node& n = g.nodes[i];
    const OpDef* def = reg.find(n.op);
    if (!def->host_run)
      return Status(StatusCode::kNotSupported,
                    "node '" + n.name + "': op '" + n.op + "' has no host implementation");
    HostRunArgs a;
    a.node = &n;
    for (const auto& [p, t] : n.outputs) {
      HostTensor& o = (*tensors)[t];
      o.desc = *g.tensor(t);
      o.data.assign(o.desc.bytes(), 0x7F);  // poison: every byte must be written
    }
    for (const auto& [p, t] : n.inputs) a.in[p] = &tensors->at(t);
    for (const auto& [p, t] : n.outputs) a.out[p] = &tensors->at(t);
    const Status st = def->host_run(a);
    if (!st.ok()) return Status(st.code(), "node '" + n.name + "': " + st.message());
  }
  return Status::Ok();
}

}  // namespace

// ---- GEMM paths and the memory plan
// -------------------------------------------------------------

namespace detail {

std::string fp8_block128_obstacle(const GemmInfo& g) {
  const std::string a = "a (" + to_string(g.a_quant) + ")";
  if (g.a_scaling != GemmScaling::kPerGroup || g.a_quant.group_size != 128)
    return a + " is not 1x128-group scaled (cuBLASLt's block scaling reads 1x128 groups)";
  if (g.b_scaling != GemmScaling::kBlock128)
    return "b is not 128x128-block scaled (cuBLASLt pairs 1x128 activations with 128x128-block "
           "or 1x128 weights)";
  ScaleShape shape;
  if (!scale_shape(g.a_quant, g.M, g.K, &shape).ok() || shape.dtype != DType::kF32)
    return a + ": packed UE8M0 scales (cuBLASLt's VEC128 mode reads fp32)";
  if (g.M % 4 != 0 || g.N % 4 != 0)
    return "M = " + std::to_string(g.M) + ", N = " + std::to_string(g.N) +
           ": cuBLASLt's block scaling needs both multiples of 4";
  if (!vec128_scales_in_place(ScaleAddr::make(g.a_quant, shape, g.M), g.M, ceil_div(g.K, 128)))
    return a +
           ": scales not in cuBLASLt's VEC128 order (column-major [ceil(K/128), M]: "
           "fp8_group128:col, or :col_tma with M % 4 == 0)";
  return "";
}

GemmPath gemm_path(const GemmInfo& g, const ExecutorOptions& options, std::string* why) {
  if (g.a_scaling == GemmScaling::kNone) return GemmPath::kBf16;
  if (g.a_scaling == GemmScaling::kPerTensor && g.b_scaling == GemmScaling::kPerTensor)
    return GemmPath::kFp8PerTensor;
  std::string obstacle = fp8_block128_obstacle(g);
  if (obstacle.empty() && !options.native_block_scaled_fp8)
    obstacle = "ExecutorOptions::native_block_scaled_fp8 is off";
  if (obstacle.empty()) return GemmPath::kFp8Block128;
  if (why != nullptr) *why = obstacle;
  return GemmPath::kDequantBf16;
}

Status plan_memory_with(const Graph& g, const OpRegistry& reg,
                        const std::function<GemmPath(const Node&, const GemmInfo&)>& path_of,
                        MemoryPlan* plan) {
  QFUSE_RETURN_IF_ERROR(validate(g, &reg));
  MemoryPlan p;
  size_t off = 0;
  auto take = [&](size_t bytes) {
    const size_t at = off;
    off = align_up(off + std::max<size_t>(bytes, 1));
    return at;
  };
  // NOTE: one slice per tensor, no reuse between tensors whose lifetimes do not overlap: simple
  // and always correct; the examples' intermediates are small next to their weights.
  for (const Node& n : g.nodes)
    for (const auto& [out_port, in_port] : reg.find(n.op)->in_place) {
      auto o = n.outputs.find(out_port);
      auto i = n.inputs.find(in_port);
      if (o != n.outputs.end() && i != n.inputs.end()) p.aliases[o->second] = i->second;
    }
  for (const auto& [name, t] : g.tensors) {
    if (g.is_input(name) || p.aliases.count(name)) continue;
    p.tensors[name] = {take(t.bytes()), t.bytes()};
  }
  bool any_gemm = false;
  int sm_count = 0;  // the current device's, where there is one (ScratchFn)
  {
    DeviceInfo dev;
    if (current_device_info(&dev).ok()) sm_count = dev.sm_count;
  }
  for (const Node& n : g.nodes) {
    const OpDef* def = reg.find(n.op);
    if (def->cls != OpClass::kGemm && def->scratch_bytes) {
      size_t bytes = 0;
      QFUSE_RETURN_IF_ERROR(def->scratch_bytes(n, input_descs(g, n), sm_count, &bytes));
      if (bytes > 0) p.scratch[n.name] = {take(bytes), bytes};
    }
    if (def->cls != OpClass::kGemm) continue;
    any_gemm = true;
    detail::GemmInfo gi;
    QFUSE_RETURN_IF_ERROR(detail::gemm_info(n, input_descs(g, n), &gi));
    MemoryPlan::GemmScratch s;
    const GemmPath path = path_of(n, gi);
    if (path == GemmPath::kDequantBf16) {
      s.a_bytes = static_cast<size_t>(gi.M * gi.K) * 2;
      s.a_offset = take(s.a_bytes);
      s.b_bytes = static_cast<size_t>(gi.N * gi.K) * 2;
      s.b_offset = take(s.b_bytes);
    }
    const int64_t nb = ceil_div(gi.N, 128), kb = ceil_div(gi.K, 128);
    if (path == GemmPath::kFp8Block128 && !blk128_scales_in_place(nb, kb)) {
      s.b_scale_bytes = static_cast<size_t>(cublas_blk128_elems(nb, kb)) * sizeof(float);
      s.b_scale_offset = take(s.b_scale_bytes);
    }
    p.gemm[n.name] = s;
  }
  if (any_gemm) {
    p.cublas_bytes = kCublasWorkspaceBytes;
    p.cublas_offset = take(p.cublas_bytes);
  }
  p.total_bytes = off;
  *plan = std::move(p);
  return Status::Ok();
}

}  // namespace detail

Status plan_memory(const Graph& g, MemoryPlan* plan, const OpRegistry* registry,
                   const ExecutorOptions& options) {
  return detail::plan_memory_with(
      g, registry != nullptr ? *registry : default_registry(),
      [&](const Node&, const detail::GemmInfo& gi) { return detail::gemm_path(gi, options); },
      plan);
}

Status workspace_bytes(const Graph& g, size_t* bytes, const OpRegistry* registry,
                       const ExecutorOptions& options) {
  MemoryPlan p;
  QFUSE_RETURN_IF_ERROR(plan_memory(g, &p, registry, options));
  *bytes = p.total_bytes;
  return Status::Ok();
}

}  // namespace qfuse::graph
