// Validation with optional inference of undeclared tensors (used by the JSON reader).
#pragma once

#include <set>
#include <string>

#include "qfuse/graph/graph.h"

namespace qfuse::graph::detail {

/// validate() that, for tensors named in `infer` and missing from g->tensors, adds the type the
/// writing node's op infers instead of failing. `infer` may be nullptr.
Status validate_graph(Graph* g, const OpRegistry* registry, const std::set<std::string>* infer);

}  // namespace qfuse::graph::detail
