#include "qfuse/core/tensor.h"

#include <algorithm>

#include "qfuse/core/checked.h"

namespace qfuse {
namespace {

/// Dimensions a view actually stores (its rank clamped to [0, kMaxRank]).
int stored_dims(int rank) {
  return std::clamp(rank, 0, TensorRef::kMaxRank);
}

}  // namespace

TensorRef TensorRef::contiguous(void* data, DType dtype, std::initializer_list<int64_t> sizes) {
  TensorRef t;
  t.data = data;
  t.dtype = dtype;
  // NOTE: more than kMaxRank sizes keep their rank (rejected by every entry point); only the
  // first kMaxRank are stored, so nothing is written past the arrays.
  t.rank = static_cast<int>(sizes.size());
  int d = 0;
  for (int64_t s : sizes) {
    if (d == kMaxRank) break;
    t.sizes[d++] = s;
  }
  int64_t stride = 1;
  for (int i = stored_dims(t.rank) - 1; i >= 0; --i) {
    t.strides[i] = stride;
    stride = saturating_mul(stride, t.sizes[i]);  // NOTE: huge shapes are rejected, not wrapped
  }
  return t;
}

TensorRef TensorRef::strided(void* data, DType dtype, std::initializer_list<int64_t> sizes,
                             std::initializer_list<int64_t> strides) {
  TensorRef t;
  t.data = data;
  t.dtype = dtype;
  t.rank = static_cast<int>(sizes.size());
  // NOTE: strides of another length make the view unusable: rank -1 (no entry point takes it).
  if (strides.size() != sizes.size()) t.rank = -1;
  int d = 0;
  for (int64_t s : sizes) {
    if (d == kMaxRank) break;
    t.sizes[d++] = s;
  }
  d = 0;
  for (int64_t s : strides) {
    if (d == kMaxRank) break;
    t.strides[d++] = s;
  }
  return t;
}

int64_t TensorRef::numel() const {
  if (rank == 0) return 0;
  int64_t n = 1;
  for (int i = 0; i < stored_dims(rank); ++i) n = saturating_mul(n, sizes[i]);
  return n;
}

bool TensorRef::is_contiguous() const {
  if (!valid_rank()) return false;
  int64_t stride = 1;
  for (int i = rank - 1; i >= 0; --i) {
    if (sizes[i] != 1 && strides[i] != stride) return false;
    stride = saturating_mul(stride, sizes[i]);
  }
  return true;
}

std::string TensorRef::shape_string() const {
  if (!valid_rank()) return "[invalid rank " + std::to_string(rank) + "]";
  std::string s = "[";
  for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

std::string TensorRef::describe() const {
  std::string s = shape_string() + " " + std::string(to_string(dtype));
  if (!valid_rank()) return s;
  s += " strides [";
  for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(strides[i]);
  return s + "]";
}

}  // namespace qfuse
