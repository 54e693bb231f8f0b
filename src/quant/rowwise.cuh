// The row-wise kernels every elementwise qfuse op runs on: a Producer computes fp32 fragments of
// an output row (a cast of an input, silu(gate) * up, later a merge of attention states), and a
// quantizer policy (qfuse/quant/policies.cuh) writes them. One kernel template, any output kind.
//
//   rowwise_kernel   one warp per task of 32 chunks (256 columns) of one row; groups of 64/128/16
//                    columns reduce their amax with warp shuffles. Used for every kind but
//                    per-token.
//   per_token_kernel one block per row; the row's amax is a block reduction; the row stays in
//                    registers between the amax and the store (re-read from L2 past 8
//                    chunks/thread).
//
// Producer protocol: `bool vec` (16-byte loads possible) and
//   __device__ void load(int64_t row, int col, int nvalid, float (&v)[8]) const
// filling v with the fp32 values of columns [col, col + 8), zeros past nvalid.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "qfuse/core/arch.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/quant/policies.cuh"
#include "qfuse/quant/quantize.h"

namespace qfuse::quant {

constexpr int kRowwiseThreads = 256;
constexpr int kRowwiseUnroll = 2;

template <class Producer, class Policy>
__global__ void __launch_bounds__(kRowwiseThreads)
    rowwise_kernel(const Producer prod, const typename Policy::Params params, int64_t rows,
                   int cols) {
  const Policy pol(params);
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  pol.zero_padding(tid, nthreads);

  const int lane = threadIdx.x & 31;
  const int64_t warp = tid >> 5;
  const int64_t nwarps = nthreads >> 5;
  const int chunks = (cols + kChunk - 1) / kChunk;
  const int tasks_per_row = (chunks + 31) / 32;
  const int64_t ntasks = rows * tasks_per_row;

  for (int64_t base = warp; base < ntasks; base += nwarps * kRowwiseUnroll) {
    float v[kRowwiseUnroll][kChunk];
    int64_t row[kRowwiseUnroll];
    int col[kRowwiseUnroll], nvalid[kRowwiseUnroll];
    // NOTE: all loads of the unrolled tasks are issued before the first store, to keep more
    // bytes in flight per warp.
#pragma unroll
    for (int u = 0; u < kRowwiseUnroll; ++u) {
      const int64_t task = base + u * nwarps;
      row[u] = task / tasks_per_row;
      const int seg = static_cast<int>(task - row[u] * tasks_per_row);
      col[u] = (seg * 32 + lane) * kChunk;
      nvalid[u] = task < ntasks ? max(0, min(kChunk, cols - col[u])) : 0;
      if (nvalid[u] > 0) {
        prod.load(row[u], col[u], nvalid[u], v[u]);
      } else {
#pragma unroll
        for (int i = 0; i < kChunk; ++i) v[u][i] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kRowwiseUnroll; ++u) {
      if (base + u * nwarps < ntasks) pol.apply(row[u], col[u], nvalid[u], v[u]);  // warp-uniform
    }
  }
}

constexpr int kPerTokenCached = 6;  // chunks per thread kept in registers
constexpr int kPerTokenMaxThreads = 512;

__device__ __forceinline__ float block_nan_max(float m, float* smem) {
  m = group_amax<32>(m);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) smem[warp] = m;
  __syncthreads();
  if (warp == 0) {
    const int nw = blockDim.x >> 5;
    m = lane < nw ? smem[lane] : 0.0f;
    m = group_amax<32>(m);
    if (lane == 0) smem[32] = m;
  }
  __syncthreads();
  m = smem[32];
  __syncthreads();  // smem is reused by the next row
  return m;
}

template <class Producer>
__global__ void __launch_bounds__(kPerTokenMaxThreads)
    per_token_kernel(const Producer prod, const Fp8PerToken::Params p, int64_t rows, int cols) {
  __shared__ float smem[33];
  const float ub = p.scale_ub ? *p.scale_ub : INFINITY;
  const int chunks = (cols + kChunk - 1) / kChunk;
  const bool cached = chunks <= kPerTokenCached * static_cast<int>(blockDim.x);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    float v[kPerTokenCached][kChunk];
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerTokenCached; ++i) {
      const int c = threadIdx.x + i * blockDim.x;
      const int nvalid = max(0, min(kChunk, cols - c * kChunk));
      if (nvalid > 0) {
        prod.load(row, c * kChunk, nvalid, v[i]);
        amax = rules::nan_max(amax, chunk_amax(v[i]));
      }
    }
    if (!cached) {
      for (int c = threadIdx.x + kPerTokenCached * blockDim.x; c < chunks; c += blockDim.x) {
        float w[kChunk];
        prod.load(row, c * kChunk, min(kChunk, cols - c * kChunk), w);
        amax = rules::nan_max(amax, chunk_amax(w));
      }
    }
    amax = block_nan_max(amax, smem);
    const float s = rules::fp8_dynamic_scale(amax, ub, false);
    const float inv = rules::fp8_inv_scale(s);
    if (threadIdx.x == 0) p.scales[row] = s;
    uint8_t* out = p.out + row * p.ld;
#pragma unroll
    for (int i = 0; i < kPerTokenCached; ++i) {
      const int c = threadIdx.x + i * blockDim.x;
      const int nvalid = max(0, min(kChunk, cols - c * kChunk));
      if (nvalid > 0) store_fp8_chunk(out + c * kChunk, p.vec, nvalid, v[i], inv);
    }
    if (!cached) {
      for (int c = threadIdx.x + kPerTokenCached * blockDim.x; c < chunks; c += blockDim.x) {
        float w[kChunk];
        const int nvalid = min(kChunk, cols - c * kChunk);
        prod.load(row, c * kChunk, nvalid, w);
        store_fp8_chunk(out + c * kChunk, p.vec, nvalid, w, inv);
      }
    }
  }
}

/// True when p and a row stride of `ld` elements of `elem` bytes allow `align`-byte accesses.
inline bool aligned_rows(const void* p, int64_t ld, int64_t elem, int64_t align) {
  return reinterpret_cast<uintptr_t>(p) % align == 0 && (ld * elem) % align == 0;
}

template <class Producer, class Policy>
Status launch_rowwise_policy(const Producer& prod, const typename Policy::Params& params,
                             int64_t rows, int64_t cols, bool has_scale_padding,
                             cudaStream_t stream) {
  DeviceInfo dev;
  QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  const int64_t chunks = (cols + kChunk - 1) / kChunk;
  const int64_t tasks = rows * ((chunks + 31) / 32);
  const int64_t warps_per_block = kRowwiseThreads / 32;
  // NOTE: one task per warp while the grid fits on the device (lowest latency for small
  // batches); past that a persistent grid where each warp keeps kRowwiseUnroll tasks in flight.
  int64_t blocks = (tasks + warps_per_block - 1) / warps_per_block;
  const int64_t resident =
      static_cast<int64_t>(dev.sm_count) * (dev.max_threads_per_sm / kRowwiseThreads);
  blocks = std::min(blocks, resident);
  if (has_scale_padding) blocks = std::max<int64_t>(blocks, dev.sm_count);
  blocks = std::max<int64_t>(blocks, 1);
  rowwise_kernel<Producer, Policy><<<static_cast<unsigned>(blocks), kRowwiseThreads, 0, stream>>>(
      prod, params, rows, static_cast<int>(cols));
  QFUSE_CHECK_LAUNCH("rowwise_kernel");
  return Status::Ok();
}

template <class T>
T* typed(const TensorRef& t) {
  return static_cast<T*>(t.data);
}

/// Launches the row-wise kernel of `prod` with the policy `q.spec` selects. `q` must have been
/// validated for [rows, cols] (validate_quant_output) and rows > 0.
template <class Producer>
Status launch_rowwise(const Producer& prod, const QuantOutput& q, int64_t rows, int64_t cols,
                      cudaStream_t stream) {
  const QuantSpec& spec = q.spec;
  const int64_t ld = q.out.strides[0];
  ScaleShape shape;
  QFUSE_RETURN_IF_ERROR(scale_shape(spec, rows, cols, &shape));
  const ScaleAddr sa = ScaleAddr::make(spec, shape, rows);
  const bool padded = sa.padded_rows > sa.rows || sa.padded_groups > sa.groups;
  switch (spec.kind) {
    case QuantKind::kNone:
      switch (q.out.dtype) {
        case DType::kBF16: {
          using P = PlainOut<__nv_bfloat16>;
          const P::Params pp{typed<__nv_bfloat16>(q.out), ld, aligned_rows(q.out.data, ld, 2, 16)};
          return launch_rowwise_policy<Producer, P>(prod, pp, rows, cols, false, stream);
        }
        case DType::kF16: {
          using P = PlainOut<__half>;
          const P::Params pp{typed<__half>(q.out), ld, aligned_rows(q.out.data, ld, 2, 16)};
          return launch_rowwise_policy<Producer, P>(prod, pp, rows, cols, false, stream);
        }
        case DType::kF32: {
          using P = PlainOut<float>;
          const P::Params pp{typed<float>(q.out), ld, aligned_rows(q.out.data, ld, 4, 16)};
          return launch_rowwise_policy<Producer, P>(prod, pp, rows, cols, false, stream);
        }
        default:
          return Status::InvalidArgument("out.dtype", "bf16|fp16|fp32",
                                         std::string(to_string(q.out.dtype)));
      }
    case QuantKind::kFp8PerTensor: {
      const Fp8PerTensor::Params pp{typed<uint8_t>(q.out), ld, q.scale,
                                    aligned_rows(q.out.data, ld, 1, 8)};
      return launch_rowwise_policy<Producer, Fp8PerTensor>(prod, pp, rows, cols, false, stream);
    }
    case QuantKind::kFp8PerToken: {
      const Fp8PerToken::Params pp{typed<uint8_t>(q.out), ld, typed<float>(q.scales), q.scale_ub,
                                   aligned_rows(q.out.data, ld, 1, 8)};
      const int64_t chunks = (cols + kChunk - 1) / kChunk;
      const int64_t want = (chunks + kPerTokenCached - 1) / kPerTokenCached;
      const int threads =
          static_cast<int>(std::clamp<int64_t>((want + 31) / 32 * 32, 128, kPerTokenMaxThreads));
      per_token_kernel<Producer>
          <<<static_cast<unsigned>(std::min<int64_t>(rows, 1 << 30)), threads, 0, stream>>>(
              prod, pp, rows, static_cast<int>(cols));
      QFUSE_CHECK_LAUNCH("per_token_kernel");
      return Status::Ok();
    }
    case QuantKind::kFp8PerGroup: {
      const bool packed = spec.format == ScaleFormat::kUe8m0Packed;
      const bool pow2 = spec.format != ScaleFormat::kF32;
      const bool vec = aligned_rows(q.out.data, ld, 1, 8);
      if (spec.group_size == 64) {
        using P = Fp8PerGroup<64>;
        const P::Params pp{
            typed<uint8_t>(q.out), ld, q.scales.data, sa, q.scale_ub, pow2, packed, vec};
        return launch_rowwise_policy<Producer, P>(prod, pp, rows, cols, padded, stream);
      }
      using P = Fp8PerGroup<128>;
      const P::Params pp{
          typed<uint8_t>(q.out), ld, q.scales.data, sa, q.scale_ub, pow2, packed, vec};
      return launch_rowwise_policy<Producer, P>(prod, pp, rows, cols, padded, stream);
    }
    case QuantKind::kNvfp4: {
      const Nvfp4::Params pp{typed<uint8_t>(q.out),
                             ld,
                             typed<uint8_t>(q.scales),
                             sa,
                             q.scale,
                             aligned_rows(q.out.data, ld, 1, 4)};
      return launch_rowwise_policy<Producer, Nvfp4>(prod, pp, rows, cols, padded, stream);
    }
  }
  return Status::NotSupported("quantization kind " + to_string(spec));
}

}  // namespace qfuse::quant
