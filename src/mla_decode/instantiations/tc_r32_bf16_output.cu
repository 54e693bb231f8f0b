// Tensor-core MLA decode: 32 query rows per block, bf16 cache, output epilogue (kernel.cuh).
#include "mla_decode/kernel.cuh"

namespace qfuse::mla {

template Status launch_tc<32, CacheKind::kBf16, EpilogueKind::kOutput>(const TcParams&, dim3,
                                                                       cudaStream_t);

}  // namespace qfuse::mla
