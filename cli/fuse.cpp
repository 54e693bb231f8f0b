// `qfuse fuse <graph.json>`: prints a graph before and after the fusion passes (with each pass's
// report), runs both on the same random inputs (on the GPU when there is one, else on the host
// reference path with the file's smaller "host_dims") and reports the difference of the outputs
// and the time of each. GPU times: CUDA graphs of several runs each, replayed interleaved
// (bench/harness.h time_interleaved), medians and the median paired ratio.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bench/graph_tools.h"
#include "bench/harness.h"
#include "cli/commands.h"
#include "qfuse/core/arch.h"
#include "qfuse/core/checked.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/core/quote.h"
#include "qfuse/graph/config.h"
#include "qfuse/graph/executor.h"
#include "qfuse/graph/graph_json.h"
#include "qfuse/graph/passes.h"

namespace qfuse::cli {
namespace {

using namespace qfuse::graph;

int fail(const Status& st) {
  std::fprintf(stderr, "qfuse fuse: %s\n", st.to_string().c_str());
  return 1;
}

/// A graph on the device: its inputs, workspace and executor.
struct DeviceGraph {
  std::unique_ptr<DeviceExecutor> ex;
  std::vector<void*> buffers;
  std::map<std::string, const void*> inputs;
  void* ws = nullptr;

  ~DeviceGraph() {
    for (void* b : buffers) cudaFree(b);
    if (ws) cudaFree(ws);
  }
  Status init(const Graph& g, const HostTensors& host, const ExecutorOptions& options) {
    QFUSE_RETURN_IF_ERROR(DeviceExecutor::create(g, &ex, nullptr, options));
    for (const std::string& in : g.inputs) {
      const HostTensor& t = host.at(in);
      void* p = nullptr;
      QFUSE_CUDA_RETURN(cudaMalloc(&p, std::max<size_t>(t.data.size(), 1)));
      buffers.push_back(p);
      QFUSE_CUDA_RETURN(cudaMemcpy(p, t.data.data(), t.data.size(), cudaMemcpyHostToDevice));
      inputs[in] = p;
    }
    QFUSE_CUDA_RETURN(cudaMalloc(&ws, std::max<size_t>(ex->workspace_bytes(), 1)));
    return Status::Ok();
  }
  Status run(cudaStream_t s) { return ex->run(inputs, ws, ex->workspace_bytes(), s); }
  Status download(const std::string& name, HostTensor* t) {
    t->desc = *ex->graph().tensor(name);
    t->data.resize(t->desc.bytes());
    const auto& slice = ex->plan().tensors.at(name);
    QFUSE_CUDA_RETURN(cudaMemcpy(t->data.data(), static_cast<char*>(ws) + slice.offset, slice.bytes,
                                 cudaMemcpyDeviceToHost));
    return Status::Ok();
  }
};

void print_difference(const std::string& name, const HostTensor& fused, const HostTensor& unfused) {
  std::vector<double> a, b;
  if (host_values(fused, &a).ok() && host_values(unfused, &b).ok()) {
    const Difference d = compare_values(a, b);
    std::printf(
        "  %-10s max |fused - unfused| %.4g (max |unfused| %.4g), max relative %.4g, "
        "rms relative %.4g, NaN mismatches %lld\n",
        name.c_str(), d.max_abs, d.ref_max_abs, d.max_rel, d.rms_rel,
        static_cast<long long>(d.nan_mismatch));
    return;
  }
  int64_t differ = 0;
  for (size_t i = 0; i < fused.data.size(); ++i) differ += fused.data[i] != unfused.data[i];
  std::printf("  %-10s %lld of %zu bytes differ (quantized output)\n", name.c_str(),
              static_cast<long long>(differ), fused.data.size());
}

}  // namespace

Status parse_dim_override(const std::string& text, std::pair<std::string, int64_t>* out) {
  const std::string expected = std::string("NAME=SIZE with SIZE an integer in [0, ") +
                               std::to_string(kMaxElements) + "] (" + kMaxElementsText + ")";
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    return Status::InvalidArgument("--dim", expected, quote_text(text));
  const std::string_view num = std::string_view(text).substr(eq + 1);
  int64_t v = 0;
  // NOTE: from_chars, not stoll: the whole text must be the number ("4x", " 4", "+4", "4e3"
  // are errors) and a value past int64_t is an error, not a clamp.
  const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
  if (num.empty() || ec == std::errc::invalid_argument || end != num.data() + num.size())
    return Status::InvalidArgument("--dim " + text.substr(0, std::min<size_t>(eq, 64)), expected,
                                   quote_text(text));
  if (ec == std::errc::result_out_of_range || v < 0 || v > kMaxElements)
    return Status::InvalidArgument("--dim " + text.substr(0, std::min<size_t>(eq, 64)), expected,
                                   quote_text(text) + " (out of range)");
  *out = {text.substr(0, eq), v};
  return Status::Ok();
}

int run_fuse(const FuseOptions& opt) {
  FusionConfig cfg;
  if (!opt.config_path.empty()) {
    Status st = load_config_file(opt.config_path, &cfg);
    if (st.ok()) st = validate_config(cfg);
    if (!st.ok()) return fail(st);
  }
  std::string cache;
  if (Status st = resolve_kv_cache_dtype(
          cfg.attention_backend, cfg.kv_cache_dtype, &cache,
          [](std::string_view line) { std::printf("log: %.*s\n", int(line.size()), line.data()); });
      !st.ok())
    return fail(st);

  const bool gpu = !opt.host && gpu_available();
  ParseOptions popt;
  popt.use_host_dims = !gpu;
  for (const std::string& d : opt.dims) {
    std::pair<std::string, int64_t> dim;
    if (Status st = parse_dim_override(d, &dim); !st.ok()) return fail(st);
    popt.dim_overrides.push_back(std::move(dim));
  }
  Graph before;
  if (Status st = load_graph_file(opt.graph_path, popt, &before); !st.ok()) return fail(st);
  std::printf(
      "config: fuse_act_quant=%s fuse_attn_quant=%s attention_backend=%s "
      "kv_cache_dtype=%s (%s)\n",
      cfg.fuse_act_quant ? "true" : "false", cfg.fuse_attn_quant ? "true" : "false",
      cfg.attention_backend.c_str(), cfg.kv_cache_dtype.c_str(), cache.c_str());
  std::printf("running on: %s\n\n",
              gpu ? "the GPU (library kernels, cuBLASLt GEMMs)"
                  : (opt.host ? "the host reference path (--host; host_dims)"
                              : "the host reference path (no CUDA device; host_dims)"));
  std::printf("== before the passes\n%s\n", to_text(before).c_str());

  Graph after = before;
  std::vector<PassReport> reports;
  if (Status st = run_fusion_passes(cfg, &after, &reports); !st.ok()) return fail(st);
  std::printf("== passes\n");
  for (const PassReport& r : reports) std::printf("%s\n", r.to_string().c_str());
  std::printf("\n== after the passes\n%s\n", to_text(after).c_str());

  // NOTE: before the inputs are made: a graph too large for the host path says which dims to
  // set instead of allocating gigabytes and running fp64 GEMMs for minutes.
  if (!gpu)
    for (const Graph* g : {&before, &after})
      if (Status st = check_host_budget(*g); !st.ok()) return fail(st);
  HostTensors inputs;
  if (Status st = make_random_inputs(before, opt.seed, &inputs); !st.ok()) return fail(st);
  std::map<std::string, HostTensor> out_unfused, out_fused;
  double t_unfused = 0, t_fused = 0, paired_ratio = 0;
  if (!gpu) {
    for (int which = 0; which < 2; ++which) {
      const Graph& g = which ? after : before;
      HostTensors t = inputs;
      const auto t0 = std::chrono::steady_clock::now();
      if (Status st = run_host(g, &t); !st.ok()) return fail(st);
      const double us =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      (which ? t_fused : t_unfused) = us;
      for (const std::string& o : g.outputs) (which ? out_fused : out_unfused)[o] = t.at(o);
    }
  } else {
    DeviceGraph du, df;
    ExecutorOptions ex_opt;
    ex_opt.native_block_scaled_fp8 = !opt.dequant_gemms;
    if (Status st = du.init(before, inputs, ex_opt); !st.ok()) return fail(st);
    if (Status st = df.init(after, inputs, ex_opt); !st.ok()) return fail(st);
    std::printf("== GEMM paths\n");
    for (const std::string& n : du.ex->notes()) std::printf("  %s\n", n.c_str());
    std::printf("\n");
    for (DeviceGraph* d : {&du, &df}) {
      if (Status st = d->run(nullptr); !st.ok()) return fail(st);
      if (Status st = cuda_status(cudaDeviceSynchronize(), "run"); !st.ok()) return fail(st);
      for (const std::string& o : d->ex->graph().outputs)
        if (Status st = d->download(o, &(d == &du ? out_unfused : out_fused)[o]); !st.ok())
          return fail(st);
    }
    // NOTE: interleaved replays (bench/harness.h): the GEMMs' clock drift between two separately
    // timed graphs was as large as the fusion's gain (0.92-1.01x over seven runs).
    std::vector<double> med, ratio;
    cudaStream_t s = nullptr;
    if (Status st = cuda_status(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
        !st.ok())
      return fail(st);
    const Status st = bench::time_interleaved(
        {[&](cudaStream_t st) { return du.run(st); }, [&](cudaStream_t st) { return df.run(st); }},
        opt.calls, 3 * opt.reps, s, &med, &ratio);
    cudaStreamDestroy(s);
    if (!st.ok()) return fail(st);
    t_unfused = med[0];
    t_fused = med[1];
    paired_ratio = ratio[1];
  }

  std::printf("== outputs (same random inputs, seed %llu)\n",
              static_cast<unsigned long long>(opt.seed));
  for (const std::string& o : before.outputs) print_difference(o, out_fused[o], out_unfused[o]);
  std::printf("\n== time per run (%s)\n", gpu ? "median of CUDA-graph replays" : "host, one run");
  std::printf("  unfused %10.1f µs  (%zu nodes)\n", t_unfused, before.nodes.size());
  std::printf("  fused   %10.1f µs  (%zu nodes)\n", t_fused, after.nodes.size());
  std::printf("  unfused / fused: %.3f×%s\n", gpu ? paired_ratio : t_unfused / t_fused,
              gpu ? " (median of paired interleaved replays)" : "");
  return 0;
}

}  // namespace qfuse::cli
