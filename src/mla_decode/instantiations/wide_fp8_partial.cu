// Tensor-core MLA decode, wide form (64 query rows per block, mainloop_wide.cuh), FP8 (E4M3)
// cache converted to bf16 tiles by the producer warpgroup, partial epilogue (kernel.cuh).
#include "mla_decode/kernel.cuh"

namespace qfuse::mla {

template Status launch_wide<CacheKind::kFp8, EpilogueKind::kPartial>(const TcParams&, dim3,
                                                                     cudaStream_t);

}  // namespace qfuse::mla
