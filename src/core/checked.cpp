#include "qfuse/core/checked.h"

#include <algorithm>

namespace qfuse {

SizeProblem check_sizes(const int64_t* sizes, int rank, int64_t* numel) {
  int64_t extent = 1, n = 1;
  for (int d = 0; d < rank; ++d) {
    const int64_t s = sizes[d];
    if (s < 0) return {d, "a size >= 0"};
    // NOTE: extent <= 2^40 and s <= 2^40 before each step, so neither product can overflow.
    if (s > kMaxElements || !checked_mul(extent, std::max<int64_t>(s, 1), &extent) ||
        extent > kMaxElements)
      return {d, std::string("sizes that multiply to at most ") + kMaxElementsText +
                     " elements (zero sizes count as 1)"};
    n *= s;
  }
  if (numel != nullptr) *numel = n;
  return {};
}

std::string sizes_text(const int64_t* sizes, int rank) {
  std::string s = "[";
  for (int i = 0; i < std::clamp(rank, 0, 8); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

Status check_sizes(const std::string& name, const int64_t* sizes, int rank, int64_t* numel) {
  const SizeProblem p = check_sizes(sizes, rank, numel);
  if (p.ok()) return Status::Ok();
  return Status::InvalidArgument(
      name + ".sizes[" + std::to_string(p.dim) + "]", p.reason,
      std::to_string(sizes[p.dim]) + " (" + name + " is " + sizes_text(sizes, rank) + ")");
}

}  // namespace qfuse
