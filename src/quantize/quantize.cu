// Standalone quantization: x [T, H] bf16|fp16|fp32 -> any QuantSpec output, through the shared
// row-wise kernel with the identity producer. These ops are also the unfused baselines, and with
// the engine rule (QuantRule::kEngine) the drop-ins of the reference engine's quantizers.
#include <climits>

#include "common/rowwise.cuh"
#include "qfuse/quant/quantize.h"
#include "quant/validate.h"

namespace qfuse {
namespace quant {

/// Producer: the input row itself.
template <class TIn>
struct LoadRows {
  const TIn* x;
  int64_t ld;
  bool vec;
  static constexpr int kVecs = kChunk * sizeof(TIn) / 16;
  struct Raw {
    uint4 r[kVecs];
  };
  template <class Ready = NoWait>
  __device__ void fetch(int64_t row, int col, int nvalid, Raw& raw, Ready ready = {}) const {
    ready();  // NOTE: first: this producer waits at the kernel's top (kLatePdlWait false)
    if (vec && nvalid == kChunk) {
      const uint4* p = reinterpret_cast<const uint4*>(x + row * ld + col);
#pragma unroll
      for (int i = 0; i < kVecs; ++i) raw.r[i] = __ldg(p + i);
    }
  }
  __device__ void convert(const Raw& raw, int64_t row, int col, int nvalid,
                          float (&v)[kChunk]) const {
    if (vec && nvalid == kChunk)
      convert_chunk<TIn>(raw.r, v);
    else
      load_chunk(x + row * ld + col, false, nvalid, v);
  }
  template <class Ready = NoWait>
  __device__ void load(int64_t row, int col, int nvalid, float (&v)[kChunk],
                       Ready ready = {}) const {
    ready();
    load_chunk(x + row * ld + col, vec, nvalid, v);
  }
  __device__ void finish(int64_t, int, int) const {}
  // NOTE: 8 blocks of 256 threads (<= 32 registers): full occupancy; a looser cap let nvcc take
  // more registers and cost bandwidth (bench/NOTES.md 41a).
  static constexpr int kStreamMinBlocks = 8;
  static constexpr int kStreamMinBlocksGrouped = 8;
  // The clamp-free E2M1 round where exact (NOTES 30, 34, 41b).
  static constexpr int kNvfp4Round = 1;
  // Waits at the kernel's top (rowwise_kernel: late measured slower, NOTES 39).
  static constexpr bool kLatePdlWait = false;
  // Two NVFP4 blocks per lane (NOTES 32, 41b); fp32 rows (8 registers a chunk) spilled at 64
  // registers.
  static constexpr int kNvfp4LaneChunks = sizeof(TIn) == 4 ? 2 : 4;
  // Per-group FP8 with two 16-value runs per lane (NOTES 32, 41b); fp32 as above.
  static constexpr int kGroupLaneChunks = sizeof(TIn) == 4 ? 2 : 4;
};

}  // namespace quant

Status quantize(const TensorRef& x, const QuantOutput& q, cudaStream_t stream) {
  QFUSE_RETURN_IF_ERROR(detail::check_quantize_call(x, q));
  const int64_t T = x.sizes[0], H = x.sizes[1];
  if (T == 0 || H == 0) return Status::Ok();
  const int64_t ld = x.strides[0];
  const int64_t esize = static_cast<int64_t>(dtype_size(x.dtype));
  const bool vec = quant::aligned_rows(x.data, ld, esize, 16);
  constexpr unsigned kKinds = quant::kAllKinds | quant::kEngineKinds;
  switch (x.dtype) {
    case DType::kBF16:
      return quant::launch_rowwise<kKinds>(
          quant::LoadRows<__nv_bfloat16>{static_cast<const __nv_bfloat16*>(x.data), ld, vec}, q, T,
          H, stream);
    case DType::kF16:
      return quant::launch_rowwise<kKinds>(
          quant::LoadRows<__half>{static_cast<const __half*>(x.data), ld, vec}, q, T, H, stream);
    case DType::kF32:
      return quant::launch_rowwise<kKinds>(
          quant::LoadRows<float>{static_cast<const float*>(x.data), ld, vec}, q, T, H, stream);
    default:
      return Status::InvalidArgument("x.dtype", "bf16|fp16|fp32", std::string(to_string(x.dtype)));
  }
}

}  // namespace qfuse
