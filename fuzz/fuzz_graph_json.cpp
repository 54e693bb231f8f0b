// Fuzz target: the graph JSON reader (parse_graph_json), and what runs on any graph it accepts:
// the text form, the JSON form, the fusion passes, the host budget and the memory plan.
//
// Invariants (a violation aborts): every input gives a Status; an error message stays short (no
// value dumped); an accepted graph prints as JSON that reads back to an equal graph; the passes
// leave a valid graph.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "qfuse/graph/config.h"
#include "qfuse/graph/executor.h"
#include "qfuse/graph/graph_json.h"
#include "qfuse/graph/passes.h"

using namespace qfuse::graph;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const bool host : {false, true}) {
    ParseOptions opt;
    opt.use_host_dims = host;
    Graph g;
    const qfuse::Status st = parse_graph_json(text, opt, &g);
    if (!st.ok()) {
      // NOTE: a message names keys and paths (each capped) but never prints a value.
      if (st.message().empty() || st.message().size() > 4096) std::abort();
      continue;
    }
    (void)to_text(g);
    Graph back;
    ParseOptions plain;
    if (!parse_graph_json(to_json(g), plain, &back).ok()) std::abort();
    if (!(back == g)) std::abort();
    (void)check_host_budget(g);
    MemoryPlan plan;
    (void)plan_memory(g, &plan);
    Graph fused = g;
    std::vector<PassReport> reports;
    const qfuse::Status passes = run_fusion_passes(FusionConfig{}, &fused, &reports);
    // NOTE: the passes validate their result themselves (kInternal when a pass broke the graph).
    if (passes.code() == qfuse::StatusCode::kInternal) std::abort();
    if (passes.ok() && !validate(fused).ok()) std::abort();
  }
  return 0;
}
