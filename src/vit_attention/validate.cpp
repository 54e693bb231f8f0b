#include "vit_attention/validate.h"

#include "qfuse/core/checked.h"

namespace qfuse::vit {

Status check_like_q(const TensorRef& t, const std::string& n, const TensorRef& q) {
  auto str = [](int64_t v) { return std::to_string(v); };
  if (t.dtype != q.dtype)
    return Status::InvalidArgument(n + ".dtype", std::string(to_string(q.dtype)) + " (as q)",
                                   std::string(to_string(t.dtype)));
  const int r = q.rank;
  if (t.rank != r) return Status::InvalidArgument(n + ".rank", str(r) + " (as q)", str(t.rank));
  QFUSE_RETURN_IF_ERROR(check_sizes(n + ".sizes", t.sizes.data(), t.rank, nullptr));
  for (int d = 0; d < r; ++d)
    if (t.sizes[d] != q.sizes[d])
      return Status::InvalidArgument(n + ".sizes[" + str(d) + "]",
                                     str(q.sizes[d]) + " (as q: " + q.shape_string() + ")",
                                     str(t.sizes[d]));
  if (t.sizes[r - 1] > 1 && t.strides[r - 1] != 1)
    return Status::InvalidArgument(n + ".strides[" + str(r - 1) + "]",
                                   "1 (last dimension contiguous)", str(t.strides[r - 1]));
  for (int d = 0; d < r - 1; ++d)
    if (t.strides[d] < 0)
      return Status::InvalidArgument(n + ".strides[" + str(d) + "]", ">= 0", str(t.strides[d]));
  return Status::Ok();
}

}  // namespace qfuse::vit
