// The CUDA-core ViT attention over bf16 inputs, every output kind (attention_simple.cuh).
#include "vit_attention/attention_simple.cuh"

namespace qfuse::vit {

Status launch_simple_bf16(const AttnParams& p, const QuantOutput& out, cudaStream_t stream) {
  return launch_simple_impl<__nv_bfloat16>(p, out, stream);
}

}  // namespace qfuse::vit
