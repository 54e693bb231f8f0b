// The tensor-core ViT attention for head size 80 (attention_tc.cuh).
#include "vit_attention/attention_tc.cuh"

namespace qfuse::vit {

template Status launch_tc_for<80>(const TcParams&, const QuantOutput&, cudaStream_t);

}  // namespace qfuse::vit
