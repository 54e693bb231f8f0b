// Tensor-core MLA decode: 16 query rows per block, fp8 cache, two consumer warpgroups taking
// alternate tiles, the QK on E4M3 products (bench/NOTES.md M26), partial epilogue (kernel.cuh).
#include "mla_decode/kernel.cuh"

namespace qfuse::mla {

template Status launch_tc_fp8alt<EpilogueKind::kPartial, true>(const TcParams&, dim3, cudaStream_t);

}  // namespace qfuse::mla
