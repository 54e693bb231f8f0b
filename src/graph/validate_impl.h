// Validation with optional inference of undeclared tensors (used by the JSON reader).
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "qfuse/graph/graph.h"

namespace qfuse::graph::detail {

/// validate() that, for tensors named in `infer` and missing from g->tensors, adds the type the
/// writing node's op infers instead of failing. `infer` may be nullptr.
Status validate_graph(Graph* g, const OpRegistry* registry, const std::set<std::string>* infer);

/// eval_dim_expr (graph.h) with the dims found through `lookup` (nullptr: unknown); `dims` only
/// names a few of them in the error for an unknown one.
using DimLookup = std::function<const int64_t*(const std::string&)>;
Status eval_dim_expr(const std::string& expr, const DimLookup& lookup, int64_t* value,
                     const std::vector<std::pair<std::string, int64_t>>* dims = nullptr);

}  // namespace qfuse::graph::detail
