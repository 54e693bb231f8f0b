// Tensor-core MLA decode: 32 query rows per block, fp8 cache, two consumer warpgroups, output
// epilogue (kernel.cuh).
#include "mla_decode/kernel.cuh"

namespace qfuse::mla {

template Status launch_tc_fp8x2<32, EpilogueKind::kOutput>(const TcParams&, dim3, cudaStream_t);

}  // namespace qfuse::mla
