// The vit_attention family's capability rows (qfuse/quant/capabilities.h): FP8 / bf16 attention
// for vision encoders (SPEC §5).
//
// vit_attention writes o [S_total, H * D] from a block that holds a whole token's output row
// (the CUDA-core kernel stages it in shared memory): every kind of the quantizer, and plain
// bf16 / fp16 / fp32. Inputs: e4m3 (from vit_quantize_qkv) or bf16.
#include "qfuse/quant/capabilities.h"

QFUSE_REGISTER_KERNEL_FAMILY(vit_attention) {
  using namespace qfuse;
  r.add_family({"vit_attention",
                "FP8 / bf16 attention for vision encoders (varlen, fused Q/K/V quantization)"});
  (void)r.add_op({"vit_attention",
                  "vit_attention",
                  "varlen non-causal attention, q/k/v e4m3 [S, H, Dp] (dequant scales folded in) "
                  "or bf16 [S, H, D] -> o [S, H * D], any quantizer",
                  {DType::kE4M3, DType::kBF16},
                  OutputDelivery{},
                  {}});
}
