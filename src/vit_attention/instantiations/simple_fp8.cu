// The CUDA-core ViT attention over fp8 inputs, every output kind (attention_simple.cuh).
#include "vit_attention/attention_simple.cuh"

namespace qfuse::vit {

Status launch_simple_fp8(const AttnParams& p, const QuantOutput& out, cudaStream_t stream) {
  return launch_simple_impl<uint8_t>(p, out, stream);
}

}  // namespace qfuse::vit
