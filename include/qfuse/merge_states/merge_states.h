// Merge of attention states with any (quantized) output (SPEC §2): split-KV combine, cascade
// attention, decode context parallelism.
//
//   partial outputs o_i [T, H, D] fp32|fp16|bf16 (all the same dtype; last dim contiguous; token
//   and head strides free per partial, head stride >= D), log-sum-exps lse_i [H, T] fp32 (last
//   dim contiguous, row stride >= T), 2 <= N <= kMaxMergeStates.
//   Per (t, h): every infinite lse counts as -inf (an empty partial); m = max_i lse_i;
//     m == -inf        -> out row = 0, out_lse = -inf (never NaN)
//     else             w_i = exp(lse_i - m) / sum_j exp(lse_j - m)  (fp32)
//                      out = sum_{i: lse_i > -inf} w_i * o_i  (fp32; empty partials are not read)
//                      out_lse = log(sum_j exp(lse_j - m)) + m
//   base-2 lse (LseBase::kBase2): exp2/log2 instead of exp/log.
//   A NaN lse makes its row NaN (and out_lse NaN).
//   Rows t >= copy_from (if set) copy the last partial and its raw lse, unmerged.
// The output is the matrix [T, H * D] an o_proj GEMM reads (heads contiguous within a row, row
// stride >= H * D), written through the shared quantizer: out.spec of any kind. Groups of
// per-group FP8 / NVFP4 run along the H * D columns (a group may span heads when D < g).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "qfuse/quant/quantize.h"

namespace qfuse {

inline constexpr int kMaxMergeStates = 8;

enum class LseBase { kNatural, kBase2 };

/// N partial states given one by one (N pointers; the stacked form converts to this).
struct MergePartials {
  int n = 0;
  TensorRef o[kMaxMergeStates];    // [T, H, D]
  TensorRef lse[kMaxMergeStates];  // [H, T] fp32
};

struct MergeOptions {
  LseBase lse_base = LseBase::kNatural;
  /// Rows t >= copy_from copy the last partial unmerged (-1: merge every row). 0 <= C <= T.
  int64_t copy_from = -1;
  /// Optional [H, T] fp32 (last dim contiguous) merged log-sum-exp; empty = not written. Must not
  /// overlap an input lse (InvalidArgument); H x T < 2^30 (NotSupported beyond).
  TensorRef out_lse;
};

/// Merges the partials into `out` (see the header comment). Validates every argument first; on
/// error nothing is written. T = 0 is a no-op.
Status merge_states(const MergePartials& in, const QuantOutput& out, const MergeOptions& opt,
                    cudaStream_t stream);

/// The same from one stacked tensor o [N, T, H, D] and lse [N, H, T] (what a split-KV kernel
/// writes); runs the same kernel.
Status merge_states_stacked(const TensorRef& o, const TensorRef& lse, const QuantOutput& out,
                            const MergeOptions& opt, cudaStream_t stream);

/// Splits a stacked o [N, T, H, D] / lse [N, H, T] into N views (validates ranks and N).
Status unstack_partials(const TensorRef& o, const TensorRef& lse, MergePartials* out);

namespace ref {
/// fp64 reference of merge_states on host data: o[i] points at partial i's elements (dtype
/// bf16|fp16 bits or fp32) with strides (st[i], sh[i], 1), lse[i] at its [H, T] values with row
/// stride ld_lse[i]. Returns out [T, H * D] and fills out_lse [H * T] (row-major) if non-null.
struct MergeHostInput {
  int n = 0;
  DType dtype = DType::kBF16;
  int64_t T = 0, H = 0, D = 0;
  const void* o[kMaxMergeStates] = {};
  int64_t st[kMaxMergeStates] = {}, sh[kMaxMergeStates] = {};
  const float* lse[kMaxMergeStates] = {};
  int64_t ld_lse[kMaxMergeStates] = {};
};
std::vector<double> merge_states(const MergeHostInput& in, const MergeOptions& opt,
                                 std::vector<double>* out_lse);
}  // namespace ref

}  // namespace qfuse
