// What each op supports, declared once: the dispatchers' checks, the fusion pass's capability
// query (`fused_output_quant_supported`) and `qfuse info` all read this table.
#pragma once

#include <string_view>
#include <vector>

#include "qfuse/core/dtype.h"
#include "qfuse/quant/kind.h"

namespace qfuse {

struct OpCapability {
  std::string_view op;       // "quantize", "silu_and_mul", "silu_mul_quant", ...
  std::string_view summary;  // one line for `qfuse info`
  std::vector<DType> input_dtypes;
  std::vector<QuantSpec> output_specs;  // output forms the op writes
};

/// Every registered op, in a stable order.
const std::vector<OpCapability>& op_capabilities();
/// nullptr for an unknown op.
const OpCapability* find_op_capability(std::string_view op);
/// True when `op` can write its output as `spec` (false for unknown ops).
bool fused_output_quant_supported(std::string_view op, const QuantSpec& spec);

}  // namespace qfuse
