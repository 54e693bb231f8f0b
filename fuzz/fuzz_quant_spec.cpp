// Fuzz target: parse_quant_spec, then scale_shape and validate_quant_output on the parsed spec
// with hostile rows, cols and tensor views (sizes, strides, rank, pointers from the input).
//
// Invariants (a violation aborts): a parsed spec prints back as the same text and validates; a
// scale shape that is returned has sizes >= 0 within the element limit; nothing crashes.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "qfuse/core/checked.h"
#include "qfuse/quant/kind.h"
#include "qfuse/quant/quantize.h"

using namespace qfuse;

namespace {

TensorRef view(FuzzedDataProvider& in) {
  TensorRef t;
  t.dtype = static_cast<DType>(in.ConsumeIntegralInRange<int>(0, 7));
  t.rank = in.ConsumeIntegralInRange<int>(-2, 7);
  for (int i = 0; i < TensorRef::kMaxRank; ++i) {
    t.sizes[i] = in.ConsumeIntegral<int64_t>();
    t.strides[i] = in.ConsumeIntegral<int64_t>();
  }
  // NOTE: a pointer value only: validation never dereferences it.
  t.data = reinterpret_cast<void*>(static_cast<uintptr_t>(in.ConsumeIntegral<uint32_t>()));
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const int64_t rows = in.ConsumeIntegral<int64_t>(), cols = in.ConsumeIntegral<int64_t>();
  const std::string text = in.ConsumeRandomLengthString(256);
  QuantSpec spec;
  if (parse_quant_spec(text, &spec).ok()) {
    if (to_string(spec) != text || !spec.validate().ok()) std::abort();
  }
  (void)parse_quant_spec(text, nullptr);
  ScaleShape shape;
  if (scale_shape(spec, rows, cols, &shape).ok()) {
    if (shape.rank < 0 || shape.rank > 3) std::abort();
    if (!check_sizes(shape.sizes, shape.rank).ok()) std::abort();
  }
  QuantOutput q;
  q.spec = spec;
  q.out = view(in);
  q.scales = view(in);
  (void)validate_quant_output(q, rows, cols);
  (void)q.out.describe();
  (void)q.out.numel();
  (void)q.out.is_contiguous();
  return 0;
}
