// Host twin of the merge kernel (merge_kernel.cuh): the validated arguments of one merge, and the
// per-input-dtype launchers (one translation unit each, so builds stay parallel).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/fast_div.h"
#include "qfuse/core/status.h"
#include "qfuse/merge_states/merge_states.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::merge {

/// Everything the kernel reads besides the output; trivially copyable (a kernel argument).
/// Strides in elements; lse_i (h, t) at lse[i][h * ld_lse[i] + t].
struct MergeArgs {
  const void* o[kMaxMergeStates];
  int64_t st[kMaxMergeStates];  // token stride of o_i
  int64_t sh[kMaxMergeStates];  // head stride of o_i
  const float* lse[kMaxMergeStates];
  int64_t ld_lse[kMaxMergeStates];
  int n;
  int D;
  int d_shift;        // log2(D) when D is a power of two, else -1
  int64_t copy_from;  // rows >= copy_from copy the last partial (T when unused)
  bool no_copy;       // copy_from >= T
  bool base2;
  bool vec;        // every o_i allows 16-byte loads of 8-element chunks within one head
  float* out_lse;  // optional [H, T] (row stride ld_out_lse)
  int64_t ld_out_lse;
  int64_t lse_units;  // H * T: the side pass's units (out_lse)
  FastDiv lse_rows;   // T
};

/// Launches the merge of `a` into `q` ([T, H * D] output), picking the kernel for a.n.
Status launch_merge_bf16(const MergeArgs& a, const QuantOutput& q, int64_t T, int64_t H,
                         cudaStream_t stream);
Status launch_merge_f16(const MergeArgs& a, const QuantOutput& q, int64_t T, int64_t H,
                        cudaStream_t stream);
Status launch_merge_f32(const MergeArgs& a, const QuantOutput& q, int64_t T, int64_t H,
                        cudaStream_t stream);

}  // namespace qfuse::merge
