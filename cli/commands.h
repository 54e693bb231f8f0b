// The subcommands of the `qfuse` command-line tool. Each returns the process exit code.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "qfuse/core/status.h"

namespace qfuse::cli {

struct BenchOptions {
  std::string suite;      // a registered suite (`--list`), or empty when `op` is given
  std::string op;         // silu_mul_quant | silu_and_mul+quantize | quantize | silu_and_mul |
                          // merge_states | merge_states+quantize
  std::string quant;      // the QuantSpec of `op` (none for silu_and_mul)
  int64_t T = 4096;       // rows of the single case
  int64_t H = 7168;       // output columns of the single case (merge: heads)
  int64_t N = 2;          // merge: partial states
  int64_t D = 128;        // merge: head size
  std::string json_path;  // write every number here when non-empty
  bool list = false;      // list routines and suites, then exit
  bool with_unfused = true;
  int replays = 25;
  int min_calls = 20;
};

struct DemoOptions {
  int reps = 10;  // timed calls per path
};

struct FuseOptions {
  std::string graph_path;
  std::string config_path;        // optional JSON config (docs/graph.md)
  bool host = false;              // force the host reference path
  std::vector<std::string> dims;  // NAME=SIZE overrides of the graph's dims
  uint64_t seed = 1;
  bool dequant_gemms = false;  // ExecutorOptions::native_block_scaled_fp8 off
  int calls = 5;               // runs per captured CUDA graph
  int reps = 15;               // timed replays
};

/// `qfuse fuse`: 0 on success, 1 on an error.
int run_fuse(const FuseOptions& opt);
/// One `--dim NAME=SIZE`: SIZE a decimal integer in [0, kMaxElements], nothing after it.
Status parse_dim_override(const std::string& text, std::pair<std::string, int64_t>* out);
/// `qfuse bench`: 0 on success, 1 on an error or a failed case, 2 without a GPU.
int run_bench(const BenchOptions& opt);
/// `qfuse demo`: 0 on success, 1 when a GPU accuracy check fails or CUDA reports an error.
int run_demo(const DemoOptions& opt);
/// `qfuse info`: device, build and the capability table; always 0.
int run_info();

}  // namespace qfuse::cli
