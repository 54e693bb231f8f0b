// Small helpers every graph source file shares: the InvalidArgument status the graph layer
// returns (messages already name the node and field) and the text of shapes and lists.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "qfuse/core/status.h"

namespace qfuse::graph::detail {

inline Status invalid(std::string msg) {
  return {StatusCode::kInvalidArgument, std::move(msg)};
}

/// "[4096, 7168]"
inline std::string shape_text(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  return r + "]";
}

inline std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string r;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) r += sep;
    r += v[i];
  }
  return r;
}

}  // namespace qfuse::graph::detail
