// The mla_decode family's capability rows (qfuse/quant/capabilities.h).
//
// mla_decode writes o_latent [T, N * 512] through the split-KV combine, a row-wise producer that
// sees whole output rows: every kind of the quantizer, and plain bf16 / fp16 / fp32. (The
// one-block-per-request form, MlaSplitMode::kNone, writes bf16 only.) With W_UV it writes the
// up-projected o [T, N * 128] from the combine with the fused up-projection (up_proj.cu): its
// tiles are a head's 128 columns, and per-token FP8 takes a first pass for the rows' amax, so it
// too delivers every kind with qfuse's rules. Inputs: q bf16; caches bf16 or e4m3 (checked by
// mla_decode_can_implement).
#include "qfuse/quant/capabilities.h"

QFUSE_REGISTER_KERNEL_FAMILY(mla_decode) {
  using namespace qfuse;
  r.add_family({"mla_decode", "MLA decode attention over paged bf16 / FP8 latent caches"});
  (void)r.add_op({"mla_decode",
                  "mla_decode",
                  "q [T, N, 576] bf16 against a paged [blocks, block_size, 576] bf16|e4m3 cache "
                  "-> o_latent [T, N * 512], any quantizer (split-KV combine), lse [T, N]",
                  {DType::kBF16},
                  OutputDelivery{},
                  {}});
  (void)r.add_op({"mla_decode_up_proj",
                  "mla_decode",
                  "mla_decode with W_UV [N, 512, 128]: o [T, N * 128] = o_latent . W_UV per head, "
                  "any quantizer (fused into the split-KV combine), lse [T, N]",
                  {DType::kBF16},
                  OutputDelivery{},
                  {}});
}
