// The split-KV combine's launch: the MlaCombine producer (combine.cuh) on the row-wise kernels.
#include "mla_decode/combine.cuh"
#include "mla_decode/launch.h"

namespace qfuse::mla {

Status launch_combine(const DecodeParams& p, const QuantOutput& out, cudaStream_t stream) {
  const CombineArgs a{p.sched.o_part, p.sched.lse_part, p.sched.first,  p.s_q,   p.heads,
                      p.lse,          p.lse_st,         p.sched.header, p.direct};
  const int64_t T = static_cast<int64_t>(p.batch) * p.s_q;
  return quant::launch_rowwise(MlaCombine{a, true}, out, T, static_cast<int64_t>(p.heads) * kLatent,
                               stream);
}

}  // namespace qfuse::mla
