// SiLU-and-mul of gated MLPs, plain and with a fused quantized output (SPEC §1).
//
//   x [T, 2H] bf16|fp16 (row stride >= 2H, last dim contiguous); gate = x[:, :H], up = x[:, H:]
//   y[t, i] = silu(x[t, i]) * x[t, H + i] in fp32, silu(a) = a / (1 + exp(-a))
// silu_and_mul writes y as bf16|fp16|fp32; silu_mul_quant writes y in any QuantSpec form, computed
// in fp32 and rounded once.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <vector>

#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "qfuse/quant/quantize.h"

namespace qfuse {

/// out [T, H] bf16|fp16|fp32 = silu(gate) * up.
Status silu_and_mul(const TensorRef& x, const TensorRef& out, cudaStream_t stream);

/// silu(gate) * up written through the quantizer `out.spec` (any kind, incl. none).
Status silu_mul_quant(const TensorRef& x, const QuantOutput& out, cudaStream_t stream);

namespace ref {
/// fp64 silu(gate) * up of a host matrix x [T, 2H] of bf16|fp16 bits (row stride ld), row-major [T,
/// H].
std::vector<double> silu_and_mul(const uint16_t* x, DType dtype, int64_t T, int64_t H, int64_t ld);
/// silu(gate) * up in fp32 as silu_mul_quant computes it with the engine rule (the reference
/// engine's arithmetic, rules::engine_silu_mul), [T, H] row-major. `ex2`: the device's
/// ex2.approx.ftz (empty: the host model of rules::Ex2ApproxFtz, which may differ by an ulp).
std::vector<float> silu_and_mul_engine(const uint16_t* x, DType dtype, int64_t T, int64_t H,
                                       int64_t ld, const std::function<float(float)>& ex2 = {});
}  // namespace ref

}  // namespace qfuse
