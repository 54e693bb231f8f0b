// `qfuse bench`: runs a suite or one routine through the harness, prints an aligned table and
// optionally writes every number as JSON.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "bench/routines.h"
#include "cli/commands.h"
#include "qfuse/core/arch.h"
#include "qfuse/core/checked.h"
#include "qfuse/core/launch.h"
#include "qfuse/quant/kind.h"

namespace qfuse::cli {
namespace {

/// Display width of a UTF-8 string (code points; enough for "µ" and "×").
size_t width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string pad(const std::string& s, size_t w, bool right = false) {
  const size_t n = width(s);
  if (n >= w) return s;
  return right ? std::string(w - n, ' ') + s : s + std::string(w - n, ' ');
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

void list_everything() {
  std::printf("suites:\n");
  for (const bench::Suite* s : bench::all_suites())
    std::printf("  %-8s %3zu cases  %s\n", s->name.c_str(), s->cases.size(),
                s->description.c_str());
  std::printf("\nroutines (shape: T, H):\n");
  for (const bench::Routine* r : bench::all_routines())
    std::printf("  %-48s %s\n", r->name.c_str(), r->description.c_str());
}

/// The cases `opt` asks for, or an error message.
bool select_cases(const BenchOptions& opt, std::vector<bench::Case>* cases, std::string* error) {
  if (!opt.suite.empty()) {
    const bench::Suite* s = bench::find_suite(opt.suite);
    if (s == nullptr) {
      *error = "unknown suite '" + opt.suite + "' (qfuse bench --list)";
      return false;
    }
    *cases = s->cases;
    return true;
  }
  if (opt.op.empty()) {
    *error = "give --suite NAME or --op OP (qfuse bench --list shows both)";
    return false;
  }
  std::string name = opt.op;
  const bool merge = opt.op.rfind("merge_states", 0) == 0;
  const bool plain = opt.op == "silu_and_mul" || opt.op == "merge_states";
  if (plain && !opt.quant.empty() && opt.quant != "none") {
    // A plain op with a quantized output is its fused sibling.
    name = opt.op == "merge_states" ? "merge_states" : "silu_mul_quant";
    QuantSpec spec;
    const Status st = parse_quant_spec(opt.quant, &spec);
    if (!st.ok()) {
      *error = "--quant: " + st.message();
      return false;
    }
    name += "/" + to_string(spec);
  } else if (plain) {
  } else if (opt.quant.empty()) {
    *error = "--op " + opt.op + " needs --quant SPEC, e.g. fp8_group128:row:f32 (see qfuse info)";
    return false;
  } else {
    QuantSpec spec;
    const Status st = parse_quant_spec(opt.quant, &spec);
    if (!st.ok() || spec.kind == QuantKind::kNone) {
      *error = "--op " + opt.op + " needs --quant SPEC: " +
               (st.ok() ? std::string("none is the plain op (--op silu_and_mul)") : st.message());
      return false;
    }
    name += "/" + to_string(spec);
  }
  if (bench::find_routine(name) == nullptr) {
    *error = "no routine '" + name + "' (qfuse bench --list)";
    return false;
  }
  // NOTE: each option has its range; their product must also fit (else a huge allocation's
  // message, not the options', would be the explanation).
  const int64_t sizes[4] = {opt.T, merge ? opt.H : 2 * opt.H, merge ? opt.N : 1, merge ? opt.D : 1};
  if (const SizeProblem p = check_sizes(sizes, 4); !p.ok()) {
    *error = "--T " + std::to_string(opt.T) + " --H " + std::to_string(opt.H) +
             (merge ? " --N " + std::to_string(opt.N) + " --D " + std::to_string(opt.D) : "") +
             ": expected a case of at most " + kMaxElementsText + " elements per tensor";
    return false;
  }
  bench::Shape shape{{{"T", opt.T}, {"H", opt.H}}};
  if (merge) shape = bench::Shape{{{"N", opt.N}, {"T", opt.T}, {"H", opt.H}, {"D", opt.D}}};
  *cases = {{"single case", name, shape}};
  return true;
}

void print_table(const bench::Report& rep) {
  const double copy_gbps = rep.copy.gbps();
  std::printf("device: %s (sm_%d%d, %d SMs, L2 %.0f MiB)   date: %s\n", rep.device.name.c_str(),
              rep.device.cc_major, rep.device.cc_minor, rep.device.sm_count,
              rep.device.l2_bytes / 1048576.0, rep.date.c_str());
  std::printf(
      "copy bandwidth (cudaMemcpyAsync D2D of 256 MiB, read + write): %.0f GB/s "
      "(%.1f µs per copy)\n",
      copy_gbps, rep.copy.median_us);
  std::printf(
      "timing: CUDA graph of >= %d calls rotating K input sets (K * bytes >= 2 * L2), "
      "%d replays, median; programmatic dependent launch %s\n",
      rep.options.min_calls, rep.options.replays,
      qfuse::pdl_enabled() ? "on" : "off (QFUSE_PDL=0)");
  std::printf(
      "GB/s: minimum bytes (inputs read once, outputs and scales written once); an "
      "indented unfused peer is charged the bytes of the fused op above it\n");

  size_t name_w = width("routine"), shape_w = width("shape");
  for (const bench::Result& r : rep.results) {
    name_w = std::max(name_w, width(r.routine) + (r.is_peer ? 2 : 0));
    shape_w = std::max(shape_w, width(r.shape.to_string()));
  }
  const std::vector<std::pair<std::string, size_t>> cols = {
      {"µs med", 10}, {"µs min", 10}, {"GB/s", 8}, {"% copy", 8}, {"unfused/fused", 14}, {"K", 4}};
  std::string header = pad("routine", name_w) + "  " + pad("shape", shape_w);
  for (const auto& [h, w] : cols) header += "  " + pad(h, w, true);

  std::string section = "\x01";
  for (const bench::Result& r : rep.results) {
    if (r.section != section) {
      section = r.section;
      std::printf("\n== %s ==\n%s\n", section.c_str(), header.c_str());
    }
    std::string line =
        pad((r.is_peer ? "  " : "") + r.routine, name_w) + "  " + pad(r.shape.to_string(), shape_w);
    if (!r.error.empty()) {
      std::printf("%s  FAILED: %s\n", line.c_str(), r.error.c_str());
      continue;
    }
    const bench::Timing& t = r.timing;
    line += "  " + pad(fmt("%.2f", t.median_us), 10, true);
    line += "  " + pad(fmt("%.2f", t.min_us), 10, true);
    line += "  " + pad(fmt("%.0f", t.gbps()), 8, true);
    line += "  " + pad(fmt("%.1f%%", 100.0 * r.copy_fraction), 8, true);
    line += "  " + pad(r.unfused_ratio > 0.0 ? fmt("%.2f×", r.unfused_ratio) : "", 14, true);
    line += "  " + pad(std::to_string(t.sets), 4, true);
    std::printf("%s\n", line.c_str());
  }
}

nlohmann::json timing_json(const bench::Timing& t) {
  return {{"bytes_per_call", t.bytes},
          {"sets", t.sets},
          {"calls_per_graph", t.calls_per_graph},
          {"replays", t.replays},
          {"median_us", t.median_us},
          {"min_us", t.min_us},
          {"max_us", t.max_us},
          {"gbps", t.gbps()}};
}

nlohmann::json report_json(const bench::Report& rep) {
  nlohmann::json j;
  j["tool"] = "qfuse bench";
  j["date"] = rep.date;
  j["device"] = {{"name", rep.device.name},
                 {"compute_capability",
                  std::to_string(rep.device.cc_major) + "." + std::to_string(rep.device.cc_minor)},
                 {"sm_count", rep.device.sm_count},
                 {"l2_bytes", rep.device.l2_bytes}};
  j["build"] = {{"cuda", bench::build_cuda_version()}, {"archs", bench::build_cuda_archs()}};
  j["method"] = {{"min_calls_per_graph", rep.options.min_calls},
                 {"replays", rep.options.replays},
                 {"warmup_replays", rep.options.warmup},
                 {"statistic", "median of per-replay time / calls per graph"},
                 {"bytes", "minimum: inputs read once, outputs and scales written once"}};
  j["copy"] = timing_json(rep.copy);
  j["copy_gbps"] = rep.copy.gbps();
  nlohmann::json results = nlohmann::json::array();
  for (const bench::Result& r : rep.results) {
    nlohmann::json e;
    e["section"] = r.section;
    e["routine"] = r.routine;
    nlohmann::json shape = nlohmann::json::object();
    for (const auto& [k, v] : r.shape.dims) shape[k] = v;
    e["shape"] = shape;
    e["is_unfused_peer"] = r.is_peer;
    if (!r.error.empty()) {
      e["error"] = r.error;
    } else {
      e["timing"] = timing_json(r.timing);
      e["copy_fraction"] = r.copy_fraction;
      if (r.unfused_ratio > 0.0) {
        e["unfused"] = r.unfused;
        e["unfused_over_fused"] = r.unfused_ratio;
      }
    }
    results.push_back(std::move(e));
  }
  j["results"] = std::move(results);
  return j;
}

}  // namespace

int run_bench(const BenchOptions& opt) {
  bench::register_all_routines();
  if (opt.list) {
    list_everything();
    return 0;
  }
  std::vector<bench::Case> cases;
  std::string error;
  if (!select_cases(opt, &cases, &error)) {
    std::fprintf(stderr, "qfuse bench: %s\n", error.c_str());
    return 1;
  }
  if (!gpu_available()) {
    std::fprintf(stderr,
                 "qfuse bench: no CUDA device: the benchmark times kernels on an NVIDIA GPU "
                 "(this build targets %s); run it on a machine with one. `qfuse demo` runs the "
                 "host reference without a GPU.\n",
                 bench::build_cuda_archs().c_str());
    return 2;
  }

  bench::RunOptions run;
  run.timing.min_calls = opt.min_calls;
  run.timing.replays = opt.replays;
  run.with_unfused = opt.with_unfused;
  size_t total = cases.size() + 1, done = 0;
  if (opt.with_unfused)
    for (const bench::Case& c : cases) {
      const bench::Routine* r = bench::find_routine(c.routine);
      total += r != nullptr && !r->unfused.empty();
    }
  run.progress = [&](const std::string& what) {
    std::fprintf(stderr, "[%zu/%zu] %s\n", ++done, total, what.c_str());
  };

  bench::Report rep;
  const Status st = bench::run_cases(cases, run, &rep);
  if (!st.ok()) {
    std::fprintf(stderr, "qfuse bench: %s\n", st.to_string().c_str());
    return st.code() == StatusCode::kNotSupported ? 2 : 1;
  }
  print_table(rep);

  int failed = 0;
  for (const bench::Result& r : rep.results) failed += !r.error.empty();
  if (!opt.json_path.empty()) {
    std::ofstream f(opt.json_path);
    f << report_json(rep).dump(2) << "\n";
    if (!f) {
      std::fprintf(stderr, "qfuse bench: cannot write %s\n", opt.json_path.c_str());
      return 1;
    }
    std::printf("\nwrote %s\n", opt.json_path.c_str());
  }
  std::fflush(stdout);
  if (failed > 0) {
    std::fprintf(stderr, "qfuse bench: %d case(s) failed\n", failed);
    return 1;
  }
  return 0;
}

}  // namespace qfuse::cli
