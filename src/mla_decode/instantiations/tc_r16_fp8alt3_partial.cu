// Tensor-core MLA decode: 16 query rows per block, fp8 cache, three consumer warpgroups taking
// tiles in turn, the QK on E4M3 products (form 4, bench/NOTES.md M34), partial epilogue
// (kernel.cuh).
#include "mla_decode/kernel.cuh"

namespace qfuse::mla {

template Status launch_tc_fp8alt<EpilogueKind::kPartial, true, 3>(const TcParams&, dim3,
                                                                  cudaStream_t);

}  // namespace qfuse::mla
