#include "qfuse/core/tensor.h"

#include <cassert>

namespace qfuse {

TensorRef TensorRef::contiguous(void* data, DType dtype, std::initializer_list<int64_t> sizes) {
  TensorRef t;
  t.data = data;
  t.dtype = dtype;
  t.rank = static_cast<int>(sizes.size());
  assert(t.rank <= kMaxRank);
  int d = 0;
  for (int64_t s : sizes) t.sizes[d++] = s;
  int64_t stride = 1;
  for (int i = t.rank - 1; i >= 0; --i) {
    t.strides[i] = stride;
    stride *= t.sizes[i];
  }
  return t;
}

TensorRef TensorRef::strided(void* data, DType dtype, std::initializer_list<int64_t> sizes,
                             std::initializer_list<int64_t> strides) {
  TensorRef t;
  t.data = data;
  t.dtype = dtype;
  t.rank = static_cast<int>(sizes.size());
  assert(t.rank <= kMaxRank && strides.size() == sizes.size());
  int d = 0;
  for (int64_t s : sizes) t.sizes[d++] = s;
  d = 0;
  for (int64_t s : strides) t.strides[d++] = s;
  return t;
}

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= sizes[i];
  return rank == 0 ? 0 : n;
}

bool TensorRef::is_contiguous() const {
  int64_t stride = 1;
  for (int i = rank - 1; i >= 0; --i) {
    if (sizes[i] != 1 && strides[i] != stride) return false;
    stride *= sizes[i];
  }
  return true;
}

std::string TensorRef::shape_string() const {
  std::string s = "[";
  for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

std::string TensorRef::describe() const {
  std::string s = shape_string() + " " + std::string(to_string(dtype)) + " strides [";
  for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(strides[i]);
  return s + "]";
}

}  // namespace qfuse
