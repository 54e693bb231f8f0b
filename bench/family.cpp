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
