// qfuse: the command-line tool (info, demo, bench, fuse, calibrate). Exceptions stop here.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <new>

#include "bench/family.h"
#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"qfuse: quantized-output fused kernels for LLM inference on NVIDIA Hopper"};
  app.require_subcommand(1);

  CLI::App* info = app.add_subcommand("info",
                                      "Device, build and which quantization specs each op "
                                      "supports");

  qfuse::cli::DemoOptions demo_opt;
  CLI::App* demo = app.add_subcommand(
      "demo",
      "Run every family's ops fused and unfused on realistic shapes, check both against the "
      "fp64 host reference, time them (host reference only without a GPU)");
  demo->add_option("--reps", demo_opt.reps, "Timed calls per path")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();

  qfuse::cli::BenchOptions bench_opt;
  CLI::App* bench = app.add_subcommand(
      "bench",
      "Time routines with CUDA-graph replays (SPEC §8); needs a GPU (exit code 2 "
      "without one)");
  CLI::Option* suite = bench->add_option("--suite", bench_opt.suite,
                                         "Run a suite of cases (issue2, quick, specs; see --list)");
  qfuse::bench::register_tools();
  std::vector<std::string> ops;
  for (const qfuse::bench::BenchOp& o : qfuse::bench::bench_ops()) ops.push_back(o.op);
  CLI::Option* op = bench->add_option("--op", bench_opt.op, "Run one routine on one shape")
                        ->check(CLI::IsMember(ops));
  bench
      ->add_option("--quant", bench_opt.quant,
                   "QuantSpec of --op, e.g. fp8_group128:col_tma:ue8m0_packed, nvfp4:swizzled")
      ->needs(op);
  bench
      ->add_option("--dim", bench_opt.dims,
                   "A shape key of --op, KEY=VALUE (repeatable; --list shows each op's keys)")
      ->needs(op);
  bench->add_option("--json", bench_opt.json_path, "Also write every number to this JSON file");
  bench->add_flag("--list", bench_opt.list, "List routines and suites, then exit");
  bench->add_flag("--plan", bench_opt.plan,
                  "Print the cases with their byte counts as JSON (to --json if given), then "
                  "exit; needs no GPU");
  bench->add_flag("!--no-unfused", bench_opt.with_unfused,
                  "Do not time the unfused peer of fused routines");
  bench->add_option("--reps", bench_opt.replays, "Timed graph replays per case")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  bench->add_option("--calls", bench_opt.min_calls, "Calls per graph, at least")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  bench
      ->add_option("--budget-s", bench_opt.budget_s,
                   "Seconds of replays per case at most: slower cases get fewer calls per graph "
                   "and replays (at least 3); 0: no limit")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  suite->excludes(op);

  qfuse::cli::FuseOptions fuse_opt;
  CLI::App* fuse = app.add_subcommand(
      "fuse",
      "Print a graph (JSON, docs/graph.md) before and after the fusion passes, run both on the "
      "same random inputs (GPU when present, else the host reference path) and compare outputs "
      "and times");
  fuse->add_option("graph", fuse_opt.graph_path,
                   "Graph JSON, e.g. examples/graphs/deepseek_v3_mlp.json")
      ->required()
      ->check(CLI::ExistingFile);
  fuse->add_option("--config", fuse_opt.config_path,
                   "Config JSON (fuse_act_quant, fuse_attn_quant, kv_cache_dtype, ...)")
      ->check(CLI::ExistingFile);
  fuse->add_flag("--host", fuse_opt.host, "Run on the host reference path (the file's host_dims)");
  fuse->add_option("--dim", fuse_opt.dims, "Override a dim of the graph, NAME=SIZE (repeatable)");
  fuse->add_option("--seed", fuse_opt.seed, "Seed of the random inputs")->capture_default_str();
  fuse->add_flag("--dequant-gemms", fuse_opt.dequant_gemms,
                 "Run block-scaled FP8 GEMMs by dequantizing to bf16, not through cuBLASLt's "
                 "native block scaling (to compare the two)");
  fuse->add_option("--reps", fuse_opt.reps, "Timed CUDA-graph replays")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();

  qfuse::bench::VitCalibrateOptions cal_opt;
  CLI::App* calibrate = app.add_subcommand(
      "calibrate",
      "Run ViT FP8 attention with dynamic scaling over random inputs and write the static scale "
      "file (docs/vit_attention.md); needs a GPU (exit code 2 without one)");
  CLI::Option* layers =
      calibrate->add_option("--layers", cal_opt.layers,
                            "Number of attention layers, named visual.blocks.<i>.attn (1..4096)");
  calibrate
      ->add_option("--layer-names", cal_opt.layer_names,
                   "The attention layers' names, comma-separated (instead of --layers)")
      ->excludes(layers);
  calibrate->add_option("--shape", cal_opt.shape, "Tokens, heads, head size: S,H,D")
      ->capture_default_str();
  calibrate->add_option("--forwards", cal_opt.forwards, "Forwards of every layer")
      ->capture_default_str();
  calibrate->add_option("--margin", cal_opt.margin, "Factor on the saved scales (> 0)")
      ->capture_default_str();
  calibrate->add_option("--out", cal_opt.out, "The scale file to write (JSON)")->required();
  calibrate->add_option("--seed", cal_opt.seed, "Seed of the random inputs")->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  const char* command = info->parsed()        ? "info"
                        : demo->parsed()      ? "demo"
                        : bench->parsed()     ? "bench"
                        : calibrate->parsed() ? "calibrate"
                                              : "fuse";
  try {
    if (info->parsed()) return qfuse::cli::run_info();
    if (demo->parsed()) return qfuse::cli::run_demo(demo_opt);
    if (bench->parsed()) return qfuse::cli::run_bench(bench_opt);
    if (fuse->parsed()) return qfuse::cli::run_fuse(fuse_opt);
    if (calibrate->parsed()) return qfuse::cli::run_calibrate(cal_opt);
  } catch (const std::bad_alloc&) {
    // NOTE: "std::bad_alloc" alone explains nothing: say what ran out and what to change.
    std::fprintf(stderr,
                 "qfuse %s: error: out of host memory (std::bad_alloc): the shapes are too large "
                 "for this machine; use smaller sizes (qfuse fuse: --dim NAME=SIZE or the graph's "
                 "host_dims)\n",
                 command);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qfuse %s: error: %s\n", command, e.what());
    return 1;
  }
  return 1;
}
