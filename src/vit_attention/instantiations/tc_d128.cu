// The tensor-core ViT attention for head size 128 (attention_tc.cuh).
#include "vit_attention/attention_tc.cuh"

namespace qfuse::vit {

template Status launch_tc_for<128>(const TcParams&, const QuantOutput&, cudaStream_t);

}  // namespace qfuse::vit
