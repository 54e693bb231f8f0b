// Quantized-output buffers every benchmark routine uses (bench/routines.h).
#include <cuda_runtime.h>

#include <optional>

#include "bench/routines.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/quant/kind.h"

namespace qfuse::bench {

Status quant_output_bytes(const QuantSpec& spec, int64_t T, int64_t H, int64_t* value_bytes,
                          int64_t* scale_bytes) {
  const std::optional<DType> dtype = quantized_dtype(spec);
  if (!dtype) return Status::InvalidArgument("spec", "a quantized spec", to_string(spec));
  ScaleShape shape;
  QFUSE_RETURN_IF_ERROR(scale_shape(spec, T, H, &shape));
  *value_bytes = *dtype == DType::kE2M1x2 ? T * (H / 2) : T * H;
  int64_t n = shape.rank > 0 ? 1 : 0;
  for (int i = 0; i < shape.rank; ++i) n *= shape.sizes[i];
  *scale_bytes = n * static_cast<int64_t>(dtype_size(shape.dtype));
  return Status::Ok();
}

Status make_quant_buffers(const QuantSpec& spec, int64_t T, int64_t H, const float* given_scale,
                          QuantBuffers* b) {
  int64_t value_bytes = 0, scale_bytes = 0;
  QFUSE_RETURN_IF_ERROR(quant_output_bytes(spec, T, H, &value_bytes, &scale_bytes));
  const DType dtype = *quantized_dtype(spec);
  QFUSE_RETURN_IF_ERROR(b->out.allocate(value_bytes));
  QFUSE_CUDA_RETURN(cudaMemset(b->out.get(), 0, value_bytes));
  b->q = QuantOutput{};
  b->q.spec = spec;
  b->q.out = TensorRef::contiguous(b->out.get(), dtype, {T, dtype == DType::kE2M1x2 ? H / 2 : H});
  if (scale_bytes > 0) {
    ScaleShape shape;
    QFUSE_RETURN_IF_ERROR(scale_shape(spec, T, H, &shape));
    QFUSE_RETURN_IF_ERROR(b->scales.allocate(scale_bytes));
    QFUSE_CUDA_RETURN(cudaMemset(b->scales.get(), 0, scale_bytes));
    TensorRef s;
    s.data = b->scales.get();
    s.dtype = shape.dtype;
    s.rank = shape.rank;
    int64_t stride = 1;
    for (int i = shape.rank - 1; i >= 0; --i) {
      s.sizes[i] = shape.sizes[i];
      s.strides[i] = stride;
      stride *= shape.sizes[i];
    }
    b->q.scales = s;
  }
  if (spec.reads_scale()) b->q.scale = given_scale;
  return Status::Ok();
}

float bench_given_scale(const QuantSpec& spec) {
  if (spec.kind == QuantKind::kFp8PerTensor) return 0.05f;
  if (spec.kind == QuantKind::kNvfp4) return 448.0f * 6.0f / 8.0f;
  return 1.0f;
}

}  // namespace qfuse::bench
