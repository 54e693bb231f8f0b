#include "qfuse/quant/capabilities.h"

namespace qfuse {

const std::vector<OpCapability>& op_capabilities() {
  static const std::vector<OpCapability> table = [] {
    std::vector<QuantSpec> quantized;
    for (const QuantSpec& s : all_quant_specs())
      if (s.kind != QuantKind::kNone) quantized.push_back(s);
    std::vector<QuantSpec> any = all_quant_specs();
    return std::vector<OpCapability>{
        {"quantize",
         "x [T, H] -> quantized output (standalone; the unfused baseline)",
         {DType::kBF16, DType::kF16, DType::kF32},
         any},
        {"silu_and_mul",
         "x [T, 2H] -> silu(x[:, :H]) * x[:, H:] in bf16/fp16/fp32",
         {DType::kBF16, DType::kF16},
         {QuantSpec::none()}},
        {"silu_mul_quant",
         "silu_and_mul with the output written through any quantizer",
         {DType::kBF16, DType::kF16},
         any},
        {"merge_states",
         "N partial attention states o_i [T, H, D] + lse_i [H, T] -> merged [T, H * D], any "
         "quantizer",
         {DType::kBF16, DType::kF16, DType::kF32},
         any},
    };
  }();
  return table;
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
