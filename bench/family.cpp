// The tools' family registry (bench/family.h).
#include "bench/family.h"

#include <mutex>

#include "bench/routines.h"

namespace qfuse::bench {
namespace {

std::vector<BenchOp>& ops_store() {
  static std::vector<BenchOp> v;
  return v;
}
std::vector<DemoSection>& demo_store() {
  static std::vector<DemoSection> v;
  return v;
}

}  // namespace

void ToolRegistrar::add_suite_cases(const std::string& suite, const std::string& description,
                                    std::vector<Case> cases) {
  const Suite* existing = find_suite(suite);
  Suite s = existing != nullptr ? *existing : Suite{suite, description, {}};
  if (s.description.empty()) s.description = description;
  for (Case& c : cases) s.cases.push_back(std::move(c));
  register_suite(std::move(s));
}

void ToolRegistrar::add_bench_op(BenchOp op) {
  ops_store().push_back(std::move(op));
}

void ToolRegistrar::add_demo(DemoSection d) {
  demo_store().push_back(std::move(d));
}

BenchOp routine_op(const std::string& routine, const std::string& summary, Shape defaults,
                   const std::string& no_quant_why) {
  return {routine, summary, std::move(defaults),
          [routine, no_quant_why](const QuantSpec& spec, std::string* why) -> std::string {
            if (spec.kind != QuantKind::kNone) {
              *why = "--op " + routine + " takes no --quant (" + no_quant_why + ")";
              return "";
            }
            return routine;
          }};
}

std::string quant_routine(const std::string& op, const std::string& plain, const std::string& fused,
                          const QuantSpec& spec, std::string* why) {
  const bool none = spec.kind == QuantKind::kNone;
  const std::string name =
      none ? (op == plain ? plain : "") : (op == plain ? fused : op) + "/" + to_string(spec);
  if (name.empty() || find_routine(name) == nullptr) {
    *why = none ? "--op " + op + " needs a quantized --quant" +
                      (plain.empty() ? std::string() : " (none is --op " + plain + ")")
                : "no routine for " + to_string(spec) + " (qfuse info lists the specs)";
    return "";
  }
  return name;
}

void register_tools() {
  static std::once_flag once;
  std::call_once(once, [] {
    ToolRegistrar r;
    detail::register_tool_families(r);
  });
}

void register_all_routines() {
  register_tools();
}

const std::vector<BenchOp>& bench_ops() {
  register_tools();
  return ops_store();
}

const BenchOp* find_bench_op(const std::string& op) {
  for (const BenchOp& b : bench_ops())
    if (b.op == op) return &b;
  return nullptr;
}

const std::vector<DemoSection>& demo_sections() {
  register_tools();
  return demo_store();
}

}  // namespace qfuse::bench
