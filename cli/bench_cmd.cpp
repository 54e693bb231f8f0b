// `qfuse bench`: runs a suite or one routine through the harness, prints an aligned table and
// optionally writes every number as JSON.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/family.h"
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
    std::printf("  %-10s %3zu cases  %s\n", s->name.c_str(), s->cases.size(),
                s->description.c_str());
  std::printf("\nops of --op (--dim KEY=VALUE sets a shape key; defaults shown):\n");
  for (const bench::BenchOp& op : bench::bench_ops())
    std::printf("  %-26s %-28s %s\n", op.op.c_str(), op.defaults.to_string().c_str(),
                op.summary.c_str());
  std::printf("\nroutines:\n");
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
  const bench::BenchOp* op = bench::find_bench_op(opt.op);
  if (op == nullptr) {
    *error = "unknown --op '" + opt.op + "' (qfuse bench --list)";
    return false;
  }
  QuantSpec spec;
  if (!opt.quant.empty()) {
    const Status st = parse_quant_spec(opt.quant, &spec);
    if (!st.ok()) {
      *error = "--quant: " + st.message();
      return false;
    }
  }
  std::string why;
  const std::string name = op->routine(spec, &why);
  if (name.empty()) {
    *error = why;
    return false;
  }
  bench::Shape shape = op->defaults;
  for (const std::string& kv : opt.dims) {
    const size_t eq = kv.find('=');
    const std::string key = kv.substr(0, eq);
    bool known = false;
    for (auto& [k, v] : shape.dims) {
      if (k != key) continue;
      known = true;
      size_t used = 0;
      long long x = -1;
      try {
        x = std::stoll(kv.substr(eq + 1), &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (eq == std::string::npos || used == 0 || used != kv.size() - eq - 1 || x < 1) {
        *error = "--dim " + kv + ": expected " + key + "=<a positive integer>";
        return false;
      }
      v = x;
    }
    if (!known) {
      *error =
          "--dim " + kv + ": --op " + opt.op + " takes " + shape.to_string() + " (the defaults)";
      return false;
    }
  }
  // NOTE: each --dim has its range; their product must also fit (else a huge allocation's
  // message, not the options', would be the explanation). The product of every key bounds the
  // largest tensor of a case (silu's input is 2 T H: within a factor of two).
  std::vector<int64_t> sizes;
  for (const auto& kv : shape.dims) sizes.push_back(kv.second);
  if (const SizeProblem p = check_sizes(sizes.data(), static_cast<int>(sizes.size())); !p.ok()) {
    *error = shape.to_string() + ": expected a case of at most " + kMaxElementsText +
             " elements per tensor";
    return false;
  }
  *cases = {{"single case", name, shape}};
  return true;
}

/// "% of" a ceiling, or "" when there is none.
std::string percent(double fraction) {
  return fraction > 0.0 ? fmt("%.1f%%", 100.0 * fraction) : std::string();
}

void print_ceilings(const bench::Report& rep) {
  std::printf(
      "ceilings, same run (after %.1f s of copy kernels for the clocks; median; bytes read + "
      "written):\n",
      rep.warmup_s);
  std::string forms;
  for (const bench::CeilingForm& f : rep.copy.kernels)
    forms += (forms.empty() ? "" : " / ") + fmt("%.0f", f.timing.gbps());
  std::printf("  copy %.0f GB/s: %s\n", rep.copy.gbps(), rep.copy.best().form.c_str());
  std::printf(
      "    (cudaMemcpyAsync D2D of 256 MiB, eager: %.0f GB/s; copy-kernel forms: %s GB/s)\n",
      rep.copy.memcpy.timing.gbps(), forms.c_str());
  for (const bench::ReadMostlyCeiling& c : rep.read_mostly) {
    if (c.forms.empty()) {
      std::printf("  read-mostly %s: FAILED: %s\n", bench::ratio_label(c.ratio).c_str(),
                  c.error.c_str());
      continue;
    }
    std::printf("  read-mostly %s: %.0f GB/s (%.0f MiB in %.2f µs; %s)\n",
                bench::ratio_label(c.ratio).c_str(), c.gbps(), c.best().timing.bytes / 1048576.0,
                c.best().timing.median_us, c.best().form.c_str());
  }
}

void print_table(const bench::Report& rep) {
  std::printf("device: %s (sm_%d%d, %d SMs, L2 %.0f MiB)   date: %s\n", rep.device.name.c_str(),
              rep.device.cc_major, rep.device.cc_minor, rep.device.sm_count,
              rep.device.l2_bytes / 1048576.0, rep.date.c_str());
  print_ceilings(rep);
  std::printf(
      "timing: CUDA graph of >= %d calls rotating K input sets (K * bytes >= 2 * L2), "
      "%d replays, median; programmatic dependent launch %s\n",
      rep.options.min_calls, rep.options.replays,
      qfuse::pdl_enabled() ? "on" : "off (QFUSE_PDL=0)");
  bool any_flops = false, any_budget = false;
  for (const bench::Result& r : rep.results) {
    any_flops = any_flops || (r.error.empty() && r.timing.flops > 0);
    any_budget = any_budget || (r.error.empty() && r.timing.budget_limited);
  }
  if (any_budget)
    std::printf(
        "time budget: rows marked \"calls x replays\" were slower than %.1f s for the usual "
        "counts and were timed with fewer calls per graph and replays (--budget-s)\n",
        rep.options.budget_s);
  if (any_flops)
    std::printf(
        "TFLOPS: the row's floating-point operations per call (attention: 4 S_q S_kv H D) "
        "over its median time\n");
  std::printf(
      "GB/s: minimum bytes (inputs read once, outputs and scales written once); an "
      "indented unfused peer is charged the bytes of the fused op above it\n"
      "%% copy: GB/s over the copy ceiling; %% r:w: GB/s over the read-mostly ceiling at the "
      "row's reads:writes (column r:w, the row's bytes rounded as the ceiling's)\n");

  size_t name_w = width("routine"), shape_w = width("shape");
  for (const bench::Result& r : rep.results) {
    name_w = std::max(name_w, width(r.routine) + (r.is_peer ? 2 : 0));
    shape_w = std::max(shape_w, width(r.shape.to_string()));
  }
  std::vector<std::pair<std::string, size_t>> cols = {
      {"µs med", 10}, {"µs min", 10}, {"GB/s", 8},           {"% copy", 8},
      {"r:w", 9},     {"% r:w", 8},   {"unfused/fused", 14}, {"K", 4}};
  // NOTE: a TFLOPS column only in tables with rows that state their FLOPs (attention), so the
  // tables of the memory-bound suites keep their layout.
  if (any_flops) cols.insert(cols.begin() + 3, {"TFLOPS", 8});
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
    const std::string ratio = bench::ratio_label(r.ceiling_ratio);
    line += "  " + pad(fmt("%.2f", t.median_us), 10, true);
    line += "  " + pad(fmt("%.2f", t.min_us), 10, true);
    line += "  " + pad(fmt("%.0f", t.gbps()), 8, true);
    if (any_flops) line += "  " + pad(t.flops > 0 ? fmt("%.1f", t.tflops()) : "", 8, true);
    line += "  " + pad(percent(r.copy_fraction), 8, true);
    line += "  " + pad(ratio == "read-only" ? "read" : ratio, 9, true);
    line += "  " + pad(percent(r.read_mostly_fraction), 8, true);
    line += "  " + pad(r.unfused_ratio > 0.0 ? fmt("%.2f×", r.unfused_ratio) : "", 14, true);
    line += "  " + pad(std::to_string(t.sets), 4, true);
    if (t.budget_limited)
      line += "  " + std::to_string(t.calls_per_graph) + " x " + std::to_string(t.replays);
    std::printf("%s\n", line.c_str());
  }
}

nlohmann::json timing_json(const bench::Timing& t) {
  nlohmann::json j = {{"bytes_per_call", t.bytes},
                      {"sets", t.sets},
                      {"calls_per_graph", t.calls_per_graph},
                      {"replays", t.replays},
                      {"median_us", t.median_us},
                      {"min_us", t.min_us},
                      {"max_us", t.max_us},
                      {"gbps", t.gbps()}};
  if (t.flops > 0) {
    j["flops_per_call"] = t.flops;
    j["tflops"] = t.tflops();
  }
  if (t.budget_limited) j["budget_limited"] = true;
  return j;
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
                 {"budget_s", rep.options.budget_s},
                 {"statistic", "median of per-replay time / calls per graph"},
                 {"bytes", "minimum: inputs read once, outputs and scales written once"}};
  const auto form_json = [](const bench::CeilingForm& f) {
    return nlohmann::json{{"form", f.form}, {"timing", timing_json(f.timing)}};
  };
  nlohmann::json copy;
  copy["gbps"] = rep.copy.gbps();
  copy["used"] = rep.copy.best().form;
  copy["memcpy"] = form_json(rep.copy.memcpy);
  copy["kernels"] = nlohmann::json::array();
  for (const bench::CeilingForm& f : rep.copy.kernels) copy["kernels"].push_back(form_json(f));
  nlohmann::json read_mostly = nlohmann::json::array();
  for (const bench::ReadMostlyCeiling& c : rep.read_mostly) {
    nlohmann::json e;
    e["ratio"] = bench::ratio_label(c.ratio);
    if (!c.error.empty()) {
      e["error"] = c.error;
    } else {
      e["gbps"] = c.gbps();
      e["used"] = c.best().form;
      e["reads_over_writes"] =
          std::isinf(c.measured_ratio) ? nlohmann::json(nullptr) : nlohmann::json(c.measured_ratio);
      e["forms"] = nlohmann::json::array();
      for (const bench::CeilingForm& f : c.forms) e["forms"].push_back(form_json(f));
    }
    read_mostly.push_back(std::move(e));
  }
  j["ceilings"] = {{"warmup_s", rep.warmup_s},
                   {"copy", std::move(copy)},
                   {"read_mostly", std::move(read_mostly)},
                   {"bytes", "read + written"}};
  // NOTE: copy_gbps is kept for readers of older reports; it is the copy ceiling.
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
      if (r.read_write_ratio > 0.0)
        e["reads_over_writes"] = std::isinf(r.read_write_ratio)
                                     ? nlohmann::json(nullptr)
                                     : nlohmann::json(r.read_write_ratio);
      if (r.ceiling_ratio > 0.0) {
        e["read_mostly_ceiling"] = bench::ratio_label(r.ceiling_ratio);
        if (r.read_mostly_gbps > 0.0) {
          e["read_mostly_gbps"] = r.read_mostly_gbps;
          e["read_mostly_fraction"] = r.read_mostly_fraction;
        }
      }
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

/// `--plan`: the cases with their byte counts as JSON (to stdout, or to --json), without a GPU.
int print_plan(const BenchOptions& opt, const std::vector<bench::Case>& cases) {
  nlohmann::json j;
  j["tool"] = "qfuse bench --plan";
  j["suite"] = opt.suite;
  nlohmann::json rows = nlohmann::json::array();
  for (const bench::Case& c : cases) {
    nlohmann::json e;
    e["section"] = c.section;
    e["routine"] = c.routine;
    nlohmann::json shape = nlohmann::json::object();
    for (const auto& [k, v] : c.shape.dims) shape[k] = v;
    e["shape"] = shape;
    const bench::Routine* r = bench::find_routine(c.routine);
    std::unique_ptr<bench::Instance> inst;
    const Status st = r == nullptr ? Status::InvalidArgument("routine", "registered", c.routine)
                                   : r->make(c.shape, &inst);
    if (!st.ok()) {
      e["error"] = st.to_string();
    } else {
      e["bytes_per_call"] = inst->min_bytes();
      if (inst->read_bytes() >= 0) e["read_bytes"] = inst->read_bytes();
      if (inst->flops() > 0) e["flops_per_call"] = inst->flops();
    }
    rows.push_back(std::move(e));
  }
  j["cases"] = std::move(rows);
  if (opt.json_path.empty()) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::ofstream f(opt.json_path);
  f << j.dump(2) << "\n";
  if (!f) {
    std::fprintf(stderr, "qfuse bench: cannot write %s\n", opt.json_path.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int run_bench(const BenchOptions& opt) {
  bench::register_tools();
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
  if (opt.plan) return print_plan(opt, cases);
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
  run.timing.budget_s = opt.budget_s;
  run.with_unfused = opt.with_unfused;
  size_t total = cases.size(), done = 0;
  if (opt.with_unfused)
    for (const bench::Case& c : cases) {
      const bench::Routine* r = bench::find_routine(c.routine);
      total += r != nullptr && !r->unfused.empty();
    }
  run.progress = [&](const std::string& what) {
    if (what.rfind("ceiling: ", 0) == 0)
      std::fprintf(stderr, "[ceiling] %s\n", what.c_str() + 9);
    else
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
