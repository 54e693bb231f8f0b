// CUDA-core MLA decode kernel, fp8 cache (simple_kernel.cuh).
#include "mla_decode/simple_kernel.cuh"

namespace qfuse::mla {

template Status launch_simple<CacheKind::kFp8>(const DecodeParams&, EpilogueKind, dim3,
                                               cudaStream_t);

}  // namespace qfuse::mla
