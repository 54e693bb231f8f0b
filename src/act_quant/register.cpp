// The act_quant family: SiLU-and-mul of gated MLPs, plain and with its output quantized (SPEC §1).
#include "qfuse/quant/capabilities.h"

QFUSE_REGISTER_KERNEL_FAMILY(act_quant) {
  using namespace qfuse;
  r.add_family({"act_quant", "gated activations (SiLU-and-mul) with the output quantizer fused"});
  OutputDelivery plain_only;
  plain_only.quantized = false;
  (void)r.add_op({"silu_and_mul",
                  "act_quant",
                  "x [T, 2H] -> silu(x[:, :H]) * x[:, H:] in bf16/fp16/fp32",
                  {DType::kBF16, DType::kF16},
                  plain_only,
                  {}});
  // The engine rule for per-group FP8 only: the drop-in silu_and_mul_per_block_quant
  // (docs/python.md); its silu is the engine's too (silu_mul_quant.cu).
  OutputDelivery delivery;
  delivery.engine_rule_kinds = {QuantKind::kFp8PerGroup};
  (void)r.add_op({"silu_mul_quant",
                  "act_quant",
                  "silu_and_mul with the output written through any quantizer",
                  {DType::kBF16, DType::kF16},
                  delivery,
                  {}});
}
