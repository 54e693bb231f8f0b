#include "qfuse/quant/capabilities.h"

#include <algorithm>

namespace qfuse {

std::vector<QuantSpec> derive_output_specs(const OutputDelivery& d) {
  std::vector<QuantSpec> out;
  for (const QuantSpec& s : all_quant_specs()) {
    const QuantNeeds n = quant_needs(s);
    bool ok = false;
    switch (n.scope) {
      case ScaleScope::kNone:
        ok = d.plain;
        break;
      case ScaleScope::kTensor:
        ok = d.quantized;
        break;
      case ScaleScope::kGroup:
        ok = d.quantized && (d.whole_rows || (d.tile_cols > 0 && d.tile_cols % n.group_cols == 0));
        break;
      case ScaleScope::kRow:
        ok = d.quantized && d.whole_rows;
        break;
    }
    if (ok) out.push_back(s);
  }
  const size_t native = out.size();
  for (size_t i = 0; i < native; ++i) {
    const QuantSpec s = out[i];
    if (s.has_engine_rule() && std::find(d.engine_rule_kinds.begin(), d.engine_rule_kinds.end(),
                                         s.kind) != d.engine_rule_kinds.end())
      out.push_back(s.with_rule(QuantRule::kEngine));
  }
  return out;
}

void KernelRegistry::add_family(FamilyInfo family) {
  families_.push_back(std::move(family));
}

Status KernelRegistry::add_op(OpCapability op) {
  Status st = add_op_checked(std::move(op));
  if (!st.ok() && status_.ok()) status_ = st;
  return st;
}

Status KernelRegistry::add_op_checked(OpCapability op) {
  const auto fam = std::find_if(families_.begin(), families_.end(),
                                [&](const FamilyInfo& f) { return f.name == op.family; });
  if (fam == families_.end())
    return Status::InvalidArgument("op '" + op.op + "'.family", "a registered family",
                                   "'" + op.family + "'");
  if (find_if(ops_.begin(), ops_.end(), [&](const OpCapability& o) { return o.op == op.op; }) !=
      ops_.end())
    return Status::InvalidArgument("op", "a new op name", "'" + op.op + "' (already registered)");
  op.output_specs = derive_output_specs(op.delivery);
  if (op.output_specs.empty())
    return Status::InvalidArgument("op '" + op.op + "'.delivery", "an output kind", "none");
  ops_.push_back(std::move(op));
  return Status::Ok();
}

const KernelRegistry& kernel_registry() {
  static const KernelRegistry r = [] {
    KernelRegistry k;
    detail::register_kernel_families(k);
    return k;
  }();
  return r;
}

const std::vector<FamilyInfo>& registered_families() {
  return kernel_registry().families();
}

const std::vector<OpCapability>& op_capabilities() {
  return kernel_registry().ops();
}

const OpCapability* find_op_capability(std::string_view op) {
  for (const OpCapability& c : op_capabilities())
    if (c.op == op) return &c;
  return nullptr;
}

bool fused_output_quant_supported(std::string_view op, const QuantSpec& spec) {
  const OpCapability* c = find_op_capability(op);
  if (c == nullptr) return false;
  for (const QuantSpec& s : c->output_specs)
    if (s == spec) return true;
  return false;
}

}  // namespace qfuse
