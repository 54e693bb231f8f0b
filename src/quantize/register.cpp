// The quantize family: the standalone quantizer (also the unfused baseline of every fused op).
#include "qfuse/quant/capabilities.h"

QFUSE_REGISTER_KERNEL_FAMILY(quantize) {
  using namespace qfuse;
  r.add_family({"quantize", "standalone quantization of a [T, H] tensor into any kind"});
  (void)r.add_op({"quantize",
                  "quantize",
                  "x [T, H] -> quantized output (standalone; the unfused baseline)",
                  {DType::kBF16, DType::kF16, DType::kF32},
                  OutputDelivery{},
                  {}});
}
