// Tools for running graphs on made-up data (`qfuse fuse`, the graph tests): random inputs for
// every graph input, host values of a tensor, and the difference of two outputs. Not part of the
// library's API.
#pragma once

#include <cstdint>
#include <vector>

#include "qfuse/graph/executor.h"

namespace qfuse::graph {

/// Random values for every graph input, deterministic in `seed`: activations ~ N(0, 1) with a few
/// outliers; GEMM weights scaled by 1/sqrt(K) (FP8 weights as E4M3 codes with distinct non-unit
/// scales); log-sum-exps ~ N(0, 2); [1] fp32 scale inputs chosen for the kind that reads them
/// (per-tensor 4/448 with jitter, NVFP4 global 448*6/4, scale upper bounds 0.01).
Status make_random_inputs(const Graph& g, uint64_t seed, HostTensors* out,
                          const OpRegistry* registry = nullptr);

/// The values of a plain tensor (bf16/fp16/fp32) as doubles; an error for other dtypes.
Status host_values(const HostTensor& t, std::vector<double>* out);

struct Difference {
  double max_abs = 0.0;
  double max_rel = 0.0;  // |a - b| / max(|b|, floor), floor = 1e-2 * max |b|
  double rms_rel = 0.0;  // sqrt(sum (a - b)^2 / sum b^2)
  double ref_max_abs = 0.0;
  int64_t count = 0;
  int64_t nan_mismatch = 0;  // NaN in one and not in the other
};
/// Compares a against the reference b (same size).
Difference compare_values(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace qfuse::graph
