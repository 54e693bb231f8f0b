// SiLU-and-mul with any quantized output (SPEC §1): x [T, 2H] bf16|fp16 -> silu(gate) * up,
// computed in fp32 and written once through the shared quantizer (rowwise.cuh). silu_and_mul is
// the same kernel with the plain (identity) policy.
#include <climits>

#include "qfuse/act_quant/silu_mul.h"
#include "quant/rowwise.cuh"
#include "quant/validate.h"

namespace qfuse {
namespace quant {

/// Producer: silu(x[row, col + i]) * x[row, H + col + i].
template <class TIn>
struct LoadSiluMul {
  const TIn* x;
  int64_t ld;
  int64_t H;
  bool vec;
  __device__ void load(int64_t row, int col, int nvalid, float (&v)[kChunk]) const {
    const TIn* gate = x + row * ld + col;
    float g[kChunk], u[kChunk];
    load_chunk(gate, vec, nvalid, g);
    load_chunk(gate + H, vec, nvalid, u);
#pragma unroll
    for (int i = 0; i < kChunk; ++i) v[i] = rules::silu(g[i]) * u[i];
  }
};

}  // namespace quant

namespace {

Status run_silu_mul(const char* op, const TensorRef& x, const QuantOutput& q, cudaStream_t stream) {
  QFUSE_RETURN_IF_ERROR(detail::check_matrix(x, "x", {DType::kBF16, DType::kF16}, -1, -1));
  const int64_t T = x.sizes[0], W = x.sizes[1];
  if (W % 2 != 0)
    return Status::InvalidArgument("x.sizes[1]", "an even width 2H", std::to_string(W));
  const int64_t H = W / 2;
  if (H > INT_MAX / 2)
    return Status::InvalidArgument("x.sizes[1]", "<= " + std::to_string(INT_MAX),
                                   std::to_string(W));
  QFUSE_RETURN_IF_ERROR(q.spec.validate());
  QFUSE_RETURN_IF_ERROR(detail::check_op_supports(op, q.spec));
  QFUSE_RETURN_IF_ERROR(validate_quant_output(q, T, H));
  if (T == 0 || H == 0) return Status::Ok();
  QFUSE_RETURN_IF_ERROR(detail::check_device_pointers({{x.data, "x.data"},
                                                       {q.out.data, "out.data"},
                                                       {q.scales.data, "out.scales.data"},
                                                       {q.scale, "out.scale"},
                                                       {q.scale_ub, "out.scale_ub"}}));
  const int64_t ld = x.strides[0];
  // NOTE: 16-byte loads need the up half (x + H) aligned too, hence H in the check.
  const bool vec = quant::aligned_rows(x.data, ld, 2, 16) && (H * 2) % 16 == 0;
  if (x.dtype == DType::kBF16)
    return quant::launch_rowwise(
        quant::LoadSiluMul<__nv_bfloat16>{static_cast<const __nv_bfloat16*>(x.data), ld, H, vec}, q,
        T, H, stream);
  return quant::launch_rowwise(
      quant::LoadSiluMul<__half>{static_cast<const __half*>(x.data), ld, H, vec}, q, T, H, stream);
}

}  // namespace

Status silu_mul_quant(const TensorRef& x, const QuantOutput& q, cudaStream_t stream) {
  return run_silu_mul("silu_mul_quant", x, q, stream);
}

Status silu_and_mul(const TensorRef& x, const TensorRef& out, cudaStream_t stream) {
  QuantOutput q;
  q.out = out;
  return run_silu_mul("silu_and_mul", x, q, stream);
}

}  // namespace qfuse
