// Tensor-core MLA decode, wide form (64 query rows per block, mainloop_wide.cuh), bf16 cache,
// output epilogue (kernel.cuh).
#include "mla_decode/kernel.cuh"

namespace qfuse::mla {

template Status launch_wide<CacheKind::kBf16, EpilogueKind::kOutput>(const TcParams&, dim3,
                                                                     cudaStream_t);

}  // namespace qfuse::mla
