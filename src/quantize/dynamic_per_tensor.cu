// Dynamic per-tensor FP8: x [T, H] bf16|fp16|fp32 -> scale = max(amax / 448, FLT_MIN) (device fp32)
// and out [T, H] e4m3 through the static per-tensor quantizer. Three launches on one stream: zero
// the scale, amax_kernel (each block reduces |x| as ordered bits, one atomicMax per block), and
// finalize_scale turns the amax bits into the scale that quantize() then reads from the device.
// NOTE: |x| as uint32 bits orders like the floats (non-negative), and a NaN (sign cleared) sits
// above +inf, so a NaN anywhere gives a NaN scale and NaN codes (SPEC §0.1).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cfloat>
#include <climits>

#include "common/block_reduce.cuh"
#include "qfuse/core/cuda_check.h"
#include "qfuse/quant/quantize.h"
#include "quant/validate.h"

namespace qfuse {
namespace {

constexpr int kAmaxThreads = 256;

__device__ inline float to_float(float v) {
  return v;
}
__device__ inline float to_float(__half v) {
  return __half2float(v);
}
__device__ inline float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <class TIn>
__global__ void __launch_bounds__(kAmaxThreads)
    amax_kernel(const TIn* __restrict__ x, int64_t T, int64_t H, int64_t ld, unsigned* amax) {
  unsigned m = 0;
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
    const TIn* row = x + t * ld;
    for (int64_t c = blockIdx.x * int64_t(kAmaxThreads) + threadIdx.x; c < H;
         c += int64_t(gridDim.x) * kAmaxThreads)
      m = max(m, __float_as_uint(fabsf(to_float(row[c]))));
  }
  block_atomic_max_u32<kAmaxThreads>(m, amax);
}

/// scale = max(amax / 448, FLT_MIN), in place (the division the reference engine does per block).
__global__ void finalize_scale(float* scale) {
  const float amax = __uint_as_float(*reinterpret_cast<unsigned*>(scale));
  const float s = amax / 448.0f;
  *scale = isnan(s) ? s : fmaxf(s, FLT_MIN);
}

template <class TIn>
Status launch_amax(const TensorRef& x, float* scale, cudaStream_t stream) {
  const int64_t T = x.sizes[0], H = x.sizes[1];
  const int64_t col_blocks = ceil_div(H, kAmaxThreads);
  // NOTE: enough blocks to fill the device a few times over; each loops over the rest.
  const unsigned gx = static_cast<unsigned>(col_blocks < 64 ? col_blocks : 64);
  const int64_t rows_wanted = ceil_div(2048, gx);
  const unsigned gy = static_cast<unsigned>(T < rows_wanted ? T : rows_wanted);
  amax_kernel<TIn><<<dim3(gx, gy), kAmaxThreads, 0, stream>>>(
      static_cast<const TIn*>(x.data), T, H, x.strides[0], reinterpret_cast<unsigned*>(scale));
  QFUSE_CHECK_LAUNCH("amax_kernel");
  return Status::Ok();
}

}  // namespace

Status quantize_fp8_dynamic_per_tensor(const TensorRef& x, const TensorRef& out, float* scale,
                                       cudaStream_t stream) {
  QuantOutput q;
  q.spec = QuantSpec::fp8_per_tensor();
  q.out = out;
  q.scale = scale;
  QFUSE_RETURN_IF_ERROR(detail::check_quantize_call(x, q));
  const int64_t T = x.sizes[0], H = x.sizes[1];
  if (T == 0 || H == 0) return Status::Ok();
  QFUSE_CUDA_RETURN(cudaMemsetAsync(scale, 0, sizeof(float), stream));
  switch (x.dtype) {
    case DType::kBF16:
      QFUSE_RETURN_IF_ERROR(launch_amax<__nv_bfloat16>(x, scale, stream));
      break;
    case DType::kF16:
      QFUSE_RETURN_IF_ERROR(launch_amax<__half>(x, scale, stream));
      break;
    default:
      QFUSE_RETURN_IF_ERROR(launch_amax<float>(x, scale, stream));
      break;
  }
  finalize_scale<<<1, 1, 0, stream>>>(scale);
  QFUSE_CHECK_LAUNCH("finalize_scale");
  return quantize(x, q, stream);
}

}  // namespace qfuse
