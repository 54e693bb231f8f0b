// Tensor-core MLA decode: 16 query rows per block, fp8 cache, form 7 (form 3 with 5 stages and the
// merge through a held stage, bench/NOTES.md M38), partial epilogue (kernel.cuh).
#include "mla_decode/kernel.cuh"

namespace qfuse::mla {

template Status launch_tc_fp8alt5<EpilogueKind::kPartial>(const TcParams&, dim3, cudaStream_t);

}  // namespace qfuse::mla
