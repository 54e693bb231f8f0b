// merge_states for bf16 partials (one instantiation per input dtype keeps builds parallel).
#include "merge_states/merge_kernel.cuh"

namespace qfuse::merge {

Status launch_merge_bf16(const MergeArgs& a, const QuantOutput& q, int64_t T, int64_t H,
                         cudaStream_t stream) {
  return launch_merge<__nv_bfloat16>(a, q, T, H, stream);
}

}  // namespace qfuse::merge
