// Tensor-core MLA decode, the wide form's pair schedule (64 query rows per block, two
// warpgroups, mainloop_pair.cuh), bf16 cache, partial epilogue (kernel.cuh).
#include "mla_decode/kernel.cuh"

namespace qfuse::mla {

template Status launch_pair<EpilogueKind::kPartial>(const TcParams&, dim3, cudaStream_t);

}  // namespace qfuse::mla
