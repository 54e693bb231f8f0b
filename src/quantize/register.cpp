// The quantize family: the standalone quantizer (also the unfused baseline of every fused op).
#include "qfuse/quant/capabilities.h"

QFUSE_REGISTER_KERNEL_FAMILY(quantize) {
  using namespace qfuse;
  r.add_family({"quantize", "standalone quantization of a [T, H] tensor into any kind"});
  // The engine rule: the drop-ins scaled_fp8_quant (per-token), per_token_group_fp8_quant and
  // scaled_fp4_quant (docs/python.md).
  OutputDelivery delivery;
  delivery.engine_rule_kinds = {QuantKind::kFp8PerToken, QuantKind::kFp8PerGroup,
                                QuantKind::kNvfp4};
  (void)r.add_op({"quantize",
                  "quantize",
                  "x [T, H] -> quantized output (standalone; the unfused baseline)",
                  {DType::kBF16, DType::kF16, DType::kF32},
                  delivery,
                  {}});
}
