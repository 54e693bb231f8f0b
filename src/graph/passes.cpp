// The fusion passes: producer -> quantize  =>  the producer's fused variant (passes.h).
#include "qfuse/graph/passes.h"

#include <algorithm>

#include "qfuse/graph/op_registry.h"

namespace qfuse::graph {
namespace {

struct PassSpec {
  const char* name;
  FusionFamily family;
  bool FusionConfig::*flag;
  const char* flag_name;
};

const PassSpec kPasses[] = {
    {"fuse_act_quant", FusionFamily::kAct, &FusionConfig::fuse_act_quant, "fuse_act_quant"},
    {"fuse_merge_quant", FusionFamily::kMerge, &FusionConfig::fuse_attn_quant, "fuse_attn_quant"},
    {"fuse_attn_quant", FusionFamily::kAttention, &FusionConfig::fuse_attn_quant,
     "fuse_attn_quant"},
};

/// The fused node replacing `producer` -> `quant`.
Node fuse(const Node& producer, const OpDef& def, const Node& quant) {
  Node f;
  f.name = producer.name + "+" + quant.name;
  f.op = def.fused_quant_op;
  f.inputs = producer.inputs;
  for (const char* p : {"scale", "scale_ub"}) {
    auto it = quant.inputs.find(p);
    if (it != quant.inputs.end()) f.inputs[p] = it->second;
  }
  f.outputs = producer.outputs;
  f.outputs.erase(def.fused_output_port);
  for (const auto& [p, t] : quant.outputs) f.outputs[p == "out" ? def.fused_output_port : p] = t;
  f.attrs = producer.attrs;
  f.attrs.erase("out_dtype");  // the producer's plain output type no longer exists
  f.attrs["quant"] = quant.attr("quant");
  const std::string od = quant.attr("out_dtype");
  if (!od.empty()) f.attrs["out_dtype"] = od;
  return f;
}

}  // namespace

std::string PassReport::to_string() const {
  std::string s =
      name + ": matched " + std::to_string(matched) + ", replaced " + std::to_string(replaced);
  for (const Skip& k : skipped) s += "\n  skipped '" + k.node + "': " + k.reason;
  return s;
}

const std::vector<std::string>& pass_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const PassSpec& p : kPasses) v.push_back(p.name);
    return v;
  }();
  return names;
}

Status run_pass(const std::string& pass, const FusionConfig& config, Graph* g, PassReport* report,
                const OpRegistry* registry) {
  const OpRegistry& reg = registry != nullptr ? *registry : default_registry();
  const PassSpec* spec = nullptr;
  for (const PassSpec& p : kPasses)
    if (pass == p.name) spec = &p;
  if (spec == nullptr) {
    std::string names;
    for (const PassSpec& p : kPasses) names += (names.empty() ? "" : ", ") + std::string(p.name);
    return Status(StatusCode::kInvalidArgument,
                  "unknown pass '" + pass + "' (passes: " + names + ")");
  }
  QFUSE_RETURN_IF_ERROR(validate(*g, &reg));
  *report = PassReport{};
  report->name = spec->name;
  const bool enabled = config.*(spec->flag);

  // NOTE: collect the decisions first, then rewrite, so that indices stay valid while matching.
  struct Rewrite {
    std::string producer, quant, intermediate;
  };
  std::vector<Rewrite> rewrites;
  for (const Node& p : g->nodes) {
    const OpDef* def = reg.find(p.op);
    if (def == nullptr || def->fusion != spec->family) continue;
    if (def->has_quant_attr()) {
      QuantSpec current;
      QFUSE_RETURN_IF_ERROR(node_quant_spec(p, &current));
      if (current.kind != QuantKind::kNone) continue;  // already writes a quantized output
    }
    auto out = p.outputs.find(def->fused_output_port);
    if (out == p.outputs.end()) continue;
    const std::string& y = out->second;
    const auto readers = g->consumers(y);
    const Node* quant = nullptr;
    for (const auto& [n, port] : readers)
      if (n->op == "quantize" && port == "x" && quant == nullptr) quant = n;
    if (quant == nullptr) continue;
    ++report->matched;

    auto skip = [&](std::string why) { report->skipped.push_back({p.name, std::move(why)}); };
    if (!enabled) {
      skip(std::string(spec->flag_name) + " is off");
      continue;
    }
    if (readers.size() > 1) {
      std::string others;
      for (const auto& [n, port] : readers)
        if (n != quant)
          others += (others.empty() ? "" : ", ") + ("'" + n->name + "' (input '" + port + "')");
      skip("intermediate '" + y + "' is also read by " + others);
      continue;
    }
    if (g->is_output(y)) {
      skip("intermediate '" + y + "' is a graph output");
      continue;
    }
    QuantSpec qs;
    QFUSE_RETURN_IF_ERROR(node_quant_spec(*quant, &qs));
    if (!def->supports_fused_quant(qs)) {
      skip("'" + def->fused_quant_op + "' does not write " + to_string(qs) + " (capability query)");
      continue;
    }
    if (reg.find(def->fused_quant_op) == nullptr) {
      skip("fused op '" + def->fused_quant_op + "' is not registered");
      continue;
    }
    rewrites.push_back({p.name, quant->name, y});
  }

  for (const Rewrite& r : rewrites) {
    auto pit = std::find_if(g->nodes.begin(), g->nodes.end(),
                            [&](const Node& n) { return n.name == r.producer; });
    auto qit = std::find_if(g->nodes.begin(), g->nodes.end(),
                            [&](const Node& n) { return n.name == r.quant; });
    const OpDef& def = *reg.find(pit->op);
    Node fused = fuse(*pit, def, *qit);
    // The fused node must be valid as a whole graph; if a quirk of the pair makes it invalid,
    // the pair stays unfused (never a broken graph).
    Graph trial = *g;
    auto tp = std::find_if(trial.nodes.begin(), trial.nodes.end(),
                           [&](const Node& n) { return n.name == r.producer; });
    *tp = fused;
    trial.nodes.erase(std::find_if(trial.nodes.begin(), trial.nodes.end(),
                                   [&](const Node& n) { return n.name == r.quant; }));
    trial.tensors.erase(r.intermediate);
    const Status st = validate(trial, &reg);
    if (!st.ok()) {
      report->skipped.push_back({r.producer, "the fused node would not validate: " + st.message()});
      continue;
    }
    *g = std::move(trial);
    ++report->replaced;
  }
  const Status after = validate(*g, &reg);
  if (!after.ok())
    return Status(StatusCode::kInternal, "pass " + std::string(spec->name) +
                                             " produced an invalid graph: " + after.message());
  return Status::Ok();
}

Status run_fusion_passes(const FusionConfig& config, Graph* g, std::vector<PassReport>* reports,
                         const OpRegistry* registry) {
  for (const std::string& p : pass_names()) {
    PassReport r;
    QFUSE_RETURN_IF_ERROR(run_pass(p, config, g, &r, registry));
    reports->push_back(std::move(r));
  }
  return Status::Ok();
}

}  // namespace qfuse::graph
