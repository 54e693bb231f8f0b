// CUDA-core MLA decode kernel, bf16 cache (simple_kernel.cuh).
#include "mla_decode/simple_kernel.cuh"

namespace qfuse::mla {

template Status launch_simple<CacheKind::kBf16>(const DecodeParams&, EpilogueKind, dim3,
                                                cudaStream_t);

}  // namespace qfuse::mla
