// The JSON description of a graph (docs/graph.md has the format and an example):
//
//   {
//     "name": "deepseek_v3_mlp",
//     "dims": {"T": 4096, "H": 7168, "I": 2048},       // named sizes shapes may use
//     "host_dims": {"T": 32, "H": 512, "I": 256},       // optional, for the host reference
//     "inputs": ["x", "w_gate_up", ...], "outputs": ["y"],
//     "tensors": {"x": {"dtype": "bf16", "shape": ["T", "H"]},
//                 "a": {"dtype": "e4m3", "shape": ["T", "I"], "quant": "fp8_group128:row:f32"}},
//     "nodes": [{"name": "act", "op": "silu_and_mul", "inputs": {"x": "gu"},
//                "outputs": {"out": "h"}, "attrs": {}}, ...]
//   }
//
// Tensors written by a node may be left out of "tensors": their type is inferred. Errors name
// the JSON path ("nodes[2] 'act': key 'inputs'") or, after parsing, the node and field
// (validate()).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "qfuse/core/status.h"
#include "qfuse/graph/graph.h"

namespace qfuse::graph {

class OpRegistry;

struct ParseOptions {
  /// Replace these dims (e.g. from the command line) before resolving shapes.
  std::vector<std::pair<std::string, int64_t>> dim_overrides;
  /// Resolve shapes with "host_dims" (when the file has them) instead of "dims".
  bool use_host_dims = false;
  const OpRegistry* registry = nullptr;  // nullptr: default_registry()
};

/// Parses and validates a graph.
Status parse_graph_json(const std::string& text, const ParseOptions& opt, Graph* out);
Status load_graph_file(const std::string& path, const ParseOptions& opt, Graph* out);
/// The JSON form (pretty-printed); parse_graph_json() of it gives back an equal graph.
std::string to_json(const Graph& g, const OpRegistry* registry = nullptr);

}  // namespace qfuse::graph
