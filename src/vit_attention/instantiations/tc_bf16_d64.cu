// The BF16 tensor-core ViT attention for head size 64 (attention_tc_bf16.cuh).
#include "vit_attention/attention_tc_bf16.cuh"

namespace qfuse::vit {

template Status launch_tc_bf16_for<64>(const TcParams&, const QuantOutput&, cudaStream_t);

}  // namespace qfuse::vit
