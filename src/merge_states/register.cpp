// The merge_states family: N-way merge of partial attention states with the output quantizer
// fused (SPEC §2).
#include "qfuse/quant/capabilities.h"

QFUSE_REGISTER_KERNEL_FAMILY(merge_states) {
  using namespace qfuse;
  r.add_family({"merge_states", "merge of partial attention states (split-KV, cascade, DCP)"});
  (void)r.add_op(
      {"merge_states",
       "merge_states",
       "N partial attention states o_i [T, H, D] + lse_i [H, T] -> merged [T, H * D], any "
       "quantizer",
       {DType::kBF16, DType::kF16, DType::kF32},
       OutputDelivery{},
       {}});
}
