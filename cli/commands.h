// The subcommands of the `qfuse` command-line tool. Each returns the process exit code.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bench/vit_attention/vit_tools.h"
#include "qfuse/core/status.h"

namespace qfuse::cli {

struct BenchOptions {
  std::string suite;              // a registered suite (`--list`), or empty when `op` is given
  std::string op;                 // an op the families registered (`--list`)
  std::string quant;              // the QuantSpec of `op` (none: the plain op)
  std::vector<std::string> dims;  // KEY=VALUE shape settings of the single case
  std::string json_path;          // write every number here when non-empty
  bool list = false;              // list routines and suites, then exit
  bool plan = false;              // print the cases and their bytes as JSON (no GPU), then exit
  bool with_unfused = true;
  int replays = 25;
  int min_calls = 20;
  double budget_s = 3.0;  // TimingOptions::budget_s: seconds of replays per case at most
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
/// `qfuse calibrate`: 0 when the scale file was written; 1 on an argument or CUDA error (argument
/// errors are found before the device is touched), 2 without a usable GPU.
int run_calibrate(const bench::VitCalibrateOptions& opt);

}  // namespace qfuse::cli
